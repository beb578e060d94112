"""Posterior predictive draws, pointwise log-likelihoods, LOO and the InferenceData export, against closed forms:
Bayesian linear regression, whose posterior, posterior predictive (Student-t with unknown noise) and exact
leave-one-out predictive densities are all known."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

import vbayes
from vbayes import VBayesError
from vbayes.fit import Fit, FitInfo
from vbayes.predictive import flat_log_likelihood, pointwise_log_likelihood
from vbayes.samples import Empirical

SIGMA, TAU = 1.0, 2.0


def _data(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three correlated covariates (the posterior's correlations are −0.2 to −0.4)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 1))
    X = base + rng.normal(size=(n, 3))
    y = X @ np.array([1.0, -0.5, 0.3]) + SIGMA * rng.normal(size=n)
    return X, y


def known_noise_model(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, TAU).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ beta, SIGMA), obs=y)


def _rows_target(X, y) -> vbayes.Target:
    log_lik = lambda p, rows: jnp.sum(stats_norm_logpdf(rows[1], rows[0] @ p["beta"], SIGMA))  # noqa: E731
    log_prior = lambda p: jnp.sum(stats_norm_logpdf(p["beta"], 0.0, TAU))  # noqa: E731
    return vbayes.from_loglik(log_lik, {"beta": jnp.zeros(3)}, data=(X, y), log_prior=log_prior, name="rows")


def stats_norm_logpdf(x, loc, scale):
    return jax.scipy.stats.norm.logpdf(x, loc, scale)


def _posterior(X, y) -> tuple[np.ndarray, np.ndarray]:
    """N(μ, Σ): Σ = (XᵀX/σ² + I/τ²)⁻¹, μ = Σ Xᵀy/σ²."""
    cov = np.linalg.inv(X.T @ X / SIGMA**2 + np.eye(X.shape[1]) / TAU**2)
    return cov @ X.T @ y / SIGMA**2, cov


def _exact_loo(X, y) -> np.ndarray:
    """log p(y_i | y₋ᵢ) = log N(y_i; x_iᵀμ₋ᵢ, σ² + x_iᵀΣ₋ᵢx_i), the posterior refitted without row i."""
    out = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        mean, cov = _posterior(X[keep], y[keep])
        out.append(stats.norm.logpdf(y[i], X[i] @ mean, np.sqrt(SIGMA**2 + X[i] @ cov @ X[i])))
    return np.array(out)


def _exact_fit(target: vbayes.Target, z: np.ndarray) -> Fit:
    """A fit whose q is exact posterior draws ``z`` ``(S, d)`` (one chain)."""
    info = FitInfo("exact", "completed", "", 0, 0, 0, 0.0)
    return Fit(target, Empirical(jnp.asarray(z)[None]), np.zeros(0), info)


@pytest.fixture(scope="module")
def regression():
    X, y = _data()
    mean, cov = _posterior(X, y)
    exact = np.random.default_rng(1).multivariate_normal(mean, cov, size=4000)
    model = vbayes.from_numpyro(known_noise_model, X, y=y)
    return X, y, model, exact


def test_pointwise_log_likelihoods_are_the_models_own(regression):
    """NumPyro's observed site and a from_loglik target's rows give log N(y_i; x_iᵀβ, σ²) at every draw; a bare log
    density has no observations and says so."""
    X, y, model, exact = regression
    z = exact[:300]
    expected = stats.norm.logpdf(y[None], z @ X.T, SIGMA)
    numpyro_ll = pointwise_log_likelihood(model, z)
    rows_ll = pointwise_log_likelihood(_rows_target(X, y), z)
    assert set(numpyro_ll) == {"y"} and set(rows_ll) == {"rows"}
    np.testing.assert_allclose(numpyro_ll["y"], expected, rtol=1e-10)
    np.testing.assert_allclose(rows_ll["rows"], expected, rtol=1e-10)
    cols = np.array([3, 10, 59])
    picked = flat_log_likelihood(_rows_target(X, y), z, columns=cols)
    np.testing.assert_allclose(picked, expected[:, cols], rtol=1e-10)
    bare = vbayes.from_logdensity(lambda p: -0.5 * jnp.sum(p["b"] ** 2), {"b": jnp.zeros(3)})
    with pytest.raises(VBayesError, match="per-observation log-likelihood"):
        pointwise_log_likelihood(bare, z)


def test_loo_of_exact_draws_is_the_exact_leave_one_out_density(regression):
    """PSIS-LOO from exact posterior draws reproduces log p(y_i | y₋ᵢ) observation by observation, with every k̂
    small; ArviZ's az.loo on the exported InferenceData agrees."""
    X, y, model, exact = regression
    truth = _exact_loo(X, y)
    for target in (model, _rows_target(X, y)):
        result = vbayes.loo(_exact_fit(target, exact))
        np.testing.assert_allclose(result.pointwise, truth, atol=0.02)
        assert result.elpd == pytest.approx(truth.sum(), abs=0.15)
        assert result.se == pytest.approx(np.sqrt(truth.size * np.var(truth)), rel=0.02)
        assert result.reliable and result.khat.max() < 0.5 and not result.corrected
        assert 2.0 < result.p_loo < 4.0  # three parameters, a weak prior
    import arviz as az

    idata = _exact_fit(model, exact).to_arviz()
    assert az.loo(idata).elpd_loo == pytest.approx(truth.sum(), abs=0.15)


