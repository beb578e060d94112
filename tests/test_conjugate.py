"""The conjugate engine and the Bayesian GMM's mathematics against truth: the closed-form Normal-Wishart
posterior and evidence, Monte Carlo KL and expected log joint (scipy densities), monotone CAVI and EM,
SVI's natural-gradient identity and accuracy, the VB → EM limit, streaming = in-memory."""

import jax
import numpy as np
import pytest
from scipy.special import digamma, multigammaln
from scipy.stats import beta as beta_dist
from scipy.stats import dirichlet, wishart

from vbayes import conjugate as cj
from vbayes.conjugate import gmm
from vbayes.conjugate import model as core
from vbayes.conjugate.engine.cavi import pass_stats
from vbayes.conjugate.gmm import core as gmm_core
from vbayes.data import InMemory, Stream, check_data
from vbayes.errors import VBayesError


def mixture_data(n, d, k, seed=0, scale=3.0, offset=0.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=scale, size=(k, d))
    shapes = rng.normal(size=(k, d, d)) * 0.4 + np.eye(d)
    z = rng.integers(k, size=n)
    return centers[z] + np.einsum("nd,nde->ne", rng.normal(size=(n, d)), shapes[z]) + offset


def soft_resp(n, k, seed=1):
    return np.random.default_rng(seed).dirichlet(np.ones(k), size=n)


# ----------------------------------------------------------------------------------------------------
# one component: the exact Normal-Wishart posterior and evidence, written out independently


def normal_wishart_posterior(x, m0, beta0, w0inv, nu0):
    """Bishop PRML (10.60-10.63) / Murphy (2007) §9 for one Gaussian: (β_N, m_N, W_N⁻¹, ν_N)."""
    n = x.shape[0]
    xbar = x.mean(0)
    scatter = (x - xbar).T @ (x - xbar)
    beta_n = beta0 + n
    m_n = (beta0 * m0 + n * xbar) / beta_n
    w_inv_n = w0inv + scatter + beta0 * n / beta_n * np.outer(xbar - m0, xbar - m0)
    return beta_n, m_n, w_inv_n, nu0 + n


def log_evidence(x, m0, beta0, w0inv, nu0):
    """log p(X) = −ND/2 log π + log Γ_D(ν_N/2) − log Γ_D(ν₀/2) + ν₀/2 log|W₀⁻¹| − ν_N/2 log|W_N⁻¹| + D/2 log(β₀/β_N)."""
    n, d = x.shape
    beta_n, _, w_inv_n, nu_n = normal_wishart_posterior(x, m0, beta0, w0inv, nu0)
    return (
        -0.5 * n * d * np.log(np.pi)
        + multigammaln(nu_n / 2, d)
        - multigammaln(nu0 / 2, d)
        + 0.5 * nu0 * np.linalg.slogdet(w0inv)[1]
        - 0.5 * nu_n * np.linalg.slogdet(w_inv_n)[1]
        + 0.5 * d * np.log(beta0 / beta_n)
    )


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_single_component_is_the_normal_wishart_posterior(covariance_type):
    x = mixture_data(200, 3, 1, seed=4, offset=2.0)
    d = x.shape[1]
    m0, beta0, nu0 = np.array([0.5, -1.0, 2.0]), 0.7, d + 1.5
    w0inv_full = np.diag([2.0, 0.5, 1.5])
    w0inv = {"full": w0inv_full, "diag": np.diag(w0inv_full), "spherical": np.float64(1.3)}[covariance_type]
    if covariance_type == "spherical":
        w0inv_full = 1.3 * np.eye(d)
    prior = gmm.make_prior(d, covariance_type, 1.0, beta0, m0, nu0, w0inv)
    model = gmm.bayesian_gmm(prior, covariance_type, "dirichlet_distribution")
    fit = cj.cavi(model, gmm.init_params(model, x, np.ones((200, 1))), x, tol=0.0, max_iter=3)

    beta_n, m_n, w_inv_n, nu_n = normal_wishart_posterior(x, m0, beta0, w0inv_full, nu0)
    p = fit.q.params
    np.testing.assert_allclose(p.beta, [beta_n], rtol=1e-13)
    np.testing.assert_allclose(p.nu, [nu_n], rtol=1e-13)
    np.testing.assert_allclose(p.beta_mean / p.beta[:, None], [m_n], rtol=1e-12)
    _, _, cov = gmm.point_estimates(model, p)
    exact = log_evidence(x, m0, beta0, w0inv_full, nu0)
    if covariance_type == "full":
        np.testing.assert_allclose(cov[0] * nu_n, w_inv_n, rtol=1e-12)
        # q(μ, Λ) is the exact posterior, so the full ELBO (every constant) is the log evidence
        np.testing.assert_allclose(fit.info.extra["objective"], exact, rtol=1e-12)
    else:
        # scikit-learn's diag/spherical: q(Λ) = Wishart with diagonal / isotropic scale, the optimum being
        # diag(W_N⁻¹) / (tr W_N⁻¹ / D); its ELBO is the evidence less KL(q ‖ exact posterior), in closed form
        restricted = np.diag(w_inv_n) if covariance_type == "diag" else np.trace(w_inv_n) / d
        np.testing.assert_allclose(cov[0] * nu_n, restricted, rtol=1e-12)
        log_det_restricted = np.sum(np.log(np.diag(w_inv_n))) if covariance_type == "diag" else d * np.log(restricted)
        gap = 0.5 * nu_n * (log_det_restricted - np.linalg.slogdet(w_inv_n)[1])
        np.testing.assert_allclose(fit.info.extra["objective"], exact - gap, rtol=1e-12)


