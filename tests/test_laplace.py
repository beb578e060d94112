"""Laplace's method against closed forms: a linear-Gaussian inverse problem (exact posterior and evidence),
the conjugate linear regression's evidence, the precision-form family against dense linear algebra, the
sparse prior factor, and bad input (non-finite start, saddles, max-iter stops, impossible ranks)."""

import jax

jax.config.update("jax_enable_x64", True)

import importlib  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from jax.experimental import sparse as jsparse  # noqa: E402
from scipy.stats import multivariate_normal  # noqa: E402

import vbayes  # noqa: E402
from vbayes import VBayesError, from_least_squares, from_logdensity, laplace  # noqa: E402
from vbayes.examples import diabetes_data, linear_regression, linear_regression_exact  # noqa: E402
from vbayes.families import FullRankGaussian, LowRankPrecisionGaussian, kl  # noqa: E402
from vbayes.infer import optimize  # noqa: E402
from vbayes.linalg.cholesky import SparseCholesky, selected_inverse_diag  # noqa: E402
from vbayes.linalg.precision import DensePrecision, as_precision  # noqa: E402

laplace_module = importlib.import_module("vbayes.infer.laplace")

# ----------------------------------------------------------------------------------------------
# a linear-Gaussian inverse problem: y = A x + ε, ε ~ N(0, diag σ²), x ~ N(m, P⁻¹)


def _tridiagonal_precision(d: int) -> sp.csc_matrix:
    """A 1-D smoothness prior: 4·(second differences + 0.1 I), sparse SPD."""
    main = np.full(d, 2.1)
    off = np.full(d - 1, -1.0)
    return sp.diags([off, main, off], [-1, 0, 1], format="csc") * 4.0


def _linear_forward(params, data):
    return data["A"] @ params["x"]


