"""Families: densities, entropies, moments and KL against scipy, Monte Carlo and each other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vbayes.families import (
    FullRankGaussian,
    LowRankGaussian,
    MeanFieldGaussian,
    PointMass,
    QuasiNewtonGaussian,
    kl,
    kl_to_standard_normal,
)

D = 4


def _random_family(kind: str, seed: int):
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    loc = jax.random.normal(k[0], (D,))
    if kind == "meanfield":
        return MeanFieldGaussian(loc, 0.5 * jax.random.normal(k[1], (D,)))
    if kind == "fullrank":
        return FullRankGaussian(loc, 0.5 * jax.random.normal(k[1], (D, D)))
    if kind == "quasinewton":  # Σ = diag(α) + βγβᵀ with an indefinite γ (as L-BFGS's is), Σ positive definite
        beta = 0.6 * jax.random.normal(k[1], (D, 3))
        gamma = jnp.diag(jnp.array([0.8, -0.3, 0.5])) + 0.1
        q = QuasiNewtonGaussian(loc, jnp.exp(0.3 * jax.random.normal(k[2], (D,))) + 0.5, beta, gamma)
        assert np.linalg.eigvalsh(np.asarray(gamma)).min() < 0 < np.linalg.eigvalsh(np.asarray(q.covariance())).min()
        return q
    return LowRankGaussian(loc, 0.5 * jax.random.normal(k[1], (D,)), 0.7 * jax.random.normal(k[2], (D, 2)))


KINDS = ["meanfield", "fullrank", "lowrank", "quasinewton"]


@pytest.mark.parametrize("kind", KINDS)
def test_log_prob_entropy_match_scipy(kind):
    q = _random_family(kind, 1)
    cov = np.asarray(q.covariance())
    ref = stats.multivariate_normal(np.asarray(q.loc), cov)
    z = np.random.default_rng(0).normal(size=(5, D))
    np.testing.assert_allclose(q.log_prob(jnp.asarray(z)), ref.logpdf(z), rtol=1e-10)
    np.testing.assert_allclose(q.log_prob(jnp.asarray(z[0])), ref.logpdf(z[0]), rtol=1e-10)
    np.testing.assert_allclose(q.entropy(), ref.entropy(), rtol=1e-10)
    np.testing.assert_allclose(q.marginal_sd(), np.sqrt(np.diag(cov)), rtol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_samples_have_the_claimed_moments(kind):
    q = _random_family(kind, 2)
    z = np.asarray(q.sample(jax.random.PRNGKey(3), 200_000))
    cov = np.asarray(q.covariance())
    sd = np.sqrt(np.diag(cov))
    # mean error in sd units ~ 1/sqrt(n) = 0.0022; covariance entries ~ sqrt(2/n)
    np.testing.assert_array_less(np.abs(z.mean(0) - q.loc) / sd, 0.012)
    np.testing.assert_array_less(np.abs(np.cov(z.T) - cov) / np.outer(sd, sd), 0.02)


@pytest.mark.parametrize("kq", KINDS)
@pytest.mark.parametrize("kp", KINDS)
def test_kl_closed_form_matches_monte_carlo(kq, kp):
    q, p = _random_family(kq, 10), _random_family(kp, 11)
    z = q.sample(jax.random.PRNGKey(0), 400_000)
    log_ratio = np.asarray(q.log_prob(z) - p.log_prob(z))
    mc, se = log_ratio.mean(), log_ratio.std() / np.sqrt(log_ratio.size)
    assert abs(float(kl(q, p)) - mc) < 4 * se + 1e-3
    assert float(kl(q, p)) > 0
    np.testing.assert_allclose(kl(q, q), 0.0, atol=1e-9)


def test_kl_dense_path_agrees_with_mean_field_path():
    q, p = _random_family("meanfield", 3), _random_family("meanfield", 4)
    q_full = FullRankGaussian.from_covariance(q.loc, q.covariance())
    np.testing.assert_allclose(kl(q, p), kl(q_full, p), rtol=1e-10)


def test_kl_nonnegative_on_many_random_pairs():
    for seed in range(20):
        q, p = _random_family(KINDS[seed % 3], seed), _random_family(KINDS[(seed // 3) % 3], 100 + seed)
        assert float(kl(q, p)) >= 0


def test_kl_to_standard_normal_both_parameterisations():
    loc = jnp.array([[0.3, -1.2, 2.0], [0.0, 0.5, -0.1]])
    log_scale = jnp.array([[-0.5, 0.2, 1.1], [0.0, -2.0, 0.3]])
    a = kl_to_standard_normal(loc, log_scale=log_scale)
    b = kl_to_standard_normal(loc, log_var=2 * log_scale)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    std = MeanFieldGaussian(jnp.zeros(3), jnp.zeros(3))
    np.testing.assert_allclose(a[0], kl(MeanFieldGaussian(loc[0], log_scale[0]), std), rtol=1e-12)
    np.testing.assert_allclose(kl_to_standard_normal(jnp.zeros(3), log_var=jnp.zeros(3)), 0.0)
    with pytest.raises(ValueError):
        kl_to_standard_normal(loc)


def test_point_mass_and_kl_refusal():
    q = PointMass.init(jnp.array([1.0, 2.0]))
    assert q.sample(jax.random.PRNGKey(0), 3).shape == (3, 2)
    np.testing.assert_allclose(q.sample(jax.random.PRNGKey(0), 3), [[1.0, 2.0]] * 3)
    with pytest.raises(ValueError):
        kl(q, MeanFieldGaussian.init(jnp.zeros(2)))


def test_lowrank_rank_is_checked():
    with pytest.raises(ValueError, match="rank"):
        LowRankGaussian.init(jnp.zeros(3), rank=4)


def test_full_rank_from_covariance_roundtrip():
    a = np.random.default_rng(1).normal(size=(D, D))
    cov = a @ a.T + np.eye(D)
    q = FullRankGaussian.from_covariance(jnp.ones(D), jnp.asarray(cov))
    np.testing.assert_allclose(q.covariance(), cov, rtol=1e-10)


def test_quasi_newton_draws_and_density_are_blackjaxs():
    """The same ε as BlackJAX's ``bfgs_sample`` for the same key, and the density it reports for them."""
    from blackjax.optimizers.lbfgs import bfgs_sample

    q = _random_family("quasinewton", 4)
    key = jax.random.PRNGKey(8)
    grad = jnp.zeros(D)  # BlackJAX centres at position + Σ·grad: zero gradient, centre = position
    theirs, their_logq = bfgs_sample(key, 7, q.loc, grad, q.alpha, q.beta, q.gamma)
    ours = q.sample(key, 7)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    np.testing.assert_allclose(q.log_prob(ours), their_logq, rtol=1e-10)


