"""Finite mixtures of one family: q(z) = Σ_k w_k q_k(z), the answer of multi-path Pathfinder.

The components are one family's pytree with a leading axis of K (``jax.tree_util`` stacking); the mixture has
the same interface as every family (``sample``, ``log_prob``, ``mean``, ``marginal_sd``, ``covariance``), so the
checks (k̂, reweighting) and the summaries read it unchanged. Its entropy has no closed form: ``entropy`` raises,
and the ELBO of a mixture comes from the importance check's draws.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Mixture(NamedTuple):
    """q = Σ_k exp(log_weights_k) q_k. ``components``: a family with leading axis K on every leaf;
    ``log_weights``: ``(K,)``, normalised (−inf drops a component)."""

    components: Any
    log_weights: Array

    @classmethod
    def of(cls, components: list[Any], log_weights: Array | None = None) -> Mixture:
        """A mixture of the families in ``components`` (one type), equal weights unless ``log_weights`` ``(K,)``
        (normalised here)."""
        stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *components)
        k = len(components)
        lw = jnp.zeros(k) if log_weights is None else jnp.asarray(log_weights)
        return cls(stacked, lw - jax.nn.logsumexp(lw))

    @property
    def weights(self) -> Array:
        return jnp.exp(self.log_weights)

    def _each(self, fn) -> Array:
        """``fn(component)`` for each component, stacked ``(K, ...)``: one component at a time (``lax.map``),
        so memory is that of one component's result; 0 for a dropped component (weight 0, maybe NaN parameters)."""
        out = jax.lax.map(fn, self.components)
        return jnp.where((self.log_weights > -jnp.inf).reshape((-1,) + (1,) * (out.ndim - 1)), out, 0.0)

    @property
    def mean(self) -> Array:
        return self.weights @ self._each(lambda c: c.mean)

    @property
    def loc(self) -> Array:
        return self.mean

    def sample(self, key: Array, n: int) -> Array:
        """``(n, d)``: component k drawn with probability w_k for each row, then a draw of that component."""
        k_pick, k_draw = jax.random.split(key)
        num = self.log_weights.shape[0]
        pick = jax.random.categorical(k_pick, self.log_weights, shape=(n,))
        first = jax.tree_util.tree_map(lambda x: x[0], self.components)
        out = jnp.zeros((n,) + first.mean.shape, first.mean.dtype)

        def one(out, item):
            component, key, k = item
            return jnp.where((pick == k)[:, None], component.sample(key, n), out), None

        out, _ = jax.lax.scan(one, out, (self.components, jax.random.split(k_draw, num), jnp.arange(num)))
        return out

    def log_prob(self, z: Array) -> Array:
        """log Σ_k w_k q_k(z), shape ``z.shape[:-1]``."""
        each = self._each(lambda c: c.log_prob(z))
        return jax.nn.logsumexp(each + self.log_weights.reshape((-1,) + (1,) * (each.ndim - 1)), axis=0)

    def marginal_sd(self) -> Array:
        """√(Σ_k w_k (σ_k² + μ_k²) − μ²)."""
        means, sds = self._each(lambda c: c.mean), self._each(lambda c: c.marginal_sd())
        second = self.weights @ (sds**2 + means**2)
        return jnp.sqrt(jnp.maximum(second - self.mean**2, 0.0))

    def covariance(self) -> Array:
        """Σ_k w_k (Σ_k + μ_k μ_kᵀ) − μ μᵀ."""
        means, covs = self._each(lambda c: c.mean), self._each(lambda c: c.covariance())
        second = jnp.einsum("k,kij->ij", self.weights, covs + means[:, :, None] * means[:, None, :])
        m = self.mean
        return second - jnp.outer(m, m)

    def entropy(self) -> Array:
        raise NotImplementedError("a mixture's entropy has no closed form; estimate it from draws (q.log_prob)")
