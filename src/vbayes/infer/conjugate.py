"""Conjugate-exponential VB: one model, five algorithms (CAVI, SVI, EM, MAP-EM, streaming CAVI).

A model with global parameters β and local latent variables z_n is a :class:`ConjugateModel`: a
NamedTuple of pure functions (``jax.tree_util.Partial``, so the model is a pytree and one compiled pass
serves every prior of the same shapes)::

    local  = model.expect(λ)                   # what the local step needs from q(β): E_q[η(β)]
    local  = model.mode(λ)                     # ... or the same at the mode of q(β) (a point mass: EM)
    stats, local_elbo = model.local_step(local, x, w)   # optimal q(z_n), returned as Σ_n w_n E[t(x_n, z_n)]
                                                         # and Σ_n w_n log Σ_z exp E log p(x_n, z | β)
    λ̂      = model.global_step(stats, scale)  # η_prior + scale · stats (natural parameters)
    model.expected_log_joint(local, stats)     # Σ_n E_q[log p(x_n, z_n | β)], linear in the stats
    model.kl(λ)                                # KL(q(β) ‖ p(β))
    model.log_prior(λ)                         # log p(β̂) at the mode of q(β)

and the algorithms never look inside it (Hoffman, Blei, Wang & Paisley 2013, §2–3):

* **CAVI**: ``λ ← global_step(Σ_all stats, 1)``; full data, scale 1.
* **SVI**: a minibatch B of S points, ``λ ← (1 − ρ_t) λ + ρ_t global_step(stats_B, N/S)`` with
  ``ρ_t = (t + τ)^−κ``: the natural-gradient step on the ELBO (Hoffman et al. eq. 24).
* **EM / MAP-EM**: the same two calls with ``mode`` in place of ``expect``: q(β) collapsed to a point mass
  at the mode of ``global_step``'s output, i.e. the M-step (flat prior: EM; proper prior: MAP-EM).
  The same interpolated update with ``mode`` is online EM (Cappé & Moulines 2009).
* **Streaming CAVI**: the statistics of one iteration summed over chunks read from disk; memory O(chunk).

SVI's stopping rule (see :func:`svi`): the ELBO of the average of the last half of the iterates, on a
fixed subset, at doubling checkpoints; the change over a doubling estimates the remaining gap.

The sums commute, so data are cut into blocks that are processed on a thread pool (XLA's CPU client runs
executions from different threads in parallel; one fused pass per block, statistics summed in a fixed
order). The ELBO reported by CAVI after an update is at (q(z) of this pass, new q(β)) — Bishop's 10.70 and
scikit-learn's convention — computed from the statistics, with no second pass::

    ELBO = local_elbo − expected_log_joint(local_old, stats) + expected_log_joint(local_new, stats) − kl(λ_new)

(the first two terms are the entropy of q(z)).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.errors import VBayesError
from vbayes.fit import FitInfo, as_key

Array = jax.Array
PyTree = Any


class ConjugateModel(NamedTuple):
    """A conjugate-exponential model as pure functions (see the module docstring for each signature)."""

    expect: Callable
    mode: Callable
    local_step: Callable
    global_step: Callable
    expected_log_joint: Callable
    kl: Callable
    log_prior: Callable


class Chunks(NamedTuple):
    """A block of data on the device, cut into equal chunks: ``x`` (n_chunks, C, D), ``w`` (n_chunks, C)
    point weights (0 on padding)."""

    x: Array
    w: Array


class IterState(NamedTuple):
    """CAVI / EM state: ``params`` λ (natural parameters of q(β)); ``local`` = expect(λ) or mode(λ), the
    E-step's input; ``objective`` the last ELBO (or log-likelihood); ``step`` iterations done."""

    params: PyTree
    local: PyTree
    objective: Array
    step: Array


class SVIState(NamedTuple):
    """SVI / online-EM state: ``params`` λ and ``step`` t (the step size is ρ_t = (t + τ)^−κ)."""

    params: PyTree
    step: Array


class SVIInfo(NamedTuple):
    """Per SVI step: ``local_elbo``, the minibatch's local ELBO scaled by N/S (the data term of the ELBO
    estimate of λ_t: ELBO ≈ local_elbo − KL(q(β) ‖ p(β))), and the step size ρ_t."""

    local_elbo: Array
    rho: Array


@dataclass(frozen=True)
class ConjugateFit:
    """Result of a conjugate driver. ``params``: λ of q(β) (for EM/MAP the posterior whose mode is the
    estimate); ``objective``: total ELBO (VB) or log-likelihood [+ log prior] (EM / MAP-EM), for ``params``
    (VB) or for the parameters entering the last iteration (EM, as scikit-learn); ``n_samples``: Σ weights;
    ``trace``: the objective at every iteration (SVI: at every evaluation)."""

    params: PyTree
    objective: float
    n_samples: float
    trace: np.ndarray
    info: FitInfo
    extra: dict = field(default_factory=dict)

    @property
    def per_sample(self) -> float:
        """Objective per point (nats)."""
        return self.objective / self.n_samples