# ----------------------------------------------------------------------------------------------------
# every constant of the ELBO, against Monte Carlo with scipy's densities


@pytest.mark.slow
@pytest.mark.parametrize("weight_type", ["dirichlet_process", "dirichlet_distribution"])
def test_kl_and_expected_log_joint_match_monte_carlo(weight_type):
    n, d, k, draws = 40, 3, 4, 12_000
    x = mixture_data(n, d, k, seed=2)
    w0inv = np.array([[1.5, 0.3, 0.0], [0.3, 0.8, 0.1], [0.0, 0.1, 1.1]])
    prior = gmm.make_prior(d, "full", 0.8, 0.5, np.array([0.3, -0.2, 0.1]), 3.5, w0inv)
    model = gmm.bayesian_gmm(prior, "full", weight_type)
    resp = soft_resp(n, k, seed=3)
    params = gmm.init_params(model, x, resp)
    stats = gmm.suff_stats(x, resp.T, "full")
    kl = float(model.kl(params))
    ell = float(model.expected_log_joint(model.expect(params), stats))

    rng = np.random.default_rng(5)
    a0, b0, m0, nu0, w0inv = (np.asarray(v) for v in prior[:5])
    p = {f: np.asarray(v) for f, v in params._asdict().items()}
    m = p["beta_mean"] / p["beta"][:, None]
    log_q = np.zeros(draws)
    log_p = np.zeros(draws)
    log_lik = np.zeros(draws)
    for j in range(k):
        w_inv = p["psi"][j] - p["beta"][j] * np.outer(m[j], m[j])
        scale = np.linalg.inv(w_inv)
        lam = np.moveaxis(wishart.rvs(df=float(p["nu"][j]), scale=scale, size=draws, random_state=rng), 0, -1)
        lam_t = np.moveaxis(lam, -1, 0)
        chol = np.linalg.cholesky(np.linalg.inv(lam_t * p["beta"][j]))
        mu = m[j] + np.einsum("sde,se->sd", chol, rng.standard_normal((draws, d)))

        def log_normal(mu, mean, prec):
            diff = mu - mean
            return (
                0.5 * np.linalg.slogdet(prec)[1]
                - 0.5 * d * np.log(2 * np.pi)
                - 0.5 * np.einsum("sd,sde,se->s", diff, prec, diff)
            )

        log_q += wishart.logpdf(lam, df=float(p["nu"][j]), scale=scale)
        log_q += log_normal(mu, m[j], p["beta"][j] * lam_t)
        log_p += wishart.logpdf(lam, df=float(nu0), scale=np.linalg.inv(w0inv)) + log_normal(mu, m0, b0 * lam_t)
        # Σ_n r_nk log N(x_n | μ, Λ⁻¹) from the points themselves
        diff = x[None, :, :] - mu[:, None, :]
        quad = np.einsum("snd,sde,sne->sn", diff, lam_t, diff)
        log_lik += (
            resp[:, j] @ (0.5 * np.linalg.slogdet(lam_t)[1][:, None] - 0.5 * d * np.log(2 * np.pi) - 0.5 * quad).T
        )
    if weight_type == "dirichlet_distribution":
        pi = dirichlet.rvs(p["weight_a"], size=draws, random_state=rng)
        log_q += dirichlet.logpdf(pi.T, p["weight_a"])
        log_p += dirichlet.logpdf(pi.T, np.full(k, a0))
    else:
        v = beta_dist.rvs(p["weight_a"], p["weight_b"], size=(draws, k), random_state=rng)
        log_q += beta_dist.logpdf(v, p["weight_a"], p["weight_b"]).sum(1)
        log_p += beta_dist.logpdf(v, 1.0, a0).sum(1)
        pi = v * np.concatenate([np.ones((draws, 1)), np.cumprod(1 - v, 1)[:, :-1]], 1)
    log_lik += np.log(pi) @ resp.sum(0)

    for ours, sample in [(kl, log_q - log_p), (ell, log_lik)]:
        se = sample.std() / np.sqrt(draws)
        assert abs(ours - sample.mean()) < 4 * se + 1e-9, (ours, sample.mean(), se)


