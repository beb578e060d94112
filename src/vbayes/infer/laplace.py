"""Laplace's method: q = N(ẑ, Λ⁻¹) at the mode ẑ of log p̃, Λ = −∇² log p̃(ẑ) (or an approximation of it).

The mode comes from L-BFGS (:func:`vbayes.infer.optimize.find_map`); the curvature from products only, in one
of the forms ``dense``, ``diag``, ``lowrank`` and ``ggn`` of :mod:`vbayes.infer.curvature`; a few Newton steps
with the Laplace covariance then polish the mean.

For targets that are not least-squares targets, the reference precision P is ``prior_precision`` if given,
else the identity (a standard-normal reference on the unconstrained space).

The Laplace estimate of the log evidence is log p̃(ẑ) + d/2 log 2π − ½ log|Λ|.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.checks import resolve as resolve_checks
from vbayes.checks import verify
from vbayes.errors import VBayesError, is_count, is_fraction, is_real, require
from vbayes.families import LowRankPrecisionGaussian, MeanFieldGaussian
from vbayes.fit import Fit, FitInfo
from vbayes.infer import curvature as curv
from vbayes.infer.curvature import gauss_newton_rows, hessian_rows
from vbayes.infer.optimize import STATUS, ModeResult, find_map
from vbayes.keys import as_key
from vbayes.linalg.precision import DiagonalPrecision, as_precision
from vbayes.targets import Target, check_initial_point, least_squares_parts, value_and_grad

Array = jax.Array
CURVATURES = ("auto", "dense", "diag", "lowrank", "ggn")
_LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------------------------
# driver


def _reference_precision(target: Target, parts, prior_precision: Any) -> tuple[Any, str]:
    if prior_precision is not None:
        return as_precision(prior_precision, target.dim), "given"
    if parts is not None:
        return parts.prior_precision, "prior of the least-squares target"
    return DiagonalPrecision(jnp.ones(target.dim, jnp.result_type(float))), "identity (no prior known)"


def _initial_point(target: Target, init: Any, parts) -> Array:
    if init is None:
        return jnp.asarray(parts.prior_mean) if parts is not None else jnp.zeros(target.dim, jnp.result_type(float))
    z0 = jnp.asarray(init.q.mean if isinstance(init, Fit) else init, jnp.result_type(float))
    if z0.shape != (target.dim,):
        raise VBayesError(f"init must be a flat vector of shape ({target.dim},), got {z0.shape}")
    return z0


def _polish(target: Target, q, value: float, grad: Array, max_steps: int) -> tuple[Any, float, dict]:
    """Up to ``max_steps`` Newton steps with q's covariance, z ← z + t Λ⁻¹∇log p̃ (t = 1, ½, ¼), each kept only if
    log p̃ does not fall (beyond rounding). Reports the Newton decrement √(∇ᵀΛ⁻¹∇) before and after: the
    distance from q's mean to the mode of the local quadratic, in posterior sds."""
    step = _covariance_matvec(q, grad)
    before = after = float(jnp.sqrt(jnp.maximum(grad @ step, 0.0)))
    taken = 0
    for _ in range(max_steps):
        if after < 1e-10:
            break
        for t in (1.0, 0.5, 0.25):
            new_value, new_grad = value_and_grad(target, q.loc + t * step)
            if bool(jnp.isfinite(new_value)) and float(new_value) >= value - 1e-12 * (1.0 + abs(value)):
                break  # (a rise of ½ decrement² is below rounding once the decrement is ~1e-7)
        else:
            break
        q, value, grad, taken = q._replace(loc=q.loc + t * step), float(new_value), new_grad, taken + 1
        step = _covariance_matvec(q, grad)
        after = float(jnp.sqrt(jnp.maximum(grad @ step, 0.0)))
    return q, value, {"steps": taken, "decrement_before": before, "decrement_after": after}


def _covariance_matvec(q, g: Array) -> Array:
    if isinstance(q, LowRankPrecisionGaussian):
        return q.covariance_matvec(g)
    if isinstance(q, MeanFieldGaussian):
        return jnp.exp(2 * q.log_scale) * g
    return q.covariance() @ g


