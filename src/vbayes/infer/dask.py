"""Conjugate VB on a Dask cluster: the data stay in their partitions, the sums travel.

A conjugate model's statistics are sums over points (DESIGN.md, "Scale"), so one CAVI pass over a Dask
array or DataFrame is::

    worker p:  (stats_p, local_elbo_p) = Σ_{x ∈ partition p} local_step(E_q[η(β)], x)   # batch_pass, jitted
    tree:      Σ_p (stats_p, local_elbo_p), in a fixed tree of fan-in ``split_every`` on the workers
    client:    λ ← global_step(Σ stats, scale)                                      # vb_update / svi_update

:class:`DaskData` is a :class:`vbayes.infer.conjugate.DataSource`, so the unchanged drivers ``cj.cavi``,
``cj.em``, ``cj.update``, ``cj.objective`` (hence the estimator's delete/merge moves) run on it; :func:`svi`
is minibatch SVI whose minibatches are random partitions. Each pass sends the (small) global factor to
the workers as one task of its graph (recomputable, unlike scattered data), each partition's statistics are
computed where its data are (a partition is read from its source — ``.npy`` rows, Zarr, Parquet — or taken
from worker memory if the collection was ``persist``-ed), and only statistics (K·D² numbers) cross the
network. ``jit`` compiles once per worker process and partition shape (blocks of
:class:`~vbayes.infer.conjugate.InMemory`, so few shapes). A lost worker's partitions are recomputed by Dask
from their source; the reduction tree does not depend on where or when a partition ran, so the result is
bit-for-bit the same.
"""

from __future__ import annotations

import atexit
import functools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.errors import VBayesError
from vbayes.fit import as_key
from vbayes.infer import conjugate as cj

PyTree = Any
_LOCAL: dict[int | None, Any] = {}  # local clusters started here, by worker count


# ----------------------------------------------------------------------------------------------------
# the cluster


def connect(scheduler: Any = None, timeout: float = 10.0):
    """A ``dask.distributed.Client``: ``scheduler`` is a ``Client`` (returned as is), ``None`` (the current
    default client, else a local cluster), ``"local"`` / ``"local:W"`` (a cluster of W worker processes on
    this machine, one thread each; W defaults to the cores; started once per process and reused) or a
    scheduler address such as ``"tcp://10.0.0.5:8786"`` (a :class:`VBayesError` if it cannot be reached
    within ``timeout`` seconds)."""
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        return scheduler
    if scheduler is None:
        try:
            from distributed import default_client

            return default_client()
        except ValueError:
            scheduler = "local"
    if not isinstance(scheduler, str):
        raise VBayesError(f"scheduler must be a Client, an address or 'local[:WORKERS]', got {scheduler!r}")
    if scheduler == "local" or scheduler.startswith("local:"):
        workers = scheduler.partition(":")[2]
        if workers and not (workers.isdigit() and int(workers) >= 1):
            raise VBayesError(f"'local:WORKERS' needs a positive worker count, got {scheduler!r}")
        n = int(workers) if workers else None
        if n not in _LOCAL or _LOCAL[n].status.name != "running":
            cluster = LocalCluster(
                n_workers=n or cj.default_threads(), threads_per_worker=1, processes=True, dashboard_address=None
            )
            _LOCAL[n] = Client(cluster)
            pin_workers(_LOCAL[n])
            atexit.register(_close, _LOCAL[n])
        return _LOCAL[n]
    try:
        return Client(scheduler, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError) as e:
        raise VBayesError(
            f"cannot reach a Dask scheduler at {scheduler!r} within {timeout:g} s ({type(e).__name__}: {e}); "
            "check the address (tcp://HOST:8786) and that `dask scheduler` is running, or use 'local'"
        ) from e


def pin_workers(client) -> dict[str, list[int]]:
    """Pin each worker process of a cluster on *this* machine, every thread of it, to a core of its own
    (worker i → core i mod cores), so that W workers use W cores: unpinned, each worker's JAX runtime
    threads spread over all cores and two workers on two cores gained 1.41× instead of 1.84×
    (``benchmarks/scale_out.py``). Does nothing where there are more workers than cores, or off Linux.
    Returns worker address → cores."""
    if not hasattr(os, "sched_setaffinity"):
        return {}
    cores = sorted(os.sched_getaffinity(0))
    addresses = sorted(client.scheduler_info()["workers"])
    if len(addresses) > len(cores):
        return {}
    return {a: client.run(pin_process, {cores[i]}, workers=[a])[a] for i, a in enumerate(addresses)}


