"""Bayesian linear regression with a known noise variance as a conjugate-exponential model.

Model, for rows (x_n, y_n), x_n ∈ R^d::

    β ~ N(m₀, P₀⁻¹),    y_n | x_n, β ~ N(x_nᵀβ, σ²)        (σ² known)

There are no local latent variables: the local step only sums the statistics Σ w x xᵀ, Σ w x y, Σ w y², Σ w,
and q(β) = N(m, P⁻¹) with P = P₀ + XᵀX/σ², P m = P₀m₀ + Xᵀy/σ² is the exact posterior, reached by one CAVI
update; the ELBO there equals the log evidence. EM / MAP-EM give the posterior mode (ridge regression). It is
the simplest model on the engine and the one whose answer is known in closed form, so that CAVI and SVI can
be compared with every other method on the same target (:func:`vbayes.examples.linear_regression`).

The data rows handed to the engine are ``[x_n, y_n]`` (width d + 1).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.conjugate.model import ConjugateModel
from vbayes.errors import VBayesError

Array = jax.Array
_LOG_2PI = math.log(2 * math.pi)


class LinRegPrior(NamedTuple):
    """β ~ N(m₀, P₀⁻¹): ``precision`` P₀ (d, d), ``shift`` P₀m₀ (d,); ``noise_var`` σ² ()."""

    precision: Array
    shift: Array
    noise_var: Array


class LinRegParams(NamedTuple):
    """q(β) = N(P⁻¹h, P⁻¹) in natural form: ``precision`` P (d, d), ``shift`` h (d,)."""

    precision: Array
    shift: Array


class LinRegStats(NamedTuple):
    """Σ w x xᵀ (d, d), Σ w x y (d,), Σ w y² (), Σ w ()."""

    xx: Array
    xy: Array
    yy: Array
    n: Array


class LinRegLocal(NamedTuple):
    """E_q[β] (d,) and E_q[ββᵀ] (d, d) (at the mode: m and m mᵀ)."""

    mean: Array
    second: Array


def _moments(params: LinRegParams) -> tuple[Array, Array]:
    """(m, P⁻¹)."""
    cov = jnp.linalg.inv(params.precision)
    cov = 0.5 * (cov + cov.T)
    return cov @ params.shift, cov


def _expect(prior: LinRegPrior, params: LinRegParams) -> LinRegLocal:
    m, cov = _moments(params)
    return LinRegLocal(m, cov + jnp.outer(m, m))


def _mode(prior: LinRegPrior, params: LinRegParams) -> LinRegLocal:
    m, _ = _moments(params)
    return LinRegLocal(m, jnp.outer(m, m))


def _expected_log_lik(prior: LinRegPrior, local: LinRegLocal, stats: LinRegStats) -> Array:
    """Σ w E_q log N(y | xᵀβ, σ²) = −½ Σw log 2πσ² − (Σwy² − 2 mᵀΣwxy + tr(E[ββᵀ] Σwxxᵀ)) / 2σ²."""
    quad = stats.yy - 2.0 * local.mean @ stats.xy + jnp.sum(local.second * stats.xx)
    return -0.5 * stats.n * (_LOG_2PI + jnp.log(prior.noise_var)) - 0.5 * quad / prior.noise_var


def _local_step(prior: LinRegPrior, local: LinRegLocal, rows: Array, w: Array):
    """The statistics of the rows [x, y] weighted by w, and their expected log-likelihood (no latents)."""
    x, y = rows[:, :-1], rows[:, -1]
    xw = x * w[:, None]
    stats = LinRegStats(xw.T @ x, xw.T @ y, jnp.sum(w * y * y), jnp.sum(w))
    return stats, _expected_log_lik(prior, local, stats)


def _global_step(prior: LinRegPrior, stats: LinRegStats, scale) -> LinRegParams:
    return LinRegParams(
        prior.precision + scale * stats.xx / prior.noise_var, prior.shift + scale * stats.xy / prior.noise_var
    )


def _kl(prior: LinRegPrior, params: LinRegParams) -> Array:
    """KL(N(m, P⁻¹) ‖ N(m₀, P₀⁻¹)) = ½[tr(P₀P⁻¹) + (m − m₀)ᵀP₀(m − m₀) − d + log|P| − log|P₀|]."""
    m, cov = _moments(params)
    m0 = jnp.linalg.solve(prior.precision, prior.shift)
    diff = m - m0
    logdet = lambda a: 2.0 * jnp.sum(jnp.log(jnp.diag(jnp.linalg.cholesky(a))))
    d = m.shape[0]
    trace = jnp.sum(prior.precision * cov)
    return 0.5 * (trace + diff @ prior.precision @ diff - d + logdet(params.precision) - logdet(prior.precision))


def _log_normal(x: Array, mean: Array, precision: Array) -> Array:
    """log N(x | mean, precision⁻¹) for rows x (..., d)."""
    chol = jnp.linalg.cholesky(precision)
    y = (x - mean) @ chol
    return -0.5 * jnp.sum(y * y, -1) + jnp.sum(jnp.log(jnp.diag(chol))) - 0.5 * mean.shape[-1] * _LOG_2PI


def _log_prior(prior: LinRegPrior, params: LinRegParams) -> Array:
    m, _ = _moments(params)
    return _log_normal(m, jnp.linalg.solve(prior.precision, prior.shift), prior.precision)


def _sample(prior: LinRegPrior, params: LinRegParams, key: Array, n: int, point_mass: bool) -> dict[str, Array]:
    """``{"beta": (n, d)}`` from q(β) (n copies of the mean for a point mass)."""
    m, cov = _moments(params)
    if point_mass:
        return {"beta": jnp.broadcast_to(m, (n,) + m.shape)}
    eps = jax.random.normal(key, (n,) + m.shape, m.dtype)
    return {"beta": m + eps @ jnp.linalg.cholesky(cov).T}


def _log_q(prior: LinRegPrior, params: LinRegParams, draws: dict[str, Array]) -> Array:
    m, _ = _moments(params)
    return _log_normal(draws["beta"], m, params.precision)


@functools.cache
def _functions() -> tuple:
    return (_expect, _mode, _local_step, _global_step, _expected_log_lik, _kl, _log_prior, None, None, _sample, _log_q)


def linear_regression_model(prior_precision, noise_sd: float, prior_mean=None) -> ConjugateModel:
    """The model for rows [x, y] with x ∈ R^d: β ~ N(``prior_mean`` (default 0), ``prior_precision``⁻¹) (a (d, d)
    matrix, a (d,) diagonal or a scalar times I), y ~ N(xᵀβ, ``noise_sd``²)."""
    p0 = np.asarray(prior_precision, dtype=np.float64)
    if p0.ndim < 2:
        raise VBayesError("prior_precision must be a (d, d) matrix; use np.eye(d) / prior_sd**2 for an isotropic one")
    d = p0.shape[0]
    if p0.shape != (d, d) or not np.all(np.isfinite(p0)) or np.linalg.eigvalsh(0.5 * (p0 + p0.T)).min() <= 0:
        raise VBayesError(f"prior_precision must be a symmetric positive definite (d, d) matrix, got shape {p0.shape}")
    if not (np.isfinite(noise_sd) and noise_sd > 0):
        raise VBayesError(f"noise_sd must be positive and finite, got {noise_sd!r}")
    m0 = np.zeros(d) if prior_mean is None else np.asarray(prior_mean, dtype=np.float64)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    prior = LinRegPrior(jnp.asarray(p0, dtype), jnp.asarray(p0 @ m0, dtype), jnp.asarray(noise_sd**2, dtype))
    fns = _functions()
    return ConjugateModel(*(None if f is None else jax.tree_util.Partial(f, prior) for f in fns), latent_free=True)


def prior_params(model: ConjugateModel) -> LinRegParams:
    """q(β) = the prior: the starting point of CAVI and SVI."""
    prior: LinRegPrior = model.kl.args[0]
    return LinRegParams(prior.precision, prior.shift)
