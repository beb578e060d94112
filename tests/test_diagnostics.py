"""PSIS k̂ and the draw distances: known answers on Gaussians, and bad input."""

import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import multivariate_normal, norm

from vbayes import VBayesError, from_logdensity
from vbayes.diagnostics import compare_draws
from vbayes.families import FullRankGaussian, MeanFieldGaussian
from vbayes.psis import importance_check, khat_threshold, psis, psis_rows

LOG_Z = -3.2


def _normal_target(sd):
    sd = jnp.asarray(sd)
    return from_logdensity(lambda p: LOG_Z + jnp.sum(norm.logpdf(p["x"], 0.0, sd)), {"x": jnp.zeros(sd.shape[0])})


def test_threshold_values():
    assert khat_threshold(100) == pytest.approx(0.5)
    assert khat_threshold(1000) == pytest.approx(2 / 3)
    assert khat_threshold(4000) == 0.7


def test_khat_of_exact_q_is_low_and_evidence_exact():
    t = _normal_target([1.0, 2.0])
    check = importance_check(t, MeanFieldGaussian(jnp.zeros(2), jnp.log(jnp.array([1.0, 2.0]))))
    assert check.khat < 0.5 and check.reliable
    assert check.log_evidence == pytest.approx(LOG_Z, abs=1e-9)
    assert check.elbo == pytest.approx(LOG_Z, abs=1e-9)
    assert check.ess == pytest.approx(4000, rel=1e-6)


def test_khat_of_a_slightly_wide_q_is_low():
    t = _normal_target([1.0, 1.0])
    check = importance_check(t, MeanFieldGaussian(jnp.zeros(2), jnp.log(jnp.array([1.2, 1.2]))), key=3)
    assert check.khat < 0.5
    assert abs(check.log_evidence - LOG_Z) < 0.05
    # ELBO = log Z − KL(q‖p): with σ_q = 1.2, KL = 2 · ½(1.44 − 1 − log 1.44) per dimension
    kl = 2 * 0.5 * (1.44 - 1 - np.log(1.44))
    assert abs(check.elbo - (LOG_Z - kl)) < 4 * check.elbo_se


def test_khat_of_a_far_too_narrow_q_is_high():
    """q = N(0, 0.3²) for p = N(0, 1) in 2-D: the ratios' tail has shape k = 1 − 0.09 ≈ 0.91 per margin."""
    t = _normal_target([1.0, 1.0])
    check = importance_check(t, MeanFieldGaussian(jnp.zeros(2), jnp.log(jnp.array([0.3, 0.3]))))
    assert check.khat > 0.7 and not check.reliable
    assert check.ess < 1000


def test_khat_sees_a_wrong_correlation():
    cov = jnp.array([[1.0, 0.95], [0.95, 1.0]])
    t = from_logdensity(lambda p: multivariate_normal.logpdf(p["x"], jnp.zeros(2), cov), {"x": jnp.zeros(2)})
    prec = jnp.linalg.inv(cov)
    mean_field_optimum = MeanFieldGaussian(jnp.zeros(2), -0.5 * jnp.log(jnp.diag(prec)))
    # the true tail shape is 1 − 1/20 = 0.95; single estimates of so heavy a tail scatter low, so take a median
    assert np.median([importance_check(t, mean_field_optimum, key=k).khat for k in range(5)]) > 0.7
    assert importance_check(t, FullRankGaussian.from_covariance(jnp.zeros(2), cov)).khat < 0.5


