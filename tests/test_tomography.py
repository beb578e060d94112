"""The plasma tomography example: its geometry and spline are what they claim, and Laplace on the small
problem agrees across curvatures, draws with the covariance it claims, and covers the true fields."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vbayes import laplace  # noqa: E402
from vbayes.errors import VBayesError  # noqa: E402
from vbayes.examples import EXAMPLES  # noqa: E402
from vbayes.examples.tomography import (  # noqa: E402
    FIELDS,
    _chords,
    camera_rays,
    locate,
    make_mesh,
    plasma_tomography_dim,
    plasma_tomography_problem,
    spline_coefficients,
    spline_eval,
)
from vbayes.targets import least_squares_parts  # noqa: E402


@pytest.fixture(scope="module")
def small():
    return plasma_tomography_problem("small", seed=0)


@pytest.fixture(scope="module")
def fits(small):
    """Dense, adaptive lowrank and adaptive ggn Laplace fits of the small problem, without their verdicts' checks
    (no test here reads them: the curvatures, evidences and Newton steps are what is compared)."""
    dense = laplace(small.target, "dense", checks="none")
    start = dense.state.z  # the same mode for all three
    return {
        "dense": dense,
        "lowrank": laplace(small.target, "lowrank", init=start, checks="none"),
        "ggn": laplace(small.target, "ggn", init=start, checks="none"),
    }


# ----------------------------------------------------------------------------------------------
# generation


def test_small_problem_shapes_and_determinism(small):
    t = small.target
    nv = small.mesh.points.shape[0]
    assert 50 <= nv <= 90 and t.dim == 3 * nv and t.names == FIELDS
    parts = least_squares_parts(t)
    assert parts.residual is None and parts.latent(jnp.asarray(small.true_z)).shape == (nv,)
    assert parts.gram.shape == (nv, nv)
    assert small.nnz > 1000
    again = plasma_tomography_problem("small", seed=0)
    other = plasma_tomography_problem("small", seed=1)
    y = lambda p: np.asarray(least_squares_parts(p.target).gram @ np.ones(nv))
    np.testing.assert_array_equal(y(again), y(small))
    assert not np.allclose(y(other), y(small))
    assert other.target.density == t.density  # new data, same static part: compiled code is shared
    assert plasma_tomography_dim("full") == EXAMPLES["plasma_tomography"].dim == 2055
    with pytest.raises(VBayesError, match="unknown size"):
        plasma_tomography_problem("huge")


def test_mesh_and_barycentric_location():
    mesh = make_mesh(650)
    assert 600 <= mesh.points.shape[0] <= 750
    assert mesh.triangles.min() == 0 and mesh.triangles.max() == mesh.points.shape[0] - 1
    rng = np.random.default_rng(0)
    centroids = mesh.points[mesh.triangles].mean(1)
    pts = centroids[rng.integers(0, len(centroids), 500)] + rng.normal(0, 0.005, (500, 2))
    verts, w, inside = locate(mesh, pts[:, 0], pts[:, 1])
    assert inside.mean() > 0.9
    np.testing.assert_allclose(w[inside].sum(1), 1.0, atol=1e-12)
    assert np.all(w[inside] >= -1e-12)
    recon = np.einsum("nk,nkj->nj", w[inside], mesh.points[verts[inside]])
    np.testing.assert_allclose(recon, pts[inside], atol=1e-12)  # the weights reproduce the point


def test_geometry_rows_integrate_along_the_chord(small):
    """G·1 is the chord length inside the mesh: at most the chord through the bounding annulus, and close to it
    for rays through the middle of the plasma."""
    g = small.target.data  # leaves: find the BCOO geometry's row sums through the forward model instead
    parts = least_squares_parts(small.target)
    assert parts is not None and g
    from vbayes.examples.tomography import _CAMERAS, geometry_matrix

    rows, cols, vals = geometry_matrix(small.mesh, small.pixels, seed=0)
    row_sum = np.bincount(rows, weights=vals, minlength=4 * small.pixels**2)
    lengths = []
    for position, aim, fov in _CAMERAS:
        p, d = camera_rays(position, aim, fov, small.pixels)
        _, l1, _, l2 = _chords(p, d)
        lengths.append(l1 + l2)
    lengths = np.concatenate(lengths)
    assert np.all(row_sum <= lengths + 1e-12)
    assert np.mean(row_sum > 0) > 0.5 and np.median(row_sum[row_sum > 0] / lengths[row_sum > 0]) > 0.5


def test_spline_interpolates_the_table_and_is_smooth():
    grid_a, grid_b = (-1.0, 2.0, 7), (0.0, 3.0, 6)
    a, b = np.meshgrid(np.linspace(*grid_a), np.linspace(*grid_b), indexing="ij")
    table = np.sin(a) * np.exp(-0.3 * b) + 0.2 * a * b
    coef = jnp.asarray(spline_coefficients(table))
    f = lambda x, y: spline_eval(coef, x, y, grid_a, grid_b)
    np.testing.assert_allclose(f(jnp.asarray(a.ravel()), jnp.asarray(b.ravel())), table.ravel(), atol=1e-12)
    x, y = jnp.array([0.3, 1.7]), jnp.array([1.1, 2.9])
    grad = jax.grad(lambda x: jnp.sum(f(x, y)))(x)
    h = 1e-6
    np.testing.assert_allclose(grad, (f(x + h, y) - f(x - h, y)) / (2 * h), rtol=1e-6)
    knot = 0.5  # a knot of the a-grid: the second derivative is continuous there (C²)
    d2 = jax.grad(jax.grad(lambda x: f(jnp.array([x]), jnp.array([1.3]))[0]))
    assert float(d2(knot - 1e-9)) == pytest.approx(float(d2(knot + 1e-9)), abs=1e-6)
    smooth = np.sin(0.35) * np.exp(-0.3 * 1.1) + 0.2 * 0.35 * 1.1
    assert float(f(jnp.array([0.35]), jnp.array([1.1]))[0]) == pytest.approx(smooth, abs=0.02)


# ----------------------------------------------------------------------------------------------
# Laplace on the small problem


def test_lowrank_and_ggn_marginal_sds_agree_with_dense(fits):
    """Adaptive rank keeps every eigenvalue ≥ 0.1 of the prior-preconditioned data Hessian. Tolerances: each
    dropped pair widens a variance by at most λ/(1+λ) < 9% of the prior's; Gauss-Newton also drops the residual
    curvature Σ rᵢ∇²fᵢ, which the dense (exact) Hessian keeps."""
    sd = {k: np.asarray(f.q.marginal_sd()) for k, f in fits.items()}
    for k in ("lowrank", "ggn"):
        rel = np.abs(sd[k] / sd["dense"] - 1)
        assert rel.mean() < 0.025 and rel.max() < 0.15, (k, rel.mean(), rel.max())
    assert fits["ggn"].info.extra["rank"] <= fits["ggn"].target.dim // 3  # JᵀJ has rank ≤ V: E per vertex
    assert fits["ggn"].info.extra["products"] < fits["dense"].info.extra["products"]
    for f in fits.values():
        assert f.info.outcome == "converged", f.info.message
        assert f.info.extra["newton"]["decrement_after"] < 1e-3
    lz = {k: f.info.extra["log_evidence"] for k, f in fits.items()}
    assert abs(lz["lowrank"] - lz["dense"]) < 2.0 and abs(lz["ggn"] - lz["dense"]) < 2.0, lz


def test_lowrank_draws_have_the_covariance_they_claim(fits):
    q = fits["lowrank"].q
    cov = np.asarray(q.covariance())
    z = np.asarray(q.sample(jax.random.PRNGKey(3), 20_000))
    var = np.diag(cov)
    # 20,000 draws: a variance ratio has se √(2/20000) = 1%; the max over 222 coordinates stays below 4.5 se
    np.testing.assert_allclose(z.var(0) / var, 1.0, atol=0.045)
    np.testing.assert_allclose(z.mean(0), q.mean, atol=4.5 * np.sqrt(var / 20_000).max())
    corr = cov / np.sqrt(np.outer(var, var))
    emp = np.corrcoef(z.T)
    assert np.max(np.abs(emp - corr)) < 0.04  # se of a correlation ≤ 1/√20000 = 0.007
    np.testing.assert_allclose(np.sqrt(var), q.marginal_sd(), rtol=1e-10)


def test_posterior_covers_the_true_fields(small, fits):
    """The data were simulated from the truth, so |truth − mean| / sd is about N(0, 1) per coordinate."""
    q = fits["dense"].q
    score = np.abs(small.true_z - np.asarray(q.mean)) / np.asarray(q.marginal_sd())
    assert 0.85 < np.mean(score < 2) and np.mean(score < 3) > 0.97
    draws = fits["lowrank"].draws(200)
    assert set(draws) == set(FIELDS) and np.all((draws["fraction"] > 0) & (draws["fraction"] < 1))


@pytest.mark.slow
def test_full_size_generation_is_fast_and_memory_sane():
    import time

    t0 = time.perf_counter()
    problem = plasma_tomography_problem("full")
    assert time.perf_counter() - t0 < 60
    assert problem.target.dim == 2055 and problem.nnz < 2e7  # G: < 320 MB as float64 + int32 indices
    plain = plasma_tomography_problem("full", compress=False)
    assert least_squares_parts(plain.target).residual(jnp.asarray(problem.true_z)).shape == (10**6,)


# ----------------------------------------------------------------------------------------------
# the compressed target (operator=G): the same density, the same Laplace fits


@pytest.fixture(scope="module")
def plain(small):
    return plasma_tomography_problem("small", seed=0, compress=False)


def test_compressed_target_equals_the_forward_model(small, plain):
    """‖(y − G E)/σ‖² expanded as c − 2bᵀE + EᵀWE: log density and gradient equal the plain target's at
    random points (to rounding), as do the Gauss-Newton products Jᵀ W J v and Jᵀ J v."""
    from vbayes.infer.curvature import gauss_newton_rows
    from vbayes.targets import value_and_grad

    key = jax.random.PRNGKey(3)
    for i in range(3):
        z = jnp.asarray(small.true_z) + 0.3 * jax.random.normal(jax.random.fold_in(key, i), (small.target.dim,))
        v1, g1 = value_and_grad(small.target, z)
        v2, g2 = value_and_grad(plain.target, z)
        assert float(v1) == pytest.approx(float(v2), rel=1e-12)
        np.testing.assert_allclose(g1, g2, rtol=1e-9, atol=1e-9 * float(jnp.max(jnp.abs(g2))))
    rows = jax.random.normal(key, (4, small.target.dim))
    np.testing.assert_allclose(
        gauss_newton_rows(small.target, z, rows, 4), gauss_newton_rows(plain.target, z, rows, 4), rtol=1e-8
    )


@pytest.mark.slow
def test_compressed_laplace_equals_plain_laplace(small, plain, fits):
    """Dense Laplace on both forms: same mode, marginal sds and log evidence."""
    other = laplace(plain.target, "dense", init=fits["dense"].state.z, checks="none")
    np.testing.assert_allclose(fits["dense"].q.mean, other.q.mean, atol=1e-6)
    np.testing.assert_allclose(fits["dense"].q.marginal_sd(), other.q.marginal_sd(), rtol=1e-5)
    assert fits["dense"].info.extra["log_evidence"] == pytest.approx(other.info.extra["log_evidence"], abs=1e-3)


def test_operator_bad_input():
    from vbayes.targets import from_least_squares

    a = np.ones((5, 2))
    ok = dict(prior_mean=0.0, prior_precision=1.0, example_params={"x": np.zeros(3)})
    with pytest.raises(VBayesError, match="shape \\(N, m\\) with N = 4"):
        from_least_squares(lambda p: p["x"][:2], np.ones(4), 1.0, operator=a, **ok)
    with pytest.raises(VBayesError, match="forward must return shape \\(2,\\)"):
        from_least_squares(lambda p: p["x"], np.ones(5), 1.0, operator=a, **ok)
    with pytest.raises(VBayesError, match="flat"):
        from_least_squares(lambda p: p["x"][:2], np.ones((5, 1)), 1.0, operator=a, **ok)