class LaplaceConfig(NamedTuple):
    """Laplace's settings. ``rank``: eigenpairs kept by ``lowrank``/``ggn``; ``None`` (default) keeps all with
    |λ| ≥ ``eig_tol`` (dropping an eigenpair changes marginal variances by at most a fraction λ/(1+λ) of the
    prior's), growing the Krylov space until it has found them. ``krylov_dim``: the most products spent on it
    (default ⌈1.5·rank⌉ + 10 for a given rank, else min(d, 2000); d means exact). ``prior_precision``: the reference
    precision P of the low-rank forms for targets that are not least-squares targets (default identity). The mode
    search stops when max|∇| ≤ ``gtol``·(1 + |log p̃|) (in prior-whitened coordinates for least-squares targets) or
    after ``max_iter`` iterations; loose on purpose, since up to ``polish_steps`` Newton steps finish the job once
    the curvature is known. Products run ``batch_size`` at a time (vmapped). Eigenvalues of the precision below
    ``eig_floor`` (relative to the largest for ``dense``/``diag``; absolute, in prior units, for ``lowrank``) are
    clipped, and the fit says so. ``diag``: exact by d products for d ≤ ``exact_diag_max``, else estimated from
    ``diag_probes`` random probes. ``dense`` refuses d > ``dense_max_dim``."""

    rank: int | None = None
    eig_tol: float = 0.1
    prior_precision: Any = None
    max_iter: int = 2000
    gtol: float = 1e-7
    krylov_dim: int | None = None
    batch_size: int = 16
    eig_floor: float = 1e-10
    exact_diag_max: int = 5000
    diag_probes: int = 100
    dense_max_dim: int = 10_000
    polish_steps: int = 5

    def checked(self) -> LaplaceConfig:
        """The settings, each validated on its own (a :class:`VBayesError` naming the first that is wrong); the
        rules that need the target's dimension are checked by :func:`laplace`."""
        optional_count = lambda v: v is None or is_count(v)
        require(
            [
                ("rank", self.rank, optional_count(self.rank), "None or an integer ≥ 1"),
                ("eig_tol", self.eig_tol, is_real(self.eig_tol) and self.eig_tol >= 0, "≥ 0 and finite"),
                ("max_iter", self.max_iter, is_count(self.max_iter), "an integer ≥ 1"),
                ("gtol", self.gtol, is_real(self.gtol) and self.gtol >= 0, "≥ 0 and finite"),
                ("krylov_dim", self.krylov_dim, optional_count(self.krylov_dim), "None or an integer ≥ 1"),
                ("batch_size", self.batch_size, is_count(self.batch_size), "an integer ≥ 1"),
                ("eig_floor", self.eig_floor, is_fraction(self.eig_floor), "between 0 and 1"),
                ("exact_diag_max", self.exact_diag_max, is_count(self.exact_diag_max, 0), "an integer ≥ 0"),
                ("diag_probes", self.diag_probes, is_count(self.diag_probes, 2), "an integer ≥ 2"),
                ("dense_max_dim", self.dense_max_dim, is_count(self.dense_max_dim), "an integer ≥ 1"),
                ("polish_steps", self.polish_steps, is_count(self.polish_steps, 0), "an integer ≥ 0"),
            ],
            "laplace",
        )
        return self


