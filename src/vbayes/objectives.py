"""Monte Carlo estimators of variational objectives, as pure functions ``(target, q, key) -> scalar``.

Each returns an estimate of a lower bound on log Z whose *gradient* with respect to the parameters of
``q`` is the named estimator; maximise it (optax: minimise its negative).

| name | value | gradient |
| --- | --- | --- |
| ``elbo`` | mean log p̃(z_s) + H[q] | reparameterised (pathwise) |
| ``stl`` | mean log p̃(z_s) − log q(z_s) | sticking the landing: q's score term dropped (Roeder+ 2017) |
| ``score`` | mean log p̃(z_s) − log q(z_s) | score function, leave-one-out baseline (no reparameterisation needed) |
| ``iwelbo`` | log mean_k exp(log p̃(z_k) − log q(z_k)) | reparameterised; K = num_samples (Burda et al. 2016) |
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from vbayes.families import Family
from vbayes.targets import Target

Array = jax.Array
Objective = Callable[[Target, Family, Array, int], Array]


def _log_p(target: Target, z: Array) -> Array:
    """log p̃ at each row of ``z``: ``(n, d) -> (n,)``."""
    return jax.vmap(target.log_density)(z)


def elbo(target: Target, q: Family, key: Array, num_samples: int = 1) -> Array:
    """E_q[log p̃(z)] + H[q] with z = T(ε; q): closed-form entropy, pathwise gradient."""
    z = q.sample(key, num_samples)
    return jnp.mean(_log_p(target, z)) + q.entropy()


def elbo_stl(target: Target, q: Family, key: Array, num_samples: int = 1) -> Array:
    """E_q[log p̃(z) − log q_⊥(z)]: the same value; q's parameters are stopped inside log q (zero
    gradient variance when q equals the target)."""
    z = q.sample(key, num_samples)
    q_stopped = jax.lax.stop_gradient(q)
    return jnp.mean(_log_p(target, z) - q_stopped.log_prob(z))


def elbo_score(target: Target, q: Family, key: Array, num_samples: int = 8) -> Array:
    """E_q[f], f = log p̃ − log q, with gradient mean_s ∇log q(z_s)·(f_s − b_s), b_s the mean of the
    other samples' f (leave-one-out control variate). Needs no gradient of log p̃ through z."""
    z = jax.lax.stop_gradient(q.sample(key, num_samples))
    log_q = q.log_prob(z)
    f = jax.lax.stop_gradient(_log_p(target, z) - log_q)
    n = f.shape[0]
    baseline = (jnp.sum(f) - f) / (n - 1) if n > 1 else jnp.zeros_like(f)
    surrogate = jnp.mean(log_q * (f - baseline))
    return jnp.mean(f) + surrogate - jax.lax.stop_gradient(surrogate)


def iwelbo(target: Target, q: Family, key: Array, num_samples: int = 8) -> Array:
    """log (1/K) Σ_k p̃(z_k)/q(z_k), K = num_samples: a tighter bound than the ELBO, → log Z as K → ∞."""
    z = q.sample(key, num_samples)
    log_w = _log_p(target, z) - q.log_prob(z)
    return jax.nn.logsumexp(log_w) - jnp.log(num_samples)


OBJECTIVES: dict[str, Objective] = {"elbo": elbo, "stl": elbo_stl, "score": elbo_score, "iwelbo": iwelbo}
