"""Targets: NumPyro parity, Jacobians, constraint round trips, static/dynamic split, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax.scipy import stats as jstats
from numpyro.infer.util import potential_energy
from scipy import integrate, stats

from vbayes import VBayesError, from_logdensity, from_numpyro


def mixed_model(x, y=None):
    """Positive, simplex, interval and real latents: exercises every transform kind."""
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    w = numpyro.sample("w", dist.Dirichlet(jnp.ones(3)))
    rho = numpyro.sample("rho", dist.Uniform(-1.0, 1.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    mean = beta[0] + beta[1] * x + rho * w[0]
    numpyro.sample("y", dist.Normal(mean, sigma), obs=y)


X = np.linspace(-1, 1, 20)
Y = 0.3 + 0.8 * X + np.random.default_rng(0).normal(scale=0.5, size=20)


def test_from_numpyro_matches_numpyro_potential():
    t = from_numpyro(mixed_model, X, y=Y)
    assert t.dim == 1 + 2 + 1 + 2
    assert t.names == ("sigma", "w", "rho", "beta")
    for seed in range(3):
        z = jax.random.normal(jax.random.PRNGKey(seed), (t.dim,))
        u = t.unflatten(z)
        expected = -potential_energy(mixed_model, (X,), {"y": Y}, u)
        np.testing.assert_allclose(t.log_density(z), expected, rtol=1e-12)
    c = t.constrain(z)
    assert float(c["sigma"]) > 0 and abs(float(c["w"].sum()) - 1) < 1e-12 and -1 < float(c["rho"]) < 1


def test_from_logdensity_jacobian_makes_a_normalised_density_on_z():
    """A Gamma(3, 2) density on a positive θ becomes, with the log-Jacobian, a density on z = log θ."""
    t = from_logdensity(lambda p: jstats.gamma.logpdf(p["s"], 3.0, scale=0.5), {"s": 1.0}, {"s": "positive"})
    f = jax.jit(lambda z: jnp.exp(t.log_density(jnp.array([z]))))
    total, _ = integrate.quad(lambda z: float(f(z)), -15, 8, limit=200)
    assert abs(total - 1.0) < 1e-8
    z = jnp.array([0.3])
    np.testing.assert_allclose(t.log_density(z), stats.gamma.logpdf(np.exp(0.3), 3.0, scale=0.5) + 0.3, rtol=1e-12)


def test_from_logdensity_interval_and_simplex():
    fn = lambda p: jnp.sum(jnp.log(p["w"])) + jnp.log(p["r"])
    t = from_logdensity(fn, {"w": jnp.ones(4) / 4, "r": 0.5}, {"w": "simplex", "r": (0.0, 2.0)})
    assert t.dim == 3 + 1
    c = t.constrain(jnp.array([0.1, -0.2, 0.3, 5.0]))
    assert abs(float(c["w"].sum()) - 1.0) < 1e-12 and 0 < float(c["r"]) < 2
    # interval Jacobian: r = 2 sigmoid(u), dr/du = 2 s (1 - s)
    s = 1 / (1 + np.exp(-5.0))
    w = np.asarray(c["w"])
    expected_no_simplex = np.log(w).sum() + np.log(2 * s) + np.log(2 * s * (1 - s))
    simplex_jac = float(t.log_density(jnp.array([0.1, -0.2, 0.3, 5.0]))) - expected_no_simplex
    from numpyro.distributions.transforms import biject_to

    tr = biject_to(dist.constraints.simplex)
    u = jnp.array([0.1, -0.2, 0.3])
    np.testing.assert_allclose(simplex_jac, tr.log_abs_det_jacobian(u, tr(u)), rtol=1e-10)


def test_coordinate_names_and_repr():
    t = from_numpyro(mixed_model, X, y=Y)
    assert t.coordinate_names() == ["sigma", "w[0]", "w[1]", "rho", "beta[0]", "beta[1]"]
    assert "dim=6" in repr(t)


def test_new_data_same_shapes_is_the_same_static_structure():
    a, b = from_numpyro(mixed_model, X, y=Y), from_numpyro(mixed_model, X, y=Y + 1.0)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    assert float(a.log_density(jnp.zeros(6))) != float(b.log_density(jnp.zeros(6)))
    fn = lambda p, d: -jnp.sum((d["x"] - p["m"]) ** 2)
    c, d = (from_logdensity(fn, {"m": 0.0}, data={"x": v}) for v in (X, 2 * X))
    assert jax.tree_util.tree_structure(c) == jax.tree_util.tree_structure(d)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_data_is_named(bad):
    y = Y.copy()
    y[[3, 7]] = bad
    with pytest.raises(VBayesError, match=r"'y'.*2 non-finite"):
        from_numpyro(mixed_model, X, y=y)
    with pytest.raises(VBayesError, match="non-finite"):
        from_logdensity(lambda p, d: -jnp.sum((d["x"] - p["m"]) ** 2), {"m": 0.0}, data={"x": y})


def test_wrong_shapes_give_a_clear_error():
    with pytest.raises(VBayesError, match="(could not be run|cannot be evaluated).*shape"):
        from_numpyro(mixed_model, X, y=Y[:5])
    fn = lambda p, d: -jnp.sum((d["X"] @ p["b"] - d["y"]) ** 2)
    with pytest.raises(VBayesError, match="cannot be evaluated"):
        from_logdensity(fn, {"b": jnp.zeros(3)}, data={"X": np.ones((10, 4)), "y": np.ones(10)})
    with pytest.raises(VBayesError, match="scalar"):
        from_logdensity(lambda p: p["b"] ** 2, {"b": jnp.zeros(3)})


def test_bad_constraints_and_params():
    with pytest.raises(VBayesError, match="unknown constraint"):
        from_logdensity(lambda p: -p["s"], {"s": 1.0}, {"s": "postive"})
    with pytest.raises(VBayesError, match="not in example_params"):
        from_logdensity(lambda p: -p["s"], {"s": 1.0}, {"t": "positive"})
    with pytest.raises(VBayesError, match="non-empty"):
        from_logdensity(lambda p: 0.0, {})


def test_discrete_latent_is_refused():
    def model():
        numpyro.sample("k", dist.Poisson(3.0))

    with pytest.raises(VBayesError, match="discrete"):
        from_numpyro(model)


def test_log_density_rows_in_blocks_equals_one_density_per_row(monkeypatch):
    """Blocks of draws (and a last, shorter block) give each row's log density exactly, as one vmap does."""
    from vbayes import from_loglik
    from vbayes.targets import core

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(500, 3)), rng.normal(size=500)

    def log_lik(p, rows):
        return jnp.sum(jstats.norm.logpdf(rows[1], rows[0] @ p["w"], 1.0))

    target = from_loglik(log_lik, {"w": np.zeros(3)}, data=(X, y))
    z = jnp.asarray(rng.normal(size=(29, 3)))
    one_each = np.array([float(target.log_density(row)) for row in z])
    monkeypatch.setattr(core, "BLOCK_ELEMENTS", 2000 * 10)  # 10 draws a block: blocks of 10, 10 and 9
    np.testing.assert_allclose(np.asarray(target.log_density_rows(z)), one_each, rtol=1e-12)
    monkeypatch.setattr(core, "BLOCK_ELEMENTS", 2**24)  # every draw in one block
    np.testing.assert_allclose(np.asarray(target.log_density_rows(z)), one_each, rtol=1e-12)
