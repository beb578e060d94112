"""A flow as a transport map (:mod:`vbayes.transport`): the pulled-back density is the change of variables exactly,
and the pushed-forward draws are T's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

import vbayes
from vbayes.flows import Flow, build_flow
from vbayes.transport import pulled_back, push_forward


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
