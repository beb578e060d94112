"""Conjugate Bayesian linear regression on scikit-learn's diabetes data, with its exact posterior and evidence.

Model: beta ~ N(0, s² I_d), y | beta ~ N(X beta, σ² I_N), with s = ``prior_sd`` and σ = ``noise_sd`` known.
Then beta | y ~ N(m, P⁻¹) with P = XᵀX/σ² + I/s², m = P⁻¹ Xᵀy/σ², and y ~ N(0, σ² I + s² X Xᵀ).
The closed forms are the ground truth that tests and benchmarks hold approximate methods to.
"""

from __future__ import annotations

from functools import partial

import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm
from scipy.linalg import cho_factor, cho_solve

from vbayes.conjugate.linreg import linear_regression_model, prior_params
from vbayes.conjugate.model import ConjugateForm
from vbayes.errors import VBayesError, is_positive, require
from vbayes.targets import Target, from_logdensity

PRIOR_SD = 1.0
"""Prior sd s of every coefficient (intercept included) of the built-in example."""

NOISE_SD = 0.7
"""Known noise sd σ of the built-in example: the OLS residual sd on the standardised response is ≈ 0.69–0.70."""


def diabetes_data() -> tuple[np.ndarray, np.ndarray]:
    """Design ``X`` (442, 11) = [1, 10 standardised features] and standardised response ``y`` (442,).

    Standardised means mean 0 and sd 1 (population sd, ddof = 0) per column; data from
    ``sklearn.datasets.load_diabetes`` (Efron et al. 2004), which ship with scikit-learn.
    """
    from sklearn.datasets import load_diabetes  # imported here: only building the target pays for it

    F, y = load_diabetes(return_X_y=True)
    F = (F - F.mean(axis=0)) / F.std(axis=0)
    y = (y - y.mean()) / y.std()
    X = np.concatenate([np.ones((F.shape[0], 1)), F], axis=1)
    return X.astype(np.float64), y.astype(np.float64)


def _log_joint(params: dict, data: dict) -> jnp.ndarray:
    """log N(y | X beta, σ² I) + log N(beta | 0, s² I), all constants included; beta: (d,), X: (N, d), y: (N,)."""
    beta = params["beta"]
    X, y = data["X"], data["y"]
    log_lik = jnp.sum(norm.logpdf(y, X @ beta, data["noise_sd"]))
    log_prior = jnp.sum(norm.logpdf(beta, 0.0, data["prior_sd"]))
    return log_lik + log_prior


def linear_regression(prior_sd: float = PRIOR_SD, noise_sd: float = NOISE_SD) -> Target:
    """Conjugate linear regression on the diabetes data: beta ~ N(0, s² I), y ~ N(X beta, σ² I); z = beta, dim 11.

    The log density is the exact log joint log p(y, beta) (normalising constants included), so
    ``log_density(z) − log N(z | exact posterior)`` equals :func:`exact_log_evidence` at every z. The target also
    carries the model in conjugate form (:func:`conjugate_form`), so CAVI and SVI fit it too.
    ``X``, ``y``, ``prior_sd`` and ``noise_sd`` are all data leaves.
    """
    _check_scales(prior_sd, noise_sd)
    X, y = diabetes_data()
    data = {"X": X, "y": y, "prior_sd": float(prior_sd), "noise_sd": float(noise_sd)}
    target = from_logdensity(_log_joint, {"beta": np.zeros(X.shape[1])}, data=data, name="linear_regression")
    return target.with_conjugate(partial(conjugate_form, X, y, float(prior_sd), float(noise_sd)))


def conjugate_form(X: np.ndarray, y: np.ndarray, prior_sd: float, noise_sd: float) -> ConjugateForm:
    """The same model for the conjugate algorithms (:mod:`vbayes.conjugate.linreg`): rows [x, y], q(β) from the
    prior."""
    model = linear_regression_model(np.eye(X.shape[1]) / prior_sd**2, noise_sd)
    return ConjugateForm(model, np.column_stack([X, y]), prior_params(model))


def _check_scales(prior_sd: float, noise_sd: float) -> None:
    require(
        [
            ("prior_sd", prior_sd, is_positive(prior_sd), "a positive, finite number"),
            ("noise_sd", noise_sd, is_positive(noise_sd), "a positive, finite number"),
        ],
        "linear_regression",
    )


def _posterior_factor(X: np.ndarray, y: np.ndarray, prior_sd: float, noise_sd: float):
    """Cholesky factor of P = XᵀX/σ² + I/s² (d, d) and the mean m = P⁻¹Xᵀy/σ² (d,)."""
    _check_scales(prior_sd, noise_sd)
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise VBayesError(f"X must be (N, d) and y (N,), got shapes {X.shape} and {y.shape}")
    d = X.shape[1]
    precision = X.T @ X / noise_sd**2 + np.eye(d) / prior_sd**2
    factor = cho_factor(precision, lower=True)
    mean = cho_solve(factor, X.T @ y / noise_sd**2)
    return factor, mean


def exact_posterior(X: np.ndarray, y: np.ndarray, prior_sd: float, noise_sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Posterior of beta: mean m = P⁻¹Xᵀy/σ² (d,) and covariance P⁻¹ (d, d), P = XᵀX/σ² + I/s²; float64."""
    factor, mean = _posterior_factor(X, y, prior_sd, noise_sd)
    cov = cho_solve(factor, np.eye(mean.shape[0]))
    return mean, (cov + cov.T) / 2.0


def exact_log_evidence(X: np.ndarray, y: np.ndarray, prior_sd: float, noise_sd: float) -> float:
    """log p(y) = log N(y | 0, σ² I + s² X Xᵀ) for X (N, d), y (N,), computed in O(N d²) without the N×N matrix.

    Determinant lemma: log det(σ² I + s² X Xᵀ) = N log σ² + d log s² + log det P; Woodbury:
    yᵀ(σ² I + s² X Xᵀ)⁻¹ y = yᵀy/σ² − mᵀ P m.
    """
    factor, mean = _posterior_factor(X, y, prior_sd, noise_sd)
    y = np.asarray(y, dtype=np.float64)
    n, d = y.shape[0], mean.shape[0]
    log_det_precision = 2.0 * np.sum(np.log(np.diag(factor[0])))
    log_det = n * np.log(noise_sd**2) + d * np.log(prior_sd**2) + log_det_precision
    b = np.asarray(X, dtype=np.float64).T @ y / noise_sd**2  # = P m
    quad = y @ y / noise_sd**2 - mean @ b
    return float(-0.5 * (n * np.log(2.0 * np.pi) + log_det + quad))


def linear_regression_exact(
    prior_sd: float = PRIOR_SD, noise_sd: float = NOISE_SD
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(mean (11,), cov (11, 11), log_evidence)`` of :func:`linear_regression` with the same scales."""
    X, y = diabetes_data()
    mean, cov = exact_posterior(X, y, prior_sd, noise_sd)
    return mean, cov, exact_log_evidence(X, y, prior_sd, noise_sd)
