"""The built-in examples are the models they claim to be: densities checked against independent formulas."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from numpyro.infer.util import potential_energy  # noqa: E402
from scipy import stats  # noqa: E402
from scipy.special import expit  # noqa: E402

from vbayes.errors import VBayesError  # noqa: E402
from vbayes.examples import (  # noqa: E402
    EXAMPLES,
    breast_cancer_data,
    eight_schools_centered,
    eight_schools_centered_model,
    eight_schools_data,
    eight_schools_noncentered,
    eight_schools_noncentered_model,
    funnel,
    list_examples,
    load,
    logistic_regression,
    logistic_regression_model,
    synthetic_logistic_data,
)
from vbayes.examples.classic import banana  # noqa: E402
from vbayes.examples.conjugate_regression import (  # noqa: E402
    NOISE_SD,
    PRIOR_SD,
    diabetes_data,
    exact_log_evidence,
    exact_posterior,
    linear_regression,
    linear_regression_exact,
)
from vbayes.targets import from_numpyro  # noqa: E402


def _point(dim: int, seed: int, scale: float = 1.0) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).normal(0.0, scale, size=dim))


# ----------------------------------------------------------------------------------------------
# registry


def test_registry_builds_every_example_with_expected_dim():
    expected = {
        "eight_schools_noncentered": 10,
        "eight_schools_centered": 10,
        "logistic_regression": 31,
        "linear_regression": 11,
        "funnel": 10,
        "banana": 2,
    }
    assert list(EXAMPLES) == [*expected, "plasma_tomography"]  # its size is checked in test_tomography.py
    assert [e.name for e in list_examples()] == list(EXAMPLES)
    for name, dim in expected.items():
        target = load(name)
        assert target.dim == dim and target.name == name, name
        value = target.log_density(jnp.zeros(dim))
        assert value.shape == () and np.isfinite(float(value)), name
        assert EXAMPLES[name].description and "\n" not in EXAMPLES[name].description


def test_unknown_example_suggests_closest_and_lists_names():
    with pytest.raises(VBayesError, match="eight_schools_noncentered") as info:
        load("eight_school")
    assert "did you mean" in str(info.value)
    for name in EXAMPLES:
        assert name in str(info.value)
    with pytest.raises(VBayesError, match="known examples"):
        load("zzzz")


@pytest.mark.slow
def test_rebuilding_gives_the_same_static_part():
    """Same model, same data shapes: equal densities (so jit caches hit) and the data arrays as leaves."""
    for name in EXAMPLES:
        a, b = load(name), load(name)
        assert a.density == b.density and hash(a.density) == hash(b.density), name
    leaves = jax.tree_util.tree_leaves(linear_regression())
    assert any(np.shape(x) == (442, 11) for x in leaves)
    leaves = jax.tree_util.tree_leaves(eight_schools_noncentered())
    assert sum(np.shape(x) == (8,) for x in leaves) == 2


# ----------------------------------------------------------------------------------------------
# conjugate linear regression: exact posterior and evidence


def test_diabetes_data_standardised():
    X, y = diabetes_data()
    assert X.shape == (442, 11) and y.shape == (442,)
    np.testing.assert_allclose(X[:, 0], 1.0)
    np.testing.assert_allclose(X[:, 1:].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(X[:, 1:].std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose([y.mean(), y.std()], [0.0, 1.0], atol=1e-12)
    resid = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
    assert abs(resid.std() - NOISE_SD) < 0.02  # the known noise sd is the OLS residual sd


@pytest.mark.parametrize("prior_sd, noise_sd", [(PRIOR_SD, NOISE_SD), (0.3, 2.0), (10.0, 0.5)])
def test_exact_posterior_matches_textbook_formula(prior_sd, noise_sd):
    X, y = diabetes_data()
    mean, cov = exact_posterior(X, y, prior_sd, noise_sd)
    # Bishop (2006) eq. 3.53-3.54 with S0 = s^2 I, beta_noise = 1/sigma^2
    cov_ref = np.linalg.inv(np.eye(X.shape[1]) / prior_sd**2 + X.T @ X / noise_sd**2)
    mean_ref = cov_ref @ X.T @ y / noise_sd**2
    np.testing.assert_allclose(cov, cov_ref, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(cov, cov.T)
    # ridge-regression view of the mean: argmin |y - Xb|^2/sigma^2 + |b|^2/s^2
    lam = noise_sd**2 / prior_sd**2
    ridge = np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ y)
    np.testing.assert_allclose(mean, ridge, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("prior_sd, noise_sd", [(PRIOR_SD, NOISE_SD), (0.3, 2.0), (10.0, 0.5)])
def test_exact_log_evidence_matches_marginal_gaussian(prior_sd, noise_sd):
    X, y = diabetes_data()
    marginal_cov = noise_sd**2 * np.eye(len(y)) + prior_sd**2 * X @ X.T
    ref = stats.multivariate_normal(np.zeros(len(y)), marginal_cov).logpdf(y)
    assert exact_log_evidence(X, y, prior_sd, noise_sd) == pytest.approx(ref, rel=1e-10, abs=1e-8)


def test_exact_log_evidence_on_small_random_problem():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(7, 3)), rng.normal(size=7)
    ref = stats.multivariate_normal(np.zeros(7), 0.4**2 * np.eye(7) + 1.7**2 * X @ X.T).logpdf(y)
    assert exact_log_evidence(X, y, 1.7, 0.4) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bayes_identity_with_target_log_density(seed):
    """log p(y) = log p(y | b) + log p(b) − log p(b | y) at any b; the target gives the first two terms."""
    target = linear_regression()
    mean, cov, log_evidence = linear_regression_exact()
    b = mean + _point(11, seed, 0.3)
    log_joint = float(target.log_density(b))
    log_post = stats.multivariate_normal(mean, cov).logpdf(np.asarray(b))
    assert log_joint - log_post == pytest.approx(log_evidence, abs=1e-7)
    # and the log joint itself, from scipy
    X, y = diabetes_data()
    ref = stats.norm.logpdf(y, X @ np.asarray(b), NOISE_SD).sum() + stats.norm.logpdf(np.asarray(b), 0, PRIOR_SD).sum()
    assert log_joint == pytest.approx(ref, rel=1e-12)


def test_linear_regression_target_with_other_scales():
    target = linear_regression(prior_sd=2.0, noise_sd=1.5)
    X, y = diabetes_data()
    mean, cov = exact_posterior(X, y, 2.0, 1.5)
    b = np.asarray(_point(11, 9))
    diff = float(target.log_density(jnp.asarray(b))) - stats.multivariate_normal(mean, cov).logpdf(b)
    assert diff == pytest.approx(exact_log_evidence(X, y, 2.0, 1.5), abs=1e-7)
    with pytest.raises(VBayesError):
        linear_regression(noise_sd=0.0)


def test_exact_posterior_rejects_bad_shapes():
    with pytest.raises(VBayesError, match="shapes"):
        exact_posterior(np.ones((5, 2)), np.ones(4), 1.0, 1.0)


# ----------------------------------------------------------------------------------------------
# eight schools


@pytest.mark.parametrize(
    "build, model, latent",
    [
        (eight_schools_centered, eight_schools_centered_model, "theta"),
        (eight_schools_noncentered, eight_schools_noncentered_model, "theta_tilde"),
    ],
)
def test_eight_schools_log_density_is_numpyro_potential(build, model, latent):
    target = build()
    assert target.names == ("mu", "tau", latent)
    assert target.coordinate_names()[:3] == ["mu", "tau", f"{latent}[0]"]
    J, sigma, y = eight_schools_data()
    z = _point(10, 4)
    params = {"mu": z[0], "tau": z[1], latent: z[2:]}
    expected = -potential_energy(model, (J, sigma), {"y": y}, params)
    np.testing.assert_allclose(float(target.log_density(z)), float(expected), rtol=1e-12)


def test_eight_schools_log_density_by_hand():
    """Centered log density from scipy: priors, HalfCauchy with the log-tau Jacobian, likelihood."""
    J, sigma, y = eight_schools_data()
    mu, log_tau = 1.3, 0.7
    theta = np.random.default_rng(5).normal(mu, np.exp(log_tau), size=J)
    tau = np.exp(log_tau)
    ref = (
        stats.norm.logpdf(mu, 0, 5)
        + stats.halfcauchy.logpdf(tau, scale=5)
        + log_tau
        + stats.norm.logpdf(theta, mu, tau).sum()
        + stats.norm.logpdf(y, theta, sigma).sum()
    )
    z = jnp.concatenate([jnp.array([mu, log_tau]), jnp.asarray(theta)])
    assert float(eight_schools_centered().log_density(z)) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_centered_and_noncentered_agree_after_change_of_variables(seed):
    """theta = mu + tau·theta_tilde: log p_c(mu, log tau, theta) = log p_nc(mu, log tau, theta_tilde) − J log tau."""
    centered, noncentered = eight_schools_centered(), eight_schools_noncentered()
    J = 8
    z_nc = _point(10, seed)
    mu, log_tau, theta_tilde = z_nc[0], z_nc[1], z_nc[2:]
    theta = mu + jnp.exp(log_tau) * theta_tilde
    z_c = jnp.concatenate([z_nc[:2], theta])
    lhs = float(centered.log_density(z_c))
    rhs = float(noncentered.log_density(z_nc)) - J * float(log_tau)
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-10)

    constrained = noncentered.constrain(z_nc)
    np.testing.assert_allclose(constrained["theta"], theta, rtol=1e-12)
    np.testing.assert_allclose(constrained["tau"], np.exp(log_tau), rtol=1e-12)
    np.testing.assert_allclose(centered.constrain(z_c)["theta"], theta, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# logistic regression


def test_breast_cancer_data_standardised():
    X, y = breast_cancer_data()
    assert X.shape == (569, 30) and y.shape == (569,)
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(X.std(axis=0), 1.0, rtol=1e-12)
    assert set(np.unique(y)) == {0.0, 1.0}


@pytest.mark.parametrize("seed", [0, 1])
def test_logistic_regression_log_density_by_hand(seed):
    target = logistic_regression()
    assert target.names == ("alpha", "beta")
    X, y = breast_cancer_data()
    z = np.asarray(_point(31, seed, 0.5))
    alpha, beta = z[0], z[1:]
    eta = alpha + X @ beta
    log_lik = np.sum(y * eta - np.logaddexp(0.0, eta))
    # same likelihood written with probabilities, as a cross-check of the logits form
    p = expit(eta)
    np.testing.assert_allclose(log_lik, np.sum(stats.bernoulli.logpmf(y, p)), rtol=1e-10)
    ref = stats.norm.logpdf(alpha, 0, 5) + stats.norm.logpdf(beta, 0, 1).sum() + log_lik
    assert float(target.log_density(jnp.asarray(z))) == pytest.approx(ref, rel=1e-12)


def test_synthetic_logistic_data():
    X, y = synthetic_logistic_data(n=2000, d=5, seed=1)
    assert X.shape == (2000, 5) and y.shape == (2000,) and X.dtype == np.float64
    assert set(np.unique(y)) <= {0.0, 1.0}
    X2, y2 = synthetic_logistic_data(n=2000, d=5, seed=1)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(y, synthetic_logistic_data(n=2000, d=5, seed=2)[1])
    assert abs(X.mean()) < 0.05 and abs(X.std() - 1.0) < 0.05
    # the labels carry signal: a logistic fit recovers the coefficients' signs for the strongest ones
    from sklearn.linear_model import LogisticRegression

    beta_true = np.random.default_rng(1).normal(0.0, 0.5, size=5)
    fit = LogisticRegression(C=1e6, fit_intercept=False).fit(X, y).coef_[0]
    strong = np.abs(beta_true) > 0.2
    np.testing.assert_array_equal(np.sign(fit[strong]), np.sign(beta_true[strong]))
    assert np.max(np.abs(fit - beta_true)) < 0.2
    assert from_numpyro(logistic_regression_model, X, y=y).dim == 6  # the benchmark model accepts them


# ----------------------------------------------------------------------------------------------
# funnel and banana


@pytest.mark.parametrize("dim", [2, 10])
def test_funnel_log_density_is_normalised_closed_form(dim):
    target = funnel(dim)
    assert target.dim == dim and target.names == ("v", "x")
    for seed in range(3):
        z = np.asarray(_point(dim, seed, 2.0))
        v, x = z[0], z[1:]
        ref = stats.norm.logpdf(v, 0, 3) + stats.norm.logpdf(x, 0, np.exp(v / 2)).sum()
        assert float(target.log_density(jnp.asarray(z))) == pytest.approx(ref, rel=1e-12)
        np.testing.assert_array_equal(target.constrain(jnp.asarray(z))["x"], x)  # unconstrained = constrained


def test_funnel_two_dim_integrates_to_one():
    """∫∫ p(v, x) dx dv = 1, on a grid in (v, u = x e^{−v/2}) so the narrow neck is resolved."""
    target = funnel(2)
    v = np.linspace(-20, 20, 801)
    u = np.linspace(-10, 10, 801)
    V, U = np.meshgrid(v, u, indexing="ij")
    Z = jnp.stack([V.ravel(), (U * np.exp(V / 2)).ravel()], axis=1)
    logp = np.asarray(jax.vmap(target.log_density)(Z)).reshape(V.shape) + V / 2  # dx = e^{v/2} du
    mass = np.trapezoid(np.trapezoid(np.exp(logp), u, axis=1), v)
    assert mass == pytest.approx(1.0, abs=1e-6)


def test_funnel_rejects_bad_dim():
    with pytest.raises(VBayesError, match="dim"):
        funnel(1)


def test_banana_log_density_closed_form_and_normalised():
    target = banana()
    assert target.dim == 2 and target.names == ("x",)
    b = 0.03
    for seed in range(3):
        z = np.asarray(_point(2, seed, 5.0))
        ref = stats.norm.logpdf(z[0], 0, 10) + stats.norm.logpdf(z[1], b * (z[0] ** 2 - 100), 1)
        assert float(target.log_density(jnp.asarray(z))) == pytest.approx(ref, rel=1e-12)
    # integrate on (x1, r = x2 − b(x1² − 100)); the shear has unit Jacobian
    x1 = np.linspace(-80, 80, 1601)
    r = np.linspace(-10, 10, 401)
    X1, R = np.meshgrid(x1, r, indexing="ij")
    Z = jnp.stack([X1.ravel(), (R + b * (X1**2 - 100)).ravel()], axis=1)
    p = np.exp(np.asarray(jax.vmap(target.log_density)(Z))).reshape(X1.shape)
    assert np.trapezoid(np.trapezoid(p, r, axis=1), x1) == pytest.approx(1.0, abs=1e-6)
    # moments from the same grid: E[x2] = 0, Var(x2) = 1 + 2·10⁴ b²
    x2 = np.asarray(Z[:, 1]).reshape(X1.shape)
    m2 = np.trapezoid(np.trapezoid(p * x2**2, r, axis=1), x1)
    assert m2 == pytest.approx(1 + 2e4 * b**2, rel=1e-4)


def test_banana_other_twist_shares_static_part():
    a, c = banana(), banana(b=0.1)
    assert a.density == c.density
    z = jnp.array([3.0, -1.0])
    ref = stats.norm.logpdf(3.0, 0, 10) + stats.norm.logpdf(-1.0, 0.1 * (9 - 100), 1)
    assert float(c.log_density(z)) == pytest.approx(ref, rel=1e-12)
