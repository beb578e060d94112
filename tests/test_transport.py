"""A flow as a transport map (:mod:`vbayes.transport`): the pulled-back density is the change of variables exactly,
and the ``stationarity`` check passes a q that is the posterior and flags one that misses a funnel's neck."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

import vbayes
from vbayes.checks import verify
from vbayes.fit import Fit, FitInfo
from vbayes.flows import Flow, build_flow
from vbayes.transport import CHAINS, LEAPFROG_STEPS, TRANSITIONS, pulled_back, push_forward, stationarity_check


def _bent_flow(kind: str) -> Flow:
    """A flow whose every weight is moved off its start: T is far from affine."""
    q = build_flow(kind, jnp.array([1.0, -2.0, 0.5]), jnp.array([0.5, 3.0, 1.0]), jax.random.PRNGKey(0))
    keys = jax.random.split(jax.random.PRNGKey(1), len(q._params))
    params = [p + 0.3 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(q._params, keys, strict=True)]
    return Flow(params, q._buffers, q.structure)


@pytest.mark.parametrize("kind", ["flow", "maf"])
def test_a_target_that_is_the_flow_itself_pulls_back_to_the_standard_normal(kind):
    """p̃ = q = T_# N(0, I): log q(T(u)) + log |det ∂T/∂u| = log N(u; 0, I) exactly (a wrong sign or a missing
    log-determinant would leave a term that varies with u); and T maps the pulled-back draws back."""
    q = _bent_flow(kind)
    target = vbayes.from_logdensity(lambda p: q.log_prob(p["z"]), {"z": jnp.zeros(3)}, name="the flow")
    u = jax.random.normal(jax.random.PRNGKey(2), (64, 3))
    pulled = pulled_back(target, q)
    log_u = jax.vmap(pulled.log_density)(u)
    np.testing.assert_allclose(log_u, norm.logpdf(u).sum(-1), atol=1e-9)
    z = push_forward(q, u.reshape(8, 8, 3))
    assert z.shape == (8, 8, 3)
    np.testing.assert_allclose(q.log_prob(z.reshape(64, 3)), jax.vmap(target.log_density)(z.reshape(64, 3)))
    assert float(jnp.max(jnp.abs(z.reshape(64, 3) - u))) > 1.0  # T is not the identity


def _flow_fit(target: vbayes.Target, q: Flow) -> Fit:
    return Fit(target=target, q=q, trace=np.zeros(1), info=FitInfo("advi-flow", "converged", "", 1, 1, 0, 0.0))


def test_stationarity_passes_a_flow_that_is_the_posterior():
    """p̃ = q: HMC from q's draws in its base space samples N(0, I) and never diverges."""
    q = _bent_flow("flow")
    target = vbayes.from_logdensity(lambda p: q.log_prob(p["z"]), {"z": jnp.zeros(3)}, name="the flow")
    check = stationarity_check(_flow_fit(target, q), jax.random.PRNGKey(0))
    assert check.status == "pass", check.message
    assert check.evaluations == CHAINS * TRANSITIONS * LEAPFROG_STEPS
    low, high = (float(x) for x in check.message.split("u's sds ")[1].split(",")[0].split("–"))
    assert 0.85 < low <= high < 1.15  # the second halves of 32 chains: sds of N(0, 1) within ±15%


def _funnel() -> vbayes.Target:
    def log_p(p):
        return norm.logpdf(p["v"], 0.0, 3.0) + jnp.sum(norm.logpdf(p["x"], 0.0, jnp.exp(p["v"] / 2.0)))

    return vbayes.from_logdensity(log_p, {"v": 0.0, "x": jnp.zeros(2)}, name="funnel")


def test_stationarity_flags_a_flow_that_misses_the_funnels_neck():
    """Neal's funnel (v ~ N(0, 3²), x | v ~ N(0, e^v I)) and a flow that is a Gaussian around its bulk, v's sd 1.5
    (the identity layers of a new flow): HMC in its base space runs into the neck and diverges; the verdict of a fit
    with that q names the check."""
    target = _funnel()
    q = build_flow("flow", jnp.zeros(3), jnp.array([1.5, 1.0, 1.0]), jax.random.PRNGKey(0))
    check = stationarity_check(_flow_fit(target, q), jax.random.PRNGKey(1))
    assert check.status == "flag" and check.value >= 1, check.message
    assert "divergent transitions" in check.message and "funnel's neck" in check.message
    fit = verify(_flow_fit(target, q), ("stationarity",))
    assert not fit.trusted and fit.verdict.flags[0].startswith("HMC from q's draws")


def test_only_flows_run_the_stationarity_check():
    target = _funnel()
    fit = vbayes.advi(target, "fullrank", key=0, max_steps=500, checks=("stationarity",))
    assert fit.verdict.check("stationarity") is None
