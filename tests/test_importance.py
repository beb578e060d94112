"""Importance sampling around a Gaussian fit (``advi-is``): the proposal's density is the stated mixture, weighted
draws have the weighted moments, a heavy-tailed posterior that every Gaussian misses gets its exact moments, a
funnel is flagged, LOO uses the weights, ``compare`` reuses the full-rank fit, and bad input gets a clear error."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import gammaln
from test_predictive import _data, _exact_loo, known_noise_model

import vbayes
from vbayes import VBayesError
from vbayes.checks import verify
from vbayes.compare import compare
from vbayes.examples import funnel
from vbayes.families import FullRankGaussian
from vbayes.infer.importance import _mixture_draws, importance_sampling
from vbayes.samples import Weighted

DOF = 5.0
SCALE = np.array([[1.0, 0.6, -0.3], [0.6, 2.0, 0.4], [-0.3, 0.4, 0.5]])
CENTRE = np.array([1.0, -2.0, 0.5])


def _student_t(dof: float = DOF) -> vbayes.Target:
    """A Student-t posterior with ``dof`` degrees of freedom in 3 dimensions: mean CENTRE, covariance
    ν/(ν − 2)·SCALE, tails that no Gaussian has."""
    prec = jnp.asarray(np.linalg.inv(SCALE))

    def log_p(p):
        x = p["z"] - CENTRE
        return -0.5 * (dof + 3) * jnp.log1p(x @ prec @ x / dof)

    return vbayes.from_logdensity(log_p, {"z": jnp.zeros(3)}, name="student_t")


def test_weighted_draws_have_the_weighted_moments_and_resample_by_weight():
    z = np.array([[0.0, 1.0], [1.0, -1.0], [2.0, 0.0], [3.0, 2.0]])
    w = np.array([0.1, 0.2, 0.3, 0.4])
    q = Weighted(jnp.asarray(z), jnp.log(jnp.asarray(w)))
    mean = w @ z
    cov = (z - mean).T @ ((z - mean) * w[:, None])
    np.testing.assert_allclose(q.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(q.covariance(), cov, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q.marginal_sd(), np.sqrt(np.diag(cov)), rtol=1e-6)
    assert float(q.ess) == pytest.approx(1 / np.sum(w**2), rel=1e-6)
    n = 40_000
    counts = np.bincount(np.asarray(q.sample(jax.random.PRNGKey(0), n))[:, 0].astype(int), minlength=4)
    np.testing.assert_array_less(np.abs(counts / n - w), 4 * np.sqrt(w * (1 - w) / n))
    with pytest.raises(NotImplementedError):
        q.log_prob(jnp.asarray(z))


def test_the_proposal_is_the_equal_mixture_of_the_widened_gaussian_and_the_student_t():
    """On a flat target (log p̃ = 0) the log ratios are −log m(z) and −log t(z): scipy's densities, and half of the
    draws from each component (the t's second half: its Mahalanobis radii follow d·F(d, ν))."""
    cov = SCALE
    q = FullRankGaussian.from_covariance(jnp.asarray(CENTRE), jnp.asarray(cov))
    flat = vbayes.from_logdensity(lambda p: 0.0 * jnp.sum(p["z"]), {"z": jnp.zeros(3)}, name="flat")
    z, r, r_t = (np.asarray(a, np.float64) for a in _mixture_draws(flat, q, jax.random.PRNGKey(1), 4000, 2.0, 3.0))
    gauss = stats.multivariate_normal(CENTRE, 4.0 * cov)
    t = stats.multivariate_t(CENTRE, cov, df=3.0)
    mixture = np.logaddexp(gauss.logpdf(z), t.logpdf(z)) - np.log(2)
    np.testing.assert_allclose(-r, mixture, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(-r_t, t.logpdf(z[4000:]), rtol=1e-4, atol=1e-4)
    maha = lambda x, c: np.einsum("ni,ij,nj->n", x - CENTRE, np.linalg.inv(c), x - CENTRE)  # noqa: E731
    assert stats.kstest(maha(z[:4000], 4.0 * cov), stats.chi2(3).cdf).pvalue > 1e-3
    assert stats.kstest(maha(z[4000:], cov) / 3, stats.f(3, 3.0).cdf).pvalue > 1e-3


def test_a_heavy_tailed_posterior_gets_its_exact_moments_where_the_gaussian_is_too_narrow():
    """The full-rank Gaussian fitted by KL(q‖p) to a Student-t (ν = 5) has sds well short of the t's; the weighted
    draws around it have the exact means and sds, and their importance-sampling log Z is the t's normalising
    constant (measured: the Gaussian's sd ratios 0.87–0.89, the weighted draws' 0.99–1.00, k̂ −0.68)."""
    target = _student_t()
    sd = np.sqrt(np.diag(SCALE) * DOF / (DOF - 2))
    gaussian = vbayes.advi(target, "fullrank", key=0, progress=False)
    assert np.max(np.asarray(gaussian.q.marginal_sd()) / sd) < 0.92
    t0 = time.perf_counter()
    fit = importance_sampling(target, gaussian)
    elapsed = time.perf_counter() - t0
    assert fit.trusted, fit.verdict.summary()
    # its record's wall time: the proposal's fit and its own draws, each counted once
    assert gaussian.info.wall_time < fit.info.wall_time <= gaussian.info.wall_time + elapsed
    assert fit.info.method == "advi-is" and fit.info.grad_evals == gaussian.info.grad_evals
    assert fit.verdict.check("importance").status == "pass" and fit.verdict.check("reweighting").status == "pass"
    np.testing.assert_allclose(np.asarray(fit.q.mean), CENTRE, atol=0.05 * sd.min())
    np.testing.assert_allclose(np.asarray(fit.q.marginal_sd()) / sd, 1.0, atol=0.05)
    log_z = gammaln(DOF / 2) + 1.5 * np.log(DOF * np.pi) + 0.5 * np.linalg.slogdet(SCALE)[1] - gammaln((DOF + 3) / 2)
    assert fit.info.importance.log_evidence == pytest.approx(log_z, abs=0.02)  # the t's normalising constant
    draws = fit.draws(4000, key=1)["z"]
    np.testing.assert_allclose(draws.std(0) / sd, 1.0, atol=0.08)
    assert fit.corrected_draws(100, key=1)["z"].shape == (100, 3)
    posterior = fit.to_arviz(4000, key=2).posterior["z"].values.reshape(-1, 3)
    np.testing.assert_allclose(posterior.mean(0), CENTRE, atol=0.08 * sd.min())
    again = verify(fit, "default")  # the generic checks read draws of a density: they leave weighted draws alone
    assert again.verdict.check("importance").status == "skip" and again.verdict.status == "trusted"


def test_two_far_modes_are_both_weighted_right_or_flagged():
    """Two unit Gaussians 12 sds apart: the full-rank fit sits at one mode or between them, and importance sampling
    around it either reaches both (trusted, with the mixture's exact moments) or says it does not; never trusted
    and wrong (measured: seed 0, full rank at one mode and trusted by its own checks, importance sampling flagged
    by k̂ 0.96; seed 1, full rank between the modes, importance sampling trusted with x's sd 6.08, exactly √37)."""

    def log_p(p):
        z = p["z"]
        return jnp.logaddexp(
            -0.5 * jnp.sum((z - jnp.array([6.0, 0.0])) ** 2), -0.5 * jnp.sum((z + jnp.array([6.0, 0.0])) ** 2)
        )

    target = vbayes.from_logdensity(log_p, {"z": jnp.array([0.5, 0.0])}, name="two_modes")
    trusted = 0
    for seed in (0, 1, 2):
        fit = importance_sampling(target, vbayes.advi(target, "fullrank", key=seed, progress=False, checks="none"))
        if fit.trusted:
            trusted += 1
            np.testing.assert_allclose(np.asarray(fit.q.mean), 0.0, atol=0.15)
            np.testing.assert_allclose(np.asarray(fit.q.marginal_sd()), [np.sqrt(37.0), 1.0], rtol=0.03)
        else:
            assert fit.verdict.check("importance").status == "flag", fit.verdict.summary()
    assert trusted >= 1


def test_a_funnel_is_flagged():
    """Neal's funnel in 10 dimensions: no Gaussian-centred proposal reaches its neck; k̂ says so."""
    fit = vbayes.importance_sampling(funnel(10), key=0)
    assert not fit.trusted
    assert fit.verdict.check("importance").status == "flag", fit.verdict.summary()


def test_loo_of_importance_sampling_uses_its_weights():
    """elpd_loo from the weighted draws is the exact leave-one-out density (regression with known noise); the
    same draws without their weights (draws of the wide mixture, not of the posterior) are far off. Draws of weight
    0 (where log p̃ was NaN) are left out, not allowed to spoil every observation's k̂."""
    X, y = _data()
    target = vbayes.from_numpyro(known_noise_model, X, y=y)
    truth = _exact_loo(X, y).sum()
    fit = vbayes.importance_sampling(target, key=0)
    result = vbayes.loo(fit)
    assert result.corrected and result.elpd == pytest.approx(truth, abs=0.3) and result.reliable
    q = fit.q
    spoiled = Weighted(q.draws.at[:10].set(jnp.nan), q.log_weights.at[:10].set(-jnp.inf))
    again = vbayes.loo(vbayes.Fit(target, spoiled, fit.trace, fit.info))
    assert again.elpd == pytest.approx(truth, abs=0.3) and again.reliable
    unweighted = vbayes.Fit(target, vbayes.samples.Empirical(fit.q.draws[None]), fit.trace, fit.info)
    assert vbayes.loo(unweighted).elpd < truth - 2.0


def test_compare_reuses_the_full_rank_fit_and_recommends_importance_sampling_where_it_alone_passes():
    """A Student-t with ν = 3.5: the full-rank Gaussian's sds are ~0.75 of the truth (flagged), the weighted draws
    around it accurate (sd ratios 0.90–0.99 against 20,000 exact draws), at the Gaussian's gradient cost."""
    target = _student_t(3.5)
    exact = stats.multivariate_t(CENTRE, SCALE, df=3.5).rvs(20_000, random_state=np.random.default_rng(0))
    c = compare(target, methods=("advi-fullrank", "advi-is"), reference=exact, restarts=False)
    by = {r.method: r for r in c.results}
    assert by["advi-is"].grad_evals == by["advi-fullrank"].grad_evals
    assert not by["advi-fullrank"].trusted and not by["advi-fullrank"].accuracy.accurate()
    assert by["advi-is"].trusted and by["advi-is"].accuracy.accurate()
    assert c.recommended == "advi-is", c.reason


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"widen": 0.5}, "widen"),
        ({"dof": -1.0}, "dof"),
        ({"num_draws": 100}, "num_draws"),
        ({"num_draws": 4000.5}, "num_draws"),
    ],
)
def test_bad_options_get_a_clear_error(kwargs, needle):
    with pytest.raises(VBayesError, match=needle):
        importance_sampling(_student_t(), **kwargs)


def test_a_proposal_must_be_a_gaussian_fit_of_the_same_target():
    target = _student_t()
    other = vbayes.advi(funnel(3), "fullrank", progress=False, checks="none")
    with pytest.raises(VBayesError, match="another target"):
        importance_sampling(target, other)
    draws = vbayes.Fit(target, vbayes.samples.Empirical(jnp.zeros((1, 10, 3))), np.zeros(0), other.info)
    with pytest.raises(VBayesError, match="Empirical"):
        importance_sampling(target, draws)
    gaussian = vbayes.advi(target, "fullrank", progress=False, checks="none")
    with pytest.raises(VBayesError, match="max_steps"):
        importance_sampling(target, gaussian, max_steps=10)