def pin_process(cores: set[int]) -> list[int]:
    """Pin every thread of this process, and so the threads they start later, to ``cores``."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except OSError:  # a thread that ended meanwhile
            pass
    return sorted(os.sched_getaffinity(0))


def _close(client) -> None:
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()


# ----------------------------------------------------------------------------------------------------
# data


def from_npy(path: str | os.PathLike, rows_per_partition: int = 1 << 20):
    """A Dask array over a 2-D ``.npy`` file, read by the workers ``rows_per_partition`` rows at a time
    (each partition reads only its rows; the file must be at the same path on every worker)."""
    import dask.array as da
    from dask import delayed

    path = Path(path)
    if not path.exists():
        raise VBayesError(f"data file {str(path)!r} does not exist")
    try:
        header = np.load(path, mmap_mode="r")
    except ValueError as e:
        raise VBayesError(f"{str(path)!r} is not a .npy file: {e}") from e
    if header.ndim != 2 or not header.flags.c_contiguous or header.dtype.hasobject:
        raise VBayesError(f"{str(path)!r} must hold a 2-D C-ordered numeric array, got shape {header.shape}")
    (n, dim), dtype, offset = header.shape, header.dtype, header.offset
    del header
    parts = []
    for start in range(0, n, rows_per_partition):
        stop = min(n, start + rows_per_partition)
        read = delayed(_read_rows, pure=True)(str(path.resolve()), offset, dtype.str, dim, start, stop)
        parts.append(da.from_delayed(read, shape=(stop - start, dim), dtype=dtype))
    return da.concatenate(parts, axis=0)


def _read_rows(path: str, offset: int, dtype: str, dim: int, start: int, stop: int) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    rows = np.fromfile(path, dtype=dtype, count=(stop - start) * dim, offset=offset + start * dim * itemsize)
    if rows.size != (stop - start) * dim:
        raise VBayesError(f"{path!r} ended before row {stop}")
    return rows.reshape(stop - start, dim)


def _as_dask_array(data):
    """A 2-D numeric Dask array, one chunk across the columns, known chunk lengths; a DataFrame's values."""
    import dask.array as da

    if hasattr(data, "to_dask_array"):  # a Dask DataFrame (or Series): partition lengths are computed once
        data = data.to_dask_array(lengths=True)
    if not isinstance(data, da.Array):
        raise VBayesError(f"expected a Dask array or DataFrame, got {type(data).__name__}")
    if data.ndim != 2:
        raise VBayesError(
            f"Expected 2D array, got {data.ndim}D array instead: shape {data.shape}; reshape with "
            "x.reshape(-1, 1) for a single feature"
        )
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise VBayesError(f"the data must be numeric, got dtype {data.dtype}")
    if any(np.isnan(c) for c in data.chunks[0]):
        data = data.compute_chunk_sizes()
    if len(data.chunks[1]) > 1:
        data = data.rechunk({1: -1})
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise VBayesError(f"the data are empty: shape {data.shape}; at least 1 sample and 1 feature are required")
    return data


class DaskData(cj.DataSource):
    """A Dask array or DataFrame (N, D) as a conjugate data source: each partition's statistics computed on
    its worker, summed in a fixed tree of fan-in ``split_every``; ``client``: see :func:`connect`.
    ``transform`` (picklable) maps each partition's rows on the worker (e.g. centring) before the pass.
    Non-finite rows raise a :class:`VBayesError` naming the partition and the rows, at the first pass."""

    def __init__(
        self,
        data,
        client: Any = None,
        chunk_size: int = 1024,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        split_every: int = 8,
    ):
        x = _as_dask_array(data)
        self.array = x
        self.blocks = list(x.to_delayed().ravel())
        sizes = np.asarray(x.chunks[0], dtype=np.int64)
        self.sizes = sizes
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.indices = np.arange(len(self.blocks))
        self.n_samples, self.dim = float(sizes.sum()), int(x.shape[1])
        self.client = connect(client)
        self.chunk_size, self.transform, self.split_every = chunk_size, transform, max(2, split_every)

    @property
    def n_partitions(self) -> int:
        return len(self.indices)

    def subset(self, partitions: Sequence[int]) -> DaskData:
        """The same source restricted to some partitions (positions in this source's list)."""
        new = object.__new__(DaskData)
        new.__dict__.update(self.__dict__)
        keep = np.asarray(partitions, dtype=np.int64)
        new.blocks = [self.blocks[i] for i in keep]
        new.sizes, new.starts, new.indices = self.sizes[keep], self.starts[keep], self.indices[keep]
        new.n_samples = float(new.sizes.sum())
        return new

    def map_reduce(self, fn: Callable, *args) -> PyTree:
        """Σ_p fn(rows_p, partition p, first row of p, *args) over the partitions, on the workers, summed in a
        fixed tree (the same sum whichever worker ran which partition); a pytree of numpy arrays."""
        from dask import delayed

        parts = [
            delayed(_on_partition, pure=False)(fn, block, int(i), int(start), *args)
            for block, i, start in zip(self.blocks, self.indices, self.starts, strict=True)
        ]
        while len(parts) > 1:
            k = self.split_every
            parts = [delayed(_tree_sum_np, pure=False)(*parts[j : j + k]) for j in range(0, len(parts), k)]
        return self.client.compute(parts[0]).result()

    def stats(self, model, local, pool=None):
        """(Σ stats, Σ local ELBO) over all partitions: ``batch_pass`` on each worker, then the tree sum."""
        _check_model_fits(model, local, self.dim)
        from dask import delayed

        # a task of the graph, not scattered data: a lost worker's copy is sent again, where scattered data
        # would be gone and the pass cancelled ("already forgotten"; dask/distributed#3149)
        shipped = delayed(jax.tree.map(np.asarray, (model, local)), traverse=False)
        x64 = bool(jax.config.jax_enable_x64)
        out = self.map_reduce(_partition_stats, shipped, self.chunk_size, x64, self.transform, self.dim)
        return jax.tree.map(jnp.asarray, out)