def laplace(
    target: Target,
    curvature: str = "auto",
    *,
    key: Array | int | None = 0,
    init: Any = None,
    log: Callable[[str], None] | None = None,
    checks: Any = "default",
    config: LaplaceConfig | None = None,
    **options: Any,
) -> Fit:
    """Laplace approximation N(ẑ, Λ⁻¹) of ``target``'s posterior: L-BFGS to the mode, then the curvature there.

    curvature: ``dense`` | ``diag`` | ``lowrank`` | ``ggn`` (Gauss-Newton; least-squares targets only) | ``auto``
    (``dense`` for d ≤ 1000, else ``ggn`` for least-squares targets and ``lowrank`` otherwise). ``options`` (or
    ``config``): the fields of :class:`LaplaceConfig`. ``init``: start of the mode search (default: the prior mean,
    or 0; a point or a Fit). ``log``: a function that receives progress messages. ``checks``: the verdict's checks
    (:mod:`vbayes.checks`), run at the end.

    After the curvature, up to ``polish_steps`` Newton steps z + Λ⁻¹∇log p̃(z) polish the mean while they raise
    log p̃; ``info.extra["newton"]`` reports the Newton decrement √(∇ᵀΛ⁻¹∇) (the mean's distance from the mode in
    posterior sds, by the local quadratic) before and after.

    Returns a :class:`Fit`: ``q`` (FullRankGaussian, MeanFieldGaussian or LowRankPrecisionGaussian), ``trace`` =
    log p̃ per L-BFGS iteration, ``info.outcome`` ``converged`` | ``max_steps`` | ``diverged`` (the search left the
    finite region), ``info.grad_evals`` = evaluations in the mode search, ``info.extra``: ``log_evidence``,
    ``products`` (Hessian-vector or Gauss-Newton products), ``map`` record, eigenvalue summary and timings. A
    curvature that had to be clipped (not positive definite) flags the fit (the ``curvature`` check).
    """
    unknown = sorted(set(options) - set(LaplaceConfig._fields))
    if unknown:
        raise VBayesError(
            f"unknown option(s) {unknown} for laplace; its options are {', '.join(LaplaceConfig._fields)}"
        )
    c = (config or LaplaceConfig())._replace(**options).checked()
    checks = resolve_checks(checks)
    rank, eig_tol, prior_precision, krylov_dim = c.rank, c.eig_tol, c.prior_precision, c.krylov_dim
    max_iter, gtol, batch_size, eig_floor = c.max_iter, c.gtol, c.batch_size, c.eig_floor
    t_start = time.perf_counter()
    say = log or (lambda message: None)
    if not isinstance(target, Target):
        raise VBayesError(f"laplace needs a vbayes Target (from_numpyro, from_logdensity), got {type(target).__name__}")
    if curvature not in CURVATURES:
        raise VBayesError(f"unknown curvature {curvature!r}; choose one of {', '.join(CURVATURES)}")
    d = target.dim
    parts = least_squares_parts(target)
    if curvature == "auto":
        curvature = "dense" if d <= 1000 else ("ggn" if parts is not None else "lowrank")
    if curvature == "ggn" and parts is None:
        raise VBayesError(
            "curvature 'ggn' (Gauss-Newton) needs a least-squares target (vbayes.from_least_squares); "
            "use 'lowrank' or 'dense' for this target"
        )
    if curvature == "dense" and d > c.dense_max_dim:
        gb = 8 * d * d / 2**30
        raise VBayesError(
            f"curvature 'dense' at d={d} needs {d} Hessian-vector products and {gb:.1f} GB per d×d matrix "
            f"(about {3 * gb:.0f} GB in all for the Hessian, its eigenvectors and the covariance); use 'lowrank' "
            f"or 'ggn', or raise dense_max_dim={c.dense_max_dim}"
        )
    low_rank = curvature in ("lowrank", "ggn")
    if low_rank and rank is not None and not 1 <= rank <= d:
        raise VBayesError(f"rank must be between 1 and the dimension {d}, got {rank}")
    if krylov_dim is None:
        krylov_dim = min(d, 2000) if rank is None else (d if rank >= d else min(d, math.ceil(1.5 * rank) + 10))
    if low_rank and not (rank or 1) <= krylov_dim <= d:
        raise VBayesError(f"krylov_dim ({krylov_dim}) must be between the rank ({rank or 1}) and d ({d})")
    key = as_key(key)
    names = target.coordinate_names()

    # 1. the mode
    z0 = _initial_point(target, init, parts)
    check_initial_point(target, z0)
    prior, prior_kind = _reference_precision(target, parts, prior_precision)
    factor = prior.cholesky() if low_rank or parts is not None or prior_precision is not None else None
    whiten = factor if parts is not None or prior_precision is not None else None
    say(f"mode search: L-BFGS on d={d}" + (" in prior-whitened coordinates" if whiten is not None else ""))
    mode: ModeResult = find_map(target, z0, max_iter=max_iter, gtol=gtol, whiten=whiten)
    z = mode.z
    t_map = time.perf_counter() - t_start
    status = STATUS[int(mode.status)]
    grad_norm = float(jnp.linalg.norm(mode.grad))
    map_record = {
        "outcome": status,
        "iterations": int(mode.iterations),
        "evaluations": int(mode.evaluations),
        "grad_norm": grad_norm,
        "grad_max": float(jnp.max(jnp.abs(mode.grad))),
        "log_density": float(mode.value),
        "whitened": whiten is not None,
        "seconds": t_map,
    }
    say(f"mode search {status} after {int(mode.iterations)} iterations ({t_map:.1f} s), |∇| = {grad_norm:.3g}")
    if not bool(jnp.isfinite(mode.value)):
        raise VBayesError(f"the log density of {target.name!r} is not finite at the end of the mode search")

    # 2. the curvature at the mode
    t_curv = time.perf_counter()
    block = min(batch_size, d)
    hvp = curv.Products(lambda rows: hessian_rows(target, z, rows, block), block)
    say(f"curvature: {curvature}" + (f", rank {rank or f'adaptive (eigenvalues ≥ {eig_tol})'}" if low_rank else ""))
    if curvature == "dense":
        products = hvp
        q, half_logdet, report = curv.dense(target, z, hvp, eig_floor, names)
    elif curvature == "diag":
        products = hvp
        q, half_logdet, report = curv.diag(
            target, z, hvp, eig_floor, names, c.exact_diag_max, c.diag_probes, key, parts, block
        )
    elif curvature == "lowrank":
        products = hvp
        data_rows = lambda rows: hvp(rows) - prior.matvec(rows)
        q, half_logdet, report = curv.low_rank(
            target, z, data_rows, factor, rank, krylov_dim, eig_tol, block, key, eig_floor, names, positive=False
        )
    else:
        products = curv.Products(lambda rows: gauss_newton_rows(target, z, rows, block), block)
        q, half_logdet, report = curv.low_rank(
            target, z, products, factor, rank, krylov_dim, eig_tol, block, key, eig_floor, names, positive=True
        )
    t_curv = time.perf_counter() - t_curv
    say(f"curvature done: {products.count} products in {t_curv:.1f} s")

    # 3. Newton steps on the mean with the Laplace covariance, kept while they raise log p̃
    value = float(mode.value)
    newton = {"steps": 0}
    if status != "failed" and not report.get("clipped") and c.polish_steps > 0:
        q, value, newton = _polish(target, q, value, mode.grad, c.polish_steps)
    log_evidence = value + 0.5 * d * _LOG_2PI - half_logdet

    # 4. outcome and record
    messages = []
    if status == "converged":
        outcome = "converged"
        messages.append(
            f"mode found in {int(mode.iterations)} L-BFGS iterations (max|∇| = {map_record['grad_max']:.2g}); "
            f"{curvature} curvature from {products.count} products"
        )
    elif status == "max_iter":
        outcome = "max_steps"
        messages.append(
            f"the mode search reached max_iter={max_iter} with max|∇| = {map_record['grad_max']:.3g} still above "
            "the tolerance: the curvature is taken at a point that is not the mode"
        )
    else:
        outcome = "diverged"
        messages.append(
            f"the mode search stopped after {int(mode.iterations)} iterations because the next step made the log "
            "density or its gradient non-finite; the curvature is taken at the last finite point"
        )
    if newton.get("decrement_after", 0.0) > 0.1:
        messages.append(
            f"the mean may be {newton['decrement_after']:.2g} posterior sds from the mode (Newton decrement after "
            f"{newton['steps']} polishing steps): raise max_iter or lower gtol"
        )
    if report.get("clipped"):
        messages.append(report["clip_message"])
    info = FitInfo(
        method=f"laplace-{curvature}",
        outcome=outcome,
        message="; ".join(messages),
        steps=int(mode.iterations),
        grad_evals=int(mode.evaluations),
        skipped_steps=0,
        wall_time=time.perf_counter() - t_start,
        trace_of="log p̃ at each L-BFGS iterate of the mode search",
        extra={
            "log_evidence": float(log_evidence),
            "curvature": curvature,
            "rank": report.pop("rank", None),
            "products": products.count,
            "product": "gauss-newton" if curvature == "ggn" else "hessian-vector",
            "reference_precision": prior_kind if low_rank else None,
            "map": map_record,
            "newton": newton,
            "seconds": {"map": t_map, "curvature": t_curv},
            **report,
        },
    )
    trace = np.asarray(mode.trace)[: int(mode.iterations)]
    fit = Fit(target=target, q=q, trace=trace, info=info, state=mode)
    return verify(fit, checks, key=jax.random.fold_in(key, 3))
