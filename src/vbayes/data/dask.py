"""Data on a Dask cluster: the rows stay in their partitions, the sums travel.

:class:`DaskData` is a :class:`~vbayes.data.sources.DataSource` over a Dask array or DataFrame (N, D). Its
``reduce(fn)`` runs ``fn`` where each partition lives and sums the results in a fixed tree::

    worker p:  out_p = Σ_{blocks of partition p} fn(block)      # fn compiled once per worker process
    tree:      Σ_p out_p, fan-in ``split_every``, on the workers
    client:    the total (for a conjugate model: the statistics, K·D² numbers)

``fn`` travels as a task of the graph (a pytree callable such as a ``jax.tree_util.Partial`` with NumPy
leaves), so a lost worker's partitions are recomputed by Dask from their source, and since the tree does not
depend on where or when a partition ran, the result is bit-for-bit the same. A partition is read from its
source (``.npy`` rows via :func:`from_npy`, Zarr, Parquet) or taken from worker memory if the collection was
``persist``-ed. The engine that calls ``reduce`` (:mod:`vbayes.conjugate`) needs to know nothing about Dask.
"""

from __future__ import annotations

import atexit
import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from vbayes.data.files import npy_header
from vbayes.data.sources import DataSource, InMemory, default_threads
from vbayes.errors import VBayesError

PyTree = Any
_LOCAL: dict[int | None, Any] = {}  # local clusters started here, by worker count
FREE_PORT = "127.0.0.1:0"
"""Where a local cluster's scheduler serves HTTP (its dashboard, when bokeh is installed): a free port on this
machine, so that two clusters never contend for one."""


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
            # distributed binds its HTTP port even with the dashboard off; its default, 8787, warns when taken
            cluster = LocalCluster(
                n_workers=n or default_threads(), threads_per_worker=1, processes=True, dashboard_address=FREE_PORT
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
# collections


def from_npy(path: str | os.PathLike, rows_per_partition: int = 1 << 20):
    """A Dask array over a 2-D ``.npy`` file, read by the workers ``rows_per_partition`` rows at a time
    (each partition reads only its rows; the file must be at the same path on every worker)."""
    import dask.array as da
    from dask import delayed

    path = Path(path)
    header = npy_header(path)
    (n, dim) = header.shape if len(header.shape) == 2 else (header.shape[0], 1)
    dtype, offset = header.dtype, header.offset
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


class DaskData(DataSource):
    """A Dask array or DataFrame (N, D) as a data source: each partition's share of a ``reduce`` computed on
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

    @property
    def n_workers(self) -> int:
        return max(1, len(self.client.scheduler_info()["workers"]))

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
        """Σ_p fn(rows_p, first row of p, *args) over the partitions, on the workers, summed in a fixed tree
        (the same sum whichever worker ran which partition); a pytree of numpy arrays."""
        from dask import delayed

        parts = [
            delayed(_on_partition, pure=False)(fn, block, int(i), int(start), *args)
            for block, i, start in zip(self.blocks, self.indices, self.starts, strict=True)
        ]
        while len(parts) > 1:
            k = self.split_every
            parts = [delayed(_tree_sum_np, pure=False)(*parts[j : j + k]) for j in range(0, len(parts), k)]
        return self.client.compute(parts[0]).result()

    def reduce(self, fn: Callable, pool=None) -> PyTree:
        """Σ over all partitions of Σ over their blocks of ``fn(block)``, computed on the workers."""
        from dask import delayed

        # a task of the graph, not scattered data: a lost worker's copy is sent again, where scattered data
        # would be gone and the pass cancelled ("already forgotten"; dask/distributed#3149)
        shipped = delayed(jax.tree.map(np.asarray, fn), traverse=False)
        x64 = bool(jax.config.jax_enable_x64)
        out = self.map_reduce(_partition_reduce, shipped, self.chunk_size, x64, self.transform, self.dim)
        return jax.tree.map(jax.numpy.asarray, out)


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


def _partition_reduce(rows: np.ndarray, start: int, fn, chunk_size: int, x64: bool, transform, dim: int):
    """On a worker: one partition's Σ_blocks fn(block), as numpy arrays."""
    fn = _interned(fn)
    if rows.shape[1] != dim:
        raise VBayesError(f"a partition has {rows.shape[1]} columns, the data {dim}")
    with jax.enable_x64(x64):
        rows = np.asarray(rows, dtype=np.float64)
        rows = transform(rows) if transform is not None else rows
        out = InMemory(rows, chunk_size=chunk_size, n_threads=1).reduce(fn)
        return jax.tree.map(np.asarray, out)


_FUNCTIONS: dict = {}  # per worker process: one object per (function, bound arguments)


def _interned(tree: PyTree) -> PyTree:
    """``tree`` with the ``functools.partial`` inside each ``jax.tree_util.Partial`` replaced by this process's
    first copy of it: an unpickled partial is a new object, and ``jit`` keys its cache on the callables in a
    pytree's treedef, so without this every pass would compile again."""
    is_partial = lambda x: isinstance(x, jax.tree_util.Partial)

    def intern(p):
        if not is_partial(p):
            return p
        func = p.func
        if isinstance(func, functools.partial):
            key = (func.func, func.args, tuple(sorted(func.keywords.items())))
            func = _FUNCTIONS.setdefault(key, func)
        args = [jax.tree.map(intern, a, is_leaf=is_partial) for a in p.args]
        return jax.tree_util.Partial(func, *args, **p.keywords)

    return jax.tree.map(intern, tree, is_leaf=is_partial)


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
