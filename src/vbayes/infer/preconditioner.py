"""ADVI's default optimiser: Adam in q's own whitened coordinates, so that one learning rate serves every model; and
the registry of the optimisers ADVI runs (:data:`OPTIMIZERS`).

The mean's gradient is mapped by Lᵀ before Adam and the update by L after it (L the Cholesky factor of q's
covariance, or the marginal sds for the diagonal families), and each row of a scale factor moves in units of
its coordinate's sd: a unit step is one posterior sd along each of q's axes, whatever the posterior's scale and
correlation (an Adam-normalised natural gradient).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from vbayes.families import Family, FullRankGaussian, LowRankGaussian, PointMass


def _loc_whitener(q: Family) -> tuple[Callable, Callable]:
    """Maps of the mean's gradient into q's whitened coordinates and of updates back: ``Lᵀg`` and ``L u``
    with ``L`` the Cholesky factor for full rank, the marginal sds for the diagonal families."""
    q = jax.lax.stop_gradient(q)
    if isinstance(q, FullRankGaussian):
        L = q.scale_tril
        return (lambda g: L.T @ g), (lambda u: L @ u)
    sd = q.marginal_sd()
    return (lambda g: sd * g), (lambda u: sd * u)


def whiten_loc(inverse: bool = False) -> optax.GradientTransformation:
    """Whiten the mean's gradient by q's own scale (``Lᵀg``), or, with ``inverse``, map the update back
    (``L u``). Wrapped around Adam, a unit step moves the mean by one sd of q along each of q's principal
    axes, whatever the posterior's scale and correlation: an Adam-normalised natural gradient."""

    def update(updates, state, params=None):
        if params is None or isinstance(params, PointMass):
            return updates, state
        into, back = _loc_whitener(params)
        return updates._replace(loc=(back if inverse else into)(updates.loc)), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def scale_rows_by_q_sd() -> optax.GradientTransformation:
    """Row i of a scale factor (FullRank's strict lower triangle, LowRank's factor) is in units of
    coordinate i: multiply its update by q's conditional sd L_ii (full rank; the marginal sd there feeds
    back into its own step and can run away) or the marginal sd (low rank). Log-scales are unitless."""

    def update(updates, state, params=None):
        if isinstance(params, FullRankGaussian):
            row = jax.lax.stop_gradient(jnp.exp(jnp.diag(params.raw_tril)))
            off = jnp.tril(updates.raw_tril, -1) * row[:, None]
            updates = updates._replace(raw_tril=off + jnp.diag(jnp.diag(updates.raw_tril)))
        elif isinstance(params, LowRankGaussian):
            sd = jax.lax.stop_gradient(params.marginal_sd())
            updates = updates._replace(factor=updates.factor * sd[:, None])
        return updates, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def default_optimizer(learning_rate: float = 0.02, warmup_steps: int = 100) -> optax.GradientTransformation:
    """Adam in q's whitened coordinates (see :func:`whiten_loc`, :func:`scale_rows_by_q_sd`), with a
    linear warm-up so that Adam's first, unit-size steps do not throw away a good initial q."""
    warmup = optax.linear_schedule(learning_rate / warmup_steps, learning_rate, warmup_steps)
    return optax.chain(
        whiten_loc(),
        optax.scale_by_adam(),
        whiten_loc(inverse=True),
        scale_rows_by_q_sd(),
        optax.scale_by_learning_rate(warmup),
    )


OPTIMIZERS: dict[Any, optax.GradientTransformation] = {}
"""The optimisers ADVI has run, by key: optax transformations are not hashable by value, and the compiled chunk
runner is cached by the key (the default optimiser of a learning rate always has the same key: no recompilation)."""


def plain_adam(learning_rate: float, warmup_steps: int = 100) -> optax.GradientTransformation:
    """Adam with a linear warm-up: the default for q's without a mean and scales to whiten by (the flows)."""
    warmup = optax.linear_schedule(learning_rate / warmup_steps, learning_rate, warmup_steps)
    return optax.chain(optax.scale_by_adam(), optax.scale_by_learning_rate(warmup))


def register_optimizer(optimizer: optax.GradientTransformation | None, learning_rate: float, flow: bool = False) -> Any:
    """The key of ``optimizer`` in :data:`OPTIMIZERS` (None: the default optimiser of ``learning_rate``, or
    :func:`plain_adam` for a ``flow``)."""
    if optimizer is None:
        key = ("flow" if flow else "default", float(learning_rate))
        OPTIMIZERS.setdefault(key, (plain_adam if flow else default_optimizer)(learning_rate))
    else:
        key = ("user", id(optimizer))
        OPTIMIZERS[key] = optimizer
    return key