@pytest.mark.slow
def test_vi_loo_needs_the_q_correction_when_q_is_too_narrow(regression):
    """Mean-field q of a correlated posterior is too narrow: its draws taken as posterior draws (what az.loo does
    with them) put elpd_loo measurably off; corrected by p̃/q it is back near the exact value. A full-rank q needs
    little correction. (A q much narrower still is past correcting: the correction's own k̂ then says so.)"""
    X, y, model, _ = regression
    truth = _exact_loo(X, y).sum()
    meanfield = vbayes.advi(model, "meanfield", key=0, progress=False)
    plain = vbayes.loo(meanfield, correct=False, num_draws=16_000)
    fixed = vbayes.loo(meanfield, num_draws=16_000)
    assert fixed.corrected and fixed.weights_khat < 0.7, fixed.summary()
    assert abs(fixed.elpd - truth) < 0.15, (fixed.elpd, truth)
    assert plain.elpd - truth < -0.25 and abs(plain.elpd - truth) > 2 * abs(fixed.elpd - truth), (plain, truth)
    fullrank = vbayes.advi(model, "fullrank", key=0, progress=False)
    assert vbayes.loo(fullrank).elpd == pytest.approx(truth, abs=0.15)
    narrow = dataclasses.replace(meanfield, q=meanfield.q._replace(log_scale=meanfield.q.log_scale - 1.0))
    too_far = vbayes.loo(narrow)
    assert not too_far.reliable and "q-correction's k̂" in too_far.summary(), too_far.summary()


def test_loo_reuses_the_importance_checks_draws_of_the_fits_own_q(regression, monkeypatch):
    """The draws the importance check kept are draws of q with their ratios log p̃ − log q; LOO from them (no new
    evaluation of the full log density) is the exact leave-one-out density, as LOO from fresh draws is. A fit whose q
    was replaced, or a LOO asked for other draws, draws anew."""
    X, y, model, _ = regression
    truth = _exact_loo(X, y).sum()
    fit = vbayes.advi(model, "fullrank", key=0, progress=False)
    kept = fit.info.importance
    assert kept.q is fit.q and kept.draws.shape == (4000, 3)
    expected = np.asarray(model.log_density_rows(jnp.asarray(kept.draws)) - fit.q.log_prob(jnp.asarray(kept.draws)))
    np.testing.assert_allclose(kept.log_ratios, expected, rtol=1e-9, atol=1e-9)
    fresh = vbayes.loo(fit, key=1)
    import vbayes.cross_validation as cv

    def no_new_draws(*args):
        raise AssertionError("the full log density was evaluated again")

    monkeypatch.setattr(cv, "log_ratios", no_new_draws)
    reused = vbayes.loo(fit)
    assert reused.num_draws == 4000 and reused.elpd == pytest.approx(truth, abs=0.15)
    assert fresh.elpd == pytest.approx(truth, abs=0.15) and reused.elpd != fresh.elpd
    replaced = dataclasses.replace(fit, q=fit.q._replace(loc=fit.q.loc + 0.0))
    for fit_, options in ((replaced, {}), (fit, {"num_draws": 1000}), (fit, {"key": 0})):
        with pytest.raises(AssertionError, match="evaluated again"):
            vbayes.loo(fit_, **options)


