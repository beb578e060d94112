"""Priors and starting points for the Bayesian Gaussian mixture: scikit-learn's data-dependent defaults, a
checked prior, the flat prior of plain EM, and q(β) from initial responsibilities."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.conjugate.gmm.core import COVARIANCE_TYPES, GMMParams, GMMPrior
from vbayes.conjugate.gmm.model import config, suff_stats
from vbayes.conjugate.model import ConjugateModel
from vbayes.errors import VBayesError

Array = jax.Array


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
        with np.errstate(over="ignore", invalid="ignore"):
            d = x - column_mean(x)
            full = (d.T @ d) / (n - 1)  # np.cov(x.T), as one matrix product (a third of its time at N = 1e6)
        if not np.all(np.isfinite(full)):
            raise VBayesError(
                f"the data overflow float64: values as large as {np.abs(x).max():.3g} make their mean or covariance "
                "(the default mean_prior and covariance_prior) infinite; rescale the data"
            )
        var = np.diag(full).copy()
        _check_data_spread(full, var, covariance_type)
        cov = {"full": full, "diag": var, "spherical": np.float64(var.mean())}[covariance_type]
    else:
        cov = np.asarray(covariance_prior, dtype=np.float64)
    return make_prior(dim, covariance_type, alpha0, beta0, m0, nu0, cov, reg_covar)


def _check_data_spread(full: np.ndarray, var: np.ndarray, covariance_type: str) -> None:
    """The default W₀⁻¹ is the data's covariance ``full`` ``(D, D)``: blame the data, by column (1-based), when it
    is singular, and name both remedies (the CLI reads data; ``covariance_prior=`` is for the Python API)."""
    remedy = "drop or fix those columns, or (Python API) pass covariance_prior="
    constant = np.flatnonzero(var <= 0) + 1
    if constant.size and covariance_type != "spherical":
        raise VBayesError(
            f"column(s) {', '.join(map(str, constant[:10]))} of the data are constant, so the default covariance "
            f"prior (the data's covariance) is singular: {remedy}"
        )
    if covariance_type == "full" and full.shape[0] > 1:
        scale = np.sqrt(var)
        corr = full / np.outer(scale, scale) if np.all(scale > 0) else full
        if np.linalg.eigvalsh(corr).min() <= 1e-10:
            raise VBayesError(
                "the data's columns are collinear (one is a linear combination of others), so the default "
                "covariance prior (the data's covariance) is singular: drop a redundant column, use "
                "--covariance diag, or (Python API) pass covariance_prior="
            )
    if covariance_type == "spherical" and not var.mean() > 0:
        raise VBayesError("every column of the data is constant: there is nothing to cluster")


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
