"""The q that are draws rather than densities: MCMC draws (:class:`Empirical`) and importance-weighted draws
(:class:`Weighted`). Neither has a density: ``log_prob`` and ``entropy`` raise; ``sample``, ``mean``,
``marginal_sd()`` and ``covariance()`` work as for every family."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Empirical(NamedTuple):
    """q = the empirical distribution of MCMC draws ``samples``: ``(chains, draws, d)``.

    Has no density: ``log_prob`` and ``entropy`` raise. ``sample`` returns distinct draws (without
    replacement) while ``n`` ≤ chains·draws.
    """

    samples: Array

    @property
    def flat(self) -> Array:
        return self.samples.reshape(-1, self.samples.shape[-1])

    @property
    def loc(self) -> Array:
        return self.mean

    @property
    def mean(self) -> Array:
        return jnp.mean(self.flat, 0)

    def sample(self, key: Array, n: int) -> Array:
        total = self.flat.shape[0]
        if n <= total:
            return self.flat[jax.random.permutation(key, total)[:n]]
        return self.flat[jax.random.randint(key, (n,), 0, total)]

    def log_prob(self, z: Array) -> Array:
        raise NotImplementedError("an empirical distribution of MCMC draws has no density")

    def entropy(self) -> Array:
        raise NotImplementedError("an empirical distribution of MCMC draws has no closed-form entropy")

    def marginal_sd(self) -> Array:
        return jnp.std(self.flat, 0, ddof=1)

    def covariance(self) -> Array:
        return jnp.cov(self.flat.T)


class Weighted(NamedTuple):
    """q = Σ_s w_s δ(z − z_s): draws ``draws`` ``(S, d)`` with normalised log weights ``log_weights`` ``(S,)``
    (log Σ_s w_s = 0), importance sampling's answer. ``sample`` resamples with replacement by the weights; the
    moments are the weighted ones."""

    draws: Array
    log_weights: Array

    @property
    def weights(self) -> Array:
        return jnp.exp(self.log_weights)

    @property
    def loc(self) -> Array:
        return self.mean

    @property
    def mean(self) -> Array:
        return self.weights @ self.draws

    def sample(self, key: Array, n: int) -> Array:
        return self.draws[jax.random.choice(key, self.draws.shape[0], (n,), p=self.weights)]

    def log_prob(self, z: Array) -> Array:
        raise NotImplementedError("importance-weighted draws have no density")

    def entropy(self) -> Array:
        raise NotImplementedError("importance-weighted draws have no closed-form entropy")

    def marginal_sd(self) -> Array:
        return jnp.sqrt(self.weights @ (self.draws - self.mean) ** 2)

    def covariance(self) -> Array:
        centred = self.draws - self.mean
        return (centred * self.weights[:, None]).T @ centred

    @property
    def ess(self) -> Array:
        """Kish's effective sample size 1 / Σ_s w_s²."""
        return 1.0 / jnp.sum(self.weights**2)
