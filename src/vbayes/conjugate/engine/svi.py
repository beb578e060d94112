"""Stochastic variational inference on a conjugate model (Hoffman, Blei, Wang & Paisley 2013): one driver for
every data source.

A step takes a minibatch B of S points, scales its statistics by N/S and moves λ ← (1 − ρ_t)λ + ρ_t λ̂,
ρ_t = (t + τ)^−κ: the natural-gradient step on the ELBO (with a point-mass :class:`~vbayes.conjugate.model.Mode`,
online EM: Cappé & Moulines 2009). Where the minibatches come from depends on where the data live:

* rows that can come to this process — an array (one shuffled copy, sliced into consecutive minibatches and
  cycled), a stream from disk (read in its own order: shuffle the file if it is sorted) — run in compiled blocks
  of steps under one ``lax.scan``, on one device or split over a device mesh (``devices=``);
* rows that stay where they are (a Dask collection) give random partitions as minibatches, whose statistics
  are computed on the workers (``partitions_per_step``, default one per worker).

The stopping rule is the same for all (:class:`TailAverage`): the ELBO of the average of the last half of the
iterates, on a fixed subset, at doubling checkpoints; the change over a doubling estimates the remaining gap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.conjugate.engine.cavi import objective, pass_stats
from vbayes.conjugate.engine.posterior import conjugate_fit
from vbayes.conjugate.model import ConjugateModel, Mode, SVIState, as_mode, call, svi_step, svi_update
from vbayes.data import DataSource, InMemory, Stream, as_source
from vbayes.data.sources import check_data, next_rows, row_order, tree_add, tree_div, working_dtype
from vbayes.errors import VBayesError, is_count, is_positive, is_real, require
from vbayes.fit import Fit
from vbayes.keys import as_key

PyTree = Any
TRACE_OF = "the objective (total nats, estimated on a fixed subset) of the tail average at each checkpoint"
DEFAULT_BATCH = 4096
"""The default minibatch S (at most N): large enough that the first, large steps (ρ near (1 + τ)^−κ) do not
commit λ to one small sample; for LDA on the UN debates it reached a better held-out score sooner than
scikit-learn's 128 (``benchmarks/RESULTS.md``, LDA)."""


class SVIConfig(NamedTuple):
    """SVI's settings, chosen to need no tuning.

    ``batch_size`` S (None: min(N, :data:`DEFAULT_BATCH`)); ``learning_offset`` τ = 10 and ``learning_decay``
    κ = 0.6 in ρ_t = (t + τ)^−κ (Hoffman et al. find κ in (0.5, 1] and τ ≥ 1 robust; κ near 0.5 suits averaging);
    ``tol``: stop when the tail average's objective changes by less than this many nats per point over a
    doubling; ``max_epochs``: passes' worth of points at most (but at least three checkpoints' worth of steps);
    ``eval_size``: rows of the fixed subset the checkpoints are evaluated on (all when N is smaller);
    ``steps_per_block``: steps per compiled call (None: about 2¹⁶ points, at least 16); ``minibatch_dtype``: the
    precision of the minibatch E-steps (float32 halves their cost on CPU; their statistics carry a noise of order
    1/√S that float32 rounding, 1e-7, does not add to); λ, its update, the evaluations and the final pass keep the
    working precision. Dask sources: ``partitions_per_step`` (None: one per worker) and ``eval_partitions``."""

    batch_size: int | None = None
    learning_offset: float = 10.0
    learning_decay: float = 0.6
    tol: float = 2e-4
    max_epochs: float = 100.0
    eval_size: int = 1 << 16
    steps_per_block: int | None = None
    chunk_size: int = 1024
    n_threads: int | None = None
    minibatch_dtype: Any = np.float32
    partitions_per_step: int | None = None
    eval_partitions: int = 8

    def checked(self) -> SVIConfig:
        """The settings validated (a :class:`VBayesError` naming the first that is wrong)."""
        optional_count = lambda v: v is None or is_count(v)
        require(
            [
                ("batch_size", self.batch_size, optional_count(self.batch_size), "None or an integer ≥ 1"),
                (
                    "learning_offset",
                    self.learning_offset,
                    is_positive(self.learning_offset),
                    "positive and finite (ρ_t = (t + τ)^−κ from t = 0)",
                ),
                (
                    "learning_decay",
                    self.learning_decay,
                    is_real(self.learning_decay) and 0 < self.learning_decay <= 1,
                    "in (0, 1]",
                ),
                ("tol", self.tol, is_real(self.tol) and self.tol >= 0, "≥ 0 and finite"),
                ("max_epochs", self.max_epochs, is_positive(self.max_epochs), "positive and finite"),
                ("eval_size", self.eval_size, is_count(self.eval_size), "an integer ≥ 1"),
                (
                    "steps_per_block",
                    self.steps_per_block,
                    optional_count(self.steps_per_block),
                    "None or an integer ≥ 1",
                ),
                ("chunk_size", self.chunk_size, is_count(self.chunk_size), "an integer ≥ 1"),
                ("n_threads", self.n_threads, optional_count(self.n_threads), "None or an integer ≥ 1"),
                ("minibatch_dtype", self.minibatch_dtype, _is_float_dtype(self.minibatch_dtype), "a float dtype"),
                (
                    "partitions_per_step",
                    self.partitions_per_step,
                    optional_count(self.partitions_per_step),
                    "None or an integer ≥ 1",
                ),
                ("eval_partitions", self.eval_partitions, is_count(self.eval_partitions), "an integer ≥ 1"),
            ],
            "svi",
        )
        return self