def _check_model_fits(model, local, dim: int) -> None:
    """A :class:`VBayesError` here, not a shape error from a worker, when the data do not fit the model."""
    row = jax.ShapeDtypeStruct((1, dim), cj._float())
    try:
        jax.eval_shape(model.local_step, local, row, jax.ShapeDtypeStruct((1,), cj._float()))
    except (TypeError, ValueError) as e:
        expected = next((a.shape[-1] for a in jax.tree.leaves(local) if jnp.ndim(a) >= 2), "other")
        raise VBayesError(f"the model expects {expected} columns, the data have {dim} ({type(e).__name__}: {e})") from e


def _on_partition(fn: Callable, rows, index: int, start: int, *args):
    rows = np.asarray(rows)
    if not np.isfinite(rows).all():
        bad = np.flatnonzero(~np.isfinite(rows).all(axis=1)) + start
        shown = ", ".join(map(str, bad[:5])) + (", ..." if bad.size > 5 else "")
        raise VBayesError(
            f"partition {index} (rows {start} to {start + rows.shape[0] - 1}) has {bad.size} row(s) with NaN or "
            f"inf values (rows {shown}); remove or impute them"
        )
    return fn(rows, start, *args)


def _partition_stats(rows: np.ndarray, start: int, payload, chunk_size: int, x64: bool, transform, dim: int):
    """On a worker: one partition's (stats, local ELBO) as numpy arrays."""
    model, local = _interned(payload[0]), payload[1]
    if rows.shape[1] != dim:
        raise VBayesError(f"a partition has {rows.shape[1]} columns, the data {dim}")
    with jax.enable_x64(x64):
        rows = np.asarray(rows, dtype=np.float64)
        rows = transform(rows) if transform is not None else rows
        out = cj.InMemory(rows, chunk_size=chunk_size, n_threads=1).stats(model, local, None)
        return jax.tree.map(np.asarray, out)


_FUNCTIONS: dict = {}  # per worker process: one object per (function, bound arguments)


def _interned(model: cj.ConjugateModel) -> cj.ConjugateModel:
    """The model with each ``functools.partial`` it wraps replaced by this process's first copy of it: an
    unpickled partial is a new object, and ``jit`` keys its cache on the callables in the model's treedef,
    so without this every pass would compile again."""

    def intern(fn):
        if not isinstance(fn, jax.tree_util.Partial) or not isinstance(fn.func, functools.partial):
            return fn
        inner = fn.func
        key = (inner.func, inner.args, tuple(sorted(inner.keywords.items())))
        return jax.tree_util.Partial(_FUNCTIONS.setdefault(key, inner), *fn.args, **fn.keywords)

    return type(model)(*(intern(f) for f in model))


def _tree_sum_np(*parts):
    add = lambda a, b: a + b if isinstance(a, _Moments) else jax.tree.map(np.add, a, b)
    return functools.reduce(add, parts)


def _partition_moments(rows: np.ndarray, start: int, shift: np.ndarray, sample_every: float, seed: int):
    """(n, Σ (x − shift), Σ (x − shift)(x − shift)ᵀ, sampled rows with their keys) of one partition; rows are
    sampled by priority keys u ~ U(0, 1) kept when u < ``sample_every`` (seeded by ``seed`` and the
    partition's first row number, so the sample does not depend on the cluster)."""
    d = np.asarray(rows, dtype=np.float64) - shift
    keys = np.random.default_rng([seed, start]).uniform(size=d.shape[0])
    keep = keys < sample_every
    return _Moments(n=np.float64(d.shape[0]), sum=d.sum(0), scatter=d.T @ d, sample=rows[keep], keys=keys[keep])


