"""Where the rows of a data set live, and how a pass over them is summed: in memory, streamed from disk.

A :class:`DataSource` holds N rows of width D and sums a function over them, block by block:
``reduce(fn)`` = Σ_blocks fn(block), each block a :class:`Chunks` of equal chunks of rows with a weight per
row (0 on padding). Nothing here knows what ``fn`` computes (the conjugate engine passes its E-step), so
every source serves every model. Data read from disk on every pass: :mod:`vbayes.data.stream`; sources that sum
elsewhere (a Dask cluster: :mod:`vbayes.data.dask`; JAX devices: :mod:`vbayes.data.devices`) implement the same
``reduce``.

Block shapes do not depend on N (chunks of ``chunk_size`` rows, blocks of ``block_chunks`` chunks, the last
one rounded up to one of a few sizes), so one compiled ``fn`` serves every data size. In-memory blocks are
processed on a thread pool: XLA's CPU client runs executions from different threads in parallel, and the
sums are taken in a fixed order, so the result does not depend on the threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.errors import VBayesError
from vbayes.keys import numpy_rng

Array = jax.Array
PyTree = Any


class Chunks(NamedTuple):
    """A block of data on the device, cut into equal chunks: ``x`` (n_chunks, C, D), ``w`` (n_chunks, C)
    point weights (0 on padding)."""

    x: Array
    w: Array


# ----------------------------------------------------------------------------------------------------
# validation


def check_data(x, name: str = "X") -> np.ndarray:
    """A finite, non-empty float64 (N, D) array, or a :class:`VBayesError` naming what is wrong
    (scikit-learn's message for 1-D input; the number of non-finite rows and the first few indices)."""
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise VBayesError(f"{name} must be numeric, got dtype {x.dtype}")
    if x.ndim != 2:
        if x.ndim == 1:
            raise VBayesError(
                f"Expected 2D array, got 1D array instead: {name}.shape={x.shape}. Reshape your data "
                "either using array.reshape(-1, 1) if your data has a single feature or "
                "array.reshape(1, -1) if it contains a single sample."
            )
        raise VBayesError(f"Expected 2D array, got {x.ndim}D array instead: {name}.shape={x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise VBayesError(f"{name} is empty: shape {x.shape}; at least 1 sample and 1 feature are required")
    x = np.asarray(x, dtype=np.float64)
    check_finite_rows(x, name)
    return x


def check_finite_rows(x: np.ndarray, name: str, offset: int = 0) -> None:
    """A :class:`VBayesError` naming the rows of ``x`` (N, D) with NaN or inf (numbered from ``offset``)."""
    if np.isfinite(x).all():
        return
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1)) + offset
    first = ", ".join(str(i) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
    raise VBayesError(
        f"{name} has {bad.size} row{'s' if bad.size > 1 else ''} with NaN or inf values "
        f"(row{'s' if bad.size > 1 else ''} {first}); remove or impute them"
    )


def working_dtype():
    """The working floating-point type: float64 under ``jax_enable_x64``, else float32."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def default_threads() -> int:
    """Worker threads for the block passes: the usable CPU cores on the CPU backend, else 1."""
    if jax.default_backend() != "cpu":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


# ----------------------------------------------------------------------------------------------------
# blocks


def to_block(rows: np.ndarray, chunk: int, n_chunks: int, dtype=None) -> Chunks:
    """(n, D) rows as one device block of ``n_chunks`` chunks of ``chunk`` rows, zero-weight padding, in
    ``dtype`` (default: the working precision)."""
    n, dim = rows.shape
    x = np.zeros((n_chunks * chunk, dim))
    x[:n] = rows
    w = np.zeros(n_chunks * chunk)
    w[:n] = 1.0
    dtype = dtype or working_dtype()
    return Chunks(jnp.asarray(x.reshape(n_chunks, chunk, dim), dtype), jnp.asarray(w.reshape(n_chunks, chunk), dtype))


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _round_up(n: int) -> int:
    """n rounded up to a multiple of max(1, 2^⌈log2 n⌉ / 8): at most 8 sizes per octave (few shapes, hence
    few compilations) and under 1/8 of padding."""
    step = max(1, _pow2(n) // 8)
    return -(-n // step) * step


def block_shape(n: int, chunk: int, block_chunks: int) -> tuple[int, int]:
    """(chunk, n_chunks) for a block of n ≤ chunk · block_chunks rows, rounded up by :func:`_round_up` (a
    full block is (chunk, block_chunks))."""
    if n <= chunk:
        return min(chunk, max(16, _round_up(n))), 1
    return chunk, min(block_chunks, _round_up(-(-n // chunk)))


# ----------------------------------------------------------------------------------------------------
# sums of pytrees


@jax.jit
def _tree_add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.add, a, b)


def tree_add(total: PyTree | None, out: PyTree) -> PyTree:
    """``total + out`` leaf by leaf (``out`` when ``total`` is None)."""
    return out if total is None else _tree_add(total, out)


def tree_sum(outs: list) -> PyTree:
    """Σ of a list of pytrees, in list order."""
    total = None
    for o in outs:
        total = tree_add(total, o)
    return total


@jax.jit
def tree_div(a: PyTree, c) -> PyTree:
    """``a / c`` leaf by leaf."""
    return jax.tree.map(lambda leaf: leaf / c, a)


def in_caller_config(fn: Callable) -> Callable:
    """``fn`` run under the calling thread's ``jax_enable_x64`` (a thread-local setting that worker threads
    would otherwise not see: ``jax.enable_x64(True)`` around a fit must reach the block passes)."""
    x64 = bool(jax.config.jax_enable_x64)

    def run(*args):
        with jax.enable_x64(x64):
            return fn(*args)

    return run


# ----------------------------------------------------------------------------------------------------
# sources


class DataSource:
    """N rows of width D and a way to sum a function over them. Subclasses give ``n_samples`` (N), ``dim``
    (D) and ``reduce``; ``n_threads`` is how many blocks they process at once."""

    n_samples: float
    dim: int
    n_threads: int = 1

    def reduce(self, fn: Callable[[Chunks], PyTree], pool: ThreadPoolExecutor | None = None) -> PyTree:
        """Σ over the blocks of ``fn(block)``, ``block`` a :class:`Chunks`; ``pool``: threads to use."""
        raise NotImplementedError


class InMemory(DataSource):
    """Data on the device in blocks of ``chunk_size · block_chunks`` rows (the last padded), processed
    by ``n_threads`` threads. Block shapes do not depend on N, so one compiled pass serves all data sizes.
    ``dtype``: the blocks' precision (default: the working precision)."""

    def __init__(self, x, chunk_size: int = 1024, n_threads: int | None = None, block_chunks: int = 64, dtype=None):
        x = check_data(x)
        n, self.dim = x.shape
        rows = chunk_size * block_chunks
        self.blocks = []
        for start in range(0, n, rows):
            part = x[start : start + rows]
            self.blocks.append(to_block(part, *block_shape(part.shape[0], chunk_size, block_chunks), dtype))
        self.n_samples = float(n)
        self.n_threads = max(1, min(n_threads or default_threads(), len(self.blocks)))

    def reduce(self, fn: Callable[[Chunks], PyTree], pool: ThreadPoolExecutor | None = None) -> PyTree:
        """Σ_blocks fn(block), blocks on the pool's threads, summed in block order."""
        if pool is None or len(self.blocks) == 1:
            return tree_sum([fn(b) for b in self.blocks])
        fn = in_caller_config(fn)
        return tree_sum([f.result() for f in [pool.submit(fn, b) for b in self.blocks]])