# ----------------------------------------------------------------------------------------------------
# monotone CAVI and EM


@pytest.mark.parametrize("weight_type", ["dirichlet_process", "dirichlet_distribution"])
@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_cavi_elbo_never_decreases(covariance_type, weight_type):
    x = mixture_data(400, 3, 5, seed=6, scale=2.0)  # 5 overlapping clusters, 4 components: a long, curved path
    prior = gmm.default_prior(x, 4, covariance_type)
    model = gmm.bayesian_gmm(prior, covariance_type, weight_type)
    fit = cj.cavi(model, gmm.init_params(model, x, soft_resp(400, 4)), x, tol=0.0, max_iter=60)
    steps = np.diff(fit.trace)
    assert np.all(steps >= -1e-9 * np.abs(fit.trace[1:])), steps.min()
    assert fit.trace[-1] > fit.trace[0] + 1.0


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_em_and_map_em_never_decrease(covariance_type):
    x = mixture_data(400, 3, 5, seed=7, scale=2.0)
    models = [
        (
            gmm.bayesian_gmm(
                gmm.flat_prior(3, covariance_type, reg_covar=1e-6), covariance_type, "dirichlet_distribution"
            ),
            False,
        )
    ]
    for wt in gmm.WEIGHT_PRIORS:
        prior = gmm.default_prior(x, 4, covariance_type, weight_concentration_prior=1.5, degrees_of_freedom_prior=4.5)
        models.append((gmm.bayesian_gmm(prior, covariance_type, wt), True))
    for model, is_map in models:
        p0 = gmm.init_params(model, x, soft_resp(400, 4))
        fit = cj.cavi(model, p0, x, mode="map" if is_map else "em", tol=0.0, max_iter=60)
        assert np.all(np.diff(fit.trace) >= -1e-9 * np.abs(fit.trace[1:])), np.diff(fit.trace).min()


def test_threads_do_not_change_the_result():
    x = mixture_data(5000, 3, 4, seed=8)
    model = gmm.bayesian_gmm(gmm.default_prior(x, 4), "full")
    p0 = gmm.init_params(model, x, soft_resp(5000, 4))
    one = cj.cavi(model, p0, InMemory(x, chunk_size=256, n_threads=1), tol=0.0, max_iter=10)
    many = cj.cavi(model, p0, InMemory(x, chunk_size=256, n_threads=4, block_chunks=2), tol=0.0, max_iter=10)
    np.testing.assert_allclose(one.trace, many.trace, rtol=1e-12)
    np.testing.assert_allclose(one.q.params.psi, many.q.params.psi, rtol=1e-11)


