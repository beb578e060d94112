"""Data too large for memory, read from disk on every pass: a ``.npy`` file, a memmap, or any function that
returns a new iterable of row blocks. Memory stays O(block): at most ``n_threads + 1`` blocks are held at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vbayes.data.files import npy_header
from vbayes.data.sources import (
    Chunks,
    DataSource,
    block_shape,
    check_finite_rows,
    default_threads,
    in_caller_config,
    to_block,
    tree_add,
)
from vbayes.errors import VBayesError

PyTree = Any


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
        npy_header(path)  # a missing, empty, truncated or non-numeric file fails here, before any pass
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
    header = npy_header(path)
    shape = header.shape if len(header.shape) == 2 else (header.shape[0], 1)
    return _read_raw(path, header.offset, header.dtype, shape, rows)


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
