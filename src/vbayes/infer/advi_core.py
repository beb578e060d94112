"""ADVI's functional core, in the style of BlackJAX / optax::

    state = init_state(q, optimizer)
    step = build_step(objective, optimizer, num_samples)
    state, info = step(key, state, target)          # one stochastic gradient step on the objective

and :func:`chunk_runner`, the compiled ``lax.scan`` of ``step`` over a chunk of steps that the driver
(:func:`vbayes.infer.advi.advi`) runs between its decisions; :func:`polyak_average` of a chunk's iterates.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vbayes.compilation import sized_jit
from vbayes.families import Family
from vbayes.infer.preconditioner import OPTIMIZERS
from vbayes.objectives import Objective
from vbayes.stored import function_name, stored
from vbayes.targets import Target

Array = jax.Array


class ADVIState(NamedTuple):
    """``q``: current approximation; ``step_size``: multiplies every update (the driver's schedule);
    ``backoff``: a further factor, halved by each non-finite step and recovering by 5% per good step;
    ``q_sum``: running sum of iterates since the driver last reset it (Polyak averaging). The optimiser's state
    and ``q_sum`` cover q's floating-point leaves only (:func:`trainable`)."""

    q: Family
    opt_state: optax.OptState
    step_size: Array
    backoff: Array
    q_sum: Family


class ADVIInfo(NamedTuple):
    """Per step: the objective estimate, NaN when the step was skipped as non-finite."""

    objective: Array


def trainable(q: Family) -> Any:
    """``q`` with its floating-point leaves (what the optimiser moves) and ``None`` in place of the others (a
    flow's masks and permutations, fixed when it was built)."""
    return jax.tree_util.tree_map(lambda x: x if jnp.issubdtype(jnp.result_type(x), jnp.inexact) else None, q)


def with_trainable(q: Family, params: Any) -> Family:
    """``q`` with its floating-point leaves taken from ``params`` (a :func:`trainable` tree)."""
    return jax.tree_util.tree_map(lambda p, x: x if p is None else p, params, q, is_leaf=lambda v: v is None)


def init_state(q: Family, optimizer: optax.GradientTransformation) -> ADVIState:
    """Initial state at ``q``."""
    params = trainable(q)
    one = jnp.ones((), jax.tree_util.tree_leaves(params)[0].dtype)  # (not q.loc: a flow's is a Monte Carlo mean)
    return ADVIState(q, optimizer.init(params), one, one, jax.tree_util.tree_map(jnp.zeros_like, params))


def build_step(
    objective: Objective, optimizer: optax.GradientTransformation, num_samples: int
) -> Callable[[Array, ADVIState, Target], tuple[ADVIState, ADVIInfo]]:
    """One step: q ← q + step_size · backoff · optimizer(∇_q objective). A step whose objective or
    update is non-finite is skipped (its objective is reported as NaN) and halves ``backoff``."""

    def step(key: Array, state: ADVIState, target: Target, active: Array = True) -> tuple[ADVIState, ADVIInfo]:
        params = trainable(state.q)
        loss, grad = jax.value_and_grad(lambda p: -objective(target, with_trainable(state.q, p), key, num_samples))(
            params
        )
        value = -loss
        updates, opt_state = optimizer.update(grad, state.opt_state, params)
        scale = state.step_size * state.backoff
        updates = jax.tree_util.tree_map(lambda u: scale * u, updates)
        # one reduction sees any NaN/inf in the objective, the gradient (through the update) or the update
        ok = jnp.isfinite(value + sum(jnp.sum(u) for u in jax.tree_util.tree_leaves(updates)))
        take = ok & active
        add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)

        def accept():
            moved = optax.apply_updates(params, updates)
            q = with_trainable(state.q, moved)
            return q, opt_state, jnp.minimum(1.0, 1.05 * state.backoff), add(state.q_sum, moved)

        def reject():
            return state.q, state.opt_state, jnp.where(active, 0.5, 1.0) * state.backoff, add(state.q_sum, params)

        q, opt_state, backoff, q_sum = jax.lax.cond(take, accept, reject)
        return ADVIState(q, opt_state, state.step_size, backoff, q_sum), ADVIInfo(jnp.where(take, value, jnp.nan))

    return step


@functools.lru_cache(maxsize=64)
def chunk_runner(
    objective: Objective, optimizer_key: Any, num_samples: int, batch_size: int | None = None, mesh: Any = None
) -> Callable:
    """Jitted ``(state, target, key, n_active, check_key, chunk, num_check) -> (state, next key, objective per
    step, check values, q̄)``: ``chunk`` steps, of which the first ``n_active`` update q. With ``batch_size``
    each step sees the minibatch target of ``batch_size`` rows drawn afresh (``Target.sample_batch``); with a
    ``mesh`` (:func:`vbayes.data.devices.data_mesh`) that minibatch is split over its devices.

    After the chunk it evaluates ``log p̃(z) − log q̄(z)`` at ``num_check`` draws of the chunk-averaged
    q̄ made from the fixed ``check_key``: common random numbers, so successive chunks are compared by a
    paired difference with little Monte Carlo noise. Cached so that a fit on a new target of the same
    layout and shapes reuses the compiled program.
    """
    optimizer = OPTIMIZERS[optimizer_key]
    step = build_step(objective, optimizer, num_samples)
    if mesh is not None:
        from vbayes.data.devices import data_parallel

        step = data_parallel(step, mesh, batch_argnum=2)

    @sized_jit(1, static_argnums=(5, 6))  # a small model's programs compile with the light options
    def run(
        state: ADVIState, target: Target, key: Array, n_active: Array, check_key: Array, chunk: int, num_check: int
    ):
        state = state._replace(q_sum=jax.tree_util.tree_map(jnp.zeros_like, state.q_sum))
        key, sub = jax.random.split(key)

        def body(s, xs):
            i, k = xs
            batch = target
            if batch_size is not None:
                k, k_batch = jax.random.split(k)
                batch = target.sample_batch(k_batch, batch_size)
            s, info = step(k, s, batch, i < n_active)
            return s, info.objective

        state, values = jax.lax.scan(body, state, (jnp.arange(chunk), jax.random.split(sub, chunk)))
        q_bar = polyak_average(state, chunk)
        z = q_bar.sample(check_key, num_check)
        check = jax.vmap(target.log_density)(z) - q_bar.log_prob(z)
        return state, key, values, check, q_bar

    named = (function_name(objective), optimizer_key, num_samples, batch_size)
    by_value = mesh is None and named[0] is not None and optimizer_key[0] != "user"
    return stored(run, "advi.chunk_runner", named if by_value else None, static_argnums=(5, 6))


# ----------------------------------------------------------------------------------------------
# driver


def polyak_average(state: ADVIState, n: int) -> Family:
    """Mean of the ``n`` iterates summed in ``q_sum`` since the driver last reset it."""
    return with_trainable(state.q, jax.tree_util.tree_map(lambda x: x / n, state.q_sum))
