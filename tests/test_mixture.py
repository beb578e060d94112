"""``VariationalGaussianMixture``: the scikit-learn contract, the posterior predictive density, SVI /
partial_fit / streaming entry points, and clear errors for bad input."""

import pickle
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import trapezoid

from vbayes import conjugate as cj
from vbayes.conjugate.engine import moves
from vbayes.conjugate.engine.moves import delete_merge_sweep
from vbayes.conjugate.engine.posterior import conjugate_fit
from vbayes.conjugate.model import SVIState
from vbayes.data import InMemory
from vbayes.errors import VBayesError
from vbayes.estimators.mixture import VariationalGaussianMixture

K = 4
CENTERS = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 1.0], [0.0, 7.0, -1.0], [5.0, 6.0, 4.0]])


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    z = rng.integers(K, size=1000)
    return CENTERS[z] + rng.normal(size=(1000, 3)) * np.array([1.0, 0.7, 1.3]) + 100.0


@pytest.mark.slow
def test_sklearn_estimator_checks():
    """scikit-learn's own battery (41 checks; only the array-API check, which needs SCIPY_ARRAY_API, skips)."""
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(VariationalGaussianMixture(), on_fail=None)
    failed = [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"]
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert not failed, failed
    assert skipped <= {"check_array_api_input"}, skipped


@pytest.mark.parametrize("method", ["cavi", "svi", "em", "map"])
def test_fit_predict_api(blobs, method):
    est = VariationalGaussianMixture(K, method=method, random_state=0)
    labels = est.fit_predict(blobs)
    assert est.converged_ and est.n_iter_ >= 1
    np.testing.assert_array_equal(labels, est.predict(blobs))
    proba = est.predict_proba(blobs)
    assert proba.shape == (1000, K)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    assert est.weights_.shape == (K,) and est.means_.shape == (K, 3) and est.covariances_.shape == (K, 3, 3)
    np.testing.assert_allclose(est.weights_.sum(), 1.0)
    # the four well-separated blobs are found (means near the true centres, up to order)
    dist = np.linalg.norm(est.means_[:, None, :] - (CENTERS + 100.0)[None], axis=-1)
    assert np.all(dist.min(0) < 0.3), dist
    assert est.score(blobs) == pytest.approx(est.score_samples(blobs).mean())
    assert len(est.lower_bounds_) >= 1 and np.isfinite(est.lower_bound_)
    x, z = est.sample(500)
    assert x.shape == (500, 3) and z.shape == (500,)


def test_lower_bound_is_the_full_elbo_per_point(blobs):
    est = VariationalGaussianMixture(K, random_state=0).fit(blobs)
    assert est.lower_bound_ == pytest.approx(est.elbo_ / blobs.shape[0], rel=1e-14)
    assert est.lower_bound_ == est.lower_bounds_[-1]
    assert np.all(np.diff(est.lower_bounds_) > -1e-12)
    # the ELBO bounds the log evidence, which is below the plug-in log-likelihood of the best fit
    em = VariationalGaussianMixture(K, method="em", random_state=0).fit(blobs)
    assert est.lower_bound_ < em.lower_bound_


@pytest.mark.slow
def test_predictive_density_integrates_to_one():
    """1-D: ∫ p(x* | X) dx* = 1 for both weight priors (stick-breaking: the mass beyond the truncation
    goes to the prior predictive), and log p(x* | X) ≥ scikit-learn's score_samples (Jensen)."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-3, 1, 150), rng.normal(4, 0.5, 100)])[:, None]
    for wt in ["dirichlet_process", "dirichlet_distribution"]:
        est = VariationalGaussianMixture(3, weight_concentration_prior_type=wt, random_state=0).fit(x)
        # t = tan u maps (−π/2, π/2) onto the line; the Student-t (and Cauchy-like prior) tails stay smooth in u
        u = np.linspace(-np.pi / 2, np.pi / 2, 400_001)[1:-1]
        t = np.tan(u)
        total = trapezoid(np.exp(est.predictive_log_density(t[:, None])) / np.cos(u) ** 2, u)
        assert total == pytest.approx(1.0, abs=1e-6)
        grid = np.linspace(-8, 8, 101)[:, None]
        assert np.all(est.predictive_log_density(grid) >= est.score_samples(grid) - 1e-12)
        np.testing.assert_allclose(est.score_samples(grid, predictive=True), est.predictive_log_density(grid))


@pytest.mark.slow
def test_predictive_density_is_the_average_of_mixture_densities():
    """2-D, Monte Carlo: p(x* | X) = E_q[Σ_k π_k N(x* | μ_k, Λ_k⁻¹)] with draws from q (scipy)."""
    from scipy.stats import dirichlet, multivariate_normal, wishart

    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0, 1, (30, 2)), rng.normal(3, 0.7, (20, 2))])
    est = VariationalGaussianMixture(2, weight_concentration_prior_type="dirichlet_distribution", random_state=0).fit(x)
    points = np.array([[0.0, 0.0], [3.0, 3.0], [1.5, 1.0]])
    draws = 2000
    dens = np.zeros((draws, 3))
    pis = dirichlet.rvs(est.weight_concentration_, size=draws, random_state=rng)
    for k in range(2):
        scale = np.linalg.inv(est.covariances_[k] * est.degrees_of_freedom_[k])
        lams = wishart.rvs(df=est.degrees_of_freedom_[k], scale=scale, size=draws, random_state=rng)
        for s in range(draws):
            cov = np.linalg.inv(lams[s])
            mu = rng.multivariate_normal(est.means_[k], cov / est.mean_precision_[k])
            dens[s] += pis[s, k] * multivariate_normal.pdf(points, mu, cov)
    mc = dens.mean(0)
    se = dens.std(0) / np.sqrt(draws)
    np.testing.assert_array_less(np.abs(np.exp(est.predictive_log_density(points)) - mc), 4 * se)


def test_partial_fit_learns_from_a_stream_of_batches(blobs):
    est = VariationalGaussianMixture(K, random_state=0, total_samples=len(blobs))
    rng = np.random.default_rng(3)
    for _ in range(60):
        est.partial_fit(blobs[rng.choice(len(blobs), 200, replace=False)])
    full = VariationalGaussianMixture(K, random_state=0).fit(blobs)
    assert est.n_iter_ == 60 and len(est.lower_bounds_) == 60
    assert est.score(blobs) > full.score(blobs) - 0.05
    with pytest.raises(VBayesError, match="X has 2 features, but VariationalGaussianMixture is expecting 3"):
        est.partial_fit(blobs[:50, :2])
    # partial_fit after fit continues from the fitted q(β)
    full.partial_fit(blobs[:200])
    assert full.score(blobs) > est.score(blobs) - 0.05


def test_fit_stream_matches_fit(blobs, tmp_path):
    path = tmp_path / "blobs.npy"
    np.save(path, blobs)
    kw = dict(weight_concentration_prior_type="dirichlet_distribution", random_state=0, tol=1e-9)
    ref = VariationalGaussianMixture(K, **kw).fit(blobs)  # (sticks would favour one order of the components)
    for source in [str(path), np.load(path, mmap_mode="r"), lambda: (blobs[i : i + 333] for i in range(0, 1000, 333))]:
        est = VariationalGaussianMixture(K, **kw).fit_stream(source)
        assert est.converged_ and est.n_features_in_ == 3
        assert est.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-9)
        order = np.argsort(est.means_[:, 0] + 10 * est.means_[:, 1])
        ref_order = np.argsort(ref.means_[:, 0] + 10 * ref.means_[:, 1])
        np.testing.assert_allclose(est.means_[order], ref.means_[ref_order], rtol=1e-5)
        np.testing.assert_allclose(est.mean_prior_, ref.mean_prior_, rtol=1e-12)
        np.testing.assert_allclose(est.covariance_prior_, ref.covariance_prior_, rtol=1e-10)


def test_x64_is_scoped(blobs):
    """The estimator computes in float64 without turning on jax_enable_x64 for the caller."""
    with jax.enable_x64(False):
        est = VariationalGaussianMixture(K, random_state=0).fit(blobs.astype(np.float32))
        assert not jax.config.jax_enable_x64
        assert jax.numpy.ones(1).dtype == np.float32
    assert est.means_.dtype == np.float64


def test_pickle_round_trip(blobs):
    est = VariationalGaussianMixture(K, random_state=0).fit(blobs)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(again.predict_proba(blobs), est.predict_proba(blobs))


def test_bad_input_errors(blobs):
    est = VariationalGaussianMixture(K)
    bad = blobs.copy()
    bad[[5, 17, 900]] = np.nan
    bad[33, 1] = np.inf
    with pytest.raises(VBayesError, match=r"X has 4 rows with NaN or inf values \(rows 5, 17, 33, 900\)"):
        est.fit(bad)
    with pytest.raises(VBayesError, match="n_samples >= n_components"):
        VariationalGaussianMixture(5).fit(blobs[:3])
    with pytest.raises(VBayesError, match="Expected 2D array, got 1D array instead"):
        est.fit(blobs[:, 0])
    with pytest.raises(VBayesError, match="0 sample"):
        est.fit(np.empty((0, 3)))
    with pytest.raises(VBayesError, match="method must be one of"):
        VariationalGaussianMixture(method="gibbs").fit(blobs)
    with pytest.raises(VBayesError, match="weight_concentration_prior >= 1"):
        VariationalGaussianMixture(K, method="map", weight_concentration_prior=0.1).fit(blobs)
    # a singular default prior blames the data's columns and names a remedy the CLI user has (not only the API's)
    with pytest.raises(VBayesError, match="columns are collinear.*--covariance diag.*covariance_prior="):
        VariationalGaussianMixture(K).fit(np.column_stack([blobs, blobs[:, 0]]))
    with pytest.raises(VBayesError, match=r"column\(s\) 4 of the data are constant"):
        VariationalGaussianMixture(K, covariance_type="diag").fit(np.column_stack([blobs, np.ones(len(blobs))]))
    with pytest.raises(VBayesError, match="covariance_prior must be symmetric positive definite"):
        VariationalGaussianMixture(K, covariance_prior=-np.eye(3)).fit(blobs)
    est.fit(blobs)
    with pytest.raises(VBayesError, match="expecting 3 features"):
        est.predict(blobs[:, :2])
    with pytest.raises(VBayesError, match="1 row with NaN"):
        est.score_samples(bad[30:40])
    with pytest.raises(VBayesError, match="fit_stream runs cavi, em or map"):
        VariationalGaussianMixture(method="svi").fit_stream(blobs)


# ----------------------------------------------------------------------------------------------------
# delete moves: surplus components (K = 10 on 5 overlapping clusters, the benchmark's setting)


def _overlapping(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 3.0, (5, dim))
    a = rng.normal(size=(5, dim, dim)) / np.sqrt(dim)
    chols = np.linalg.cholesky(0.5 * np.eye(dim) + a @ np.swapaxes(a, 1, 2))
    z = rng.choice(5, size=n, p=rng.dirichlet(5.0 * np.ones(5)))
    return means[z] + np.einsum("nij,nj->ni", chols[z], rng.standard_normal((n, dim)))


@pytest.fixture(scope="module")
def surplus_data():
    return _overlapping(20_000, 4)


@pytest.fixture(scope="module")
def surplus(surplus_data):
    """The data, plain CAVI's fit (it drains the surplus slowly) and the fit with moves: for the slow checks."""
    x = surplus_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = VariationalGaussianMixture(10, random_state=0, max_iter=3000, delete_merge=False).fit(x)
    moved = VariationalGaussianMixture(10, random_state=0, max_iter=3000).fit(x)
    return x, plain, moved


@pytest.mark.slow
def test_delete_merge_drain_surplus_components_and_never_lower_the_elbo(surplus):
    """Plain CAVI drains the 5 surplus components over hundreds of iterations (the slow mode); with delete
    and merge moves the ELBO is as high (to 2e-5 nats per point: both stop at |ΔELBO|/N < 1e-6) after a small
    fraction of the passes, 5 components are left, and the recorded ELBO never decreases (a move is kept
    only when it raises it)."""
    _, plain, moved = surplus
    assert moved.converged_ and moved.result_.info.extra["removed_components"] >= 1
    assert moved.lower_bound_ >= plain.lower_bound_ - 2e-5, (moved.lower_bound_, plain.lower_bound_)
    assert moved.result_.info.extra["passes"] < plain.n_iter_ / 3, (moved.result_.info.extra, plain.n_iter_)
    assert np.all(np.diff(moved.lower_bounds_) > -1e-12)
    assert np.sum(moved.weights_ > 1e-3) == 5, moved.weights_


def test_moves_with_several_trial_updates_never_lower_the_elbo(surplus_data):
    """SVI's sweeps take the baseline after 3 CAVI updates and give each move up to 6: from CAVI's state
    after 40 plain iterations (surplus components still half-drained) the sweep removes some, its ELBO is at
    least that of 3 plain updates, the λ it returns has that ELBO (one more update does not lower it), and
    it counts its passes: 3 for the baseline, 1 to 6 per trial."""
    x = surplus_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        early = VariationalGaussianMixture(10, random_state=0, max_iter=40, delete_merge=False).fit(x)
    model = early._model()
    with jax.enable_x64(True):
        data = InMemory(x - early._shift)
        start = jax.tree.map(jnp.asarray, early._params)
        plain = cj.cavi(model, start, data, tol=0.0, max_iter=3).info.extra["objective"]
        sweep = delete_merge_sweep(model, start, data, len(x), trial_steps=3, max_trial_steps=6)
        _, after, stats = cj.update(model, sweep.params, data)
    trials = 2 * 10 - sweep.removed  # every live component is tried once, by a delete, a merge or both
    assert sweep.removed >= 1 and 3 + sweep.removed <= sweep.passes <= 3 + 6 * trials, sweep[2:]
    assert sweep.elbo > plain, (sweep.elbo, plain)
    assert after >= sweep.elbo - 1e-9 * len(x)
    assert sweep.live == np.sum(np.asarray(stats.n) >= 0.5) <= 10 - sweep.removed


def test_svi_sweeps_stop_when_they_only_delete_what_svi_revived(monkeypatch):
    """SVI goes on after a sweep only while the sweeps leave fewer live components than before: a sweep
    that keeps deleting a component SVI's steps bring back (live count unchanged) ends the loop, with the
    last SVI run's λ (at N = 1e5, D = 10 this loop once took 20 sweeps and 372,704 steps)."""
    runs, sweeps = [], iter([(3, 6), (1, 5), (1, 5), (1, 5)])

    def run(params, start_step=0.0, max_epochs=None, final_pass=True, checks="default"):
        runs.append(params)
        state = SVIState(params, jnp.asarray(start_step + 100.0))
        return conjugate_fit(
            None,
            params,
            "vb",
            method="svi",
            outcome="converged",
            message="",
            steps=100,
            seconds=0.0,
            trace=np.zeros(1),
            trace_of="",
            objective=0.0,
            n_samples=10.0,
            extra={"passes": 1},
            state=state,
            checks="none",
        )

    def sweep(model, params, *args, **kwargs):
        removed, live = next(sweeps)
        return moves.Sweep(f"{params}+sweep", 0.0, removed, live, 7)

    monkeypatch.setattr(moves, "delete_merge_sweep", sweep)
    monkeypatch.setattr(moves, "objective", lambda *a, **k: -1.0)
    subset = InMemory(np.zeros((4, 2)))
    fit = moves.svi_with_moves(run, None, "λ0", subset, 10, 1.0, None)
    assert runs == ["λ0", "λ0+sweep", "λ0+sweep+sweep"]  # the third sweep left 5 live, as the second did
    assert fit.q.params == "λ0+sweep+sweep" and fit.info.extra["removed_components"] == 4
    assert fit.info.extra["move_passes"] == 21


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_svi_reaches_converged_cavi_on_overlapping_clusters_in_2d(seed):
    """Issue 3's check on 5 overlapping clusters in 2-D fitted with K = 10 at N = 10⁵ (many local optima a
    few 1e-4 nats per point apart), from four SVI initialisations: each within 1e-3 nats per point of
    converged CAVI. The benchmark's data of this kind are harder (CAVI's own restarts spread by 1e-3 there):
    see ``benchmarks/RESULTS.md``."""
    x = _overlapping(100_000, 2, seed=0)
    cavi = VariationalGaussianMixture(10, random_state=0, max_iter=3000).fit(x)
    svi = VariationalGaussianMixture(10, method="svi", random_state=seed).fit(x)
    assert cavi.lower_bound_ - svi.lower_bound_ < 1e-3, (cavi.lower_bound_, svi.lower_bound_, svi.result_.info)


@pytest.mark.slow
def test_svi_reaches_converged_cavi_with_surplus_components():
    """Issue 3's check: at N = 10⁵ SVI with its defaults ends within 1e-3 nats per point of converged CAVI
    (both with delete moves; without them SVI's decaying steps leave the surplus components half-drained,
    1e-2 nats per point short on this data)."""
    x = _overlapping(100_000, 6, seed=1)
    cavi = VariationalGaussianMixture(10, random_state=0, max_iter=3000).fit(x)
    svi = VariationalGaussianMixture(10, method="svi", random_state=0).fit(x)
    assert cavi.converged_ and svi.converged_
    assert abs(cavi.lower_bound_ - svi.lower_bound_) < 1e-3, (cavi.lower_bound_, svi.lower_bound_)
    assert svi.result_.info.extra["epochs"] < 40