def test_subsampled_loo_estimates_the_full_one_with_its_error(regression):
    X, y, model, exact = regression
    fit = _exact_fit(model, exact)
    full = vbayes.loo(fit)
    errors, ses = [], []
    for seed in range(4):
        sub = vbayes.loo(fit, subsample=20, key=seed)
        assert sub.subsample == 20 and np.isfinite(sub.pointwise).sum() == 20 and sub.subsample_se > 0
        errors.append(sub.elpd - full.elpd)
        ses.append(sub.subsample_se)
        assert sub.se == pytest.approx(full.se, rel=0.25)
    assert np.all(np.abs(errors) < 3 * np.array(ses)), (errors, ses)
    with pytest.raises(VBayesError, match="subsample"):
        vbayes.loo(fit, subsample=60)


def nig_model(X, y=None, a0=3.0, b0=2.0):
    """y ~ N(Xβ, σ²), β | σ² ~ N(0, σ² I), σ² ~ InvGamma(a₀, b₀): conjugate, Student-t predictive."""
    sigma2 = numpyro.sample("sigma2", dist.InverseGamma(a0, b0))
    beta = numpyro.sample("beta", dist.MultivariateNormal(jnp.zeros(X.shape[1]), sigma2 * jnp.eye(X.shape[1])))
    numpyro.sample("y", dist.Normal(X @ beta, jnp.sqrt(sigma2)), obs=y)


def _nig_posterior(X, y, a0=3.0, b0=2.0):
    v = np.linalg.inv(np.eye(X.shape[1]) + X.T @ X)
    m = v @ X.T @ y
    return m, v, a0 + len(y) / 2, b0 + 0.5 * (y @ y - m @ np.linalg.solve(v, m))


def test_posterior_predictive_is_the_exact_student_t(regression):
    """ỹ at new covariates from exact posterior draws of (σ², β) follows the closed-form Student-t predictive
    (2a_N degrees of freedom, location x*ᵀm_N, scale² (b_N/a_N)(1 + x*ᵀV_N x*)); replicates at the fit's own data
    have the data's shape. (A full-rank ADVI fit's predictive has its moments: the slow run.)"""
    X, y, _, _ = regression
    X_new = np.array([[0.0, 0.0, 0.0], [1.5, 1.2, 2.0], [-2.0, 1.0, 0.5]])
    m, v, a, b = _nig_posterior(X, y)
    rng = np.random.default_rng(3)
    sigma2 = stats.invgamma(a, scale=b).rvs(4000, random_state=rng)
    beta = m + np.sqrt(sigma2)[:, None] * rng.multivariate_normal(np.zeros(3), v, 4000)
    target = vbayes.from_numpyro(nig_model, X, y=y)
    z = np.column_stack([np.log(sigma2), beta])  # the model's unconstrained order: log σ², then β
    exact = _exact_fit(target, z)
    np.testing.assert_allclose(exact.draws_by_chain()["sigma2"][0], sigma2, rtol=1e-10)
    draws = exact.predict(X_new, n=4000, key=0)["y"]
    assert draws.shape == (4000, 3)
    for j, x in enumerate(X_new):
        t = stats.t(2 * a, loc=x @ m, scale=np.sqrt(b / a * (1 + x @ v @ x)))
        assert stats.kstest(draws[:, j], t.cdf).pvalue > 1e-3
        assert draws[:, j].std() == pytest.approx(t.std(), rel=0.06)
    assert exact.predict(n=50)["y"].shape == (50, len(y))  # replicates of the observed site