# ----------------------------------------------------------------------------------------------------
# row-wise maps and minibatch order


def map_rows(fn: Callable[[Array], Array], x, chunk_size: int = 4096, block_chunks: int = 16) -> np.ndarray:
    """``fn`` (a ``jax.tree_util.Partial``, so its bound arrays are traced, not baked in) applied to ``x``
    (N, D) in blocks of ``chunk_size · block_chunks`` rows (``lax.map`` over chunks; the block shapes do not
    depend on N, so nothing recompiles for a new N); results stacked to (N, ...)."""
    x = np.asarray(x, dtype=np.float64)
    rows = chunk_size * block_chunks
    outs = []
    for start in range(0, x.shape[0], rows):
        part = x[start : start + rows]
        chunk, n_chunks = block_shape(part.shape[0], chunk_size, block_chunks)
        padded = np.zeros((chunk * n_chunks, x.shape[1]))
        padded[: part.shape[0]] = part
        out = _map_rows(fn, jnp.asarray(padded.reshape(n_chunks, chunk, -1), working_dtype()))
        outs.append(np.asarray(out).reshape((chunk * n_chunks,) + out.shape[2:])[: part.shape[0]])
    return np.concatenate(outs)


@jax.jit
def _map_rows(fn, xs):
    return jax.lax.map(fn, xs)


def row_order(n: int, key) -> np.ndarray:
    """A permutation of range(n), a fixed function of ``key`` (an int seed or a JAX key): the order in which
    SVI takes rows as minibatches."""
    if key is None or isinstance(key, int):
        key = jax.random.PRNGKey(key or 0)
    return numpy_rng(key).permutation(n)


def next_rows(x: np.ndarray, position: int, count: int) -> tuple[np.ndarray, int]:
    """``count`` rows of ``x`` from ``position`` on, wrapping around; and the next position."""
    parts, n = [], x.shape[0]
    while count > 0:
        take = min(count, n - position)
        parts.append(x[position : position + take])
        position, count = (position + take) % n, count - take
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), position
