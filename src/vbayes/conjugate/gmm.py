"""Bayesian Gaussian mixture as a conjugate-exponential model (Bishop PRML §10.2; Blei & Jordan 2006).

Model, for components k = 1..K and points n = 1..N::

    π ~ Dirichlet(α₀, …, α₀)  or  π_k = v_k ∏_{j<k} (1 − v_j), v_k ~ Beta(1, α₀)   (truncated sticks)
    Λ_k ~ Wishart(ν₀, W₀),  μ_k | Λ_k ~ N(m₀, (β₀ Λ_k)⁻¹),  z_n ~ Cat(π),  x_n | z_n=k ~ N(μ_k, Λ_k⁻¹)

with q(z) q(π) ∏_k q(μ_k, Λ_k) mean field. ``W₀⁻¹`` is scikit-learn's ``covariance_prior``. The sticks
are truncated as scikit-learn does (Blei & Jordan 2006 with K sticks, none forced to 1): the mass
∏_k (1 − v_k) belongs to components beyond K, which q(z) never uses; the ELBO is that of this model.

Covariance types follow scikit-learn's ``BayesianGaussianMixture`` exactly. ``full``: q(μ_k, Λ_k) is
Normal-Wishart. ``diag`` / ``spherical``: the same Normal-Wishart model with W₀ diagonal / isotropic and
q(Λ_k) = Wishart(ν_k, W_k) restricted to a diagonal / isotropic scale W_k — the optimum in that family is
W_k⁻¹ = diag(M_k) (resp. tr(M_k)/D · I), M_k the full-covariance update, with ν_k = ν₀ + N_k unchanged.
This is what scikit-learn computes (its E-step uses the Wishart E[log|Λ|] = Σ_d ψ((ν−d)/2) + D log 2 +
log|W| for every type), so it is a proper ELBO: CAVI on it never decreases. It is *not* a product of
independent Normal-Gamma factors per dimension, whose E[log λ_d] would be ψ(ν/2) − log b_d.

q(β) is held in natural / sufficient-statistic form (:class:`GMMParams`), so that every update is
``prior + scale · stats`` and SVI's natural-gradient step is a convex combination of two such tuples.
The local factors q(z_n) appear only through the expected log joint
``E_q[log p(x_n, z_n=k | β)] = c_k − ½‖F_k (x_n − m_k)‖²`` (:class:`GMMLocal`): F_kᵀF_k = E[Λ_k] = ν_k W_k
for VB, and the same form at the mode of q(β) for EM / MAP-EM (:func:`bayesian_gmm` explains the limit).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, gammaln, multigammaln

from vbayes.conjugate.model import ConjugateModel
from vbayes.errors import VBayesError

Array = jax.Array

COVARIANCE_TYPES = ("full", "diag", "spherical")
WEIGHT_PRIORS = ("dirichlet_process", "dirichlet_distribution")


class GMMPrior(NamedTuple):
    """Hyperparameters (scikit-learn's names). ``covariance``: W₀⁻¹, shape ``(D, D)`` | ``(D,)`` | ``()``
    for full | diag | spherical; ``reg_covar`` is added to each component's scatter per point, as in
    scikit-learn (ψ_k += reg · N_k · I), which keeps the update linear in the statistics."""

    weight_concentration: Array  # () α₀
    mean_precision: Array  # () β₀
    mean: Array  # (D,) m₀
    degrees_of_freedom: Array  # () ν₀
    covariance: Array  # W₀⁻¹
    reg_covar: Array  # ()


class GMMParams(NamedTuple):
    """q(β) in natural (sufficient-statistic) form; every field is ``prior + Σ_n r_nk t(x_n)``.

    ``weight_a``, ``weight_b``: (K,) Dirichlet α_k (``weight_b`` unused, zero) or stick Beta(a_k, b_k);
    ``beta``: (K,) β_k; ``beta_mean``: (K, D) β_k m_k; ``psi``: W_k⁻¹ + β_k m_k m_kᵀ, shape (K, D, D) |
    (K, D) (its diagonal) | (K,) (its trace, D·w_k⁻¹ + β_k‖m_k‖²); ``nu``: (K,) ν_k."""

    weight_a: Array
    weight_b: Array
    beta: Array
    beta_mean: Array
    psi: Array
    nu: Array


class GMMStats(NamedTuple):
    """Expected sufficient statistics summed over points: ``n`` (K,) Σr, ``sx`` (K, D) Σ r x,
    ``sxx`` Σ r x xᵀ (K, D, D) | Σ r x² (K, D) | Σ r ‖x‖² (K,)."""

    n: Array
    sx: Array
    sxx: Array


class GMMLocal(NamedTuple):
    """What the E-step needs from q(β): ``E_q log p(x, z=k | β) = const_k − ½‖factor_k (x − mean_k)‖²``.
    ``factor``: (K, D, D) lower triangular | (K, D) | (K,) with factorᵀfactor = E[Λ_k] (or Λ̂_k)."""

    const: Array  # (K,)
    mean: Array  # (K, D)
    factor: Array


# ----------------------------------------------------------------------------------------------------
# precision geometry per covariance type


def _scale_inverse(params: GMMParams, ctype: str) -> Array:
    """W_k⁻¹ from the natural form: ψ_k − β_k m_k m_kᵀ (full), its diagonal (diag), or its mean diagonal."""
    m = params.beta_mean / params.beta[:, None]
    if ctype == "full":
        return params.psi - params.beta[:, None, None] * m[:, :, None] * m[:, None, :]
    if ctype == "diag":
        return params.psi - params.beta[:, None] * m * m
    return (params.psi - params.beta * jnp.sum(m * m, -1)) / m.shape[-1]


def _unit_factor(winv: Array, ctype: str, dim: int) -> tuple[Array, Array]:
    """U⁻¹ with W⁻¹ = U Uᵀ (so W = U⁻ᵀU⁻¹), or W^{1/2} for diag/spherical; and log|W|. Shapes as ``winv``."""
    if ctype == "full":
        chol = jnp.linalg.cholesky(winv)
        eye = jnp.broadcast_to(jnp.eye(dim, dtype=winv.dtype), winv.shape)
        unit = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
        return unit, -2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
    return jax.lax.rsqrt(winv), -_logdet(winv, ctype, dim)


def _logdet(winv: Array, ctype: str, dim: int) -> Array:
    """log|W⁻¹| for one matrix in the type's storage."""
    if ctype == "full":
        return 2.0 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(winv), axis1=-2, axis2=-1)), -1)
    return jnp.sum(jnp.log(winv), -1) if ctype == "diag" else dim * jnp.log(winv)


