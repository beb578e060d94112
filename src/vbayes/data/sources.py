"""Where the rows of a data set live, and how a pass over them is summed: in memory, streamed from disk.

A :class:`DataSource` holds N rows of width D and sums a function over them, block by block:
``reduce(fn)`` = Σ_blocks fn(block), each block a :class:`Chunks` of equal chunks of rows with a weight per
row (0 on padding). Nothing here knows what ``fn`` computes (the conjugate engine passes its E-step), so
every source serves every model. Sources that sum elsewhere (a Dask cluster: :mod:`vbayes.data.dask`; JAX
devices: :mod:`vbayes.data.devices`) implement the same ``reduce``.

Block shapes do not depend on N (chunks of ``chunk_size`` rows, blocks of ``block_chunks`` chunks, the last
one rounded up to one of a few sizes), so one compiled ``fn`` serves every data size. In-memory blocks are
processed on a thread pool: XLA's CPU client runs executions from different threads in parallel, and the
sums are taken in a fixed order, so the result does not depend on the threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.errors import VBayesError

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


class Stream(DataSource):
    """Data read in chunks on every pass: a ``.npy`` path (read with plain file reads, so the resident
    memory stays O(chunk)), a ``np.memmap`` (read the same way from its file) or array (sliced), or a
    function returning a new iterable of (n_i, D) arrays. Rows are regrouped into blocks of
    ``chunk_size · block_chunks`` rows, at most ``n_threads + 1`` blocks in memory at a time;
    ``transform`` (optional) maps each block's rows (e.g. centring) before they go to the device."""

    def __init__(
        self,
        source,
        chunk_size: int = 1024,
        n_threads: int | None = None,
        block_chunks: int = 64,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        self.chunk_size, self.block_chunks = chunk_size, block_chunks
        self.block_rows = chunk_size * block_chunks
        self.n_threads = n_threads or default_threads()
        self.transform = transform
        self._read = _reader(source)
        n, dim, bad, first = 0, None, 0, []
        for part in self.parts(check=False):  # one pass to learn N and D and check every value
            rows = np.flatnonzero(~np.isfinite(part).all(axis=1))
            bad, first = bad + rows.size, first + list(rows[: 5 - len(first)] + n)
            n, dim = n + part.shape[0], part.shape[1]
        if bad:
            shown = ", ".join(map(str, first)) + (", ..." if bad > len(first) else "")
            raise VBayesError(
                f"the data source has {bad} row{'s' if bad > 1 else ''} with NaN or inf values "
                f"(row{'s' if bad > 1 else ''} {shown}); remove or impute them"
            )
        if n == 0:
            raise VBayesError("the data source yielded no rows")
        self.n_samples, self.dim = float(n), dim

    def parts(self, check: bool = True) -> Iterator[np.ndarray]:
        """The source's rows as float64 (n_i, D) arrays, checked (one width; finite unless ``check`` is
        off), with global row numbers in the messages."""
        start, dim = 0, None
        for part in self._read():
            part = np.asarray(part)
            if part.ndim != 2:
                raise VBayesError(f"each chunk of the data source must be 2-D (rows, features), got shape {part.shape}")
            if dim is not None and part.shape[1] != dim:
                raise VBayesError(f"chunk starting at row {start} has {part.shape[1]} features, earlier chunks {dim}")
            dim = part.shape[1]
            part = np.asarray(part, dtype=np.float64)
            if check:
                check_finite_rows(part, "the data source", offset=start)
            start += part.shape[0]
            if part.shape[0]:
                yield part

    def blocks(self) -> Iterator[Chunks]:
        """Blocks of ``block_rows`` rows as device ``Chunks`` (shaped as :class:`InMemory`'s)."""
        buf = np.empty((self.block_rows, self.dim))
        fill = 0
        for part in self.parts():
            i = 0
            while i < part.shape[0]:
                take = min(self.block_rows - fill, part.shape[0] - i)
                buf[fill : fill + take] = part[i : i + take]
                fill, i = fill + take, i + take
                if fill == self.block_rows:
                    yield self._to_block(buf)
                    fill = 0
        if fill:
            yield self._to_block(buf[:fill])

    def _to_block(self, rows: np.ndarray) -> Chunks:
        rows = self.transform(rows) if self.transform is not None else rows
        return to_block(rows, *block_shape(rows.shape[0], self.chunk_size, self.block_chunks))

    def reduce(self, fn: Callable[[Chunks], PyTree], pool: ThreadPoolExecutor | None = None) -> PyTree:
        """Σ_blocks fn(block), at most ``n_threads + 1`` blocks in flight, summed in read order."""
        total, pending = None, []
        fn = in_caller_config(fn)
        for b in self.blocks():
            pending.append(pool.submit(fn, b) if pool is not None else _Done(fn(b)))
            if len(pending) > self.n_threads:
                total = tree_add(total, pending.pop(0).result())
        for f in pending:
            total = tree_add(total, f.result())
        return total


class _Done:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


# ----------------------------------------------------------------------------------------------------
# readers


def _reader(source) -> Callable[[], Iterable[np.ndarray]]:
    """A function returning a fresh iterable of row blocks for each pass over ``source``."""
    rows = 1 << 16
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise VBayesError(f"data file {str(path)!r} does not exist")
        return partial(_read_npy, path, rows)
    if (
        isinstance(source, np.memmap)
        and source.filename
        and isinstance(source.base, __import__("mmap").mmap)
        and source.flags.c_contiguous
        and source.ndim == 2
    ):
        return partial(_read_raw, Path(source.filename), source.offset, source.dtype, source.shape, rows)
    if isinstance(source, np.ndarray):
        arr = source
        return lambda: (arr[i : i + rows] for i in range(0, max(arr.shape[0], 1), rows))
    if callable(source):
        return source
    if isinstance(source, Iterator):
        raise VBayesError(
            "a generator or iterator can be read only once, and CAVI needs a pass per iteration; "
            "pass a function that returns a new iterable instead"
        )
    if isinstance(source, Iterable):
        return lambda: source
    raise VBayesError(
        f"cannot read data from {type(source).__name__}: pass an array, a .npy path, a np.memmap, "
        "or a function returning an iterable of arrays"
    )


def _read_npy(path: Path, rows: int) -> Iterator[np.ndarray]:
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )(f)
        except ValueError as e:
            raise VBayesError(f"{str(path)!r} is not a .npy file: {e}") from e
        shape, fortran, dtype = header
        if fortran or len(shape) != 2 or dtype.hasobject:
            raise VBayesError(
                f"{str(path)!r} must hold a 2-D C-ordered numeric array, got shape {shape}, "
                f"fortran_order={fortran}, dtype {dtype}"
            )
        offset = f.tell()
    return _read_raw(path, offset, dtype, shape, rows)