@pytest.mark.slow
def test_a_full_rank_fits_predictive_has_the_student_t_moments(regression):
    X, y, _, _ = regression
    X_new = np.array([[0.0, 0.0, 0.0], [1.5, 1.2, 2.0], [-2.0, 1.0, 0.5]])
    m, v, a, b = _nig_posterior(X, y)
    advi = vbayes.advi(vbayes.from_numpyro(nig_model, X, y=y), "fullrank", key=0, progress=False)
    approx = advi.predict(X_new, n=4000, key=1)["y"]
    t_sd = np.sqrt(b / a * (1 + np.einsum("ij,jk,ik->i", X_new, v, X_new)) * 2 * a / (2 * a - 2))
    np.testing.assert_allclose(approx.mean(0), X_new @ m, atol=0.1 * t_sd.max())
    np.testing.assert_allclose(approx.std(0), t_sd, rtol=0.1)


def test_a_simulator_predicts_for_a_log_density_target(regression):
    X, y, _, exact = regression
    fit = _exact_fit(_rows_target(X, y), exact)
    x_new = jnp.array([1.0, 1.0, 1.0])
    sim = lambda p, key: {"y": x_new @ p["beta"] + SIGMA * jax.random.normal(key)}  # noqa: E731
    draws = fit.predict(n=4000, simulator=sim)["y"]
    mean, cov = _posterior(X, y)
    assert draws.mean() == pytest.approx(float(x_new @ mean), abs=0.08)
    assert draws.std() == pytest.approx(float(np.sqrt(SIGMA**2 + x_new @ cov @ x_new)), rel=0.05)
    with pytest.raises(VBayesError, match="simulator"):
        fit.predict(n=10)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*alias_mapping:DeprecationWarning", "ignore:The inplace keyword")
def test_arviz_runs_loo_compare_and_plot_ppc_on_the_export(regression):
    """The exported InferenceData has every group ArviZ's model criticism needs, from the same draws."""
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    X, y, model, _ = regression
    fit = vbayes.advi(model, "fullrank", key=0, progress=False)
    idata = fit.to_arviz(500)
    for group in ("posterior", "posterior_predictive", "log_likelihood", "observed_data", "sample_stats"):
        assert hasattr(idata, group), group
    assert idata.posterior["beta"].shape == (1, 500, 3) and idata.log_likelihood["y"].shape == (1, 500, len(y))
    assert idata.attrs["method"] == "advi-fullrank" and idata.attrs["verdict"] == fit.verdict.status
    np.testing.assert_array_equal(idata.observed_data["y"], y)
    # the same draws in every group: the log-likelihood is that of the posterior group's β
    beta = idata.posterior["beta"].values[0]
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], stats.norm.logpdf(y, beta @ X.T, SIGMA), rtol=1e-8)
    az.summary(idata)
    assert np.isfinite(az.loo(idata).elpd_loo)
    az.plot_ppc(idata, num_pp_samples=20)
    smaller = vbayes.advi(vbayes.from_numpyro(known_noise_model, X[:, :1], y=y), "fullrank", key=0, progress=False)
    table = az.compare({"three": idata, "one": smaller.to_arviz(500)})
    assert table.index[0] == "three"
    ours = az.compare({"three": vbayes.loo(fit).to_arviz(), "one": vbayes.loo(smaller).to_arviz()})
    assert ours.index[0] == "three" and ours.loc["three", "weight"] > 0.9


