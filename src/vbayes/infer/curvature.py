"""The curvature forms of Laplace's method: Λ = −∇² log p̃(ẑ) at the mode, or an approximation of it.

All come from products only:

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

The marginal sds, draws, log density and log|Λ| of the low-rank forms are closed-form through U: no d×d
matrix is formed. Each form (:func:`dense`, :func:`diag`, :func:`low_rank`) returns ``(q, ½ log|Λ|, report)``,
the report saying what was clipped where the curvature is not positive definite.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.families import FullRankGaussian, LowRankPrecisionGaussian, MeanFieldGaussian
from vbayes.linalg.krylov import block_krylov_eigh, exact_eigh
from vbayes.linalg.precision import DiagonalPrecision, SparsePrecision
from vbayes.targets import Target, least_squares_parts

Array = jax.Array


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


class Products:
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


def _unit_rows(products: Products, d: int, dtype: Any):
    """(start, rows of −∇² log p̃ for e_start … e_start+block−1), one block of unit vectors at a time."""
    for i in range(0, d, products.block):
        unit = jnp.eye(products.block, d, k=i, dtype=dtype)[: min(products.block, d - i)]
        yield i, np.asarray(products(unit))


def dense(target, z, products, eig_floor, names):
    d = target.dim
    h = np.empty((d, d))
    for i, rows in _unit_rows(products, d, z.dtype):
        h[i : i + rows.shape[0]] = rows
    h = 0.5 * (h + h.T)
    lam, vec = np.linalg.eigh(h)
    # q's Cholesky factor needs a condition number well inside the working precision (float32: ~1e5, not 1e10)
    relative = max(eig_floor, 100 * float(jnp.finfo(z.dtype).eps))
    floor = relative * max(float(np.max(np.abs(lam))), np.finfo(float).tiny)
    report = _clip_report("eigenvalue(s) of −∇² log p̃", lam, floor, vec.T, names)
    lam = np.maximum(lam, floor)
    cov = (vec / lam) @ vec.T
    q = FullRankGaussian.from_covariance(z, jnp.asarray(0.5 * (cov + cov.T), z.dtype))
    report["eigenvalue_range"] = [float(lam.min()), float(lam.max())]
    return q, 0.5 * float(np.sum(np.log(lam))), report


def diag(target, z, products, eig_floor, names, exact_max, probes, key, parts, batch_size):
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


def low_rank(target, z, data_rows, factor, rank, max_dim, eig_tol, block, key, eig_floor, names, positive):
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