# ----------------------------------------------------------------------------------------------------
# pure steps


def batch_pass(
    model: ConjugateModel, local: PyTree, chunks: Chunks, axis_name: str | None = None
) -> tuple[PyTree, Array]:
    """Σ over chunks of ``model.local_step``: (stats, local ELBO) of one block, chunks in a ``lax.scan``.
    The E-step runs in the block's precision (``local`` cast to it: float32 blocks halve its cost on CPU),
    the sums over chunks in the working precision (float64 under ``jax.enable_x64``).
    Inside ``shard_map`` over ``axis_name`` the sums are also taken across devices (a ``psum``)."""
    local = _cast(local, chunks.x.dtype)

    def body(acc, xw):
        out = model.local_step(local, *xw)
        return jax.tree.map(lambda a, o: a + o.astype(a.dtype), acc, out), None

    shapes = jax.eval_shape(model.local_step, local, chunks.x[0], chunks.w[0])
    zero = jax.tree.map(
        lambda s: jnp.zeros(s.shape, _float() if jnp.issubdtype(s.dtype, jnp.floating) else s.dtype), shapes
    )
    total, _ = jax.lax.scan(body, zero, (chunks.x, chunks.w))
    return total if axis_name is None else jax.lax.psum(total, axis_name)


def vb_update(
    model: ConjugateModel, state: IterState, stats: PyTree, local_elbo: Array, scale: float | Array = 1.0
) -> IterState:
    """CAVI's global step λ' = global_step(stats, scale) and the ELBO at (this pass's q(z), λ'):
    scale · (entropy of q(z) + E log p(x, z | β)) − KL(q(β) ‖ p(β)); ``scale`` = N / n for statistics of a
    subset of n of the N points (an unbiased estimate), 1 for all data."""
    params = model.global_step(stats, scale)
    local = model.expect(params)
    entropy = local_elbo - model.expected_log_joint(state.local, stats)
    elbo = scale * (entropy + model.expected_log_joint(local, stats)) - model.kl(params)
    return IterState(params, local, elbo, state.step + 1)


def em_update(model: ConjugateModel, state: IterState, stats: PyTree, loglik: Array, map_: bool) -> IterState:
    """The M-step (mode of ``global_step``'s output) and the objective of the parameters that produced
    ``stats``: log p(X | β̂) [+ log p(β̂) for MAP-EM], exact since the E-step is exact for a point mass."""
    objective = loglik + model.log_prior(state.params) if map_ else loglik
    params = model.global_step(stats, 1.0)
    return IterState(params, model.mode(params), objective, state.step + 1)


def init_state(model: ConjugateModel, params: PyTree, point_mass: bool = False) -> IterState:
    """CAVI (or EM, with ``point_mass``) state at λ = ``params``."""
    local = model.mode(params) if point_mass else model.expect(params)
    return IterState(params, local, jnp.asarray(-jnp.inf), jnp.asarray(0, jnp.int32))


def cavi_step(model: ConjugateModel, state: IterState, chunks: Chunks) -> IterState:
    """One CAVI iteration on data held in one block (pure; the drivers split it over threads)."""
    stats, local_elbo = batch_pass(model, state.local, chunks)
    return vb_update(model, state, stats, local_elbo)


def em_step(model: ConjugateModel, state: IterState, chunks: Chunks, map_: bool = False) -> IterState:
    """One EM (or MAP-EM) iteration on one block: ``cavi_step`` with a point mass for q(β)."""
    stats, loglik = batch_pass(model, state.local, chunks)
    return em_update(model, state, stats, loglik, map_)