def _is_float_dtype(value: Any) -> bool:
    try:
        return np.dtype(value).kind == "f"
    except TypeError:
        return False


class TailAverage:
    """SVI's stopping rule. The iterates (or averages of blocks of them) given to :meth:`update` since the last
    checkpoint are averaged (tail / Polyak–Ruppert averaging over the last half of the run, which cancels the
    minibatch noise that a decaying ρ only damps); at checkpoints after c, 2c, 4c, ... steps the objective of that
    average, ``evaluate(λ̄)`` (total nats, on a fixed subset), is recorded in ``trace`` and λ̄ becomes ``params``.
    The gap the noise leaves falls like 1/t, so the change over the last doubling estimates the gap that remains:
    the run has converged when its size is below ``tol_total``, diverged when the objective is not finite.
    ``callback(steps, objective / n, λ̄)`` at each checkpoint."""

    def __init__(self, params: PyTree, first_check: int, tol_total: float, evaluate, callback=None, n: float = 1.0):
        self.params, self.next_check, self.tol_total, self.evaluate = params, first_check, tol_total, evaluate
        self.callback, self.n = callback, n
        self.trace: list[float] = []
        self._sum, self._count = None, 0

    def update(self, steps: int, params: PyTree) -> str | None:
        """Add ``params`` after ``steps`` steps in all; at a checkpoint, "converged" or "diverged" when the run
        should stop (else None)."""
        self._sum, self._count = tree_add(self._sum, params), self._count + 1
        if steps < self.next_check:
            return None
        mean = tree_div(self._sum, float(self._count))
        value = self.evaluate(mean)
        self._sum, self._count, self.next_check = None, 0, 2 * self.next_check
        if not math.isfinite(value):
            return "diverged"
        self.trace.append(value)
        self.params = mean
        if self.callback is not None:
            self.callback(steps, value / self.n, mean)
        if len(self.trace) > 1 and abs(self.trace[-1] - self.trace[-2]) < self.tol_total:
            return "converged"
        return None


@partial(jax.jit, static_argnames=("mode", "axis_name"))
def svi_block(model, state, xb, n_total, offset, decay, mode: Mode = Mode.VB, axis_name: str | None = None):
    """SVI steps over minibatches ``xb`` (steps, S, D) under one ``lax.scan``; returns the last state, the infos,
    and the average of the iterates (Polyak averaging). ``axis_name``: see :func:`~vbayes.conjugate.model.svi_step`."""
    w = jnp.ones(xb.shape[1], xb.dtype)

    def body(carry, x):
        st, acc = carry
        st, info = svi_step(model, st, x, w, n_total, offset, decay, mode, axis_name=axis_name)
        return (st, jax.tree.map(jnp.add, acc, st.params)), info

    zero = jax.tree.map(jnp.zeros_like, state.params)
    (state, total), infos = jax.lax.scan(body, (state, zero), xb)
    return state, infos, jax.tree.map(lambda t: t / xb.shape[0], total)


@partial(jax.jit, static_argnames=("mode", "mesh"))
def sharded_svi_block(model, state, xb, n_total, offset, decay, mode: Mode, mesh):
    """:func:`svi_block` with each minibatch split over the mesh along S and the statistics ``psum``-ed."""
    from jax.sharding import PartitionSpec as P

    from vbayes.data.devices import AXIS, replicated_map

    body = partial(svi_block, mode=mode, axis_name=AXIS)
    specs = (P(), P(), P(None, AXIS), P(), P(), P())
    return replicated_map(body, mesh, specs)(model, state, xb, n_total, offset, decay)