def _apply(factor: Array, v: Array, ctype: str) -> Array:
    """factor_k v_k for v of shape (K, D)."""
    return jnp.einsum("kde,ke->kd", factor, v) if ctype == "full" else factor.reshape(factor.shape[0], -1) * v


def _trace_prior(unit: Array, w0inv: Array, ctype: str, dim: int) -> Array:
    """tr(W₀⁻¹ W_k) per component."""
    if ctype == "full":
        return jnp.sum(jnp.einsum("kde,ef->kdf", unit, w0inv) * unit, axis=(-2, -1))
    if ctype == "diag":
        return jnp.sum(w0inv * unit * unit, -1)
    return dim * w0inv * unit * unit


def _psi_d(a: Array, dim: int) -> Array:
    """Multivariate digamma Σ_{d<D} ψ(a − d/2)."""
    return jnp.sum(digamma(a[..., None] - 0.5 * jnp.arange(dim, dtype=a.dtype)), -1)


def _dim(params: GMMParams) -> int:
    return params.beta_mean.shape[-1]


# ----------------------------------------------------------------------------------------------------
# mixture weights: Dirichlet or truncated stick-breaking


def _exclusive_cumsum(v: Array) -> Array:
    """Σ_{j<k} v_j (exact with −∞ entries, unlike cumsum(v) − v)."""
    return jnp.concatenate([jnp.zeros(1, v.dtype), jnp.cumsum(v[:-1])])


def _expected_log_weights(params: GMMParams, wtype: str) -> Array:
    """E_q[log π_k]: ψ(α_k) − ψ(Σα); sticks: E log v_k + Σ_{j<k} E log(1 − v_j) (Blei & Jordan 2006)."""
    a, b = params.weight_a, params.weight_b
    if wtype == "dirichlet_distribution":
        return digamma(a) - digamma(jnp.sum(a))
    dab = digamma(a + b)
    log_rest = digamma(b) - dab
    return digamma(a) - dab + _exclusive_cumsum(log_rest)


def _mode_log_weights(params: GMMParams, wtype: str) -> Array:
    """log π̂ at the mode of q(π): π̂ ∝ max(α − 1, 0); sticks: v̂_k = (a_k − 1)/(a_k + b_k − 2) in [0, 1]."""
    a = params.weight_a
    if wtype == "dirichlet_distribution":
        p = jnp.maximum(a - 1.0, 0.0)
        return jnp.log(p) - jnp.log(jnp.sum(p))
    v = _mode_sticks(params)
    log_rest = jnp.log1p(-v)
    return jnp.log(v) + _exclusive_cumsum(log_rest)


def _mode_sticks(params: GMMParams) -> Array:
    """Mode of each Beta(a_k, b_k): (a_k − 1)/(a_k + b_k − 2), clipped to [0, 1] (0 when a_k = 1)."""
    a, b = params.weight_a, params.weight_b
    tiny = jnp.finfo(a.dtype).tiny
    return jnp.clip((a - 1.0) / jnp.maximum(a + b - 2.0, tiny), 0.0, 1.0)


def _betaln(a: Array, b: Array) -> Array:
    """log B(a, b) = log Γ(a) + log Γ(b) − log Γ(a + b) (accurate to ~1e-16 · log Γ(a + b), ample here,
    and much cheaper to compile than ``jax.scipy.special.betaln``)."""
    return gammaln(a) + gammaln(b) - gammaln(a + b)