def svi_step(
    model: ConjugateModel,
    state: SVIState,
    x: Array,
    w: Array,
    n_total,
    learning_offset,
    learning_decay,
    point_mass: bool = False,
    chunk_size: int = 1024,
    axis_name: str | None = None,
) -> tuple[SVIState, SVIInfo]:
    """λ ← (1 − ρ_t) λ + ρ_t λ̂, λ̂ = global_step(stats_B, N/Σw), ρ_t = (t + τ)^−κ (Hoffman et al. 2013, Fig. 6).

    ``x`` (S, D), ``w`` (S,): the minibatch and its weights; ``n_total``: N. With ``point_mass`` the E-step
    uses the mode of q(β): online EM (Cappé & Moulines 2009), the same update on the same statistics.
    The E-step runs in ``x``'s precision (float32 minibatches under float64 λ: statistics of S points whose
    noise, ~1/√S, dwarfs float32 rounding), the statistics are summed over chunks and the update made in λ's.
    Data-parallel inside ``shard_map`` over ``axis_name``: each device holds a slice of the minibatch, the
    statistics and Σw are ``psum``-ed, and every device makes the same update."""
    local = model.mode(state.params) if point_mass else model.expect(state.params)
    size, dim = x.shape
    chunk = min(size, chunk_size) if size % min(size, chunk_size) == 0 else size  # cache-sized chunks
    chunks = Chunks(x.reshape(size // chunk, chunk, dim), w.reshape(size // chunk, chunk))
    stats, local_elbo = batch_pass(model, local, chunks, axis_name)  # the E-step in x's precision
    dtype = jax.tree.leaves(state.params)[0].dtype  # the update in λ's
    stats, local_elbo = _cast(stats, dtype), local_elbo.astype(dtype)
    weight = jnp.sum(w) if axis_name is None else jax.lax.psum(jnp.sum(w), axis_name)
    new, rho = svi_update(model, state, stats, n_total / weight, learning_offset, learning_decay)
    return new, SVIInfo(n_total / weight * local_elbo, rho)


def _cast(tree: PyTree, dtype) -> PyTree:
    """The floating-point leaves of ``tree`` in ``dtype``."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def svi_update(
    model: ConjugateModel, state: SVIState, stats: PyTree, scale, learning_offset, learning_decay
) -> tuple[SVIState, Array]:
    """λ ← (1 − ρ_t) λ + ρ_t global_step(stats, scale), ρ_t = (t + τ)^−κ; ``scale`` = N / (points in the
    statistics). Returns the new state and ρ_t. (Shared by :func:`svi_step` and the Dask driver, whose
    statistics come from the workers.)"""
    target = model.global_step(stats, scale)
    rho = (state.step + learning_offset) ** (-learning_decay)
    params = jax.tree.map(lambda a, b: (1.0 - rho) * a + rho * b, state.params, target)
    return SVIState(params, state.step + 1), rho


# ----------------------------------------------------------------------------------------------------
# data: validation, in-memory blocks, streamed chunks


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
    _check_finite(x, name)
    return x


def _check_finite(x: np.ndarray, name: str, offset: int = 0) -> None:
    if np.isfinite(x).all():
        return
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1)) + offset
    first = ", ".join(str(i) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
    raise VBayesError(
        f"{name} has {bad.size} row{'s' if bad.size > 1 else ''} with NaN or inf values "
        f"(row{'s' if bad.size > 1 else ''} {first}); remove or impute them"
    )


def _float():
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def default_threads() -> int:
    """Worker threads for the block passes: the usable CPU cores on the CPU backend, else 1."""
    if jax.default_backend() != "cpu":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _block(rows: np.ndarray, chunk: int, n_chunks: int, dtype=None) -> Chunks:
    """(n, D) rows as one device block of ``n_chunks`` chunks of ``chunk`` rows, zero-weight padding, in
    ``dtype`` (default: the working precision)."""
    n, dim = rows.shape
    x = np.zeros((n_chunks * chunk, dim))
    x[:n] = rows
    w = np.zeros(n_chunks * chunk)
    w[:n] = 1.0
    dtype = dtype or _float()
    return Chunks(jnp.asarray(x.reshape(n_chunks, chunk, dim), dtype), jnp.asarray(w.reshape(n_chunks, chunk), dtype))


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _round_up(n: int) -> int:
    """n rounded up to a multiple of max(1, 2^⌈log2 n⌉ / 8): at most 8 sizes per octave (few shapes, hence
    few compilations) and under 1/8 of padding."""
    step = max(1, _pow2(n) // 8)
    return -(-n // step) * step


def _block_shape(n: int, chunk: int, block_chunks: int) -> tuple[int, int]:
    """(chunk, n_chunks) for a block of n ≤ chunk · block_chunks rows, rounded up by :func:`_round_up` (a
    full block is (chunk, block_chunks))."""
    if n <= chunk:
        return min(chunk, max(16, _round_up(n))), 1
    return chunk, min(block_chunks, _round_up(-(-n // chunk)))


class DataSource:
    """Where the data of a conjugate fit live. Subclasses give ``n_samples`` and ``reduce``; ``stats`` is the
    one call the drivers make, and a source that sums elsewhere (Dask workers, JAX devices) overrides it."""

    n_samples: float
    n_threads: int = 1

    def reduce(self, fn: Callable[[Chunks], PyTree], pool: ThreadPoolExecutor | None) -> PyTree:
        raise NotImplementedError

    def stats(self, model: ConjugateModel, local: PyTree, pool: ThreadPoolExecutor | None) -> tuple[PyTree, Array]:
        """Σ_n over all the data of ``model.local_step(local, x_n)``: (stats, local ELBO)."""
        return self.reduce(partial(_pass, model, local), pool)


class InMemory(DataSource):
    """Data on the device in blocks of ``chunk_size · block_chunks`` rows (the last padded), processed
    by ``n_threads`` threads. Block shapes do not depend on N, so one compiled pass serves all data sizes.
    ``dtype``: the blocks' precision, hence the E-step's (default: the working precision; the sums over
    chunks stay in it either way, see :func:`batch_pass`)."""

    def __init__(self, x, chunk_size: int = 1024, n_threads: int | None = None, block_chunks: int = 64, dtype=None):
        x = check_data(x)
        n, self.dim = x.shape
        rows = chunk_size * block_chunks
        self.blocks = []
        for start in range(0, n, rows):
            part = x[start : start + rows]
            self.blocks.append(_block(part, *_block_shape(part.shape[0], chunk_size, block_chunks), dtype))
        self.n_samples = float(n)
        self.n_threads = max(1, min(n_threads or default_threads(), len(self.blocks)))

    def reduce(self, fn: Callable[[Chunks], PyTree], pool: ThreadPoolExecutor | None) -> PyTree:
        """Σ_blocks fn(block), blocks on the pool's threads, summed in block order."""
        if pool is None or len(self.blocks) == 1:
            return _tree_sum([fn(b) for b in self.blocks])
        fn = _in_caller_config(fn)
        return _tree_sum([f.result() for f in [pool.submit(fn, b) for b in self.blocks]])


def _in_caller_config(fn: Callable) -> Callable:
    """``fn`` run under the calling thread's ``jax_enable_x64`` (a thread-local setting that worker threads
    would otherwise not see: ``jax.enable_x64(True)`` around a fit must reach the block passes)."""
    x64 = bool(jax.config.jax_enable_x64)

    def run(*args):
        with jax.enable_x64(x64):
            return fn(*args)

    return run


def _tree_sum(outs: list) -> PyTree:
    total = outs[0]
    for o in outs[1:]:
        total = _tree_add(total, o)
    return total


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
        for part in self._parts(check=False):  # one pass to learn N and D and check every value
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

    def _parts(self, check: bool = True) -> Iterator[np.ndarray]:
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
                _check_finite(part, "the data source", offset=start)
            start += part.shape[0]
            if part.shape[0]:
                yield part

    def blocks(self) -> Iterator[Chunks]:
        """Blocks of ``block_rows`` rows as device ``Chunks`` (shaped as :class:`InMemory`'s)."""
        buf = np.empty((self.block_rows, self.dim))
        fill = 0
        for part in self._parts():
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
        return _block(rows, *_block_shape(rows.shape[0], self.chunk_size, self.block_chunks))

    def reduce(self, fn: Callable[[Chunks], PyTree], pool: ThreadPoolExecutor | None) -> PyTree:
        """Σ_blocks fn(block), at most ``n_threads + 1`` blocks in flight, summed in read order."""
        total, pending = None, []
        fn = _in_caller_config(fn)
        for b in self.blocks():
            pending.append(pool.submit(fn, b) if pool is not None else _Done(fn(b)))
            if len(pending) > self.n_threads:
                total = _add(total, pending.pop(0).result())
        for f in pending:
            total = _add(total, f.result())
        return total


class _Done:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


@jax.jit
def _tree_add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.add, a, b)


@jax.jit
def _tree_div(a: PyTree, c) -> PyTree:
    return jax.tree.map(lambda leaf: leaf / c, a)


def _add(total, out):
    return out if total is None else _tree_add(total, out)


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


def as_data(data, chunk_size: int = 1024, n_threads: int | None = None) -> DataSource:
    """In-memory blocks for an array, a :class:`Stream` for a path, a memmap, an iterable factory, a
    :class:`vbayes.infer.dask.DaskData` for a Dask array or DataFrame (partitions reduced on the workers)."""
    if isinstance(data, DataSource):
        return data
    if hasattr(data, "__dask_graph__"):
        from vbayes.infer.dask import DaskData

        return DaskData(data, chunk_size=chunk_size)
    if isinstance(data, np.memmap) or isinstance(data, str | os.PathLike) or callable(data):
        return Stream(data, chunk_size=chunk_size, n_threads=n_threads)
    return InMemory(data, chunk_size=chunk_size, n_threads=n_threads)


# ----------------------------------------------------------------------------------------------------
# drivers


_pass = jax.jit(batch_pass)
_vb_update = jax.jit(vb_update)
_em_update = jax.jit(em_update, static_argnums=4)


ROUND = 64  # iterations per compiled call of the on-device loop


@partial(jax.jit, static_argnames=("point_mass", "map_"))
def _device_rounds(model, state, block: Chunks, prev, tol_total, n_steps, scale, point_mass: bool, map_: bool):
    """Up to ``n_steps`` (≤ ROUND) CAVI / EM iterations on one block in a ``lax.while_loop``, with the host
    loop's rules: a non-finite objective ends the loop without taking that iteration (status 2); a change
    |objective − previous| < ``tol_total`` after it is taken ends it (status 1). ``prev``: the previous
    objective (NaN: none yet). Returns (state, objectives (ROUND,), iterations taken, status)."""
    trace = jnp.full((ROUND,), jnp.nan, state.objective.dtype)

    def cond(carry):
        _, _, _, i, status = carry
        return (i < n_steps) & (status == 0)

    def body(carry):
        state, trace, prev, i, _ = carry
        stats, local_elbo = batch_pass(model, state.local, block)
        if point_mass:
            new = em_update(model, state, stats, local_elbo, map_)
        else:
            new = vb_update(model, state, stats, local_elbo, scale)
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


def _iterate_on_device(model, state, block: Chunks, *, point_mass, map_, tol_total, max_iter, scale):
    """The CAVI / EM loop for data in one block, ROUND iterations per compiled call (no per-iteration
    dispatch or host sync: at small N those cost as much as the pass). Same iterates and stopping rule as
    the host loop. Returns (state, trace, outcome)."""
    trace: list[float] = []
    outcome = "max_steps"
    while len(trace) < max_iter:
        prev = jnp.asarray(trace[-1] if trace else jnp.nan, state.objective.dtype)
        n_steps = min(ROUND, max_iter - len(trace))
        state, values, taken, status = _device_rounds(
            model, state, block, prev, tol_total, n_steps, scale, point_mass=point_mass, map_=map_
        )
        trace.extend(np.asarray(values[: int(taken)]).tolist())
        status = int(status)
        if status:
            outcome = "converged" if status == 1 else "diverged"
            break
    return state, trace, outcome


def _iterate_on_host(model, state, data: DataSource, *, point_mass, map_, tol, max_iter, callback, scale):
    """The CAVI / EM loop on the host: one pass per iteration over the data's blocks (threads, a stream, Dask
    workers), the update, the stopping rule (the objective, one scalar, comes to the host per iteration).
    Returns (state, trace, outcome)."""
    trace, outcome = [], "max_steps"
    with ThreadPoolExecutor(max(1, data.n_threads)) as pool:
        for _ in range(max_iter):
            stats, local_elbo = data.stats(model, state.local, pool)
            new = (
                _em_update(model, state, stats, local_elbo, map_)
                if point_mass
                else _vb_update(model, state, stats, local_elbo, scale)
            )
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


def _iterate(
    model,
    params,
    data,
    *,
    point_mass: bool,
    map_: bool,
    tol: float,
    max_iter: int,
    chunk_size: int,
    n_threads: int | None,
    method: str,
    callback,
    scale: float = 1.0,
) -> ConjugateFit:
    """The CAVI / EM loop: one fused pass per iteration over the blocks, the update, the stopping rule
    |Δ objective| / N < tol (N = ``scale`` · n); on the device for one in-memory block without a callback,
    else on the host."""
    t0 = time.perf_counter()
    data = as_data(data, chunk_size, n_threads)
    local = _call(model, "mode" if point_mass else "expect", params)
    state = IterState(params, local, jnp.asarray(-jnp.inf, _float()), jnp.asarray(0, jnp.int32))
    if callback is None and isinstance(data, InMemory) and len(data.blocks) == 1:
        state, trace, outcome = _iterate_on_device(
            model,
            state,
            data.blocks[0],
            point_mass=point_mass,
            map_=map_,
            tol_total=tol * scale * data.n_samples,
            max_iter=max_iter,
            scale=scale,
        )
    else:
        state, trace, outcome = _iterate_on_host(
            model,
            state,
            data,
            point_mass=point_mass,
            map_=map_,
            tol=tol,
            max_iter=max_iter,
            callback=callback,
            scale=scale,
        )
    n_iter = len(trace)
    n_total = scale * data.n_samples
    messages = {
        "converged": f"|Δ objective| / N < {tol:g} after {n_iter} iterations",
        "max_steps": f"max_iter={max_iter} reached (last |Δ|/N = "
        f"{abs(trace[-1] - trace[-2]) / n_total if n_iter > 1 else float('nan'):.3g})",
        "diverged": f"the objective became non-finite at iteration {n_iter + 1} (degenerate component?)",
    }
    info = FitInfo(
        method=method,
        outcome=outcome,
        message=messages[outcome],
        steps=n_iter,
        grad_evals=0,
        skipped_steps=0,
        wall_time=time.perf_counter() - t0,
        extra={"passes": n_iter, "threads": data.n_threads},
    )
    objective = trace[-1] if trace else float("nan")
    return ConjugateFit(state.params, objective, n_total, np.asarray(trace), info)


def cavi(
    model: ConjugateModel,
    params: PyTree,
    data,
    *,
    tol: float = 1e-6,
    max_iter: int = 1000,
    chunk_size: int = 1024,
    n_threads: int | None = None,
    callback=None,
    scale: float = 1.0,
) -> ConjugateFit:
    """Coordinate-ascent VB from λ = ``params`` until the ELBO changes by less than ``tol`` nats per point.

    ``data``: an (N, D) array (held on the device, processed in ``n_threads`` blocks), or a source read in
    chunks on every pass — a ``.npy`` path, a ``np.memmap``, a function returning an iterable of arrays
    (streaming CAVI: memory O(chunk), the same iterates as in memory up to summation order).
    ``callback(iteration, elbo_per_point, params)`` is called after every iteration.

    Data that fit one in-memory block (N ≤ chunk_size · 64) and no ``callback``: the iterations run on the
    device, 64 per compiled ``lax.while_loop`` call (at N = 1e4 the per-iteration dispatch and host sync of
    a host loop cost as much as the pass itself). Otherwise the loop runs on the host, one compiled pass
    per block per iteration on a thread pool (blocks spread over cores, or read from disk). The iterates and
    the stopping rule are the same either way.

    ``scale`` = N / n: ``data`` is a uniform subset of n of N points standing in for all of them (every
    update is global_step(stats, N / n), the ELBO an estimate for the N points, tol per point of N), as the
    estimator's SVI uses it to judge delete/merge moves on a subset."""
    return _iterate(
        model,
        params,
        data,
        point_mass=False,
        map_=False,
        tol=tol,
        max_iter=max_iter,
        chunk_size=chunk_size,
        n_threads=n_threads,
        method="cavi",
        callback=callback,
        scale=scale,
    )


def em(
    model: ConjugateModel,
    params: PyTree,
    data,
    *,
    map: bool = False,
    tol: float = 1e-6,  # noqa: A002
    max_iter: int = 1000,
    chunk_size: int = 1024,
    n_threads: int | None = None,
    callback=None,
) -> ConjugateFit:
    """EM (``map=False``, with a flat prior such as ``gmm.flat_prior``) or MAP-EM (``map=True``): CAVI with
    q(β) a point mass at the mode of ``global_step``'s output. The objective (log-likelihood, plus log prior
    for MAP) is that of the parameters entering each iteration, as scikit-learn's ``GaussianMixture``."""
    return _iterate(
        model,
        params,
        data,
        point_mass=True,
        map_=map,
        tol=tol,
        max_iter=max_iter,
        chunk_size=chunk_size,
        n_threads=n_threads,
        method="map" if map else "em",
        callback=callback,
    )


def objective(
    model: ConjugateModel,
    params: PyTree,
    data,
    *,
    point_mass: bool = False,
    map_: bool = False,
    chunk_size: int = 1024,
    n_threads: int | None = None,
    scale: float = 1.0,
) -> float:
    """One pass: the ELBO of q(β) = λ with its optimal q(z), ``scale · local_elbo − KL``; for a point mass
    the log-likelihood [+ log prior] at the mode. Total nats. ``scale`` = N / n when ``data`` is a subset
    of n of the N points (an unbiased estimate)."""
    data = as_data(data, chunk_size, n_threads)
    local = _call(model, "mode" if point_mass else "expect", params)
    with ThreadPoolExecutor(max(1, data.n_threads)) as pool:
        _, local_elbo = data.stats(model, local, pool)
    if point_mass:
        return float(scale * local_elbo + (_call(model, "log_prior", params) if map_ else 0.0))
    return float(scale * local_elbo - _call(model, "kl", params))


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
    data = as_data(data, chunk_size, n_threads)
    local = _call(model, "expect", params)
    with ThreadPoolExecutor(max(1, data.n_threads)) as pool:
        stats, local_elbo = data.stats(model, local, pool)
    state = IterState(params, local, jnp.asarray(-jnp.inf, _float()), jnp.asarray(0, jnp.int32))
    new = _vb_update(model, state, stats, local_elbo, scale)
    return new.params, float(new.objective), stats


@partial(jax.jit, static_argnums=1)
def _call(model: ConjugateModel, name: str, *args):
    """``getattr(model, name)(*args)`` compiled once per model layout (the model is an argument, not a
    closure, so a new model with the same shapes reuses the executable)."""
    return getattr(model, name)(*args)


@partial(jax.jit, static_argnames=("point_mass", "axis_name"))
def _svi_run(model, state, xb, n_total, offset, decay, point_mass: bool = False, axis_name: str | None = None):
    """SVI steps over minibatches ``xb`` (steps, S, D) under one ``lax.scan``; returns the last state,
    the infos, and the average of the iterates (Polyak averaging). ``axis_name``: see :func:`svi_step`."""
    w = jnp.ones(xb.shape[1], xb.dtype)

    def body(carry, x):
        st, acc = carry
        st, info = svi_step(model, st, x, w, n_total, offset, decay, point_mass, axis_name=axis_name)
        return (st, jax.tree.map(jnp.add, acc, st.params)), info

    zero = jax.tree.map(jnp.zeros_like, state.params)
    (state, total), infos = jax.lax.scan(body, (state, zero), xb)
    return state, infos, jax.tree.map(lambda t: t / xb.shape[0], total)


def svi(
    model: ConjugateModel,
    params: PyTree,
    data,
    *,
    key=0,
    batch_size: int | None = None,
    learning_offset: float = 10.0,
    learning_decay: float = 0.6,
    tol: float = 2e-4,
    max_epochs: float = 100.0,
    eval_size: int = 1 << 16,
    steps_per_block: int | None = None,
    chunk_size: int = 1024,
    n_threads: int | None = None,
    final_pass: bool = True,
    start_step: float = 0.0,
    callback=None,
    devices=None,
    shuffle: bool = True,
    minibatch_dtype=np.float32,
) -> ConjugateFit:
    """Stochastic VI with natural gradients (Hoffman et al. 2013) from λ = ``params`` on an (N, D) array.

    Each step takes the next S = ``batch_size`` points of one shuffled copy of the data (sampling
    without replacement within a pass; passes repeat the order), scales their statistics by N/S and
    moves λ ← (1 − ρ_t)λ + ρ_t λ̂, ρ_t = (t + τ)^−κ (τ = ``learning_offset``, κ = ``learning_decay``).
    Steps run in compiled blocks of ``steps_per_block``. Stopping: at checkpoints after 1, 2, 4, 8, ...
    blocks, the iterates since the previous checkpoint — the last half of the run — are averaged
    (tail / Polyak–Ruppert averaging, which cancels the minibatch noise that a decaying ρ only damps)
    and the ELBO of that average is computed on a fixed subset of ``eval_size`` points (all points when
    N is smaller; the same points every time, so checkpoints differ by the change in λ̄ only). The ELBO
    gap left by the noise falls like 1/t, so the change over the last doubling estimates the gap that
    remains; the run stops when its size is below ``tol`` nats per point (a fall means the noise still
    dominates — as when the run starts near the optimum — and the run goes on), or after ``max_epochs``
    passes' worth of points. The last average is returned; with ``final_pass`` its ELBO on all data is computed once
    (one pass, no update) as ``objective``.
    ``start_step``: t of the first step (to continue a run with its small steps; the first checkpoint is then
    after start_step / 4 steps). ``shuffle=False``: ``data`` is already in minibatch order, e.g.
    :func:`shuffle_rows` ``(x, key)`` computed once for several runs (the same iterates as ``shuffle=True``).
    ``devices``: ``"all"``, a count or a list of JAX devices: data-parallel steps, each minibatch split
    across the devices and the statistics ``psum``-ed (:mod:`vbayes.infer.sharding`); the same iterates
    as on one device up to summation order. S must then be a multiple of the number of devices.
    ``minibatch_dtype``: the precision of the minibatch E-steps (float32 halves their cost on CPU; their
    statistics carry a noise of order 1/√S that float32 rounding, 1e-7, does not add to); λ, its update, the
    ELBO evaluations and the final pass keep float64 (under ``jax.enable_x64``).

    Defaults, chosen to need no tuning: S = min(N, 4096); τ = 10, κ = 0.6 (Hoffman et al. find κ in
    (0.5, 1] and τ ≥ 1 robust; κ near 0.5 suits averaging); blocks of about 2¹⁶ points (≥ 16 steps);
    tol = 1e-4 nats per point, a tenth of the accuracy one usually asks of SVI against CAVI."""
    t0 = time.perf_counter()
    x = check_data(data)
    n, _ = x.shape
    batch = int(min(n, batch_size or 4096))
    run = _svi_run
    if devices is not None:
        from vbayes.infer.sharding import data_mesh, sharded_svi_run

        mesh = data_mesh(devices)
        batch = _device_multiple(batch, mesh.size, batch_size is not None)
        run = partial(sharded_svi_run, mesh=mesh)
    block_steps = int(steps_per_block or max(16, (1 << 16) // batch))
    shuffled = shuffle_rows(x, key) if shuffle else x  # minibatches: contiguous slices of one shuffled copy, cycled
    eval_data = InMemory(shuffled[:eval_size], chunk_size, n_threads)  # a fixed uniform subset
    position = 0
    state = SVIState(params, jnp.asarray(start_step, _float()))
    # a continued run (start_step > 0) starts its doublings at a quarter of the steps already taken: its first
    # blocks move λ by (t + τ)^−κ each, too little for their change to say anything about the gap
    first_check = block_steps * max(1, int(start_step) // (4 * block_steps))
    rule = TailAverage(
        params,
        first_check,
        tol * n,
        lambda p: objective(model, p, eval_data, chunk_size=chunk_size, scale=n / eval_data.n_samples),
        callback,
        n,
    )
    local_terms, steps, outcome = [], 0, "max_steps"
    max_steps = max(block_steps, int(max_epochs * n / batch))
    while steps < max_steps:
        xb, position = _next_rows(shuffled, position, block_steps * batch)
        xb = jnp.asarray(xb.reshape(block_steps, batch, -1), minibatch_dtype)
        state, infos, avg = run(model, state, xb, float(n), learning_offset, learning_decay)
        steps += block_steps
        local_terms.append(infos.local_elbo)
        outcome = rule.update(steps, avg) or outcome
        if outcome != "max_steps":
            break
    params, trace = rule.params, rule.trace
    final = trace[-1] if trace else float("nan")
    if final_pass:
        final = objective(model, params, x, chunk_size=chunk_size, n_threads=n_threads)
    info = svi_info(
        outcome,
        tol,
        max_epochs,
        steps,
        time.perf_counter() - t0,
        {
            "batch_size": batch,
            "steps_per_block": block_steps,
            "epochs": steps * batch / n,
            "rho_last": float(infos.rho[-1]),
            "evaluations": len(trace),
        },
    )
    local = np.concatenate([np.asarray(e) for e in local_terms]) if local_terms else np.zeros(0)
    return ConjugateFit(
        params, final, float(n), np.asarray(trace), info, {"minibatch_local_elbo": local, "state": state}
    )


class TailAverage:
    """SVI's stopping rule, shared by the drivers (in memory, sharded, Dask). The iterates (or averages of
    blocks of them) given to :meth:`update` since the last checkpoint are averaged (tail / Polyak–Ruppert
    averaging over the last half of the run, which cancels the minibatch noise that a decaying ρ only
    damps); at checkpoints after c, 2c, 4c, ... steps the ELBO of that average, ``evaluate(λ̄)`` (total nats,
    on a fixed subset), is recorded in ``trace`` and λ̄ becomes ``params``. The gap the noise leaves falls like
    1/t, so the change over the last doubling estimates the gap that remains: the run has converged when its
    size is below ``tol_total``, diverged when the ELBO is not finite. ``callback(steps, ELBO / n, λ̄)`` at each
    checkpoint."""

    def __init__(self, params: PyTree, first_check: int, tol_total: float, evaluate, callback=None, n: float = 1.0):
        self.params, self.next_check, self.tol_total, self.evaluate = params, first_check, tol_total, evaluate
        self.callback, self.n = callback, n
        self.trace: list[float] = []
        self._sum, self._count = None, 0

    def update(self, steps: int, params: PyTree) -> str | None:
        """Add ``params`` after ``steps`` steps in all; at a checkpoint, "converged" or "diverged" when the run
        should stop (else None)."""
        self._sum, self._count = _add(self._sum, params), self._count + 1
        if steps < self.next_check:
            return None
        mean = _tree_div(self._sum, float(self._count))
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


def svi_order(n: int, key) -> np.ndarray:
    """The order (a permutation of range(n), a fixed function of ``key``) in which :func:`svi` takes rows."""
    return np.random.default_rng(np.asarray(jax.random.key_data(as_key(key))).ravel().tolist()).permutation(n)


def shuffle_rows(x: np.ndarray, key) -> np.ndarray:
    """The rows of ``x`` (N, D) in the order :func:`svi` takes its minibatches in (:func:`svi_order`)."""
    return x[svi_order(x.shape[0], key)]


def _device_multiple(batch: int, n_devices: int, given: bool) -> int:
    """The minibatch size for ``n_devices`` devices: ``batch`` rounded down to a multiple (a given size must be
    one already: a :class:`VBayesError` otherwise)."""
    if batch % n_devices == 0:
        return batch
    if given or batch < n_devices:
        raise VBayesError(
            f"batch_size={batch} cannot be split evenly over {n_devices} devices: use a multiple of {n_devices}"
        )
    return batch - batch % n_devices


def svi_info(outcome: str, tol: float, max_epochs: float, steps: int, seconds: float, extra: dict) -> FitInfo:
    """The :class:`FitInfo` of an SVI run (in memory, sharded or on Dask): its outcome and why."""
    messages = {
        "converged": f"the ELBO of the tail average changed by < {tol:g} nats/point over the last doubling",
        "max_steps": f"max_epochs={max_epochs} reached",
        "diverged": "the ELBO estimate became non-finite",
    }
    return FitInfo("svi", outcome, messages[outcome], steps, 0, 0, seconds, extra)


def _next_rows(x: np.ndarray, position: int, count: int) -> tuple[np.ndarray, int]:
    """``count`` rows of ``x`` from ``position`` on, wrapping around; and the next position."""
    parts, n = [], x.shape[0]
    while count > 0:
        take = min(count, n - position)
        parts.append(x[position : position + take])
        position, count = (position + take) % n, count - take
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), position


def map_rows(fn: Callable[[Array], Array], x, chunk_size: int = 4096, block_chunks: int = 16) -> np.ndarray:
    """``fn`` (a ``jax.tree_util.Partial``, so its bound arrays are traced, not baked in) applied to ``x``
    (N, D) in blocks of ``chunk_size · block_chunks`` rows (``lax.map`` over chunks; the block shapes do not
    depend on N, so nothing recompiles for a new N); results stacked to (N, ...)."""
    x = np.asarray(x, dtype=np.float64)
    rows = chunk_size * block_chunks
    outs = []
    for start in range(0, x.shape[0], rows):
        part = x[start : start + rows]
        chunk, n_chunks = _block_shape(part.shape[0], chunk_size, block_chunks)
        padded = np.zeros((chunk * n_chunks, x.shape[1]))
        padded[: part.shape[0]] = part
        out = _map_rows(fn, jnp.asarray(padded.reshape(n_chunks, chunk, -1), _float()))
        outs.append(np.asarray(out).reshape((chunk * n_chunks,) + out.shape[2:])[: part.shape[0]])
    return np.concatenate(outs)


@jax.jit
def _map_rows(fn, xs):
    return jax.lax.map(fn, xs)
