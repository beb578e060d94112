"""Laplace's method: q = N(ẑ, Λ⁻¹) at the mode ẑ of log p̃, Λ = −∇² log p̃(ẑ) (or an approximation of it).

The mode comes from L-BFGS (:func:`vbayes.infer.optimize.find_map`); the curvature from products only:

* ``dense``: Λ from d Hessian-vector products (forward-over-reverse, ``jax.jvp(jax.grad(f))``), vmapped over
  chunks of basis vectors so memory stays O(chunk · d) besides the d×d result; q is a :class:`FullRankGaussian`.
* ``diag``: the diagonal of Λ only (mean-field Laplace, q = N(ẑ, diag(1/Λ_ii)), a :class:`MeanFieldGaussian`);
  exact by d products for d ≤ ``exact_diag_max``, beyond that estimated from ``diag_probes`` random probes
  (Bekas, Kokiopoulou & Saad 2007; for least-squares targets the Gauss-Newton diagonal E[(Jᵀξ)²] plus the
  prior's exact diagonal, which is never negative).
* ``lowrank``: Λ = L (I + U diag(λ) Uᵀ) Lᵀ with P = L Lᵀ the prior precision and (λ, U) the leading
  eigenpairs of the prior-preconditioned data Hessian L⁻¹(Λ − P)L⁻ᵀ (Bui-Thanh, Ghattas, Martin & Stadler
  2013), from a randomized block Krylov eigensolver (Halko, Martinsson & Tropp 2011; Musco & Musco 2015):
  a given ``rank``, or (default) every eigenpair with λ ≥ ``eig_tol``, the Krylov space grown until those
  have converged; q is a :class:`LowRankPrecisionGaussian`.
* ``ggn``: the same with the Gauss-Newton data term Jᵀ J (J the Jacobian of the whitened residuals of a
  :func:`~vbayes.targets.from_least_squares` target), always positive semi-definite; products are a jvp
  and a vjp.

For targets that are not least-squares targets, the reference precision P is ``prior_precision`` if given,
else the identity (a standard-normal reference on the unconstrained space).

The marginal sds, draws, log density and log|Λ| of the low-rank forms are closed-form through U: no d×d
matrix is formed. The Laplace estimate of the log evidence is log p̃(ẑ) + d/2 log 2π − ½ log|Λ|.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.errors import VBayesError
from vbayes.families import FullRankGaussian, LowRankPrecisionGaussian, MeanFieldGaussian
from vbayes.fit import Fit, FitInfo, as_key
from vbayes.infer.optimize import STATUS, ModeResult, find_map
from vbayes.targets import (
    DiagonalPrecision,
    SparsePrecision,
    Target,
    as_precision,
    check_initial_point,
    least_squares_parts,
    value_and_grad,
)

Array = jax.Array
CURVATURES = ("auto", "dense", "diag", "lowrank", "ggn")
_LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------------------------
# products with the curvature, in fixed-size row blocks (one compilation per target layout and block size)


@functools.partial(jax.jit, static_argnums=3)
def hessian_rows(target: Target, z: Array, rows: Array, batch_size: int) -> Array:
    """Rows v ↦ (−∇² log p̃(z)) v by forward-over-reverse autodiff, ``(k, d) -> (k, d)``, ``batch_size`` at a time."""
    grad = jax.grad(lambda x: -target.log_density(x))
    return jax.lax.map(lambda v: jax.jvp(grad, (z,), (v,))[1], rows, batch_size=batch_size)


@functools.partial(jax.jit, static_argnums=3)
def gauss_newton_rows(target: Target, z: Array, rows: Array, batch_size: int) -> Array:
    """Rows v ↦ Jᵀ W J v, the Gauss-Newton matrix of a least-squares target's data term (without the prior),
    ``(k, d) -> (k, d)``: J = ∂r/∂z of the whitened residuals r(z) ``(N,)`` and W = I, or, for a target with an
    operator A, J = ∂g/∂z of the latent g(z) ``(m,)`` and W = AᵀΣ⁻¹A. One linearisation, then a jvp and a vjp
    per row."""
    parts = least_squares_parts(target)
    inner = parts.residual if parts.gram is None else parts.latent
    _, jvp = jax.linearize(inner, z)
    vjp = jax.linear_transpose(jvp, z)
    weigh = (lambda u: u) if parts.gram is None else (lambda u: parts.gram @ u)
    return jax.lax.map(lambda v: vjp(weigh(jvp(v)))[0], rows, batch_size=batch_size)


@functools.partial(jax.jit, static_argnums=3)
def _gauss_newton_probes(target: Target, z: Array, keys: Array, batch_size: int) -> Array:
    """(JᵀSξ)² for Rademacher ξ, one row per key: ``(k,) keys -> (k, d)``; E[(JᵀSξ)²] = diag(JᵀWJ) with S Sᵀ = W
    (S = I, ξ ∈ {±1}^N for plain targets; ξ ∈ {±1}^m for targets with an operator)."""
    parts = least_squares_parts(target)
    inner = parts.residual if parts.gram is None else parts.latent
    r, vjp = jax.vjp(inner, z)
    root = (lambda u: u) if parts.gram is None else (lambda u: parts.gram_sqrt @ u)
    probe = lambda k: vjp(root(jax.random.rademacher(k, r.shape, r.dtype)))[0] ** 2
    return jax.lax.map(probe, keys, batch_size=batch_size)


class _Products:
    """Counts products and feeds a row-block function fixed-size blocks (the last one zero-padded)."""

    def __init__(self, fn: Callable[[Array], Array], block: int):
        self.fn, self.block, self.count = fn, block, 0

    def __call__(self, rows: Array) -> Array:
        k = rows.shape[0]
        out = []
        for i in range(0, k, self.block):
            chunk = rows[i : i + self.block]
            n = chunk.shape[0]
            if n < self.block:
                chunk = jnp.concatenate([chunk, jnp.zeros((self.block - n, rows.shape[1]), rows.dtype)])
            out.append(self.fn(chunk)[:n])
            self.count += n
        return jnp.concatenate(out)


# ----------------------------------------------------------------------------------------------
# symmetric eigensolver from products only


def block_krylov_eigh(
    op: Callable[[Array], Array],
    d: int,
    max_dim: int,
    block: int,
    key: Array,
    dtype: Any,
    enough: Callable[[np.ndarray, np.ndarray], bool] | None = None,
) -> tuple[Array, Array]:
    """Ritz pairs of a symmetric d×d operator A on a randomized block Krylov space, from products only.

    span{Ω, AΩ, A²Ω, …} with Ω ``(d, block)`` Gaussian, grown block by block with full (twice repeated)
    reorthogonalisation, one product per basis vector, up to ``max_dim`` vectors or until ``enough(θ, ρ)`` says
    so (θ: the current Ritz values, ρ: their residual norms ‖A y − θ y‖, which bound the distance from θ to an
    eigenvalue); then Rayleigh-Ritz: T = Qᵀ(AQ), A ≈ Q S diag(θ) SᵀQᵀ.
    ``op`` maps rows ``(k, d) -> (k, d)``. Returns ``(θ (m,), vectors (m, d))`` for the m vectors used
    (Halko, Martinsson & Tropp 2011; Musco & Musco 2015).
    """
    block = max(1, min(block, max_dim))
    q = jnp.linalg.qr(jax.random.normal(key, (d, block), dtype))[0]
    basis, images = [], []
    t = np.zeros((0, 0))
    while True:
        aq = op(q.T).T
        if basis:  # grow T = Qᵀ A Q by the new block's row and column (A symmetric: Q_oldᵀAq = (AQ_old)ᵀq)
            cross = np.asarray(jnp.concatenate(images, axis=1).T @ q)
            corner = np.asarray(q.T @ aq)
            t = np.block([[t, cross], [cross.T, 0.5 * (corner + corner.T)]])
        else:
            t = np.asarray(q.T @ aq)
            t = 0.5 * (t + t.T)
        basis.append(q)
        images.append(aq)
        size = t.shape[0]
        if size >= max_dim:
            break
        if enough is not None:
            # A Q = Q T + R with R nonzero only in the last block's columns: AQ_last − Q T[:, last]
            theta, s = np.linalg.eigh(t)
            prev = jnp.concatenate(basis, axis=1)
            r_last = aq - prev @ jnp.asarray(t[:, -q.shape[1] :])
            residual = np.linalg.norm(np.asarray(r_last) @ s[-q.shape[1] :], axis=0)
            if enough(theta, residual):
                break
        prev = jnp.concatenate(basis, axis=1)
        w = aq[:, : min(block, max_dim - size)]
        for _ in range(2):  # twice is enough (Giraud et al. 2005)
            w = w - prev @ (prev.T @ w)
            w = jnp.linalg.qr(w)[0]
        q = w
    theta, s = np.linalg.eigh(t)
    return jnp.asarray(theta), (jnp.concatenate(basis, axis=1) @ jnp.asarray(s)).T


def exact_eigh(op: Callable[[Array], Array], d: int, dtype: Any) -> tuple[Array, Array]:
    """All eigenpairs of a symmetric operator from d products with the unit vectors: ``(θ (d,), vectors (d, d))``."""
    a = op(jnp.eye(d, dtype=dtype))
    theta, v = jnp.linalg.eigh(0.5 * (a + a.T))
    return theta, v.T


# ----------------------------------------------------------------------------------------------
# reporting a curvature that is not positive definite


def _describe_directions(vectors: np.ndarray, names: list[str], k: int = 3) -> str:
    """'x[0] (0.71), x[3] (-0.70)' for each of up to ``k`` direction rows ``(m, d)``."""
    parts = []
    for v in vectors[:k]:
        v = v / (np.linalg.norm(v) or 1.0)
        top = np.argsort(-np.abs(v))[:3]
        parts.append("[" + ", ".join(f"{names[i]} ({v[i]:+.2f})" for i in top) + "]")
    return "; ".join(parts)


def _clip_report(what: str, values: np.ndarray, floor: float, directions: np.ndarray | None, names: list[str]) -> dict:
    """Clip ``values`` below ``floor``; say how many, how negative, along which directions (rows of ``directions``)."""
    bad = values < floor
    if not bad.any():
        return {"clipped": 0}
    order = np.argsort(values[bad])
    worst = values[bad][order]
    along = ""
    if directions is not None:
        along = "; most negative along " + _describe_directions(directions[bad][order], names)
    n_neg = int(np.sum(values <= 0))
    message = (
        f"the curvature at the returned point is not positive definite: {int(bad.sum())} {what} below the floor "
        f"{floor:.3g} ({n_neg} ≤ 0; smallest {', '.join(f'{v:.3g}' for v in worst[:5])}){along}. They were clipped "
        "to the floor, so q is very wide along those directions: the point is a saddle or not a mode (check the "
        "MAP outcome), or the posterior is improper there"
    )
    return {"clipped": int(bad.sum()), "negative": n_neg, "smallest": worst[:5].tolist(), "clip_message": message}


# ----------------------------------------------------------------------------------------------
# the curvature variants: each returns (q, half_log_det_precision, info dict)


def _unit_rows(products: _Products, d: int, dtype: Any):
    """(start, rows of −∇² log p̃ for e_start … e_start+block−1), one block of unit vectors at a time."""
    for i in range(0, d, products.block):
        unit = jnp.eye(products.block, d, k=i, dtype=dtype)[: min(products.block, d - i)]
        yield i, np.asarray(products(unit))


def _dense(target, z, products, eig_floor, names):
    d = target.dim
    h = np.empty((d, d))
    for i, rows in _unit_rows(products, d, z.dtype):
        h[i : i + rows.shape[0]] = rows
    h = 0.5 * (h + h.T)
    lam, vec = np.linalg.eigh(h)
    floor = eig_floor * max(float(np.max(np.abs(lam))), np.finfo(float).tiny)
    report = _clip_report("eigenvalue(s) of −∇² log p̃", lam, floor, vec.T, names)
    lam = np.maximum(lam, floor)
    cov = (vec / lam) @ vec.T
    q = FullRankGaussian.from_covariance(z, jnp.asarray(0.5 * (cov + cov.T), z.dtype))
    report["eigenvalue_range"] = [float(lam.min()), float(lam.max())]
    return q, 0.5 * float(np.sum(np.log(lam))), report


def _diag(target, z, products, eig_floor, names, exact_max, probes, key, parts, batch_size):
    d = target.dim
    if d <= exact_max:
        diag = np.empty(d)
        for i, rows in _unit_rows(products, d, z.dtype):
            k = np.arange(rows.shape[0])
            diag[i + k] = rows[k, i + k]
        how = f"exact, {d} Hessian-vector products"
    else:
        keys = jax.random.split(key, probes)
        if parts is not None and (parts.gram is None or parts.gram_sqrt is not None):
            ggn = np.asarray(_gauss_newton_probes(target, z, keys, batch_size)).mean(0)
            diag = ggn + _precision_diagonal(parts.prior_precision)
            products.count += probes
            how = f"estimated: Gauss-Newton diagonal E[(Jᵀξ)²] from {probes} Rademacher probes + exact prior diagonal"
        else:
            v = jax.random.rademacher(key, (probes, d), z.dtype)
            hv = np.asarray(products(v))
            diag = np.sum(np.asarray(v) * hv, 0) / probes
            how = f"estimated: Bekas et al. (2007) stochastic diagonal from {probes} Rademacher probes"
    floor = eig_floor * max(float(np.max(np.abs(diag))), np.finfo(float).tiny)
    report = _clip_report("diagonal entries of −∇² log p̃", diag, floor, None, names)
    if report["clipped"]:
        worst = np.argsort(diag)[: min(5, report["clipped"])]
        report["clip_message"] += " (coordinates " + ", ".join(names[i] for i in worst) + ")"
    diag = np.maximum(diag, floor)
    report["diagonal"] = how
    q = MeanFieldGaussian(z, jnp.asarray(-0.5 * np.log(diag), z.dtype))
    return q, 0.5 * float(np.sum(np.log(diag))), report


def _precision_diagonal(p) -> np.ndarray:
    if isinstance(p, DiagonalPrecision):
        return np.asarray(p.diagonal)
    if isinstance(p, SparsePrecision):
        return np.asarray(p.to_scipy().diagonal())
    return np.diag(np.asarray(p.matrix))


def _importance(lam: np.ndarray, eig_floor: float) -> np.ndarray:
    """|log(1 + λ)|: how much an eigenpair changes the posterior (Förstner distance; Spantini et al. 2015)."""
    return np.abs(np.log1p(np.maximum(lam, eig_floor - 1.0)))


def _low_rank(target, z, data_rows, factor, rank, max_dim, eig_tol, block, key, eig_floor, names, positive):
    """Eigenpairs of L⁻¹ H_data L⁻ᵀ kept by |log(1 + λ)|: the ``rank`` largest, or (``rank`` None) all with
    |log(1 + λ)| ≥ log(1 + ``eig_tol``), growing the Krylov space until each of those Ritz values has converged
    (residual ≤ 10% of it). Eigenvalues are clipped so that 1 + λ ≥ ``eig_floor``."""
    d = target.dim
    op = lambda rows: factor.solve_l(data_rows(factor.solve_lt(rows)))
    threshold = math.log1p(eig_tol)
    if rank is not None and max_dim >= d:
        lam, vec = exact_eigh(op, d, z.dtype)
        how = "exact (d products)"
    else:

        def enough(theta: np.ndarray, residual: np.ndarray) -> bool:
            """Every Ritz value that matters has converged, to 10% (absolute 0.1 below 1)."""
            matters = _importance(theta, eig_floor) >= threshold
            return bool(np.all(residual[matters] <= 0.1 * np.maximum(np.abs(theta[matters]), 1.0)))

        lam, vec = block_krylov_eigh(op, d, max_dim, block, key, z.dtype, enough if rank is None else None)
        how = f"randomized block Krylov, blocks of {block}"
    lam, vec = np.asarray(lam), np.asarray(vec)
    if positive:  # Gauss-Newton: PSD up to rounding
        lam = np.maximum(lam, 0.0)
    importance = _importance(lam, eig_floor)
    order = np.argsort(-importance)
    keep = order[:rank] if rank is not None else order[importance[order] >= threshold]
    dropped = float(lam[order[keep.size]]) if keep.size < lam.size else None
    lam, vec = lam[keep], vec[keep]
    report = {"clipped": 0}
    if not positive:
        directions = np.asarray(factor.solve_lt(jnp.asarray(vec))) if (1.0 + lam < eig_floor).any() else None
        report = _clip_report("eigenvalue(s) of L⁻¹ΛL⁻ᵀ = I + L⁻¹H_dataL⁻ᵀ", 1.0 + lam, eig_floor, directions, names)
        lam = np.maximum(lam, eig_floor - 1.0)
    report["eigensolver"] = how
    report["rank"] = int(lam.size)
    report["eigenvalues"] = np.sort(lam)[::-1][:10].tolist()
    report["smallest_kept_eigenvalue"] = float(lam[np.argmin(np.abs(lam))]) if lam.size else None
    report["largest_dropped_eigenvalue"] = dropped  # the most important Ritz value left out (None: none)
    q = LowRankPrecisionGaussian(z, factor, jnp.asarray(vec.T, z.dtype), jnp.asarray(lam, z.dtype))
    return q, float(q._half_log_det_precision()), report


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


def laplace(
    target: Target,
    curvature: str = "auto",
    *,
    rank: int | None = None,
    eig_tol: float = 0.1,
    prior_precision: Any = None,
    init: Any = None,
    max_iter: int = 2000,
    gtol: float = 1e-7,
    krylov_dim: int | None = None,
    batch_size: int = 16,
    eig_floor: float = 1e-10,
    exact_diag_max: int = 5000,
    diag_probes: int = 100,
    dense_max_dim: int = 10_000,
    polish_steps: int = 5,
    key: Array | int | None = 0,
    log: Callable[[str], None] | None = None,
) -> Fit:
    """Laplace approximation N(ẑ, Λ⁻¹) of ``target``'s posterior: L-BFGS to the mode, then the curvature there.

    curvature: ``dense`` | ``diag`` | ``lowrank`` | ``ggn`` (Gauss-Newton; least-squares targets only) | ``auto``
    (``dense`` for d ≤ 1000, else ``ggn`` for least-squares targets and ``lowrank`` otherwise). ``rank``: eigenpairs
    kept by ``lowrank``/``ggn``; ``None`` (default) keeps all with |λ| ≥ ``eig_tol`` (dropping an eigenpair changes
    marginal variances by at most a fraction λ/(1+λ) of the prior's), growing the Krylov space until it has
    found them. ``krylov_dim``: the most products spent on it (default ⌈1.5·rank⌉ + 10 for a given rank, else
    min(d, 2000); d means exact). ``prior_precision``: the reference precision P of the low-rank forms for
    targets that are not least-squares targets (default identity). ``init``: start of the
    mode search (default: the prior mean, or 0). The search stops when max|∇| ≤ gtol·(1 + |log p̃|) (in prior-
    whitened coordinates for least-squares targets) or after ``max_iter`` iterations; loose on purpose, since
    the Newton steps below finish the job once the curvature is known. Products run ``batch_size``
    at a time (vmapped). Eigenvalues of the precision below ``eig_floor`` (relative to the largest for
    ``dense``/``diag``; absolute, in prior units, for ``lowrank``) are clipped, and the fit says so.

    After the curvature, up to ``polish_steps`` Newton steps z + Λ⁻¹∇log p̃(z) polish the mean while they raise
    log p̃; ``info.extra["newton"]`` reports the Newton decrement √(∇ᵀΛ⁻¹∇) (the mean's distance from the mode in
    posterior sds, by the local quadratic) before and after.

    Returns a :class:`Fit`: ``q`` (FullRankGaussian, MeanFieldGaussian or LowRankPrecisionGaussian), ``trace`` =
    log p̃ per L-BFGS iteration, ``info.outcome`` ``converged`` | ``max_steps`` | ``diverged`` (the search left the
    finite region) | ``indefinite`` (clipped curvature), ``info.grad_evals`` = evaluations in the mode search,
    ``info.extra``: ``log_evidence``, ``products`` (Hessian-vector or Gauss-Newton products), ``map`` record,
    eigenvalue summary and timings.
    """
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
    if curvature == "dense" and d > dense_max_dim:
        gb = 8 * d * d / 2**30
        raise VBayesError(
            f"curvature 'dense' at d={d} needs {d} Hessian-vector products and {gb:.1f} GB per d×d matrix "
            f"(about {3 * gb:.0f} GB in all for the Hessian, its eigenvectors and the covariance); use 'lowrank' "
            f"or 'ggn', or raise dense_max_dim={dense_max_dim}"
        )
    low_rank = curvature in ("lowrank", "ggn")
    if low_rank and rank is not None and not 1 <= rank <= d:
        raise VBayesError(f"rank must be between 1 and the dimension {d}, got {rank}")
    if krylov_dim is None:
        krylov_dim = min(d, 2000) if rank is None else (d if rank >= d else min(d, math.ceil(1.5 * rank) + 10))
    if low_rank and not (rank or 1) <= krylov_dim <= d:
        raise VBayesError(f"krylov_dim ({krylov_dim}) must be between the rank ({rank or 1}) and d ({d})")
    if batch_size < 1:
        raise VBayesError(f"batch_size must be positive, got {batch_size}")
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
    hvp = _Products(lambda rows: hessian_rows(target, z, rows, block), block)
    say(f"curvature: {curvature}" + (f", rank {rank or f'adaptive (eigenvalues ≥ {eig_tol})'}" if low_rank else ""))
    if curvature == "dense":
        products = hvp
        q, half_logdet, report = _dense(target, z, hvp, eig_floor, names)
    elif curvature == "diag":
        products = hvp
        q, half_logdet, report = _diag(target, z, hvp, eig_floor, names, exact_diag_max, diag_probes, key, parts, block)
    elif curvature == "lowrank":
        products = hvp
        data_rows = lambda rows: hvp(rows) - prior.matvec(rows)
        q, half_logdet, report = _low_rank(
            target, z, data_rows, factor, rank, krylov_dim, eig_tol, block, key, eig_floor, names, positive=False
        )
    else:
        products = _Products(lambda rows: gauss_newton_rows(target, z, rows, block), block)
        q, half_logdet, report = _low_rank(
            target, z, products, factor, rank, krylov_dim, eig_tol, block, key, eig_floor, names, positive=True
        )
    t_curv = time.perf_counter() - t_curv
    say(f"curvature done: {products.count} products in {t_curv:.1f} s")

    # 3. Newton steps on the mean with the Laplace covariance, kept while they raise log p̃
    value = float(mode.value)
    newton = {"steps": 0}
    if status != "failed" and not report.get("clipped") and polish_steps > 0:
        q, value, newton = _polish(target, q, value, mode.grad, polish_steps)
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
        messages.append(report.pop("clip_message"))
        if outcome == "converged":
            outcome = "indefinite"
    info = FitInfo(
        method=f"laplace-{curvature}",
        outcome=outcome,
        message="; ".join(messages),
        steps=int(mode.iterations),
        grad_evals=int(mode.evaluations),
        skipped_steps=0,
        wall_time=time.perf_counter() - t_start,
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
    return Fit(target=target, q=q, trace=trace, info=info, state=mode)
