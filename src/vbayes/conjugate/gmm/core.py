"""The Bayesian Gaussian mixture's types and the algebra its functions share: q(β)'s natural parameters, the
statistics, the local step's input, the precision geometry per covariance type, the mixture weights (Dirichlet
or truncated sticks) and scikit-learn's point estimates."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

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


def scale_inverse(params: GMMParams, ctype: str) -> Array:
    """W_k⁻¹ from the natural form: ψ_k − β_k m_k m_kᵀ (full), its diagonal (diag), or its mean diagonal."""
    m = params.beta_mean / params.beta[:, None]
    if ctype == "full":
        return params.psi - params.beta[:, None, None] * m[:, :, None] * m[:, None, :]
    if ctype == "diag":
        return params.psi - params.beta[:, None] * m * m
    return (params.psi - params.beta * jnp.sum(m * m, -1)) / m.shape[-1]


def unit_factor(winv: Array, ctype: str, dim: int) -> tuple[Array, Array]:
    """U⁻¹ with W⁻¹ = U Uᵀ (so W = U⁻ᵀU⁻¹), or W^{1/2} for diag/spherical; and log|W|. Shapes as ``winv``."""
    if ctype == "full":
        chol = jnp.linalg.cholesky(winv)
        eye = jnp.broadcast_to(jnp.eye(dim, dtype=winv.dtype), winv.shape)
        unit = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
        return unit, -2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
    return jax.lax.rsqrt(winv), -logdet(winv, ctype, dim)


def logdet(winv: Array, ctype: str, dim: int) -> Array:
    """log|W⁻¹| for one matrix in the type's storage."""
    if ctype == "full":
        return 2.0 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(winv), axis1=-2, axis2=-1)), -1)
    return jnp.sum(jnp.log(winv), -1) if ctype == "diag" else dim * jnp.log(winv)


def apply_factor(factor: Array, v: Array, ctype: str) -> Array:
    """factor_k v_k for v of shape (K, D)."""
    return jnp.einsum("kde,ke->kd", factor, v) if ctype == "full" else factor.reshape(factor.shape[0], -1) * v


def trace_prior(unit: Array, w0inv: Array, ctype: str, dim: int) -> Array:
    """tr(W₀⁻¹ W_k) per component."""
    if ctype == "full":
        return jnp.sum(jnp.einsum("kde,ef->kdf", unit, w0inv) * unit, axis=(-2, -1))
    if ctype == "diag":
        return jnp.sum(w0inv * unit * unit, -1)
    return dim * w0inv * unit * unit


def psi_d(a: Array, dim: int) -> Array:
    """Multivariate digamma Σ_{d<D} ψ(a − d/2)."""
    return jnp.sum(digamma(a[..., None] - 0.5 * jnp.arange(dim, dtype=a.dtype)), -1)


def dim_of(params: GMMParams) -> int:
    return params.beta_mean.shape[-1]


# ----------------------------------------------------------------------------------------------------
# mixture weights: Dirichlet or truncated stick-breaking


def exclusive_cumsum(v: Array) -> Array:
    """Σ_{j<k} v_j (exact with −∞ entries, unlike cumsum(v) − v)."""
    return jnp.concatenate([jnp.zeros(1, v.dtype), jnp.cumsum(v[:-1])])


def expected_log_weights(params: GMMParams, wtype: str) -> Array:
    """E_q[log π_k]: ψ(α_k) − ψ(Σα); sticks: E log v_k + Σ_{j<k} E log(1 − v_j) (Blei & Jordan 2006)."""
    a, b = params.weight_a, params.weight_b
    if wtype == "dirichlet_distribution":
        return digamma(a) - digamma(jnp.sum(a))
    dab = digamma(a + b)
    log_rest = digamma(b) - dab
    return digamma(a) - dab + exclusive_cumsum(log_rest)


