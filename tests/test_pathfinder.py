"""Pathfinder: the same path and Gaussians as BlackJAX's, exact on a Gaussian target (its draws pass PSIS), the
multi-path weights recover the mass of each mode, an inaccurate q is flagged, and ADVI starts from it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vbayes
from vbayes import VBayesError
from vbayes.examples import linear_regression, linear_regression_exact
from vbayes.infer.pathfinder import path, pathfinder

D = 4
COV = np.array([[2.0, 0.9, 0.0, 0.3], [0.9, 1.0, -0.4, 0.0], [0.0, -0.4, 0.5, 0.1], [0.3, 0.0, 0.1, 1.5]])
MEAN = np.array([1.0, -2.0, 0.5, 3.0])


def _gaussian() -> vbayes.Target:
    prec = jnp.asarray(np.linalg.inv(COV))
    log_p = lambda p: -0.5 * (p["z"] - MEAN) @ prec @ (p["z"] - MEAN)
    return vbayes.from_logdensity(log_p, {"z": jnp.zeros(D)}, name="gaussian4")


def test_the_path_and_its_gaussians_are_blackjaxs():
    """Same L-BFGS path, same inverse-Hessian factors at the chosen iterate; the centre is the quasi-Newton step
    towards the mode θ + Σ∇log p̃ (BlackJAX's ``approximate`` steps the other way: θ − Σ∇log p̃)."""
    from blackjax.vi.pathfinder import approximate

    target = _gaussian()
    key, z0 = jax.random.PRNGKey(3), jnp.full(D, 2.0)
    ours = path(target, key, z0, 30, 5, 25)
    run = jax.jit(lambda k, z: approximate(k, target.log_density, z, num_samples=25, maxiter=30, maxcor=5))
    _, info = run(key, z0)  # compiled: eagerly, each of BlackJAX's operations compiles on its own
    i = int(ours.best)
    theirs = jax.tree_util.tree_map(lambda x: x[i], info.path)
    for name in ("alpha", "beta", "gamma"):
        np.testing.assert_allclose(getattr(ours.q, name), getattr(theirs, name), rtol=1e-8, atol=1e-12)
    their_centre = theirs.position + ours.q.covariance() @ theirs.grad_position
    np.testing.assert_allclose(ours.q.loc + their_centre, 2 * theirs.position, rtol=1e-8, atol=1e-10)
    assert 0 < int(ours.iterations) < 30


def test_on_a_gaussian_its_draws_pass_psis_and_its_elbo_nears_log_z():
    """Pathfinder's q is the best of the path's quasi-Newton Gaussians by a 25-draw ELBO estimate, not the exact
    posterior: k̂ is small, the ELBO within 0.1 nats of log Z, the moments near the truth (measured: k̂ 0.16, ELBO
    3.205 against log Z 3.207, sd ratios 0.97–1.01, trusted; with Stan's history of 5 the sd ratios were 0.81–1.01,
    and the reweighting check flagged it)."""
    fit = pathfinder(_gaussian(), key=1)
    log_z = 0.5 * D * np.log(2 * np.pi) + 0.5 * np.linalg.slogdet(COV)[1]
    assert fit.info.importance.khat < 0.5
    assert fit.verdict.check("importance").status == "pass" and fit.trusted
    assert abs(fit.elbo - log_z) < 0.1
    sd = np.sqrt(np.diag(COV))
    np.testing.assert_allclose(np.asarray(fit.q.mean), MEAN, atol=0.1 * sd.min())
    np.testing.assert_allclose(np.asarray(fit.q.marginal_sd()) / sd, 1.0, atol=0.25)
    assert fit.info.outcome == "converged" and fit.info.extra["num_paths"] == 4
    assert fit.info.grad_evals == fit.info.extra["lbfgs_evals"] + fit.info.extra["density_evals"] > 0


def test_multi_path_weights_recover_the_mass_of_each_mode():
    """Two well-separated modes with masses 0.3 and 0.7: paths land in either, each path's Gaussian is (nearly) its
    mode's, and the weights give each mode its mass whatever the number of paths that found it."""
    centre = jnp.array([3.0, 3.0])

    def log_p(p):
        z = p["z"]
        a = jnp.log(0.3) - 0.5 * jnp.sum((z + centre) ** 2)
        b = jnp.log(0.7) - 0.5 * jnp.sum((z - centre) ** 2)
        return jnp.logaddexp(a, b)

    fit = pathfinder(
        vbayes.from_logdensity(log_p, {"z": jnp.zeros(2)}, name="two_modes"), num_paths=8, init_radius=4.0, key=0
    )
    locs = np.asarray(fit.q.components.loc)
    weights = np.asarray(fit.info.extra["path_weights"])
    at_first = locs[:, 0] < 0
    assert 0 < at_first.sum() < 8, locs  # both modes found (else the test is moot) ...
    assert abs(at_first.mean() - 0.3) > 0.1  # ... by a share of the paths that is not the mass (4 of 8 here)
    assert weights[at_first].sum() == pytest.approx(0.3, abs=0.03)
    np.testing.assert_allclose(np.asarray(fit.q.mean), 0.4 * np.asarray(centre), atol=0.2)


def test_a_q_narrower_than_the_posterior_is_flagged():
    """Too short a curvature history for an 11-dimensional posterior: q's sds are too small, and the verdict says
    so (the exact posterior confirms that the flag is right)."""
    m, c, _ = linear_regression_exact()
    fit = pathfinder(linear_regression(), history=2, key=0)
    ratio = np.asarray(fit.q.marginal_sd()) / np.sqrt(np.diag(c))
    assert ratio.min() < 0.85  # q is in fact too narrow ...
    assert not fit.trusted and fit.verdict.check("reweighting").status == "flag"  # ... and says so


def test_advi_starts_from_pathfinder_and_reaches_the_exact_posterior():
    m, c, _ = linear_regression_exact()
    fit = vbayes.advi(linear_regression(), "fullrank", init="pathfinder", key=0)
    assert fit.info.extra["init"].startswith("pathfinder (iterate"), fit.info.extra["init"]
    assert fit.info.extra["init_evals"] > 0 and fit.info.grad_evals > fit.info.extra["init_evals"]
    sd = np.sqrt(np.diag(c))
    np.testing.assert_allclose(np.asarray(fit.q.mean), m, atol=0.1 * sd.min())
    np.testing.assert_allclose(np.asarray(fit.q.marginal_sd()) / sd, 1.0, atol=0.1)
    assert fit.trusted, fit.verdict.summary()


@pytest.mark.parametrize(
    "option, value",
    [("num_paths", 0), ("max_iter", 2.5), ("history", -1), ("num_elbo_draws", "many"), ("init_radius", np.nan)],
)
def test_bad_options_are_named(option, value):
    with pytest.raises(VBayesError, match=option):
        pathfinder(_gaussian(), **{option: value})


def test_a_density_that_fails_everywhere_is_a_clear_error():
    bad = vbayes.from_logdensity(lambda p: jnp.sum(p["z"]) * jnp.nan, {"z": jnp.zeros(2)}, name="nan_everywhere")
    with pytest.raises(VBayesError, match="not finite"):
        pathfinder(bad, num_paths=2, max_iter=5)


def test_psis_corrected_draws_move_a_too_narrow_q_towards_the_posterior():
    """A mean-field q of a correlated Gaussian has sds √(1/Λ_ii), too small; its k̂ allows importance weights, and
    the PSIS-resampled draws have sds much closer to the exact ones. A q that the weights cannot correct is refused."""
    cov = np.array([[1.0, 0.6], [0.6, 1.0]])
    prec = jnp.asarray(np.linalg.inv(cov))
    target = vbayes.from_logdensity(lambda p: -0.5 * p["z"] @ prec @ p["z"], {"z": jnp.zeros(2)}, name="corr")
    fit = vbayes.advi(target, "meanfield", progress=False, key=0)
    own = np.asarray(fit.draws(8000)["z"]).std(0)
    corrected = np.asarray(fit.corrected_draws(8000, key=1)["z"]).std(0)
    assert own.max() < 0.85  # q is too narrow (√(1 − 0.6²) = 0.8) ...
    assert np.all(np.abs(corrected - 1) < np.abs(own - 1) / 2)  # ... the corrected draws halve every sd's error
    too_narrow = vbayes.advi(_gaussian(), "meanfield", progress=False, key=0)  # correlation 0.64: k̂ 0.82
    with pytest.raises(VBayesError, match="k̂"):
        too_narrow.corrected_draws(1000)


def test_path_weights_share_the_psis_weights_and_survive_no_finite_ratio():
    from vbayes.infer.pathfinder import path_weights

    r = np.log(np.array([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]]))  # constant within a path: shares 1/4 and 3/4
    log_w, _ = path_weights(r)
    np.testing.assert_allclose(np.exp(log_w), [0.25, 0.75], rtol=1e-12)
    log_w, _ = path_weights(np.array([[0.0, -np.inf], [np.nan, 0.0]]))  # a non-finite ratio weighs 0
    np.testing.assert_allclose(np.exp(log_w), [0.5, 0.5], rtol=1e-12)
    log_w, khat = path_weights(np.full((2, 3), np.nan))
    np.testing.assert_allclose(np.exp(log_w), [0.5, 0.5])
    assert khat == np.inf
