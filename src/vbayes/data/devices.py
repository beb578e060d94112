"""Data parallelism over the local JAX devices (GPUs, or CPU devices simulated with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``): rows are split across a one-axis mesh ``("data",)``
and only the reduction is added to the one-device code.

* **Sums over rows** (explicit, ``shard_map``): :class:`ShardedData` is a :class:`~vbayes.data.sources.DataSource`
  whose blocks are split along their rows; ``reduce(fn)`` runs ``fn`` on each device's slice and ``psum``-s the
  results. :func:`replicated_map` is the same construction for any function whose outputs follow a ``psum``
  (the conjugate engine's SVI block).
* **Gradient steps** (automatic, ``jax.sharding``): :func:`data_parallel` constrains the batch argument of an
  unchanged step function to be split along its rows; XLA partitions the per-row work and inserts the
  all-reduce of Σ_rows into the loss, hence into the gradient. Random draws do not depend on the sharding,
  so the step equals the one-device step.

Every result equals the one-device result up to the order of floating-point summation. (``shard_map`` runs
with ``check_vma=False``: a scan's zero carry is device-invariant, its sums device-varying until the
``psum``; the outputs are replicated by construction.)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vbayes.data.sources import Chunks, DataSource, block_shape, check_data, to_block, tree_sum
from vbayes.errors import VBayesError

AXIS = "data"
PyTree = Any


def data_mesh(devices: str | int | Sequence[Any] = "all") -> Mesh:
    """A one-axis mesh ``("data",)`` over ``devices``: ``"all"`` (every local device), a count (the first
    ones), or a list of ``jax.Device``. ``"all"`` on a machine with one device warns and returns a one-device
    mesh (the code runs, unsharded); asking for more devices than there are is a :class:`VBayesError`."""
    available = jax.local_devices()
    if isinstance(devices, str):
        if devices != "all":
            raise VBayesError(f"devices must be 'all', a count or a list of JAX devices, got {devices!r}")
        chosen = available
        if len(chosen) == 1:
            warnings.warn(
                f"devices='all' but JAX sees one device ({chosen[0].platform}): running unsharded on it. "
                "On CPU, simulate several by setting XLA_FLAGS=--xla_force_host_platform_device_count=8 "
                "before JAX starts",
                stacklevel=2,
            )
    elif isinstance(devices, int | np.integer) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise VBayesError(
                f"devices={devices} but JAX sees {len(available)} {available[0].platform} device(s); on CPU, "
                f"set XLA_FLAGS=--xla_force_host_platform_device_count={max(int(devices), 2)} before JAX starts"
            )
        chosen = available[: int(devices)]
    else:
        chosen = list(devices)
        if not chosen:
            raise VBayesError("devices is an empty list")
    return Mesh(np.asarray(chosen), (AXIS,))


def parse_devices_option(text: str | None) -> tuple[str | int | None, str | None]:
    """A command line's ``--devices`` (None, ``"all"`` or a positive count) as ``(devices, note)``: ``"all"``
    on a one-device machine becomes None (run unsharded) with a note saying so."""
    if text is None:
        return None, None
    if text != "all" and not (text.isdigit() and int(text) >= 1):
        raise VBayesError(f"--devices must be 'all' or a positive count, got {text!r}")
    if text == "all" and jax.local_device_count() == 1:
        return None, (
            f"note: JAX sees one {jax.devices()[0].platform} device: running unsharded. To simulate several CPU "
            "devices set XLA_FLAGS=--xla_force_host_platform_device_count=8"
        )
    return ("all" if text == "all" else int(text)), None


def rows(mesh: Mesh, ndim: int = 1, axis: int = 0) -> NamedSharding:
    """The sharding that splits axis ``axis`` of an ``ndim``-dimensional array across the mesh."""
    spec = [None] * ndim
    spec[axis] = AXIS
    return NamedSharding(mesh, P(*spec))


def shard_rows(tree: PyTree, mesh: Mesh, axis: int = 0) -> PyTree:
    """Every array leaf of ``tree`` split along ``axis`` across the mesh (a ``device_put`` outside ``jit``, a
    sharding constraint inside). The axis length must be a multiple of the number of devices."""
    for leaf in jax.tree.leaves(tree):
        if jnp.ndim(leaf) > axis and jnp.shape(leaf)[axis] % mesh.size:
            raise VBayesError(
                f"an array of shape {jnp.shape(leaf)} cannot be split evenly over {mesh.size} devices along "
                f"axis {axis}: use a batch size that is a multiple of {mesh.size}"
            )
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, rows(mesh, jnp.ndim(a), axis)), tree)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Every array leaf of ``tree`` copied to all devices of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def device_multiple(batch: int, n_devices: int, given: bool) -> int:
    """The minibatch size for ``n_devices`` devices: ``batch`` rounded down to a multiple (a size the user
    ``given`` must be one already: a :class:`VBayesError` otherwise)."""
    if batch % n_devices == 0:
        return batch
    if given or batch < n_devices:
        raise VBayesError(
            f"batch_size={batch} cannot be split evenly over {n_devices} devices: use a multiple of {n_devices}"
        )
    return batch - batch % n_devices


# ----------------------------------------------------------------------------------------------------
# sums over rows: shard_map + psum


def replicated_map(body: Callable, mesh: Mesh, in_specs: tuple) -> Callable:
    """``shard_map`` of ``body`` over the mesh whose outputs are replicated (``body`` ends in a ``psum`` over
    :data:`AXIS`, or computes the same value on every device)."""
    return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=P(), check_vma=False)


@partial(jax.jit, static_argnames="mesh")
def sharded_reduce(fn: Callable[[Chunks], PyTree], block: Chunks, mesh: Mesh) -> PyTree:
    """``fn`` (a pytree callable, e.g. a ``jax.tree_util.Partial``) summed over a block whose chunks are split
    along their rows over the mesh: each device runs ``fn`` on its slice, then a ``psum``."""
    spec = Chunks(P(None, AXIS), P(None, AXIS))
    body = lambda f, b: jax.lax.psum(f(b), AXIS)
    return replicated_map(body, mesh, (P(), spec))(fn, block)


class ShardedData(DataSource):
    """An (N, D) array held across the devices of a mesh, in blocks whose chunks are split along their rows;
    ``reduce(fn)`` sums each block's ``fn`` over the devices (:func:`sharded_reduce`). The chunk length is
    rounded up to a multiple of the device count (zero-weight padding)."""

    def __init__(self, x, devices: str | int | Sequence[Any] = "all", chunk_size: int = 1024, block_chunks: int = 64):
        x = check_data(x)
        self.mesh = data_mesh(devices)
        n, self.dim = x.shape
        size = self.mesh.size
        spec = Chunks(rows(self.mesh, 3, 1), rows(self.mesh, 2, 1))
        self.blocks = []
        for start in range(0, n, chunk_size * block_chunks):
            part = x[start : start + chunk_size * block_chunks]
            chunk, n_chunks = block_shape(part.shape[0], chunk_size, block_chunks)
            block = to_block(part, -(-chunk // size) * size, n_chunks)
            self.blocks.append(jax.device_put(block, spec))
        self.n_samples = float(n)

    def reduce(self, fn: Callable[[Chunks], PyTree], pool: ThreadPoolExecutor | None = None) -> PyTree:
        return tree_sum([sharded_reduce(fn, b, self.mesh) for b in self.blocks])


# ----------------------------------------------------------------------------------------------------
# gradient steps: the batch argument sharded, XLA partitions the rest


def data_parallel(step: Callable, mesh: Mesh, batch_argnum: int) -> Callable:
    """``step`` with its argument ``batch_argnum`` (an array or a pytree of arrays, e.g. a minibatch
    :class:`vbayes.Target` or images (B, ...)) split along axis 0 across ``mesh``; call it under ``jit`` (as
    the ADVI and VAE chunk runners do) or jit the result. A loss Σ_rows ℓ_i then becomes per-device partial
    sums and one all-reduce, and so does its gradient: ∇ Σ_devices Σ_{i ∈ shard} ℓ_i. Nothing else changes,
    so the step equals the one-device step (to summation order)."""

    def run(*args, **kwargs):
        args = list(args)
        args[batch_argnum] = shard_rows(args[batch_argnum], mesh)
        return step(*args, **kwargs)

    return run


def minibatch_mesh(target: Any, batch_size: int | None, devices: Any) -> Mesh | None:
    """Check ADVI's ``batch_size`` (``target`` needs a minibatch form) and ``devices``; the device mesh that splits
    each minibatch (None: no sharding)."""
    if batch_size is not None:
        if target.n_rows is None:
            why = f"{target.name!r} has no minibatch form: build it with vbayes.from_loglik(log_lik, ...)"
            raise VBayesError(f"batch_size={batch_size!r} needs a minibatch form, and {why}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise VBayesError(f"batch_size must be a positive integer, got {batch_size!r}")
    if devices is None:
        return None
    if batch_size is None:
        raise VBayesError("devices= splits minibatches over devices: give batch_size too (and a from_loglik target)")
    mesh = data_mesh(devices)
    if batch_size % mesh.size:
        raise VBayesError(f"batch_size={batch_size} must be a multiple of the {mesh.size} devices")
    return mesh