def _kl_weights(params: GMMParams, alpha0: Array, wtype: str) -> Array:
    """KL(q(π) ‖ p(π)): Dirichlet(α) vs Dirichlet(α₀); or Σ_k KL(Beta(a_k, b_k) ‖ Beta(1, α₀))."""
    a, b = params.weight_a, params.weight_b
    if wtype == "dirichlet_distribution":
        k = a.shape[0]
        sa = jnp.sum(a)
        return (
            gammaln(sa)
            - jnp.sum(gammaln(a))
            - gammaln(k * alpha0)
            + k * gammaln(alpha0)
            + jnp.sum((a - alpha0) * (digamma(a) - digamma(sa)))
        )
    dab = digamma(a + b)
    return jnp.sum(
        -jnp.log(alpha0) - _betaln(a, b) + (a - 1.0) * (digamma(a) - dab) + (b - alpha0) * (digamma(b) - dab)
    )


def _log_prior_weights(params: GMMParams, alpha0: Array, wtype: str) -> Array:
    """log p(π̂) at the mode of q(π): Dirichlet(α₀), or Σ_k log Beta(v̂_k | 1, α₀) (the (α₀ − 1) log terms
    vanish when α₀ = 1, where the mode may sit on the boundary)."""
    if wtype == "dirichlet_distribution":
        log_w = _mode_log_weights(params, wtype)
        k = log_w.shape[0]
        tail = jnp.where(alpha0 == 1.0, 0.0, (alpha0 - 1.0) * jnp.sum(log_w))
        return gammaln(k * alpha0) - k * gammaln(alpha0) + tail
    log1m_v = jnp.log1p(-_mode_sticks(params))
    return jnp.sum(jnp.log(alpha0) + jnp.where(alpha0 == 1.0, 0.0, (alpha0 - 1.0) * log1m_v))


def mean_weights(params: GMMParams, wtype: str) -> Array:
    """E_q[π_k], shape (K,). For sticks they sum to 1 − E∏(1 − v_k) < 1 (the rest lies beyond the truncation)."""
    a, b = params.weight_a, params.weight_b
    if wtype == "dirichlet_distribution":
        return a / jnp.sum(a)
    ev = a / (a + b)
    log_rest = jnp.log1p(-ev)
    return ev * jnp.exp(_exclusive_cumsum(log_rest))


# ----------------------------------------------------------------------------------------------------
# the model's functions (module level, so that the compiled passes are cached across fits)


def _expect(ctype: str, wtype: str, prior: GMMPrior, params: GMMParams) -> GMMLocal:
    """VB: c_k = E log π_k + ½E log|Λ_k| − (D/2) log 2π − D/(2β_k), factor = √ν_k U_k⁻¹ (Bishop 10.64–10.66)."""
    dim = _dim(params)
    unit, logdet_w = _unit_factor(_scale_inverse(params, ctype), ctype, dim)
    e_logdet = _psi_d(0.5 * params.nu, dim) + dim * math.log(2.0) + logdet_w
    const = (
        _expected_log_weights(params, wtype)
        + 0.5 * e_logdet
        - 0.5 * dim * math.log(2 * math.pi)
        - 0.5 * dim / params.beta
    )
    factor = _scale_factor(unit, params.nu, ctype)
    return GMMLocal(const, params.beta_mean / params.beta[:, None], factor)


def _scale_factor(unit: Array, s: Array, ctype: str) -> Array:
    """√s_k · unit_k."""
    root = jnp.sqrt(s)
    if ctype == "full":
        return root[:, None, None] * unit
    return root[:, None] * unit if ctype == "diag" else root * unit


def _mode(ctype: str, wtype: str, prior: GMMPrior, params: GMMParams) -> GMMLocal:
    """Point mass at the mode of q(β): π̂, m̂_k = m_k, Λ̂_k = (ν_k − D) W_k; c_k = log π̂_k + ½ log|Λ̂_k| − (D/2) log 2π.

    Dead components (π̂_k = 0, or ν_k ≤ D) get c_k = −∞ and a unit factor, so they take no points."""
    dim = _dim(params)
    unit, logdet_w = _unit_factor(_scale_inverse(params, ctype), ctype, dim)
    s = params.nu - dim
    log_w = _mode_log_weights(params, wtype)
    alive = (s > 0) & jnp.isfinite(log_w) & jnp.isfinite(logdet_w)
    s_safe = jnp.where(alive, s, 1.0)
    const = log_w + 0.5 * (dim * jnp.log(s_safe) + logdet_w) - 0.5 * dim * math.log(2 * math.pi)
    factor = _scale_factor(unit, s_safe, ctype)
    shape = (-1,) + (1,) * (factor.ndim - 1)
    factor = jnp.where(alive.reshape(shape), factor, _unit_like(factor, ctype))
    mean = jnp.where(alive[:, None], params.beta_mean / jnp.where(alive, params.beta, 1.0)[:, None], 0.0)
    return GMMLocal(jnp.where(alive, const, -jnp.inf), mean, factor)


def _unit_like(factor: Array, ctype: str) -> Array:
    if ctype == "full":
        return jnp.broadcast_to(jnp.eye(factor.shape[-1], dtype=factor.dtype), factor.shape)
    return jnp.ones_like(factor)