@pytest.mark.parametrize("point_mass", [False, True])
def test_on_device_loop_equals_host_loop(point_mass):
    """One-block data run on the device, 64 iterations per call; a callback forces the host loop. Same
    iterates, same stopping iteration, across several rounds."""
    x = mixture_data(3000, 3, 5, seed=9, scale=2.0)
    prior = gmm.flat_prior(3, "full", 1e-6) if point_mass else gmm.default_prior(x, 6)
    model = gmm.bayesian_gmm(prior, "full", "dirichlet_distribution")
    p0 = gmm.init_params(model, x, soft_resp(3000, 6))
    mode = "em" if point_mass else "vb"
    seen = []
    for tol, max_iter in ((0.0, 150), (1e-6, 400)):
        device = cj.cavi(model, p0, x, mode=mode, tol=tol, max_iter=max_iter)
        host = cj.cavi(model, p0, x, mode=mode, tol=tol, max_iter=max_iter, callback=lambda i, v, p: seen.append(i))
        assert device.info.outcome == host.info.outcome and device.info.steps == host.info.steps
        assert device.info.steps > 64  # more than one compiled round
        np.testing.assert_allclose(device.trace, host.trace, rtol=1e-12)
        for a, b in zip(device.q.params, host.q.params, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.max(np.abs(b)))
    assert device.info.outcome == "converged" and seen


# ----------------------------------------------------------------------------------------------------
# one model, five algorithms


@pytest.mark.parametrize("point_mass", [False, True])
def test_functional_core_matches_the_driver(point_mass):
    """``init_state`` / ``step`` (pure, one block, jit-able; VB or EM by its mode) give the driver's iterates."""
    import jax

    x = mixture_data(500, 3, 4, seed=14)
    prior = gmm.flat_prior(3, "full", 1e-6) if point_mass else gmm.default_prior(x, 4)
    model = gmm.bayesian_gmm(prior, "full", "dirichlet_distribution")
    p0 = gmm.init_params(model, x, soft_resp(500, 4))
    block = InMemory(x).blocks[0]
    mode = core.Mode.EM if point_mass else core.Mode.VB
    step = jax.jit(core.step, static_argnames="mode")
    state = core.init_state(model, p0, mode)
    for _ in range(4):
        state = step(model, state, block, mode=mode)
    run = cj.cavi(model, p0, x, mode=mode, tol=0.0, max_iter=4)
    assert int(state.step) == 4
    np.testing.assert_allclose(float(state.objective), run.trace[-1], rtol=1e-12)
    for a, b in zip(state.params, run.q.params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.max(np.abs(b)))


def test_svi_step_with_unit_rate_on_all_data_is_a_cavi_step():
    """ρ = 1 and the whole data as the batch: the natural-gradient step lands on CAVI's update."""
    x = mixture_data(500, 3, 4, seed=9)
    model = gmm.bayesian_gmm(gmm.default_prior(x, 4), "full")
    p0 = gmm.init_params(model, x, soft_resp(500, 4))
    state, info = core.svi_step(model, core.SVIState(p0, np.float64(0.0)), x, np.ones(500), 500.0, 1.0, 0.7)
    cavi = cj.cavi(model, p0, x, tol=0.0, max_iter=1)
    assert float(info.rho) == 1.0
    for a, b in zip(state.params, cavi.q.params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_svi_step_on_float32_minibatches():
    """float32 data: the E-step runs in float32, λ and its update stay float64, and the step agrees with the
    float64 one to float32 rounding (1e-5 relative), far below SVI's minibatch noise."""
    x = mixture_data(1024, 3, 4, seed=9)
    model = gmm.bayesian_gmm(gmm.default_prior(x, 4), "full")
    p0 = gmm.init_params(model, x, soft_resp(1024, 4))
    state = core.SVIState(p0, np.float64(5.0))
    exact, info64 = core.svi_step(model, state, x, np.ones(1024), 1e5, 10.0, 0.6)
    low, info32 = core.svi_step(model, state, x.astype(np.float32), np.ones(1024, np.float32), 1e5, 10.0, 0.6)
    for a, b in zip(low.params, exact.params, strict=True):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.max(np.abs(b)))
    assert float(info32.local_elbo) == pytest.approx(float(info64.local_elbo), rel=1e-5)
    assert float(info32.local_elbo) != float(info64.local_elbo)  # it did run in float32