def _mixture():
    from vbayes.mixtures import Mixture

    parts = [_random_family("fullrank", s) for s in (20, 21, 22)]
    return Mixture.of(parts, jnp.log(jnp.array([0.2, 0.5, 0.3]))), parts, np.array([0.2, 0.5, 0.3])


def test_mixture_density_and_moments_are_the_weighted_components():
    q, parts, w = _mixture()
    z = np.random.default_rng(1).normal(size=(6, D))
    dens = sum(
        wk * stats.multivariate_normal(np.asarray(p.loc), np.asarray(p.covariance())).pdf(z)
        for wk, p in zip(w, parts, strict=True)
    )
    np.testing.assert_allclose(q.log_prob(jnp.asarray(z)), np.log(dens), rtol=1e-10)
    np.testing.assert_allclose(q.log_prob(jnp.asarray(z[0])), np.log(dens[0]), rtol=1e-10)
    mean = sum(wk * np.asarray(p.loc) for wk, p in zip(w, parts, strict=True))
    second = sum(wk * (np.asarray(p.covariance()) + np.outer(p.loc, p.loc)) for wk, p in zip(w, parts, strict=True))
    np.testing.assert_allclose(q.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(q.covariance(), second - np.outer(mean, mean), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(q.marginal_sd(), np.sqrt(np.diag(second - np.outer(mean, mean))), rtol=1e-10)
    with pytest.raises(NotImplementedError, match="no closed form"):
        q.entropy()


def test_mixture_draws_pick_components_by_weight():
    q, _, _ = _mixture()
    z = np.asarray(q.sample(jax.random.PRNGKey(5), 200_000))
    sd = np.asarray(q.marginal_sd())
    np.testing.assert_array_less(np.abs(z.mean(0) - q.mean) / sd, 0.012)
    np.testing.assert_allclose(z.std(0) / sd, 1.0, atol=0.01)


def test_a_dropped_component_with_nan_parameters_changes_nothing():
    from vbayes.mixtures import Mixture

    q, parts, _ = _mixture()
    broken = FullRankGaussian(jnp.full(D, jnp.nan), jnp.full((D, D), jnp.nan))
    dropped = Mixture.of(parts + [broken], jnp.log(jnp.array([0.2, 0.5, 0.3, 0.0])))
    z = jnp.asarray(np.random.default_rng(2).normal(size=(5, D)))
    np.testing.assert_allclose(dropped.log_prob(z), q.log_prob(z), rtol=1e-12)
    np.testing.assert_allclose(dropped.mean, q.mean, rtol=1e-12)
    np.testing.assert_allclose(dropped.marginal_sd(), q.marginal_sd(), rtol=1e-12)
    np.testing.assert_allclose(dropped.covariance(), q.covariance(), rtol=1e-12)
    assert np.all(np.isfinite(np.asarray(dropped.sample(jax.random.PRNGKey(0), 1000))))