def linear_problem(d=30, n=60, seed=0, prior="sparse", decay=0.85, shift=0.0):
    """(target, exact mean, exact covariance, exact log evidence). A has singular values decaying like decay^k."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, d)))
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a = 20.0 * (u * decay ** np.arange(d)) @ v.T
    sd = rng.uniform(0.5, 1.5, size=n)
    m = rng.normal(size=d)
    p_sparse = _tridiagonal_precision(d)
    p_dense = p_sparse.toarray()
    given = {"sparse": p_sparse, "bcoo": jsparse.BCOO.fromdense(p_dense), "dense": p_dense}[prior]
    y = a @ rng.normal(size=d) + sd * rng.normal(size=n) + shift
    target = from_least_squares(_linear_forward, y, sd, m, given, {"x": np.zeros(d)}, data={"A": a})
    precision = a.T @ (a / sd[:, None] ** 2) + p_dense
    cov = np.linalg.inv(precision)
    mean = cov @ (a.T @ (y / sd**2) + p_dense @ m)
    marginal = multivariate_normal(a @ m, np.diag(sd**2) + a @ np.linalg.solve(p_dense, a.T))
    return target, mean, 0.5 * (cov + cov.T), float(marginal.logpdf(y))


@pytest.fixture(scope="module")
def linear():
    return linear_problem()


@pytest.mark.parametrize("curvature", ["dense", "ggn", "lowrank"])
def test_laplace_is_the_exact_posterior_of_a_linear_gaussian_model(linear, curvature):
    target, mean, cov, log_z = linear
    fit = laplace(target, curvature, rank=target.dim)
    assert fit.info.outcome == "converged", fit.info.message
    np.testing.assert_allclose(fit.q.mean, mean, atol=1e-8)
    np.testing.assert_allclose(fit.q.covariance(), cov, atol=1e-8 * np.abs(cov).max())
    np.testing.assert_allclose(fit.q.marginal_sd(), np.sqrt(np.diag(cov)), rtol=1e-8)
    assert fit.info.extra["log_evidence"] == pytest.approx(log_z, abs=1e-7)
    if curvature != "dense":
        assert isinstance(fit.q, LowRankPrecisionGaussian)
        assert fit.info.extra["products"] == target.dim


def test_default_rank_keeps_every_eigenvalue_above_eig_tol(linear):
    target, mean, cov, log_z = linear
    exact = np.sqrt(np.diag(cov))
    fit = laplace(target, "ggn", init=mean)  # adaptive: all eigenvalues ≥ 0.1 of L⁻¹ JᵀJ L⁻ᵀ
    kept = fit.info.extra["rank"]
    assert fit.info.extra["largest_dropped_eigenvalue"] < 0.1 <= fit.info.extra["smallest_kept_eigenvalue"]
    assert 0 < kept < 30
    rel = np.asarray(fit.q.marginal_sd()) / exact - 1
    assert np.all(rel >= -1e-9) and np.max(rel) < 0.05  # each dropped pair widens q by < λ/(1+λ) ≤ 0.1/1.1
    exact_fit = laplace(target, "ggn", eig_tol=0.0, init=mean)  # nothing is small enough: every direction, exact
    np.testing.assert_allclose(exact_fit.q.marginal_sd(), exact, rtol=1e-9)
    assert exact_fit.info.extra["log_evidence"] == pytest.approx(log_z, abs=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("curvature", ["lowrank", "ggn"])
def test_lowrank_marginal_sds_converge_monotonically_with_rank(curvature):
    target, mean, cov, _ = linear_problem(d=60, n=80, seed=1, decay=0.9)
    exact = np.sqrt(np.diag(cov))
    errors = []
    for rank in (4, 12, 30, 60):
        fit = laplace(target, curvature, rank=rank, init=mean)
        sd = np.asarray(fit.q.marginal_sd())
        assert np.all(sd >= exact * (1 - 1e-6))  # dropping data directions only ever widens q
        errors.append(np.mean(np.abs(sd / exact - 1)))
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[0] > 0.05 and errors[-1] < 1e-9, errors


@pytest.mark.slow
def test_sparse_dense_and_bcoo_priors_agree():
    """The same prior given three ways (at full rank: a truncation depends on the factor's coordinates)."""
    fits = {}
    for prior in ("sparse", "bcoo", "dense"):
        target, mean, cov, log_z = linear_problem(prior=prior)
        fits[prior] = laplace(target, "ggn", rank=30, init=mean, key=3)
        assert fits[prior].info.extra["log_evidence"] == pytest.approx(log_z, abs=1e-8)
    np.testing.assert_allclose(fits["bcoo"].q.marginal_sd(), fits["dense"].q.marginal_sd(), rtol=1e-10)
    np.testing.assert_allclose(fits["sparse"].q.marginal_sd(), fits["dense"].q.marginal_sd(), rtol=1e-10)
    for fit in fits.values():  # draws (host solves under jit) and summaries work for every factor
        draws = fit.draws(200, key=1)
        assert draws["x"].shape == (200, 30) and np.all(np.isfinite(draws["x"]))


def test_diag_curvature_is_the_inverse_hessian_diagonal(linear):
    target, mean, cov, _ = linear
    fit = laplace(target, "diag")
    np.testing.assert_allclose(fit.q.marginal_sd(), 1 / np.sqrt(np.diag(np.linalg.inv(cov))), rtol=1e-9)
    assert "exact" in fit.info.extra["diagonal"]
    est = laplace(target, "diag", exact_diag_max=0, diag_probes=4000, init=mean)
    assert "Rademacher" in est.info.extra["diagonal"]  # the large-d estimator, here forced: unbiased, O(1/√probes)
    np.testing.assert_allclose(est.q.marginal_sd(), fit.q.marginal_sd(), rtol=0.08)


# ----------------------------------------------------------------------------------------------
# evidence of the conjugate linear regression


@pytest.mark.parametrize("curvature", ["dense", "lowrank"])
def test_evidence_of_conjugate_linear_regression(curvature):
    mean, cov, log_z = linear_regression_exact()
    fit = laplace(linear_regression(), curvature, rank=11)
    assert fit.info.extra["log_evidence"] == pytest.approx(log_z, abs=1e-6)
    np.testing.assert_allclose(fit.q.mean, mean, atol=1e-8)
    np.testing.assert_allclose(fit.q.marginal_sd(), np.sqrt(np.diag(cov)), rtol=1e-8)


def test_least_squares_version_of_the_regression_has_the_same_evidence():
    """The constants of from_least_squares are those of the exact log joint."""
    x, y = diabetes_data()
    _, _, log_z = linear_regression_exact()
    target = from_least_squares(
        lambda p, data: data["X"] @ p["beta"], y, 0.7, 0.0, 1.0, {"beta": np.zeros(11)}, data={"X": x}
    )
    fit = laplace(target, "ggn")
    assert fit.info.extra["log_evidence"] == pytest.approx(log_z, abs=1e-6)
    z = jnp.linspace(-1, 1, 11)
    assert float(target.log_density(z)) == pytest.approx(float(linear_regression().log_density(z)), abs=1e-9)


# ----------------------------------------------------------------------------------------------
# the precision-form family


@pytest.fixture(scope="module")
def lowrank_q():
    d, r = 12, 4
    rng = np.random.default_rng(5)
    prior = as_precision(_tridiagonal_precision(d), d)
    u, _ = np.linalg.qr(rng.normal(size=(d, r)))
    lam = np.array([30.0, 5.0, 0.5, -0.3])
    factor = prior.cholesky()
    q = LowRankPrecisionGaussian(jnp.asarray(rng.normal(size=d)), factor, jnp.asarray(u), jnp.asarray(lam))
    ell = np.asarray(factor.apply_lt(jnp.eye(d)))  # rows (Lᵀe_i)ᵀ: the factor L itself (permuted, not the dense one)
    np.testing.assert_allclose(ell @ ell.T, prior.to_scipy().toarray(), atol=1e-12)
    precision = ell @ (np.eye(d) + (u * lam) @ u.T) @ ell.T
    return q, np.linalg.inv(precision)


def test_precision_family_matches_dense_gaussian(lowrank_q):
    q, cov = lowrank_q
    np.testing.assert_allclose(q.covariance(), cov, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(q.marginal_sd(), np.sqrt(np.diag(cov)), rtol=1e-10)
    ref = multivariate_normal(np.asarray(q.mean), cov)
    z = np.asarray(q.mean) + np.random.default_rng(0).normal(size=(5, q.mean.shape[0]))
    np.testing.assert_allclose(q.log_prob(jnp.asarray(z)), ref.logpdf(z), rtol=1e-10)
    assert float(q.entropy()) == pytest.approx(ref.entropy(), rel=1e-10)
    full = FullRankGaussian.from_covariance(q.mean, jnp.asarray(cov))
    assert float(kl(q, full)) == pytest.approx(0.0, abs=1e-9)
    shifted = full._replace(loc=full.loc + 0.1)
    assert float(kl(q, shifted)) == pytest.approx(float(kl(FullRankGaussian.from_covariance(q.mean, cov), shifted)))
    assert float(kl(shifted, q)) > 0


def test_precision_family_draws_have_the_claimed_covariance(lowrank_q):
    q, cov = lowrank_q
    z = np.asarray(q.sample(jax.random.PRNGKey(0), 40_000))
    emp = np.cov(z.T)
    sd = np.sqrt(np.diag(cov))
    # 40,000 draws: the se of a correlation is ≤ 1/√40000 = 0.005, of a variance ratio √(2/40000) = 0.007
    np.testing.assert_allclose(np.diag(emp) / np.diag(cov), 1.0, atol=0.035)
    np.testing.assert_allclose(emp / np.outer(sd, sd), cov / np.outer(sd, sd), atol=0.025)
    np.testing.assert_allclose(z.mean(0), q.mean, atol=5 * sd.max() / 200)
    jitted = jax.jit(lambda q, k: q.sample(k, 3))(q, jax.random.PRNGKey(1))  # host solves under jit
    assert jitted.shape == (3, 12)


# ----------------------------------------------------------------------------------------------
# sparse prior factor


def test_sparse_cholesky_and_selected_inverse():
    d = 40
    rng = np.random.default_rng(2)
    a = sp.random(d, d, density=0.08, random_state=3)
    p = (a @ a.T + sp.eye(d) * 0.5 + _tridiagonal_precision(d)).tocsc()
    dense = p.toarray()
    f = SparseCholesky.from_scipy(p)
    x = jnp.asarray(rng.normal(size=(3, d)))
    lt_x = np.asarray(f.apply_lt(x))
    np.testing.assert_allclose(np.sum(lt_x**2, 1), np.einsum("ij,jk,ik->i", x, dense, x), rtol=1e-10)
    np.testing.assert_allclose(f.solve_lt(f.apply_lt(x)), x, atol=1e-10)
    w = np.asarray(f.solve_lt(f.solve_l(x)))  # L⁻ᵀL⁻¹ = P⁻¹
    np.testing.assert_allclose(w, np.linalg.solve(dense, np.asarray(x).T).T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(f.inverse_diag(), np.diag(np.linalg.inv(dense)), rtol=1e-10)
    lazy = SparseCholesky.from_scipy(p, inverse_diag=False)  # computed on demand by a host callback
    np.testing.assert_allclose(jax.jit(lambda f: f.inverse_diag())(lazy), np.diag(np.linalg.inv(dense)), rtol=1e-10)
    np.testing.assert_allclose(jax.vmap(f.solve_lt)(x), f.solve_lt(x), rtol=1e-12)
    np.testing.assert_allclose(jax.jit(jax.vmap(f.solve_l))(x), f.solve_l(x), rtol=1e-12)
    np.testing.assert_allclose(2 * float(f.half_logdet), np.linalg.slogdet(dense)[1], rtol=1e-12)
    c = sp.csc_matrix(np.linalg.cholesky(dense))
    np.testing.assert_allclose(selected_inverse_diag(c), np.diag(np.linalg.inv(dense)), rtol=1e-10)
    weights = jnp.arange(d, dtype=x.dtype)
    g = jax.grad(lambda v: jnp.sum(f.solve_lt(v) * weights))(x[0])  # reverse mode through the host solves
    np.testing.assert_allclose(g, f.solve_l(weights), rtol=1e-10)  # the adjoint of L⁻ᵀ is L⁻¹


def test_prior_precision_must_be_positive_definite():
    bad = sp.diags([np.ones(5), np.full(4, -2.0)], [0, 1])
    bad = (bad + bad.T).tocsc()
    with pytest.raises(VBayesError, match="not positive definite"):
        as_precision(bad, 5).cholesky()
    with pytest.raises(VBayesError, match="not symmetric"):
        as_precision(sp.diags([np.ones(5), np.ones(4)], [0, 1]).tocsc(), 5).cholesky()
    with pytest.raises(VBayesError, match="positive"):
        as_precision(np.array([1.0, -1.0]), 2)
    with pytest.raises(VBayesError, match="dimension 3"):
        as_precision(np.eye(2), 3)
    assert isinstance(as_precision(lambda v: 2.0 * v, 3), DensePrecision)


# ----------------------------------------------------------------------------------------------
# least-squares targets: data leaves and no recompilation


def test_new_observations_reuse_the_compiled_code(linear):
    target, mean, _, _ = linear
    laplace(target, "ggn", rank=30, init=mean)
    sizes = (optimize._find_map._cache_size(), laplace_module.gauss_newton_rows._cache_size())
    other, other_mean, _, _ = linear_problem(shift=1.0)  # same model and shapes, new observations
    assert other.density == target.density
    assert any(np.shape(leaf) == (60,) for leaf in jax.tree_util.tree_leaves(other))  # observations are leaves
    fit = laplace(other, "ggn", rank=30, init=mean)
    assert (optimize._find_map._cache_size(), laplace_module.gauss_newton_rows._cache_size()) == sizes
    np.testing.assert_allclose(fit.q.mean, other_mean, atol=1e-6)


def test_least_squares_bad_input():
    fwd = lambda p: p["x"] * 2.0
    with pytest.raises(VBayesError, match="non-finite"):
        from_least_squares(fwd, np.array([1.0, np.nan]), 1.0, 0.0, 1.0, {"x": np.zeros(2)})
    with pytest.raises(VBayesError, match="noise_sd must be positive"):
        from_least_squares(fwd, np.ones(2), 0.0, 0.0, 1.0, {"x": np.zeros(2)})
    with pytest.raises(VBayesError, match="shape"):
        from_least_squares(fwd, np.ones(3), 1.0, 0.0, 1.0, {"x": np.zeros(2)})
    with pytest.raises(VBayesError, match="prior_mean"):
        from_least_squares(fwd, np.ones(2), 1.0, np.zeros(3), 1.0, {"x": np.zeros(2)})


# ----------------------------------------------------------------------------------------------
# bad input and bad curvature


def _saddle():
    """log p̃(x, y) = −(x² − 1)²... a double well in x (saddle at x = 0) and a Gaussian in y."""
    return from_logdensity(lambda p: -((p["v"][0] ** 2 - 1.0) ** 2) - 0.5 * p["v"][1] ** 2, {"v": np.zeros(2)})


@pytest.mark.slow
def test_indefinite_hessian_at_a_saddle_is_reported_and_clipped():
    fit = laplace(_saddle(), "dense")  # starts at 0: the gradient is 0 there, so the "mode" is the saddle
    assert not fit.trusted and fit.verdict.check("curvature").status == "flag"  # the saddle flags the fit
    assert "not positive definite" in fit.verdict.check("curvature").message
    assert "not positive definite" in fit.info.message and "v[0]" in fit.info.message
    assert fit.info.extra["clipped"] == 1 and fit.info.extra["negative"] == 1
    assert fit.info.extra["smallest"][0] == pytest.approx(-4.0, rel=1e-6)
    assert float(fit.q.marginal_sd()[0]) > 1e3 and float(fit.q.marginal_sd()[1]) == pytest.approx(1.0)
    low = laplace(_saddle(), "lowrank", rank=2)
    assert low.verdict.check("curvature").status == "flag" and "v[0]" in low.info.message
    diag = laplace(_saddle(), "diag")
    assert diag.verdict.check("curvature").status == "flag" and "v[0]" in diag.info.message
    good = laplace(_saddle(), "dense", init=np.array([0.9, 0.3]))
    assert good.info.outcome == "converged" and float(good.q.mean[0]) == pytest.approx(1.0)
    assert good.verdict.check("curvature").status == "pass"


_FLOAT32_SADDLE = """
import dataclasses, json, sys, warnings
warnings.simplefilter("error")
import jax, jax.numpy as jnp, numpy as np
from jax.scipy.special import logsumexp
import vbayes
assert not jax.config.jax_enable_x64

def log_density(p):
    x = p["x"]
    return logsumexp(jnp.stack([-0.5 * jnp.sum((x - 3) ** 2), -0.5 * jnp.sum((x + 3) ** 2)]))

fit = vbayes.laplace(vbayes.from_logdensity(log_density, {"x": jnp.zeros(2)}), "dense")
broken = dataclasses.replace(fit, q=fit.q._replace(loc=jnp.full(2, jnp.nan)))
nan_verdict = vbayes.checks.verify(broken).verdict
print(json.dumps({
    "dtype": str(fit.q.loc.dtype),
    "sd": np.asarray(fit.q.marginal_sd()).tolist(),
    "summary_finite": bool(np.all(np.isfinite(fit.summary().to_numpy()))),
    "curvature": fit.verdict.check("curvature").status,
    "trusted": fit.trusted,
    "nan_convergence": [nan_verdict.check("convergence").status, nan_verdict.check("convergence").message],
    "nan_importance": nan_verdict.check("importance").status,
}))
"""


@pytest.mark.slow
def test_float32_saddle_gives_a_finite_flagged_q_not_nans():
    """Between the two modes of a float32 mixture (JAX's default precision, so in a fresh process) the Hessian is
    indefinite; clipping its eigenvalue to a floor relative to float64's precision made q's covariance too
    ill-conditioned for a float32 Cholesky: all-NaN sds, draws and summary. The floor now follows the working
    precision, and a q with non-finite parameters is flagged by its convergence check whatever produced it."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "JAX_ENABLE_X64": "0"}
    run = subprocess.run([sys.executable, "-c", _FLOAT32_SADDLE], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["dtype"] == "float32"
    assert all(np.isfinite(out["sd"])) and min(out["sd"]) > 10.0  # clipped: very wide along the saddle direction
    assert out["summary_finite"] and out["curvature"] == "flag" and not out["trusted"]
    assert out["nan_convergence"][0] == "flag" and "not finite" in out["nan_convergence"][1]
    assert out["nan_importance"] == "skip"


def test_max_iter_stop_is_reported():
    target, mean, _, _ = linear_problem(d=30, decay=0.97)
    fit = laplace(target, "dense", max_iter=3)
    assert fit.info.outcome == "max_steps" and "max_iter=3" in fit.info.message
    assert fit.info.steps == 3 and fit.trace.shape == (3,)
    assert fit.info.extra["map"]["outcome"] == "max_iter"


def test_nonfinite_start_and_bad_options_raise():
    target = from_logdensity(lambda p: jnp.sum(jnp.log(p["x"])), {"x": np.zeros(2)})
    with pytest.raises(VBayesError, match="not finite"):
        laplace(target)
    ok = _saddle()
    with pytest.raises(VBayesError, match="rank must be between 1 and the dimension 2"):
        laplace(ok, "lowrank", rank=3)
    with pytest.raises(VBayesError, match="least-squares target"):
        laplace(ok, "ggn")
    with pytest.raises(VBayesError, match="unknown curvature"):
        laplace(ok, "hessian")
    with pytest.raises(VBayesError, match="GB"):
        laplace(ok, "dense", dense_max_dim=1)
    with pytest.raises(VBayesError, match="init"):
        laplace(ok, init=np.zeros(3))


def test_fit_interface_and_trace(linear):
    target, *_ = linear
    fit = vbayes.laplace(target, "lowrank", rank=8)
    assert fit.info.method == "laplace-lowrank" and fit.info.grad_evals >= fit.info.steps > 0
    assert fit.trace.shape == (fit.info.steps,) and np.all(np.diff(fit.trace) >= -1e-9)
    assert fit.summary(500).shape == (30, 5)
    assert set(fit.to_arviz(100).posterior.data_vars) == {"x"}
    assert "log_evidence" in fit.info.extra and fit.info.extra["rank"] == 8