def mode_log_weights(params: GMMParams, wtype: str) -> Array:
    """log π̂ at the mode of q(π): π̂ ∝ max(α − 1, 0); sticks: v̂_k = (a_k − 1)/(a_k + b_k − 2) in [0, 1]."""
    a = params.weight_a
    if wtype == "dirichlet_distribution":
        p = jnp.maximum(a - 1.0, 0.0)
        return jnp.log(p) - jnp.log(jnp.sum(p))
    v = mode_sticks(params)
    log_rest = jnp.log1p(-v)
    return jnp.log(v) + exclusive_cumsum(log_rest)


def mode_sticks(params: GMMParams) -> Array:
    """Mode of each Beta(a_k, b_k): (a_k − 1)/(a_k + b_k − 2), clipped to [0, 1] (0 when a_k = 1)."""
    a, b = params.weight_a, params.weight_b
    tiny = jnp.finfo(a.dtype).tiny
    return jnp.clip((a - 1.0) / jnp.maximum(a + b - 2.0, tiny), 0.0, 1.0)


def betaln(a: Array, b: Array) -> Array:
    """log B(a, b) = log Γ(a) + log Γ(b) − log Γ(a + b) (accurate to ~1e-16 · log Γ(a + b), ample here,
    and much cheaper to compile than ``jax.scipy.special.betaln``)."""
    return gammaln(a) + gammaln(b) - gammaln(a + b)


def kl_weights(params: GMMParams, alpha0: Array, wtype: str) -> Array:
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
    return jnp.sum(-jnp.log(alpha0) - betaln(a, b) + (a - 1.0) * (digamma(a) - dab) + (b - alpha0) * (digamma(b) - dab))


def log_prior_weights(params: GMMParams, alpha0: Array, wtype: str) -> Array:
    """log p(π̂) at the mode of q(π): Dirichlet(α₀), or Σ_k log Beta(v̂_k | 1, α₀) (the (α₀ − 1) log terms
    vanish when α₀ = 1, where the mode may sit on the boundary)."""
    if wtype == "dirichlet_distribution":
        log_w = mode_log_weights(params, wtype)
        k = log_w.shape[0]
        tail = jnp.where(alpha0 == 1.0, 0.0, (alpha0 - 1.0) * jnp.sum(log_w))
        return gammaln(k * alpha0) - k * gammaln(alpha0) + tail
    log1m_v = jnp.log1p(-mode_sticks(params))
    return jnp.sum(jnp.log(alpha0) + jnp.where(alpha0 == 1.0, 0.0, (alpha0 - 1.0) * log1m_v))


def mean_weights(params: GMMParams, wtype: str) -> Array:
    """E_q[π_k], shape (K,). For sticks they sum to 1 − E∏(1 − v_k) < 1 (the rest lies beyond the truncation)."""
    a, b = params.weight_a, params.weight_b
    if wtype == "dirichlet_distribution":
        return a / jnp.sum(a)
    ev = a / (a + b)
    log_rest = jnp.log1p(-ev)
    return ev * jnp.exp(exclusive_cumsum(log_rest))


def full_matrices(a: Array, ctype: str, dim: int) -> Array:
    """(K, D, D) matrices from a covariance type's storage: (K, D, D) | (K, D) diagonals | (K,) multiples of I."""
    if ctype == "full":
        return a
    diag = a if ctype == "diag" else a[:, None] * jnp.ones(dim, a.dtype)
    return diag[..., None] * jnp.eye(dim, dtype=a.dtype)


def point_estimates_of(ctype: str, wtype: str, params: GMMParams, point_mass: bool = False):
    dim = dim_of(params)
    winv = scale_inverse(params, ctype)
    means = params.beta_mean / params.beta[:, None]
    if point_mass:
        w = jnp.exp(mode_log_weights(params, wtype))
        denom = params.nu - dim
    else:
        w = mean_weights(params, wtype)
        denom = params.nu
    cov = winv / denom.reshape((-1,) + (1,) * (winv.ndim - 1))
    return w / jnp.sum(w), means, cov