def _local_step(ctype: str, wtype: str, prior: GMMPrior, local: GMMLocal, x: Array, w: Array):
    """E-step and statistics in one pass over a batch ``x`` (B, D) with weights ``w`` (B,):
    ρ_nk = c_k − ½ (x_n − m_k)ᵀ Λ_k (x_n − m_k), r = softmax_k ρ, stats = Σ_n w_n r_nk t(x_n),
    local ELBO = Σ_n w_n logsumexp_k ρ_nk. Returns (GMMStats, scalar).

    Full covariances in float64: (x − m)ᵀΛ(x − m) = ⟨Λ, x xᵀ⟩ − 2 (Λm)ᵀx + mᵀΛm, whose x xᵀ (upper triangle,
    B × D(D+1)/2) is also the statistic Σ r x xᵀ needs: two matmuls over it, 30% faster than whitening
    (K·D rows of F_k x). In float32 the cancellation in that expansion costs accuracy, so there it whitens:
    ‖F_k x − F_k m_k‖²."""
    xt = x.T  # (D, B): components on rows, points on the long axis
    k, dim = local.mean.shape
    pairs = None
    if ctype == "full" and x.dtype == jnp.float64:
        iu, ju = np.triu_indices(dim)
        pairs = x[:, iu] * x[:, ju]  # (B, D(D+1)/2)
        prec = jnp.einsum("kdi,kdj->kij", local.factor, local.factor)  # E[Λ_k] = F_kᵀF_k
        coef = prec[:, iu, ju] * np.where(iu == ju, 1.0, 2.0)  # ⟨Λ, x xᵀ⟩ over the upper triangle
        lin = jnp.einsum("kij,kj->ki", prec, local.mean)  # Λ_k m_k
        quad = coef @ pairs.T - 2.0 * lin @ xt + jnp.sum(lin * local.mean, -1)[:, None]
    elif ctype == "full":  # whitened: ‖F_k x − F_k m_k‖², all k in one matmul
        shift = _apply(local.factor, local.mean, ctype)  # (K, D)
        y = (local.factor.reshape(k * dim, dim) @ xt).reshape(k, dim, -1) - shift[:, :, None]
        quad = jnp.sum(y * y, axis=1)
    else:  # diagonal precision p_k: Σ_d p_kd x_d² − 2 Σ_d p_kd m_kd x_d + Σ_d p_kd m_kd², two matmuls
        p = jnp.broadcast_to(local.factor.reshape(k, -1) ** 2, (k, dim))
        quad = p @ (xt * xt) - 2.0 * (p * local.mean) @ xt + jnp.sum(p * local.mean**2, -1)[:, None]
    rho = local.const[:, None] - 0.5 * quad  # (K, B)
    top = jnp.max(rho, axis=0)
    e = jnp.exp(rho - top)
    total = jnp.sum(e, axis=0)
    lse = top + jnp.log(total)
    r = e * (w / total)
    stats = suff_stats(x, r, ctype, pairs)
    return stats, jnp.sum(jnp.where(w > 0, w * lse, 0.0))