class _Rows:
    """Minibatch rows for SVI: consecutive slices of one shuffled copy of an array (``shuffle``), or of a stream
    in its own order, cycled; ``head(n)`` is a fixed subset (uniform when shuffled)."""

    def __init__(self, data, key, shuffle: bool):
        self.stream = data if isinstance(data, Stream) else None
        if self.stream is None:
            x = check_data(data)
            self.rows = x[row_order(x.shape[0], key)] if shuffle else x
            self.n = x.shape[0]
        else:
            self.n, self._parts, self._buffer = int(data.n_samples), None, np.zeros((0, data.dim))
        self.position = 0

    def take(self, count: int) -> np.ndarray:
        if self.stream is None:
            rows, self.position = next_rows(self.rows, self.position, count)
            return rows
        while self._buffer.shape[0] < count:
            part = next(self._parts, None) if self._parts is not None else None
            if part is None:
                self._parts = self.stream.parts()
                continue
            part = self.stream.transform(part) if self.stream.transform is not None else part
            self._buffer = np.concatenate([self._buffer, part])
        rows, self._buffer = self._buffer[:count], self._buffer[count:]
        return rows

    def head(self, count: int) -> np.ndarray:
        if self.stream is None:
            return self.rows[:count]
        out, n = [], 0
        for part in self.stream.parts():
            part = self.stream.transform(part) if self.stream.transform is not None else part
            out.append(part[: count - n])
            n += out[-1].shape[0]
            if n >= count:
                break
        return np.concatenate(out)


def svi(
    model: ConjugateModel,
    params: PyTree,
    data,
    *,
    mode: Mode | str = Mode.VB,
    key=0,
    config: SVIConfig | None = None,
    shuffle: bool = True,
    start_step: float = 0.0,
    final_pass: bool = True,
    devices=None,
    callback: Callable | None = None,
    target: Any = None,
    checks: Any = "default",
) -> Fit:
    """Stochastic VI with natural gradients from λ = ``params`` (see the module docstring and :class:`SVIConfig`).

    ``data``: an (N, D) array, a stream (path, memmap, :class:`~vbayes.data.Stream`), or a Dask collection or
    :class:`~vbayes.data.dask.DaskData`. Steps run in compiled blocks; at checkpoints after 1, 2, 4, ... blocks
    (Dask: epochs) the iterates since the previous checkpoint — the last half of the run — are averaged and the
    objective of that average is computed on a fixed subset; the run stops when it changes by less than
    ``config.tol`` nats per point (a fall means the noise still dominates, as when the run starts near the
    optimum, and the run goes on), or after ``config.max_epochs``. The last average is returned; with
    ``final_pass`` its objective on all the data is computed once (one pass, no update).

    ``shuffle=False``: an array is already in minibatch order, e.g. ``x[row_order(N, key)]`` made once for several
    runs (the same iterates as ``shuffle=True``). ``start_step``: t of the first step (to continue a run with its
    small steps; the first checkpoint is then after start_step / 4 steps). ``devices``: ``"all"``, a count or a
    list of JAX devices: data-parallel steps, each minibatch split across them and the statistics ``psum``-ed
    (:mod:`vbayes.data.devices`); the same iterates as on one device up to summation order (S must then be a
    multiple of the number of devices). Returns a :class:`Fit` (``fit.q.params`` = λ̄, ``fit.state`` the last
    :class:`~vbayes.conjugate.model.SVIState`)."""
    t0 = time.perf_counter()
    mode = as_mode(mode)
    c = (config or SVIConfig()).checked()
    if hasattr(data, "__dask_graph__") or hasattr(data, "n_partitions"):
        source = as_source(data, c.chunk_size)
        run = _partition_steps(model, params, source, mode, key, c, start_step, callback)
    else:
        source = data if isinstance(data, DataSource) else None
        if source is not None and not isinstance(source, Stream):
            raise VBayesError(
                f"SVI reads minibatches from an array, a stream or Dask data, not a {type(data).__name__}"
            )
        if source is None and (isinstance(data, np.memmap) or isinstance(data, str) or hasattr(data, "__fspath__")):
            source = as_source(data, c.chunk_size, c.n_threads)
        run = _row_steps(
            model, params, data if source is None else source, mode, key, c, shuffle, start_step, devices, callback
        )
    rule, state, steps, outcome, extra = run
    best, trace = rule.params, rule.trace
    final = trace[-1] if trace else float("nan")
    if final_pass and outcome != "diverged":
        full = source if source is not None else data
        final = objective(model, best, full, mode=mode, chunk_size=c.chunk_size, n_threads=c.n_threads)
        extra["passes"] += 1
    messages = {
        "converged": f"the objective of the tail average changed by < {c.tol:g} nats/point over the last doubling",
        "max_steps": f"max_epochs={c.max_epochs} reached",
        "diverged": "the objective estimate became non-finite",
    }
    return conjugate_fit(
        model,
        best,
        mode,
        method="svi" if mode is Mode.VB else "online-em",
        outcome=outcome,
        message=messages[outcome],
        steps=steps,
        seconds=time.perf_counter() - t0,
        trace=np.asarray(trace),
        trace_of=TRACE_OF,
        objective=final,
        n_samples=rule.n,
        extra=extra,
        state=state,
        target=target,
        checks=checks,
    )


