"""Coordinate ascent on a conjugate model: CAVI (VB), EM and MAP-EM, over any data source.

One iteration is one pass — ``(stats, local_elbo) = Σ_blocks local_step`` on the source's blocks (in memory on
threads, streamed from disk, on Dask workers, across devices: :mod:`vbayes.data`) — and one global update,
:func:`vbayes.conjugate.model.update`, whose :class:`~vbayes.conjugate.model.Mode` says whether q(β) is the full
factor (CAVI, scale 1) or a point mass at its mode (EM / MAP-EM). Data that fit one in-memory block iterate on
the device, 64 iterations per compiled ``lax.while_loop`` (at N = 1e4 the per-iteration dispatch and host sync of
a host loop cost as much as the pass itself); otherwise the loop runs on the host. Same iterates either way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.conjugate.engine.posterior import conjugate_fit
from vbayes.conjugate.model import (
    BlockPass,
    ConjugateModel,
    IterState,
    Mode,
    as_mode,
    batch_pass,
    call,
    check_model_fits,
)
from vbayes.conjugate.model import update as update_state
from vbayes.data import DataSource, InMemory, as_source
from vbayes.data.sources import Chunks, working_dtype
from vbayes.errors import is_count, is_positive, is_real, require
from vbayes.fit import Fit

PyTree = Any
ROUND = 64  # iterations per compiled call of the on-device loop
METHOD_NAMES = {Mode.VB: "cavi", Mode.EM: "em", Mode.MAP: "map-em"}
TRACE_OF = {
    Mode.VB: "the ELBO (total nats) after each iteration",
    Mode.EM: "the log-likelihood (total nats) of the parameters entering each iteration",
    Mode.MAP: "the log-likelihood + log prior (total nats) of the parameters entering each iteration",
}

_update = jax.jit(update_state, static_argnames="mode")


def pass_stats(model: ConjugateModel, local: PyTree, data: DataSource, pool: ThreadPoolExecutor | None = None):
    """Σ over all of ``data`` of ``model.local_step(local, x_n)``: (stats, local ELBO)."""
    return data.reduce(BlockPass(model, local), pool)


@partial(jax.jit, static_argnames="mode")
def _device_rounds(model, state, block: Chunks, prev, tol_total, n_steps, scale, mode: Mode):
    """Up to ``n_steps`` (≤ ROUND) iterations on one block in a ``lax.while_loop``, with the host loop's rules: a
    non-finite objective ends the loop without taking that iteration (status 2); a change |objective − previous|
    < ``tol_total`` after it is taken ends it (status 1). ``prev``: the previous objective (NaN: none yet).
    Returns (state, objectives (ROUND,), iterations taken, status)."""
    trace = jnp.full((ROUND,), jnp.nan, state.objective.dtype)

    def cond(carry):
        _, _, _, i, status = carry
        return (i < n_steps) & (status == 0)

    def body(carry):
        state, trace, prev, i, _ = carry
        stats, local_elbo = batch_pass(model, state.local, block)
        new = update_state(model, state, stats, local_elbo, mode, scale)
        value = new.objective
        finite = jnp.isfinite(value)
        state = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
        trace = jnp.where(finite, trace.at[i].set(value), trace)
        converged = finite & jnp.isfinite(prev) & (jnp.abs(value - prev) < tol_total)
        status = jnp.where(finite, jnp.where(converged, 1, 0), 2).astype(jnp.int32)
        return state, trace, jnp.where(finite, value, prev), i + finite.astype(i.dtype), status

    zero = jnp.asarray(0, jnp.int32)
    state, trace, _, taken, status = jax.lax.while_loop(cond, body, (state, trace, prev, zero, zero))
    return state, trace, taken, status


def _iterate_on_device(model, state, block: Chunks, *, mode, tol_total, max_iter, scale):
    """The loop for data in one block, ROUND iterations per compiled call. Returns (state, trace, outcome)."""
    trace: list[float] = []
    outcome = "max_steps"
    while len(trace) < max_iter:
        prev = jnp.asarray(trace[-1] if trace else jnp.nan, state.objective.dtype)
        n_steps = min(ROUND, max_iter - len(trace))
        state, values, taken, status = _device_rounds(model, state, block, prev, tol_total, n_steps, scale, mode=mode)
        trace.extend(np.asarray(values[: int(taken)]).tolist())
        status = int(status)
        if status:
            outcome = "converged" if status == 1 else "diverged"
            break
    return state, trace, outcome


def _iterate_on_host(model, state, data: DataSource, *, mode, tol, max_iter, callback, scale):
    """The loop on the host: one pass per iteration over the data's blocks (threads, a stream, Dask workers,
    devices), the update, the stopping rule (the objective, one scalar, comes to the host per iteration).
    Returns (state, trace, outcome)."""
    trace, outcome = [], "max_steps"
    with ThreadPoolExecutor(max(1, data.n_threads)) as pool:
        for _ in range(max_iter):
            stats, local_elbo = pass_stats(model, state.local, data, pool)
            new = _update(model, state, stats, local_elbo, mode=mode, scale=scale)
            value = float(new.objective)
            if not math.isfinite(value):
                outcome = "diverged"
                break
            state = new
            trace.append(value)
            if callback is not None:
                callback(len(trace), value / (scale * data.n_samples), state.params)
            if len(trace) > 1 and abs(trace[-1] - trace[-2]) < tol * scale * data.n_samples:
                outcome = "converged"
                break
    return state, trace, outcome


def cavi(
    model: ConjugateModel,
    params: PyTree,
    data,
    *,
    mode: Mode | str = Mode.VB,
    tol: float = 1e-6,
    max_iter: int = 1000,
    scale: float = 1.0,
    chunk_size: int = 1024,
    n_threads: int | None = None,
    callback: Callable | None = None,
    target: Any = None,
    checks: Any = "default",
) -> Fit:
    """Coordinate ascent from λ = ``params`` until the objective changes by less than ``tol`` nats per point.

    ``mode``: ``"vb"`` (CAVI: the ELBO), ``"em"`` (EM for a flat prior such as ``gmm.flat_prior``: the
    log-likelihood) or ``"map"`` (MAP-EM: log-likelihood + log prior) — the same loop, with q(β) a point mass at
    the mode of ``global_step``'s output for the last two; their objective is that of the parameters entering
    each iteration, as scikit-learn's ``GaussianMixture``. ``data``: an (N, D) array, a path, a memmap, a
    function returning an iterable of arrays, a Dask collection or any :class:`~vbayes.data.DataSource`
    (:func:`vbayes.data.as_source`). ``callback(iteration, objective_per_point, params)`` after every iteration.
    ``scale`` = N / n: ``data`` is a uniform subset of n of N points standing in for all of them (every update is
    global_step(stats, N / n), the ELBO an estimate for the N points, tol per point of N). ``target``: a
    log-density target of the same model (q(β) is then checked against it). Returns a :class:`Fit` whose q is a
    :class:`~vbayes.conjugate.engine.posterior.ConjugatePosterior` (``fit.q.params`` = λ) and whose
    ``info.extra["objective"]`` is the final objective in total nats.
    """
    t0 = time.perf_counter()
    mode = as_mode(mode)
    require(
        [
            ("tol", tol, is_real(tol) and tol >= 0, "≥ 0 and finite"),
            ("max_iter", max_iter, is_count(max_iter), "an integer ≥ 1"),
            ("scale", scale, is_positive(scale), "positive and finite (N / n)"),
        ],
        "cavi",
    )
    data = as_source(data, chunk_size, n_threads)
    local = call(model, "mode" if mode.point_mass else "expect", params)
    check_model_fits(model, local, data.dim)
    state = IterState(params, local, jnp.asarray(-jnp.inf, working_dtype()), jnp.asarray(0, jnp.int32))
    one_pass = mode is Mode.VB and bool(model.latent_free)
    runs = 1 if one_pass else max_iter
    if callback is None and isinstance(data, InMemory) and len(data.blocks) == 1:
        tol_total = tol * scale * data.n_samples
        state, trace, outcome = _iterate_on_device(
            model, state, data.blocks[0], mode=mode, tol_total=tol_total, max_iter=runs, scale=scale
        )
    else:
        state, trace, outcome = _iterate_on_host(
            model, state, data, mode=mode, tol=tol, max_iter=runs, callback=callback, scale=scale
        )
    if one_pass and outcome == "max_steps":
        outcome = "converged"
    n_iter = len(trace)
    n_total = scale * data.n_samples
    last_change = abs(trace[-1] - trace[-2]) / n_total if n_iter > 1 else float("nan")
    messages = {
        "converged": (
            "one pass: the model has no local latent variables, so its statistics are final and the global step "
            "their fixed point"
            if one_pass
            else f"|Δ objective| / N < {tol:g} after {n_iter} iterations"
        ),
        "max_steps": f"max_iter={max_iter} reached (last |Δ|/N = {last_change:.3g})",
        "diverged": f"the objective became non-finite at iteration {n_iter + 1} (degenerate component?)",
    }
    return conjugate_fit(
        model,
        state.params,
        mode,
        method=METHOD_NAMES[mode],
        outcome=outcome,
        message=messages[outcome],
        steps=n_iter,
        seconds=time.perf_counter() - t0,
        trace=np.asarray(trace),
        trace_of=TRACE_OF[mode],
        objective=trace[-1] if trace else float("nan"),
        n_samples=n_total,
        extra={"passes": n_iter, "threads": data.n_threads, "monotone_objective": True},
        target=target,
        checks=checks,
    )


def objective(
    model: ConjugateModel,
    params: PyTree,
    data,
    *,
    mode: Mode | str = Mode.VB,
    scale: float = 1.0,
    chunk_size: int = 1024,
    n_threads: int | None = None,
) -> float:
    """One pass: the ELBO of q(β) = λ with its optimal q(z), ``scale · local_elbo − KL``; for a point mass the
    log-likelihood [+ log prior for MAP] at the mode. Total nats. ``scale`` = N / n when ``data`` is a subset of
    n of the N points (an unbiased estimate)."""
    mode = as_mode(mode)
    data = as_source(data, chunk_size, n_threads)
    local = call(model, "mode" if mode.point_mass else "expect", params)
    check_model_fits(model, local, data.dim)
    with ThreadPoolExecutor(max(1, data.n_threads)) as pool:
        _, local_elbo = pass_stats(model, local, data, pool)
    if mode.point_mass:
        return float(scale * local_elbo + (call(model, "log_prior", params) if mode is Mode.MAP else 0.0))
    return float(scale * local_elbo - call(model, "kl", params))


def update(
    model: ConjugateModel,
    params: PyTree,
    data,
    *,
    scale: float = 1.0,
    chunk_size: int = 1024,
    n_threads: int | None = None,
) -> tuple[PyTree, float, PyTree]:
    """One CAVI iteration from λ = ``params``: (λ' = global_step(Σ stats, scale), the ELBO at (this pass's
    q(z), λ') in total nats, the statistics Σ stats). ``scale`` = N / n when ``data`` is a subset of n of
    the N points. The building block of moves that edit the statistics (e.g. deleting a component)."""
    data = as_source(data, chunk_size, n_threads)
    local = call(model, "expect", params)
    with ThreadPoolExecutor(max(1, data.n_threads)) as pool:
        stats, local_elbo = pass_stats(model, local, data, pool)
    state = IterState(params, local, jnp.asarray(-jnp.inf, working_dtype()), jnp.asarray(0, jnp.int32))
    new = _update(model, state, stats, local_elbo, mode=Mode.VB, scale=scale)
    return new.params, float(new.objective), stats