def chunk_rows(dim: int, n_components: int) -> int:
    """Rows per chunk of the E-step so that its intermediates, about 8·(D(D+1)/2 + D + 3K) bytes per row,
    stay near 400 kB (cache-resident): a power of two in [128, 1024]. Measured at N = 1e4, K = 10: 512 rows
    at D = 10 is 26% faster than 1024; 1024 is best at D = 2."""
    per_row = 8 * (dim * (dim + 1) // 2 + dim + 3 * n_components)
    rows = 1 << max(0, int(400_000 // per_row).bit_length() - 1)
    return int(min(1024, max(128, rows)))


def suff_stats(x: Array, r: Array, ctype: str, pairs: Array | None = None) -> GMMStats:
    """Σ_n r_kn t(x_n) for responsibilities ``r`` (K, B) (already multiplied by any point weights);
    ``pairs``: x_ni x_nj for i ≤ j (B, D(D+1)/2) if already computed."""
    if ctype == "full":  # the upper triangle only, as one matmul: Σ_n r_kn x_ni x_nj for i ≤ j
        dim = x.shape[-1]
        iu, ju = np.triu_indices(dim)
        upper = r @ (x[:, iu] * x[:, ju] if pairs is None else pairs)  # (K, D(D+1)/2)
        sxx = jnp.zeros((r.shape[0], dim, dim), x.dtype).at[:, iu, ju].set(upper)
        sxx = sxx + jnp.swapaxes(jnp.triu(sxx, 1), -1, -2)
    elif ctype == "diag":
        sxx = r @ (x * x)
    else:
        sxx = r @ jnp.sum(x * x, -1)
    return GMMStats(jnp.sum(r, axis=1), r @ x, sxx)


def _global_step(ctype: str, wtype: str, prior: GMMPrior, stats: GMMStats, scale) -> GMMParams:
    """λ̂ = η₀ + scale · stats (Bishop 10.58–10.63 in natural form); for sticks b_k = α₀ + scale Σ_{j>k} N_j."""
    dim = stats.sx.shape[-1]
    n = scale * stats.n
    a0, b0, m0, nu0, w0inv, reg = prior
    if wtype == "dirichlet_distribution":
        wa, wb = a0 + n, jnp.zeros_like(n)
    else:
        wa, wb = 1.0 + n, a0 + (jnp.sum(n) - jnp.cumsum(n))
    if ctype == "full":
        psi0 = w0inv + b0 * jnp.outer(m0, m0)
        psi = psi0 + scale * stats.sxx + (reg * n)[:, None, None] * jnp.eye(dim, dtype=n.dtype)
    elif ctype == "diag":
        psi = (w0inv + b0 * m0 * m0) + scale * stats.sxx + (reg * n)[:, None]
    else:
        psi = (dim * w0inv + b0 * jnp.sum(m0 * m0)) + scale * stats.sxx + dim * reg * n
    return GMMParams(wa, wb, b0 + n, b0 * m0 + scale * stats.sx, psi, nu0 + n)


def _expected_log_joint(ctype: str, wtype: str, prior: GMMPrior, local: GMMLocal, stats: GMMStats) -> Array:
    """Σ_n Σ_k r_nk E log p(x_n, z_n=k | β) from the statistics alone (Bishop 10.71 + 10.72):
    Σ_k N_k c_k − ½ tr(P_k Σ r (x − m_k)(x − m_k)ᵀ), P_k = F_kᵀF_k."""
    f, m = local.factor, local.mean
    if ctype == "full":
        p = jnp.einsum("kdi,kdj->kij", f, f)
        quad = (
            jnp.sum(p * stats.sxx, (-2, -1))
            - 2.0 * jnp.einsum("kd,kde,ke->k", m, p, stats.sx)
            + stats.n * jnp.einsum("kd,kde,ke->k", m, p, m)
        )
    elif ctype == "diag":
        quad = jnp.sum(f * f * (stats.sxx - 2.0 * m * stats.sx + stats.n[:, None] * m * m), -1)
    else:
        quad = f * f * (stats.sxx - 2.0 * jnp.sum(m * stats.sx, -1) + stats.n * jnp.sum(m * m, -1))
    n_const = jnp.where(stats.n > 0, stats.n * local.const, 0.0)
    return jnp.sum(n_const - 0.5 * quad)


def _kl(ctype: str, wtype: str, prior: GMMPrior, params: GMMParams) -> Array:
    """KL(q(β) ‖ p(β)) = KL(q(π)‖p(π)) + Σ_k KL(NW_k ‖ NW₀) (Bishop 10.73–10.74, 10.76–10.77 combined)."""
    a0, b0, m0, nu0, w0inv, _ = prior
    dim = _dim(params)
    beta, nu = params.beta, params.nu
    m = params.beta_mean / beta[:, None]
    winv = _scale_inverse(params, ctype)
    unit, logdet_w = _unit_factor(winv, ctype, dim)
    dm = _apply(unit, m - m0, ctype)
    kl_mean = 0.5 * (dim * b0 / beta - dim + dim * jnp.log(beta / b0) + b0 * nu * jnp.sum(dm * dm, -1))
    logdet_w0inv = _logdet(w0inv, ctype, dim)
    kl_wishart = (
        -0.5 * nu0 * (logdet_w0inv + logdet_w)
        + 0.5 * nu * (_trace_prior(unit, w0inv, ctype, dim) - dim)
        + multigammaln(0.5 * nu0, dim)
        - multigammaln(0.5 * nu, dim)
        + 0.5 * (nu - nu0) * _psi_d(0.5 * nu, dim)
    )
    return _kl_weights(params, a0, wtype) + jnp.sum(kl_mean + kl_wishart)


def _log_prior(ctype: str, wtype: str, prior: GMMPrior, params: GMMParams) -> Array:
    """log p(β̂) at the mode of q(β) (MAP-EM's prior term): log p(π̂) + Σ_k log N(m̂_k | m₀, (β₀Λ̂_k)⁻¹) W(Λ̂_k | W₀, ν₀)."""
    a0, b0, m0, nu0, w0inv, _ = prior
    dim = _dim(params)
    local = _mode(ctype, wtype, prior, params)
    winv = _scale_inverse(params, ctype)
    unit, logdet_w = _unit_factor(winv, ctype, dim)
    s = params.nu - dim
    logdet_lam = dim * jnp.log(s) + logdet_w
    dm = _apply(local.factor, local.mean - m0, ctype)
    log_normal = 0.5 * dim * jnp.log(b0 / (2 * math.pi)) + 0.5 * logdet_lam - 0.5 * b0 * jnp.sum(dm * dm, -1)
    logdet_w0inv = _logdet(w0inv, ctype, dim)
    log_wishart = (
        0.5 * nu0 * logdet_w0inv
        - 0.5 * nu0 * dim * math.log(2.0)
        - multigammaln(0.5 * nu0, dim)
        + 0.5 * (nu0 - dim - 1.0) * logdet_lam
        - 0.5 * s * _trace_prior(unit, w0inv, ctype, dim)
    )
    return _log_prior_weights(params, a0, wtype) + jnp.sum(log_normal + log_wishart)


def _counts(ctype: str, wtype: str, prior: GMMPrior, stats: GMMStats) -> Array:
    """Expected points per component, Σ_n r_nk: (K,)."""
    return stats.n


def _distance(ctype: str, wtype: str, prior: GMMPrior, params: GMMParams) -> Array:
    """(m_j − m_k)ᵀ (Σ_j + Σ_k)⁻¹ (m_j − m_k) for every pair of components (scikit-learn's point estimates of
    the means and covariances): (K, K)."""
    _, means, cov = _point_estimates(ctype, wtype, params)
    full = _full_matrices(cov, ctype, means.shape[-1])
    diff = means[:, None, :] - means[None, :, :]
    pair = full[:, None] + full[None, :]
    return jnp.sum(diff * jnp.linalg.solve(pair, diff[..., None])[..., 0], -1)


def _full_matrices(a: Array, ctype: str, dim: int) -> Array:
    """(K, D, D) matrices from a covariance type's storage: (K, D, D) | (K, D) diagonals | (K,) multiples of I."""
    if ctype == "full":
        return a
    diag = a if ctype == "diag" else a[:, None] * jnp.ones(dim, a.dtype)
    return diag[..., None] * jnp.eye(dim, dtype=a.dtype)


def _sample(ctype: str, wtype: str, prior: GMMPrior, params: GMMParams, key: Array, n: int, point_mass: bool):
    """``n`` draws from q(β): ``weights`` (n, K) (stick draws renormalised over the K components, as scikit-learn's
    ``weights_``), ``means`` (n, K, D) and ``covariances`` Λ_k⁻¹ (n, K, D, D), with Λ_k ~ Wishart(ν_k, W_k) and
    μ_k | Λ_k ~ N(m_k, (β_k Λ_k)⁻¹); for ``diag`` / ``spherical`` q(Λ_k) is the Wishart with W_k diagonal /
    isotropic, whose draws are full matrices. With ``point_mass``: n copies of the mode."""
    import numpyro.distributions as dist

    dim = _dim(params)
    if point_mass:
        w, means, cov = _point_estimates(ctype, wtype, params, point_mass=True)
        full = _full_matrices(cov, ctype, dim)
        tile = lambda a: jnp.broadcast_to(a, (n,) + a.shape)
        return {"weights": tile(w), "means": tile(means), "covariances": tile(full)}
    k_w, k_l, k_m = jax.random.split(key, 3)
    a, b = params.weight_a, params.weight_b
    if wtype == "dirichlet_distribution":
        w = jax.random.dirichlet(k_w, a, (n,))
    else:
        v = jax.random.beta(k_w, a, b, (n, a.shape[0]))
        w = v * jnp.exp(jax.vmap(_exclusive_cumsum)(jnp.log1p(-v)))
        w = w / jnp.sum(w, -1, keepdims=True)
    rate = _full_matrices(_scale_inverse(params, ctype), ctype, dim)
    precision = dist.Wishart(params.nu, rate_matrix=rate).sample(k_l, (n,))  # (n, K, D, D)
    chol = jnp.linalg.cholesky(params.beta[:, None, None] * precision)
    eps = jax.random.normal(k_m, (n, a.shape[0], dim, 1), precision.dtype)
    m = params.beta_mean / params.beta[:, None]
    means = m + jax.scipy.linalg.solve_triangular(jnp.swapaxes(chol, -1, -2), eps, lower=False)[..., 0]
    return {"weights": w, "means": means, "covariances": jnp.linalg.inv(precision)}


@functools.cache
def _functions(ctype: str, wtype: str) -> tuple:
    """The model's functions with the static choices bound; cached so that jit sees the same callables."""
    fns = (_expect, _mode, _local_step, _global_step, _expected_log_joint, _kl, _log_prior, _counts, _distance, _sample)
    return tuple(functools.partial(f, ctype, wtype) for f in fns)


def bayesian_gmm(
    prior: GMMPrior, covariance_type: str = "full", weight_concentration_prior_type: str = "dirichlet_process"
) -> ConjugateModel:
    """The Bayesian Gaussian mixture as a :class:`~vbayes.conjugate.model.ConjugateModel` (a pytree whose
    leaves are the prior's arrays, so one compiled pass serves every prior of the same shapes).

    VB → EM is one substitution: the local step reads q(β) only through ``GMMLocal``; ``expect`` fills it
    with expectations (E log π_k, E[Λ_k] = ν_k W_k, E log|Λ_k|, and the −D/(2β_k) from E over μ_k), ``mode``
    with the values at the mode (log π̂_k, Λ̂_k = (ν_k − D) W_k, log|Λ̂_k|, no β term). The M-step is the
    same ``global_step``; the mode of its output is the EM (flat prior, :func:`flat_prior`) or MAP-EM update.
    """
    if covariance_type not in COVARIANCE_TYPES:
        raise VBayesError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}")
    if weight_concentration_prior_type not in WEIGHT_PRIORS:
        raise VBayesError(
            f"weight_concentration_prior_type must be one of {WEIGHT_PRIORS}, got {weight_concentration_prior_type!r}"
        )
    fns = _functions(covariance_type, weight_concentration_prior_type)
    return ConjugateModel(*(jax.tree_util.Partial(f, prior) for f in fns))


# ----------------------------------------------------------------------------------------------------
# priors, initialisation, read-outs


def default_prior(
    x: np.ndarray,
    n_components: int,
    covariance_type: str = "full",
    *,
    weight_concentration_prior: float | None = None,
    mean_precision_prior: float | None = None,
    mean_prior=None,
    degrees_of_freedom_prior: float | None = None,
    covariance_prior=None,
    reg_covar: float = 1e-6,
) -> GMMPrior:
    """scikit-learn's defaults: α₀ = 1/K, β₀ = 1, m₀ = mean(x), ν₀ = D, W₀⁻¹ = cov(x) (ddof 1) | var(x) |
    mean var(x); any given value replaces its default (validated as scikit-learn does)."""
    x = np.asarray(x, dtype=np.float64)
    n, dim = x.shape
    alpha0 = 1.0 / n_components if weight_concentration_prior is None else float(weight_concentration_prior)
    beta0 = 1.0 if mean_precision_prior is None else float(mean_precision_prior)
    m0 = column_mean(x) if mean_prior is None else np.asarray(mean_prior, dtype=np.float64)
    nu0 = float(dim) if degrees_of_freedom_prior is None else float(degrees_of_freedom_prior)
    if covariance_prior is None:
        if n < 2:
            raise VBayesError("the default covariance_prior (the data's covariance) needs at least 2 points")
        d = x - column_mean(x)
        full = (d.T @ d) / (n - 1)  # np.cov(x.T), as one matrix product (a third of its time at N = 1e6)
        var = np.diag(full).copy()
        cov = {"full": full, "diag": var, "spherical": np.float64(var.mean())}[covariance_type]
    else:
        cov = np.asarray(covariance_prior, dtype=np.float64)
    return make_prior(dim, covariance_type, alpha0, beta0, m0, nu0, cov, reg_covar)


def column_mean(x: np.ndarray) -> np.ndarray:
    """Σ_n x_n / N of an (N, D) array as a matrix-vector product (``x.mean(0)`` sums row by row: 8× slower at
    N = 1e6, D = 2)."""
    return np.ones(x.shape[0]) @ x / x.shape[0]


def make_prior(
    dim: int,
    covariance_type: str,
    weight_concentration: float,
    mean_precision: float,
    mean,
    degrees_of_freedom: float,
    covariance,
    reg_covar: float = 0.0,
) -> GMMPrior:
    """A checked :class:`GMMPrior` (positive α₀, β₀; ν₀ > D − 1; W₀⁻¹ of the right shape, positive definite)."""
    if covariance_type not in COVARIANCE_TYPES:
        raise VBayesError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}")
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(covariance, dtype=np.float64)
    checks = [
        (weight_concentration > 0, f"weight_concentration_prior must be > 0, got {weight_concentration}"),
        (mean_precision > 0, f"mean_precision_prior must be > 0, got {mean_precision}"),
        (
            degrees_of_freedom > dim - 1,
            f"degrees_of_freedom_prior must be > {dim - 1} (n_features - 1), got {degrees_of_freedom}",
        ),
        (mean.shape == (dim,), f"mean_prior must have shape ({dim},), got {mean.shape}"),
        (reg_covar >= 0, f"reg_covar must be >= 0, got {reg_covar}"),
    ]
    want = {"full": (dim, dim), "diag": (dim,), "spherical": ()}[covariance_type]
    checks.append(
        (
            cov.shape == want,
            f"covariance_prior for covariance_type={covariance_type!r} must have shape {want}, got {cov.shape}",
        )
    )
    for ok, message in checks:
        if not ok:
            raise VBayesError(message)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
        raise VBayesError("mean_prior and covariance_prior must be finite")
    if covariance_type == "full":
        scale = np.sqrt(np.abs(np.diag(cov)))
        corr = cov / np.outer(scale, scale) if np.all(scale > 0) else -np.eye(dim)
        if not np.allclose(cov, cov.T) or np.linalg.eigvalsh(corr).min() <= 1e-10:  # scale-free rank test
            raise VBayesError(
                "covariance_prior must be symmetric positive definite (a constant or collinear "
                "feature makes the default, the data's covariance, singular; pass covariance_prior)"
            )
    elif np.any(cov <= 0):
        raise VBayesError(
            "covariance_prior must be positive (a constant feature makes the default, the data's "
            "variance, zero; pass covariance_prior)"
        )
    f = lambda v: jnp.asarray(v, dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    return GMMPrior(f(weight_concentration), f(mean_precision), f(mean), f(degrees_of_freedom), f(cov), f(reg_covar))


def flat_prior(dim: int, covariance_type: str = "full", reg_covar: float = 0.0) -> GMMPrior:
    """The improper prior whose posterior mode is the maximum-likelihood estimate (plain EM):
    Dirichlet(1), β₀ = 0, W₀⁻¹ = 0, ν₀ = D, so π̂ = N_k/N, m̂ = x̄_k, Λ̂ = (ν − D)W = S_k⁻¹ (+ reg_covar)."""
    shape = {"full": (dim, dim), "diag": (dim,), "spherical": ()}[covariance_type]
    f = lambda v: jnp.asarray(v, dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    return GMMPrior(f(1.0), f(0.0), f(np.zeros(dim)), f(float(dim)), f(np.zeros(shape)), f(reg_covar))


def init_params(model: ConjugateModel, x, resp, scale: float = 1.0) -> GMMParams:
    """q(β) from initial responsibilities ``resp`` (N, K) on ``x`` (N, D): λ = η₀ + scale · Σ_n r_n t(x_n)
    (scikit-learn's ``_initialize``; ``scale`` = N_total / N when ``x`` is a subsample)."""
    x, resp = np.asarray(x, dtype=np.float64), np.asarray(resp, dtype=np.float64)
    rows = 1 << max(0, x.shape[0] - 1).bit_length()  # zero rows up to a power of two: few compiled shapes
    xp, rp = np.zeros((rows, x.shape[1])), np.zeros((rows, resp.shape[1]))
    xp[: x.shape[0]], rp[: x.shape[0]] = x, resp
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    return _init_params(model, jnp.asarray(xp, dtype), jnp.asarray(rp, dtype), scale)


@jax.jit
def _init_params(model: ConjugateModel, x: Array, resp: Array, scale) -> GMMParams:
    return model.global_step(suff_stats(x, resp.T, config(model)[0]), scale)


def config(model: ConjugateModel) -> tuple[str, str]:
    """(covariance_type, weight_concentration_prior_type) of a model built by :func:`bayesian_gmm`."""
    return model.local_step.func.args[:2]


def point_estimates(model: ConjugateModel, params: GMMParams, point_mass: bool = False):
    """scikit-learn's read-outs: ``(weights, means, covariances)``. VB: weights = E[π] renormalised,
    covariances = W_k⁻¹/ν_k (scikit-learn's normalised Wishart scale); EM/MAP (``point_mass``): the mode."""
    return _point_estimates(*config(model), params, point_mass)


def _point_estimates(ctype: str, wtype: str, params: GMMParams, point_mass: bool = False):
    dim = _dim(params)
    winv = _scale_inverse(params, ctype)
    means = params.beta_mean / params.beta[:, None]
    if point_mass:
        w = jnp.exp(_mode_log_weights(params, wtype))
        denom = params.nu - dim
    else:
        w = mean_weights(params, wtype)
        denom = params.nu
    cov = winv / denom.reshape((-1,) + (1,) * (winv.ndim - 1))
    return w / jnp.sum(w), means, cov


def predictive_log_density(model: ConjugateModel, params: GMMParams, x: Array) -> Array:
    """log p(x* | X) under q(β), shape (B,): Σ_k E[π_k] St(x* | m_k, L_k, ν_k + 1 − D),
    L_k = (ν_k + 1 − D) β_k / (1 + β_k) W_k (Bishop 10.81–10.82). With stick-breaking weights the mass
    beyond the truncation, 1 − Σ_k E[π_k], goes to the prior predictive (q of unused sticks is the prior)."""
    ctype, wtype = config(model)
    prior: GMMPrior = model.kl.args[0]
    dim = _dim(params)
    log_w = jnp.log(mean_weights(params, wtype))
    unit, logdet_w = _unit_factor(_scale_inverse(params, ctype), ctype, dim)
    means = params.beta_mean / params.beta[:, None]
    dens = _student_t(x, means, unit, logdet_w, params.beta, params.nu, ctype) + log_w[:, None]
    if wtype == "dirichlet_process":
        rest = 1.0 - jnp.sum(jnp.exp(log_w))
        a0, b0, m0, nu0, w0inv, _ = prior
        w0inv_k = w0inv[None]
        u0, ld0 = _unit_factor(w0inv_k, ctype, dim)
        d0 = _student_t(x, m0[None], u0, ld0, b0[None], nu0[None], ctype)
        dens = jnp.concatenate([dens, jnp.log(jnp.maximum(rest, 0.0)) + d0], 0)
    return jax.nn.logsumexp(dens, axis=0)


def _student_t(x, means, unit, logdet_w, beta, nu, ctype):
    """log St(x | m_k, L_k, ν_k + 1 − D) for x (B, D), per component: (K, B)."""
    k, dim = means.shape
    dof = nu + 1.0 - dim
    c = dof * beta / (1.0 + beta)
    if ctype == "full":
        y = jnp.einsum("kde,ne->knd", unit, x) - jnp.einsum("kde,ke->kd", unit, means)[:, None, :]
    else:
        u = unit.reshape(k, -1)[:, None, :]
        y = u * (x[None] - means[:, None, :])
    maha = c[:, None] * jnp.sum(y * y, -1)
    logdet_l = dim * jnp.log(c) + logdet_w
    return (gammaln(0.5 * (dof + dim)) - gammaln(0.5 * dof) + 0.5 * logdet_l - 0.5 * dim * jnp.log(dof * math.pi))[
        :, None
    ] - 0.5 * (dof + dim)[:, None] * jnp.log1p(maha / dof[:, None])


def log_joint_terms(model: ConjugateModel, local: GMMLocal, x: Array) -> Array:
    """ρ_nk = E log p(x_n, z_n=k | β) (or its point-mass value), shape (B, K): scikit-learn's
    ``_estimate_weighted_log_prob``; logsumexp over k is its ``score_samples``, softmax its ``predict_proba``."""
    ctype, _ = config(model)
    k, dim = local.mean.shape
    if ctype == "full":
        y = jnp.einsum("kde,ne->nkd", local.factor, x) - _apply(local.factor, local.mean, ctype)[None]
    else:
        f = local.factor.reshape(k, -1)[None]
        y = f * (x[:, None, :] - local.mean[None])
    return local.const[None] - 0.5 * jnp.sum(y * y, -1)