def regression_model(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


@pytest.fixture(scope="module")
def nested():
    """y depends on x₁ and x₂, not on x₃."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 3))
    y = 1.0 * X[:, 0] + 0.8 * X[:, 1] + rng.normal(size=200)
    return {
        name: vbayes.from_numpyro(regression_model, X[:, cols], y=y)
        for name, cols in {"x1": [0], "x1+x2": [0, 1], "x1+x2+x3": [0, 1, 2]}.items()
    }


@pytest.mark.slow
def test_model_comparison_selects_the_generating_model_and_calls_a_tie(nested):
    """Against a model without x₂ the generating model wins by a clear margin and takes the stacking weight;
    against one with an irrelevant x₃ added the two cannot be told apart, and the comparison says so."""
    from vbayes.model_comparison import compare_models

    clear = compare_models({"x1": nested["x1"], "x1+x2": nested["x1+x2"]}, "advi-fullrank")
    table = clear.table()
    assert clear.best == "x1+x2" and clear.verdict.startswith("x1+x2 predicts best"), clear.verdict
    assert table.loc["x1", "elpd_diff"] > 20 and table.loc["x1", "elpd_diff"] > 4 * table.loc["x1", "se_diff"]
    assert clear.weights["x1+x2"] > 0.95 and table.loc["x1+x2", "elpd_diff"] == 0.0
    assert np.isfinite(table[["log_z_is", "elbo"]].to_numpy()).all()  # the evidence estimates beside elpd
    tie = compare_models({"x1+x2": nested["x1+x2"], "x1+x2+x3": nested["x1+x2+x3"]}, "advi-fullrank")
    assert tie.verdict.startswith("tie"), tie.verdict
    assert abs(tie.table()["elpd_diff"].iloc[1]) < 4
    with pytest.raises(VBayesError, match="at least two"):
        compare_models({"x1": nested["x1"]}, "advi-fullrank")


def test_bad_arguments_get_a_clear_error(regression):
    X, y, model, exact = regression
    fit = _exact_fit(model, exact)
    with pytest.raises(VBayesError, match="could not be run with the arguments given for prediction"):
        fit.predict(np.ones((4, 5)), y=None)  # five covariates where the model has three
    with pytest.raises(VBayesError, match="n must be an integer"):
        fit.predict(n=0)
    with pytest.raises(VBayesError, match="num_draws must be None or an integer ≥ 100"):
        vbayes.loo(fit, num_draws=10)
    with pytest.raises(VBayesError, match="subsample must be None or an integer"):
        vbayes.loo(fit, subsample=0.5)
    point = vbayes.advi(model, "pointmass", progress=False)
    with pytest.raises(VBayesError, match="point estimate"):
        vbayes.loo(point)


def test_models_of_different_observations_are_refused_before_any_fit(regression, monkeypatch):
    """LOO compares models of the same observations: N counted from each target (a NumPyro model's observed
    elements, a from_loglik target's rows) must agree, or compare_models says so before fitting anything."""
    from vbayes import model_comparison
    from vbayes.predictive import n_observations

    X, y, model, _ = regression
    fewer = vbayes.from_numpyro(known_noise_model, X[:40], y=y[:40])
    assert n_observations(model) == n_observations(_rows_target(X, y)) == 60 and n_observations(fewer) == 40
    monkeypatch.setattr(model_comparison, "_fit", lambda *a: pytest.fail("a model was fitted"))
    with pytest.raises(VBayesError, match=r"different numbers of observations \('all': 60, 'fewer': 40\)"):
        model_comparison.compare_models({"all": model, "fewer": fewer}, "advi-fullrank")


def test_a_loo_where_the_model_fails_says_so(regression):
    """Where log p̃ is NaN at some of q's draws (here wherever β₀ is over its posterior mean) the q-correction is
    undefined: elpd is NaN, the LOO is unreliable and says why, not that q is too far from the posterior."""
    X, y, _, _ = regression
    clean = _rows_target(X, y)
    fit = vbayes.advi(clean, "fullrank", key=0, progress=False)
    cut = float(np.asarray(fit.q.loc)[0])

    def failing(p, rows):
        ll = jnp.sum(stats_norm_logpdf(rows[1], rows[0] @ p["beta"], SIGMA))
        return jnp.where(p["beta"][0] > cut, jnp.nan, ll)

    log_prior = lambda p: jnp.sum(stats_norm_logpdf(p["beta"], 0.0, TAU))  # noqa: E731
    target = vbayes.from_loglik(failing, {"beta": jnp.zeros(3)}, data=(X, y), log_prior=log_prior, name="failing")
    result = vbayes.loo(dataclasses.replace(fit, target=target), key=0)
    assert 1500 < result.nan_draws < 2500 and np.isnan(result.elpd) and not result.reliable
    assert "NaN at" in result.summary() and "too far" not in result.summary(), result.summary()
    assert vbayes.loo(fit, key=0).nan_draws == 0