def test_cavi_on_float32_blocks_sums_in_float64():
    """``InMemory(dtype=float32)`` (SVI's move trials): the E-step runs in float32 on 40 chunks, the sums over
    chunks are float64, and CAVI's iterates agree with float64 blocks to float32 rounding."""
    x = mixture_data(40 * 256, 3, 4, seed=21)
    model = gmm.bayesian_gmm(gmm.default_prior(x, 4), "full")
    p0 = gmm.init_params(model, x, soft_resp(x.shape[0], 4))
    wide, narrow = InMemory(x, chunk_size=256), InMemory(x, chunk_size=256, dtype=np.float32)
    assert narrow.blocks[0].x.dtype == np.float32 and narrow.blocks[0].x.shape[0] == 40
    stats, local_elbo = pass_stats(model, model.expect(p0), narrow)
    assert all(a.dtype == np.float64 for a in jax.tree.leaves(stats)) and local_elbo.dtype == np.float64
    exact = cj.cavi(model, p0, wide, tol=0.0, max_iter=10)
    low = cj.cavi(model, p0, narrow, tol=0.0, max_iter=10)
    np.testing.assert_allclose(low.trace, exact.trace, rtol=1e-6)
    assert not np.array_equal(low.trace, exact.trace)  # it did run in float32
    for a, b in zip(low.q.params, exact.q.params, strict=True):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.max(np.abs(b)))


def test_cavi_on_a_scaled_subset_is_cavi_on_replicated_data():
    """``scale`` = N / n: CAVI on n points standing in for N = 3n is CAVI on the points repeated 3 times
    (same iterates, the same total ELBO)."""
    x = mixture_data(600, 2, 3, seed=13)
    model = gmm.bayesian_gmm(gmm.default_prior(x, 3), "full")
    p0 = gmm.init_params(model, x, soft_resp(600, 3), scale=3.0)
    scaled = cj.cavi(model, p0, x, tol=0.0, max_iter=20, scale=3.0)
    tiled = cj.cavi(model, p0, np.tile(x, (3, 1)), tol=0.0, max_iter=20)
    assert scaled.info.extra["n_samples"] == tiled.info.extra["n_samples"] == 1800
    np.testing.assert_allclose(scaled.trace, tiled.trace, rtol=1e-11)
    for a, b in zip(scaled.q.params, tiled.q.params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.max(np.abs(b)))


def test_em_is_the_point_mass_limit_of_vb():
    """``mode`` and ``expect`` feed the same E-step; as the counts grow, q(β) concentrates and the two agree
    to O(1/N): VB's E log π, E log|Λ|, ν W and −D/(2β) tend to log π̂, log|Λ̂|, Λ̂ and 0."""
    x = mixture_data(500, 3, 4, seed=10)
    model = gmm.bayesian_gmm(gmm.default_prior(x, 4), "full", "dirichlet_distribution")
    stats = gmm.suff_stats(x, soft_resp(500, 4).T, "full")
    gaps = []
    for scale in [1.0, 100.0, 10_000.0]:
        params = model.global_step(stats, scale)
        vb, em = model.expect(params), model.mode(params)
        rho_vb = gmm.log_joint_terms(model, vb, x)
        rho_em = gmm.log_joint_terms(model, em, x)
        gaps.append(float(np.max(np.abs(rho_vb - rho_em))))
    assert gaps[0] > 1e-3
    assert gaps[1] < gaps[0] / 30 and gaps[2] < gaps[1] / 30, gaps


def test_expected_log_weights_use_digamma():
    """E log π_k for the sticks (Blei & Jordan 2006 eq. 21), checked against the formula written out."""
    x = mixture_data(100, 3, 4, seed=11)
    model = gmm.bayesian_gmm(gmm.default_prior(x, 4), "full", "dirichlet_process")
    params = gmm.init_params(model, x, soft_resp(100, 4))
    a, b = np.asarray(params.weight_a), np.asarray(params.weight_b)
    e_log_v, e_log_1mv = digamma(a) - digamma(a + b), digamma(b) - digamma(a + b)
    want = e_log_v + np.concatenate([[0.0], np.cumsum(e_log_1mv)[:-1]])
    np.testing.assert_allclose(gmm_core.expected_log_weights(params, "dirichlet_process"), want, rtol=1e-13)