def moments(data: DaskData, sample_size: int, seed: int = 0) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """One pass: (N, mean, covariance (ddof 1), a uniform random sample of about ``sample_size`` rows), with
    every partition checked for non-finite rows."""
    first = np.asarray(data.array[:1].compute(), dtype=np.float64)[0]
    rate = min(1.0, 1.5 * sample_size / data.n_samples)
    out = data.map_reduce(_partition_moments, first, rate, seed)
    n = out["n"]
    mean_d = out["sum"] / n
    cov = (out["scatter"] - n * np.outer(mean_d, mean_d)) / max(n - 1, 1)
    order = np.argsort(out["keys"])[:sample_size]
    return int(n), mean_d + first, np.atleast_2d(cov), np.asarray(out["sample"], dtype=np.float64)[order]


class _Moments(dict):
    """Moments that add like statistics (samples concatenated), for the tree sum."""

    def __add__(self, other):
        out = _Moments({k: self[k] + other[k] for k in ("n", "sum", "scatter")})
        out["sample"] = np.concatenate([self["sample"], other["sample"]])
        out["keys"] = np.concatenate([self["keys"], other["keys"]])
        return out


# ----------------------------------------------------------------------------------------------------
# SVI over partitions


_update = jax.jit(cj.svi_update)


def svi(
    model: cj.ConjugateModel,
    params: PyTree,
    data: DaskData,
    *,
    key=0,
    partitions_per_step: int | None = None,
    learning_offset: float = 10.0,
    learning_decay: float = 0.6,
    tol: float = 2e-4,
    max_epochs: float = 100.0,
    eval_partitions: int = 8,
    start_step: float = 0.0,
    final_pass: bool = True,
    callback=None,
) -> cj.ConjugateFit:
    """Natural-gradient SVI (Hoffman et al. 2013) whose minibatch is ``partitions_per_step`` random
    partitions (default: one per worker, so that every worker is busy): their statistics are computed on the
    workers and λ ← (1 − ρ_t)λ + ρ_t global_step(stats, N/n_B), ρ_t = (t + τ)^−κ (``svi_update``). Partitions
    are drawn without replacement within an epoch. Stopping as :func:`vbayes.infer.conjugate.svi`: at steps
    e, 2e, 4e, ... (e = steps per epoch) the iterates since the last checkpoint are averaged and the ELBO of
    the average is estimated on ``eval_partitions`` fixed random partitions; the run stops when it changes by
    less than ``tol`` nats per point, or after ``max_epochs``. With ``final_pass`` the returned objective
    is the ELBO of the average on all data (one more pass)."""
    t0 = time.perf_counter()
    data = data if isinstance(data, DaskData) else DaskData(data)
    n, parts = data.n_samples, data.n_partitions
    per_step = int(partitions_per_step or max(1, len(data.client.scheduler_info()["workers"])))
    per_step = min(per_step, parts)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(as_key(key))).ravel().tolist())
    evaluation = data.subset(np.sort(rng.choice(parts, min(parts, eval_partitions), replace=False)))
    epoch_steps = max(1, parts // per_step)
    max_steps = max(epoch_steps, int(max_epochs * epoch_steps))
    state = cj.SVIState(jax.tree.map(jnp.asarray, params), jnp.asarray(start_step, cj._float()))
    rule = cj.TailAverage(
        state.params,
        epoch_steps,
        tol * n,
        lambda p: cj.objective(model, p, evaluation, scale=n / evaluation.n_samples),
        callback,
        n,
    )
    order, position, outcome, steps, rho = rng.permutation(parts), 0, "max_steps", 0, float("nan")
    while steps < max_steps:
        if position + per_step > parts:
            order, position = rng.permutation(parts), 0
        batch = data.subset(order[position : position + per_step])
        position += per_step
        stats, _ = batch.stats(model, cj._call(model, "expect", state.params))
        state, rho = _update(model, state, stats, n / batch.n_samples, learning_offset, learning_decay)
        steps += 1
        outcome = rule.update(steps, state.params) or outcome
        if outcome != "max_steps":
            break
    best, trace = rule.params, rule.trace
    final = trace[-1] if trace else float("nan")
    if final_pass and outcome != "diverged":
        final = cj.objective(model, best, data)
    extra = {"partitions_per_step": per_step, "epochs": steps / epoch_steps, "rho_last": float(rho)}
    info = cj.svi_info(outcome, tol, max_epochs, steps, time.perf_counter() - t0, extra)
    return cj.ConjugateFit(best, final, n, np.asarray(trace), info, {"state": state})