def _read_raw(path: Path, offset: int, dtype, shape, rows: int) -> Iterator[np.ndarray]:
    """Rows of a C-ordered (N, D) array at byte ``offset`` of ``path``, ``rows`` at a time, via readinto."""
    n, dim = shape
    dtype = np.dtype(dtype)
    buf = np.empty((rows, dim), dtype=dtype)
    with open(path, "rb") as f:
        f.seek(offset)
        for start in range(0, n, rows):
            take = min(rows, n - start)
            view = memoryview(buf[:take].reshape(-1).view(np.uint8))
            if f.readinto(view) != take * dim * dtype.itemsize:
                raise VBayesError(f"{str(path)!r} ended before row {start + take} of {n}")
            yield buf[:take]


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
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist()).permutation(n)


def next_rows(x: np.ndarray, position: int, count: int) -> tuple[np.ndarray, int]:
    """``count`` rows of ``x`` from ``position`` on, wrapping around; and the next position."""
    parts, n = [], x.shape[0]
    while count > 0:
        take = min(count, n - position)
        parts.append(x[position : position + take])
        position, count = (position + take) % n, count - take
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), position


def stream_moments(stream: Stream, rng, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over a stream: (mean, covariance (ddof 1), a uniform random sample of ``size`` rows), the sample
    by priority sampling (keep the rows with the smallest uniform keys, drawn from ``rng``, a NumPy
    ``RandomState`` or ``Generator``)."""
    n, total, scatter, shift = 0, None, None, None
    keys, rows = np.zeros(0), None
    for part in stream.parts():
        if shift is None:
            shift = part[0].copy()
            total, scatter = np.zeros_like(shift), np.zeros((shift.size, shift.size))
            rows = np.zeros((0, shift.size))
        d = part - shift
        total += d.sum(0)
        scatter += d.T @ d
        n += part.shape[0]
        keys = np.concatenate([keys, rng.uniform(size=part.shape[0])])
        rows = np.concatenate([rows, part])
        if keys.size > size:
            keep = np.argpartition(keys, size)[:size]
            keys, rows = keys[keep], rows[keep]
    mean_d = total / n
    cov = (scatter - n * np.outer(mean_d, mean_d)) / max(n - 1, 1)
    order = np.argsort(keys)
    return mean_d + shift, np.atleast_2d(cov), rows[order]
