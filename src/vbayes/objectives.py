"""Monte Carlo estimators of variational objectives, as pure functions ``(target, q, key, num_samples) -> scalar``.

Each returns an estimate of a lower bound on log Z whose *gradient* with respect to the parameters of
``q`` is the named estimator; maximise it (optax: minimise its negative).

| name | value | gradient |
| --- | --- | --- |
| ``elbo`` | mean log p̃(z_s) + H[q] | reparameterised (pathwise) |
| ``stl`` | mean log p̃(z_s) − log q(z_s) | sticking the landing: q's score term dropped (Roeder+ 2017) |
| ``score`` | mean log p̃(z_s) − log q(z_s) | score function, leave-one-out baseline (no reparameterisation needed) |
| ``iwelbo`` | log mean_k exp(log p̃(z_k) − log q(z_k)) | reparameterised; K = num_samples (Burda et al. 2016) |
| ``renyi`` | 1/(1−α) · log mean_k exp((1−α)(log p̃(z_k) − log q(z_k))), α ∈ [0, 1] | doubly reparameterised |

The Rényi bound (Li & Turner 2016, "Rényi divergence variational inference", NeurIPS) interpolates: α = 1 is the
ELBO (``renyi(1.0)`` *is* ``elbo_stl``), α = 0 the IWELBO's value; in between, a smaller α penalises q less for
putting mass where the target has little, so q covers more of it (mean field: wider marginals than the ELBO's).
With K = 1 it is the ELBO estimator for every α. ``OBJECTIVES["renyi"]`` is ``renyi(RENYI_ALPHA)``; other α come
from the cached factory :func:`renyi` (one function per α, so compiled programs keyed on it are reused).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from vbayes.errors import VBayesError, is_real, require
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


RENYI_ALPHA = 0.5
"""The Rényi bound's default α, halfway between the IWELBO (α = 0) and the ELBO (α = 1)."""


def renyi_bound(log_w: Array, alpha: float) -> Array:
    """1/(1−α) · log mean_k exp((1−α) w_k) for log weights ``w``: ``(K,) -> ()``; α = 1 (a Python float) is the
    limit, mean_k w_k. Computed as m + log1p(mean_k expm1((1−α)(w_k − m)))/(1−α), m = max_k w_k: accurate as
    α → 1 (no log K cancelling a log-sum of near-equal terms), and a w_k = −inf only drops out."""
    if alpha == 1.0:
        return jnp.mean(log_w)
    top = jnp.max(log_w)
    m = jnp.where(jnp.isfinite(top), top, 0.0)
    return m + jnp.log1p(jnp.mean(jnp.expm1((1.0 - alpha) * (log_w - m)))) / (1.0 - alpha)


def renyi_gradient_weights(log_w: Array, alpha: float) -> Array:
    """The doubly reparameterised gradient's weights α·ω_k + (1−α)·ω_k², ω = softmax((1−α) w): ``(K,) -> (K,)``.

    ∇L̂_α = Σ_k ω_k ∇w_k; the part of ∇w_k that differentiates q's density at fixed z (−∂_θ log q(z_k)) is,
    in expectation, a pathwise term with weight −(1−α)·ω_k(1 − ω_k) (reparameterise once more), so
    E ∇L̂_α = E Σ_k (α ω_k + (1−α) ω_k²) · ∂w_k/∂z_k · ∂z_k/∂θ, with q's parameters stopped inside log q.
    α = 1: 1/K (sticking the landing); α = 0: ω_k² (IWAE-DReG, Tucker et al. 2019)."""
    omega = jax.nn.softmax((1.0 - alpha) * log_w)
    return alpha * omega + (1.0 - alpha) * omega**2


@functools.cache
def _renyi(alpha: float) -> Objective:
    """One function per α (cached: the ADVI driver's compiled program is keyed on the objective function)."""
    if alpha == 1.0:
        return elbo_stl

    def renyi_alpha(target: Target, q: Family, key: Array, num_samples: int = 8) -> Array:
        z = q.sample(key, num_samples)
        log_w = _log_p(target, z) - jax.lax.stop_gradient(q).log_prob(z)  # (K,): gradients only through z
        w = jax.lax.stop_gradient(log_w)
        weights = jax.lax.stop_gradient(renyi_gradient_weights(w, alpha))
        surrogate = jnp.sum(weights * jnp.where(weights > 0, log_w, 0.0))  # a w_k = −inf has weight 0
        return renyi_bound(w, alpha) + surrogate - jax.lax.stop_gradient(surrogate)

    renyi_alpha.__name__ = renyi_alpha.__qualname__ = f"renyi[alpha={alpha!r}]"
    renyi_alpha.__doc__ = f"The Rényi bound at α = {alpha!r} (:func:`renyi`)."
    return renyi_alpha


def renyi(alpha: float = RENYI_ALPHA) -> Objective:
    """The Rényi-α bound (Li & Turner 2016) as an objective ``(target, q, key, num_samples=8) -> ()``:

    L̂_α = 1/(1−α) · log (1/K) Σ_k exp((1−α) w_k),  w_k = log p̃(z_k) − log q(z_k),  z_k = T(ε_k; q),  K = num_samples.

    ``alpha`` ∈ [0, 1]: there E[L̂_α] ≤ L_α ≤ log Z (Jensen; Rényi's divergence is ≥ 0 for α ≥ 0), so it stays a
    lower bound like the other objectives. The estimator is biased below L_α = 1/(1−α)·log E_q[(p̃/q)^{1−α}] for
    finite K, the bias shrinking as K grows; K = 1 gives the ELBO for every α. α < 0 would bound log Z from
    above, and α > 1 turns the estimator's bias upward (its mean may exceed log Z), so neither is allowed.
    α = 1 returns :func:`elbo_stl`, the limit of both the value and the gradient below (which differ from it by
    O(1 − α)).

    Gradient: doubly reparameterised (:func:`renyi_gradient_weights`), unbiased for ∇E[L̂_α] and exactly zero
    when q ∝ p̃. The same α always gives the same function."""
    require([("alpha", alpha, is_real(alpha) and 0 <= alpha <= 1, "a number in [0, 1]")], "renyi")
    return _renyi(float(alpha))


OBJECTIVES: dict[str, Objective] = {
    "elbo": elbo,
    "stl": elbo_stl,
    "score": elbo_score,
    "iwelbo": iwelbo,
    "renyi": renyi(RENYI_ALPHA),
}


def objective_for(name: str, renyi_alpha: float = RENYI_ALPHA) -> Objective:
    """The objective called ``name`` (a key of :data:`OBJECTIVES`); for ``renyi``, the bound at ``renyi_alpha``."""
    if name not in OBJECTIVES:
        raise VBayesError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}")
    return renyi(renyi_alpha) if name == "renyi" else OBJECTIVES[name]
