"""Classic test posteriors: eight schools (two parametrisations), logistic regression, Neal's funnel, a banana.

Every builder returns a fresh :class:`~vbayes.targets.Target`; data are embedded here or come with
scikit-learn (nothing is downloaded). Model / density functions live at module level, so two targets
built from the same function compare equal as static parts and share compiled code, and benchmarks can
run NumPyro's own inference on exactly the same models.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.stats import norm

from vbayes.errors import VBayesError
from vbayes.targets import Target, from_logdensity, from_numpyro


def _renamed(target: Target, name: str) -> Target:
    """The same target under the example's name (from_numpyro names it after the model function)."""
    return target.renamed(name)


# ----------------------------------------------------------------------------------------------
# eight schools (Rubin 1981; Gelman et al., Bayesian Data Analysis, sec. 5.5)

_EIGHT_SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
_EIGHT_SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)


def eight_schools_data() -> tuple[int, np.ndarray, np.ndarray]:
    """``(J, sigma, y)``: J = 8 schools, known standard errors ``sigma`` (8,), estimated effects ``y`` (8,)."""
    sigma = np.array(_EIGHT_SCHOOLS_SIGMA, dtype=np.float64)
    y = np.array(_EIGHT_SCHOOLS_Y, dtype=np.float64)
    return len(y), sigma, y


def eight_schools_centered_model(J: int, sigma, y=None) -> None:
    """mu ~ N(0, 5²), tau ~ HalfCauchy(5), theta_j ~ N(mu, tau²), y_j ~ N(theta_j, sigma_j²); theta: (J,)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", J):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def eight_schools_noncentered_model(J: int, sigma, y=None) -> None:
    """As the centered model with theta = mu + tau·theta_tilde, theta_tilde_j ~ N(0, 1) (deterministic "theta")."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", J):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def eight_schools_centered() -> Target:
    """Centered eight schools; z = (mu, log tau, theta[0..7]), dim 10. The hard (funnel-shaped) version."""
    J, sigma, y = eight_schools_data()
    return _renamed(from_numpyro(eight_schools_centered_model, J, sigma, y=y), "eight_schools_centered")


def eight_schools_noncentered() -> Target:
    """Non-centered eight schools; z = (mu, log tau, theta_tilde[0..7]), dim 10; ``constrain`` adds "theta"."""
    J, sigma, y = eight_schools_data()
    return _renamed(from_numpyro(eight_schools_noncentered_model, J, sigma, y=y), "eight_schools_noncentered")


# ----------------------------------------------------------------------------------------------
# logistic regression


def breast_cancer_data() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's Wisconsin breast cancer data: ``X`` (569, 30) standardised (mean 0, sd 1), ``y`` (569,) in {0, 1}.

    ``y`` is 1 for benign, 0 for malignant (scikit-learn's coding), stored as float64.
    """
    from sklearn.datasets import load_breast_cancer  # imported here: only building the target pays for it

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X.astype(np.float64), y.astype(np.float64)


def logistic_regression_model(X, y=None) -> None:
    """alpha ~ N(0, 5²), beta_k ~ N(0, 1) (k < d), y_n ~ Bernoulli(logit⁻¹(alpha + X_n·beta)); X: (N, d), y: (N,)."""
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 5.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=alpha + X @ beta), obs=y)


def logistic_regression() -> Target:
    """Bayesian logistic regression on the breast cancer data (N = 569, 30 standardised features).

    Priors: intercept alpha ~ N(0, 5²), coefficients beta_k ~ N(0, 1); likelihood
    y_n ~ Bernoulli(logit⁻¹(alpha + X_n·beta)). z = (alpha, beta[0..29]), dim 31. The classes are close to
    linearly separable, so the likelihood alone would push |beta| to infinity: the N(0, 1) prior matters.
    """
    X, y = breast_cancer_data()
    return _renamed(from_numpyro(logistic_regression_model, X, y=y), "logistic_regression")


def synthetic_logistic_data(n: int = 10_000, d: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Simulated logistic-regression data: ``X`` (n, d) iid N(0, 1), ``y`` (n,) in {0., 1.}.

    True coefficients beta_k ~ N(0, 0.5²) (no intercept), y_n ~ Bernoulli(logit⁻¹(X_n·beta)); all drawn
    from ``numpy.random.default_rng(seed)``, so the same arguments give the same data.
    """
    if n < 1 or d < 1:
        raise VBayesError(f"synthetic_logistic_data needs n >= 1 and d >= 1, got n={n}, d={d}")
    rng = np.random.default_rng(seed)
    beta = rng.normal(0.0, 0.5, size=d)
    X = rng.standard_normal((n, d))
    p = 1.0 / (1.0 + np.exp(-(X @ beta)))
    y = (rng.uniform(size=n) < p).astype(np.float64)
    return X, y


# ----------------------------------------------------------------------------------------------
# Neal's funnel and the banana: plain JAX log densities, normalised


def _funnel_log_density(params: dict) -> jnp.ndarray:
    """log N(v | 0, 3²) + Σ_i log N(x_i | 0, exp(v/2)²); v: (), x: (dim - 1,)."""
    v, x = params["v"], params["x"]
    return norm.logpdf(v, 0.0, 3.0) + jnp.sum(norm.logpdf(x, 0.0, jnp.exp(v / 2.0)))


def funnel(dim: int = 10) -> Target:
    """Neal's (2003) funnel in ``dim`` dimensions: v ~ N(0, 3²), x_i ~ N(0, e^v), i = 1..dim-1.

    Parameters are unconstrained, so z = (v, x[0..dim-2]) and the log density is the exact normalised
    log p(v, x). Its scale in x changes by a factor e^{±4.5} across v's central 99.7%.
    """
    if int(dim) != dim or dim < 2:
        raise VBayesError(f"funnel needs an integer dim >= 2 (v plus at least one x), got {dim!r}")
    return from_logdensity(_funnel_log_density, {"v": 0.0, "x": np.zeros(int(dim) - 1)}, name="funnel")


BANANA_B = 0.03
"""Default twist of :func:`banana` (Haario et al. 1999 use b = 0.03 with x1's sd 10)."""


def _banana_log_density(params: dict, data: dict) -> jnp.ndarray:
    """log N(x1 | 0, 10²) + log N(x2 | b (x1² − 100), 1); x: (2,), b: ()."""
    x1, x2 = params["x"][0], params["x"][1]
    return norm.logpdf(x1, 0.0, 10.0) + norm.logpdf(x2, data["b"] * (x1**2 - 100.0), 1.0)


def banana(b: float = BANANA_B) -> Target:
    """Haario, Saksman & Tamminen (1999) twisted Gaussian in 2-D: x1 ~ N(0, 10²), x2 | x1 ~ N(b(x1² − 100), 1).

    b = 0.03 by default; the density is exactly normalised, z = x (dim 2). E[x2] = 0, Var(x2) = 1 + 2·10⁴·b².
    ``b`` is a data leaf, so bananas with other twists reuse compiled code.
    """
    return from_logdensity(_banana_log_density, {"x": np.zeros(2)}, data={"b": float(b)}, name="banana")