@pytest.mark.parametrize("n", [20, 100, 4000])
def test_psis_agrees_with_arviz(n):
    """vbayes smooths the tail itself (ArviZ's import would cost every first fit seconds): the same k̂ and the same
    smoothed weights as ArviZ's psislw, on light, heavy and tied ratios, without warnings."""
    import warnings

    import arviz as az

    rng = np.random.default_rng(n)
    cases = [
        rng.normal(size=n) * 2.0,
        rng.standard_t(1.2, size=n),
        np.log(rng.pareto(0.6, size=n) + 1e-3) * 3.0,
        rng.normal(size=n) * 50 + 1000,
        np.round(rng.normal(size=n), 1),
    ]
    for r in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            khat, lw = psis(r)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lw_az, khat_az = az.psislw(r.copy())
        assert khat == pytest.approx(float(khat_az), abs=1e-10)
        np.testing.assert_allclose(lw, lw_az, atol=1e-10)
    # many rows at once (PSIS-LOO: one row per observation), with a row of constant and one of non-finite ratios
    rows = np.stack([*cases, np.full(n, 3.0), np.where(np.arange(n) == 1, np.inf, cases[0])])
    khats, lws = psis_rows(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lw_az, khat_az = az.psislw(rows[:-2].copy())
    np.testing.assert_allclose(khats[:-2], khat_az, atol=1e-10)
    np.testing.assert_allclose(lws[:-2], lw_az, atol=1e-10)
    assert khats[-2] == 0.0 and khats[-1] == np.inf
    np.testing.assert_allclose(lws[-2], -np.log(n))
    assert psis(np.log(rng.pareto(0.3, size=4000)))[0] > 1.0  # a very heavy tail is seen as one


def test_psis_edge_cases():
    assert psis(np.full(100, 2.0))[0] == 0.0
    assert psis(np.array([0.0, np.nan, 1.0]))[0] == np.inf


def test_compare_draws_known_shifts():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(20_000, 3)) * np.array([1.0, 2.0, 0.5])
    same = compare_draws(rng.normal(size=(4000, 3)) * np.array([1.0, 2.0, 0.5]), ref)
    assert same.mean_error.max() < 0.06 and np.all(np.abs(same.sd_ratio - 1) < 0.05) and same.w1.max() < 0.06
    assert same.accurate()
    shifted = compare_draws(rng.normal(size=(4000, 3)) * np.array([1.0, 2.0, 0.5]) + np.array([0.5, 0, 0]), ref)
    assert shifted.mean_error[0] == pytest.approx(0.5, abs=0.05)
    assert shifted.w1[0] == pytest.approx(0.5, abs=0.05)  # W₁ of a pure shift is the shift
    assert shifted.worst == "z[0]"
    narrow = compare_draws(rng.normal(size=(4000, 3)) * np.array([0.6, 2.0, 0.5]), ref, names=["a", "b", "c"])
    assert narrow.sd_ratio[0] == pytest.approx(0.6, abs=0.03)
    assert not narrow.accurate() and narrow.worst == "a"


def test_compare_draws_sees_correlation_errors():
    rng = np.random.default_rng(1)
    cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    ref = rng.multivariate_normal(np.zeros(2), cov, size=10_000)
    independent = rng.normal(size=(4000, 2))  # right margins, wrong joint
    c = compare_draws(independent, ref)
    assert c.accurate()  # the margins cannot see it...
    assert c.corr_error == pytest.approx(0.9, abs=0.05)  # ...the joint measure does


@pytest.mark.filterwarnings("error")
def test_draws_of_a_diverged_q_are_inaccurate_without_a_numpy_warning():
    """Finite draws so large that their squares overflow (a flow that diverged on diamonds): inaccurate, and no
    RuntimeWarning leaks (it did, from the sds)."""
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(1000, 2))
    huge = rng.normal(size=(500, 2)) * 1e200
    c = compare_draws(huge, ref)
    assert not c.accurate() and c.sd_ratio.max() == np.inf


def test_compare_draws_bad_input():
    ref = np.random.default_rng(0).normal(size=(100, 2))
    x = ref.copy()
    x[[3, 9], 1] = np.nan
    with pytest.raises(VBayesError, match=r"2 non-finite values in 2 draws \(first rows \[3, 9\]\)"):
        compare_draws(x, ref)
    with pytest.raises(VBayesError, match="coordinates"):
        compare_draws(ref[:, :1], ref)
    with pytest.raises(VBayesError, match="shape"):
        compare_draws(np.zeros((1, 2)), ref)