def test_svi_reaches_the_cavi_optimum():
    """N = 10⁵: SVI on its own (decaying ρ, tail averaging, no full passes except the final evaluation)
    ends within 1e-3 nats per point of converged CAVI."""
    n, k = 100_000, 4
    x = mixture_data(n, 4, k, seed=12, scale=5.0)
    model = gmm.bayesian_gmm(gmm.default_prior(x, k), "full")
    rng = np.random.default_rng(0)
    sub = rng.choice(n, 12_000, replace=False)
    from sklearn.cluster import KMeans

    labels = KMeans(k, n_init=1, random_state=0).fit(x[sub]).labels_
    p0 = gmm.init_params(model, x[sub], np.eye(k)[labels], scale=n / sub.size)
    ref = cj.cavi(model, p0, x)
    fit = cj.svi(model, p0, x, key=1)
    assert ref.info.outcome == "converged" and fit.info.outcome == "converged"
    gap = (ref.info.extra["objective"] - fit.info.extra["objective"]) / len(x)
    assert 0 <= gap < 1e-3, (gap, fit.info)
    assert fit.info.extra["epochs"] < 100


# ----------------------------------------------------------------------------------------------------
# streaming


def test_streaming_cavi_equals_in_memory(tmp_path):
    x = mixture_data(3000, 3, 4, seed=13, offset=5.0)
    path = tmp_path / "x.npy"
    np.save(path, x)
    model = gmm.bayesian_gmm(gmm.default_prior(x, 4), "full")
    p0 = gmm.init_params(model, x, soft_resp(3000, 4))
    ref = cj.cavi(model, p0, x, tol=0.0, max_iter=15)

    def uneven():  # any function returning a fresh iterable of arrays
        cuts = [0, 700, 701, 2000, 3000]
        return (x[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True))

    sources = [np.load(path, mmap_mode="r"), str(path), uneven]
    for source in sources:
        stream = Stream(source, chunk_size=128, block_chunks=4)  # blocks of 512 rows: 6 per pass
        fit = cj.cavi(model, p0, stream, tol=0.0, max_iter=15)
        assert stream.n_samples == 3000
        np.testing.assert_allclose(fit.trace, ref.trace, rtol=1e-10)
        for a, b in zip(fit.q.params, ref.q.params, strict=True):  # 1e-10 relative to each array's scale
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.max(np.abs(b)))


def test_stream_errors(tmp_path):
    x = np.random.default_rng(0).normal(size=(1000, 2))
    x[[123, 777]] = np.nan
    with pytest.raises(VBayesError, match=r"2 rows with NaN or inf.*rows 123, 777"):
        Stream(lambda: (x[i : i + 300] for i in range(0, 1000, 300)))
    with pytest.raises(VBayesError, match="read only once"):
        Stream(iter([x[:10]]))
    with pytest.raises(VBayesError, match="does not exist"):
        Stream(tmp_path / "missing.npy")
    with pytest.raises(VBayesError, match="features"):
        Stream(lambda: [np.ones((3, 2)), np.ones((3, 3))])


# ----------------------------------------------------------------------------------------------------
# input checks


def test_check_data_messages():
    x = np.zeros((50, 2))
    x[[3, 9, 10, 11, 20, 40], 1] = [np.nan, np.inf, -np.inf, np.nan, np.nan, np.nan]
    with pytest.raises(VBayesError, match=r"6 rows with NaN or inf values \(rows 3, 9, 10, 11, 20, \.\.\.\)"):
        check_data(x)
    with pytest.raises(VBayesError, match="Expected 2D array, got 1D array instead"):
        check_data(np.ones(5))
    with pytest.raises(VBayesError, match="empty"):
        check_data(np.ones((0, 3)))
    with pytest.raises(VBayesError, match="numeric"):
        check_data(np.array([["a", "b"]]))
