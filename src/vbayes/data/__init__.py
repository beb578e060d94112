"""Where data live: in memory, streamed from disk (:mod:`~vbayes.data.sources`), on a Dask cluster
(:mod:`~vbayes.data.dask`), across JAX devices (:mod:`~vbayes.data.devices`). Every source sums a function over
its rows with ``reduce``; :func:`as_source` picks the source for what a user passes."""

from __future__ import annotations

import os

import numpy as np

from vbayes.data.sources import Chunks, DataSource, InMemory, check_data
from vbayes.data.stream import Stream
from vbayes.errors import is_count, require


def as_source(data, chunk_size: int = 1024, n_threads: int | None = None) -> DataSource:
    """A :class:`DataSource` for ``data``: itself if it is one; in-memory blocks for an array; a :class:`Stream`
    for a ``.npy`` path, a memmap or a function returning an iterable of arrays; a
    :class:`~vbayes.data.dask.DaskData` for a Dask array or DataFrame (partitions reduced on the workers)."""
    if isinstance(data, DataSource):
        return data
    require(
        [
            ("chunk_size", chunk_size, is_count(chunk_size), "an integer ≥ 1"),
            ("n_threads", n_threads, n_threads is None or is_count(n_threads), "None or an integer ≥ 1"),
        ]
    )
    if hasattr(data, "__dask_graph__"):
        from vbayes.data.dask import DaskData

        return DaskData(data, chunk_size=chunk_size)
    if isinstance(data, np.memmap) or isinstance(data, str | os.PathLike) or callable(data):
        return Stream(data, chunk_size=chunk_size, n_threads=n_threads)
    return InMemory(data, chunk_size=chunk_size, n_threads=n_threads)


__all__ = ["Chunks", "DataSource", "InMemory", "Stream", "as_source", "check_data"]