def _row_steps(model, params, data, mode, key, c: SVIConfig, shuffle, start_step, devices, callback):
    """SVI on rows that come to this process, in compiled blocks of steps. Returns (rule, state, steps, outcome,
    extra)."""
    rows = _Rows(data, key, shuffle)
    n = rows.n
    batch = int(min(n, c.batch_size or DEFAULT_BATCH))
    run = partial(svi_block, mode=mode)
    if devices is not None:
        from vbayes.data.devices import data_mesh, device_multiple

        mesh = data_mesh(devices)
        batch = device_multiple(batch, mesh.size, c.batch_size is not None)
        run = partial(sharded_svi_block, mode=mode, mesh=mesh)
    block_steps = int(c.steps_per_block or max(16, (1 << 16) // batch))
    eval_data = InMemory(rows.head(c.eval_size), c.chunk_size, c.n_threads)  # a fixed subset
    state = SVIState(params, jnp.asarray(start_step, working_dtype()))
    # a continued run (start_step > 0) starts its doublings at a quarter of the steps already taken: its first
    # blocks move λ by (t + τ)^−κ each, too little for their change to say anything about the gap
    first_check = block_steps * max(1, int(start_step) // (4 * block_steps))
    scale = n / eval_data.n_samples
    evaluate = lambda p: objective(model, p, eval_data, mode=mode, chunk_size=c.chunk_size, scale=scale)
    rule = TailAverage(params, first_check, c.tol * n, evaluate, callback, n)
    local_terms, steps, outcome, infos = [], 0, "max_steps", None
    max_steps = max(4 * block_steps, int(c.max_epochs * n / batch))  # at least three checkpoints
    while steps < max_steps:
        xb = jnp.asarray(rows.take(block_steps * batch).reshape(block_steps, batch, -1), c.minibatch_dtype)
        state, infos, avg = run(model, state, xb, float(n), c.learning_offset, c.learning_decay)
        steps += block_steps
        local_terms.append(infos.local_elbo)
        outcome = rule.update(steps, avg) or outcome
        if outcome != "max_steps":
            break
    extra = {
        "batch_size": batch,
        "steps_per_block": block_steps,
        "epochs": steps * batch / n,
        "passes": steps * batch / n + len(rule.trace) * eval_data.n_samples / n,
        "rho_last": float(infos.rho[-1]) if infos is not None else float("nan"),
        "evaluations": len(rule.trace),
        "minibatch_local_elbo": np.concatenate([np.asarray(e) for e in local_terms]) if local_terms else np.zeros(0),
    }
    return rule, state, steps, outcome, extra


_update = jax.jit(svi_update)


def _partition_steps(model, params, data, mode, key, c: SVIConfig, start_step, callback):
    """SVI whose minibatch is ``partitions_per_step`` random partitions (drawn without replacement within an
    epoch) whose statistics are computed where they live. Checkpoints at e, 2e, 4e, ... steps (e = steps per
    epoch), evaluated on ``eval_partitions`` fixed random partitions."""
    n, parts = data.n_samples, data.n_partitions
    per_step = min(int(c.partitions_per_step or data.n_workers), parts)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(as_key(key))).ravel().tolist())
    evaluation = data.subset(np.sort(rng.choice(parts, min(parts, c.eval_partitions), replace=False)))
    epoch_steps = max(1, parts // per_step)
    max_steps = max(epoch_steps, int(c.max_epochs * epoch_steps))
    state = SVIState(jax.tree.map(jnp.asarray, params), jnp.asarray(start_step, working_dtype()))
    scale = n / evaluation.n_samples
    evaluate = lambda p: objective(model, p, evaluation, mode=mode, scale=scale)
    rule = TailAverage(state.params, epoch_steps, c.tol * n, evaluate, callback, n)
    order, position, outcome, steps, rho = rng.permutation(parts), 0, "max_steps", 0, float("nan")
    while steps < max_steps:
        if position + per_step > parts:
            order, position = rng.permutation(parts), 0
        batch = data.subset(order[position : position + per_step])
        position += per_step
        local = call(model, "mode" if mode.point_mass else "expect", state.params)
        stats, _ = pass_stats(model, local, batch)
        state, rho = _update(model, state, stats, n / batch.n_samples, c.learning_offset, c.learning_decay)
        steps += 1
        outcome = rule.update(steps, state.params) or outcome
        if outcome != "max_steps":
            break
    epochs = steps / epoch_steps
    passes = epochs + len(rule.trace) * evaluation.n_samples / n
    extra = {"partitions_per_step": per_step, "epochs": epochs, "passes": passes, "rho_last": float(rho)}
    return rule, state, steps, outcome, extra
