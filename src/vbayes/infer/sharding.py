"""Data parallelism over the local JAX devices (GPUs, or CPU devices simulated with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``): the minibatch is split across a one-axis mesh
``("data",)`` and only the reduction is added to the one-device code.

* **Conjugate models** (explicit, ``shard_map``): each device runs ``batch_pass`` on its slice and the
  statistics are ``psum``-ed (``axis_name`` of :func:`vbayes.infer.conjugate.batch_pass` /
  :func:`~vbayes.infer.conjugate.svi_step`); the global step then runs identically on every device.
  :func:`sharded_pass` (CAVI, the ELBO), :func:`sharded_svi_step`, :func:`sharded_svi_run` (the SVI driver's
  compiled block: ``cj.svi(..., devices="all")``) and :class:`ShardedData` (``cj.cavi`` on a sharded array).
* **Gradient steps** (ADVI on a minibatch target, VAE training; automatic, ``jax.sharding``):
  :func:`data_parallel` constrains the batch argument of an unchanged step function to be split along its
  rows; XLA partitions the per-row work and inserts the all-reduce of Σ_rows into the loss, hence into the
  gradient. Random draws do not depend on the sharding, so the step equals the one-device step.

Every result equals the one-device result up to the order of floating-point summation. (``shard_map`` runs
with ``check_vma=False``: the scan's zero carry is device-invariant, its sums device-varying until the
``psum``; the outputs are replicated by construction.)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vbayes.errors import VBayesError
from vbayes.infer import conjugate as cj

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


# ----------------------------------------------------------------------------------------------------
# conjugate models: shard_map + psum


def _replicated(body: Callable, mesh: Mesh, in_specs: tuple) -> Callable:
    """``shard_map`` of ``body`` whose outputs are replicated (they follow a ``psum``)."""
    return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=P(), check_vma=False)


@partial(jax.jit, static_argnames="mesh")
def sharded_pass(model: cj.ConjugateModel, local: PyTree, chunks: cj.Chunks, mesh: Mesh) -> tuple[PyTree, jax.Array]:
    """(Σ stats, Σ local ELBO) of ``chunks`` (x (n_chunks, C, D), w (n_chunks, C)) split along C over the
    mesh: ``psum`` over devices of each device's ``batch_pass``."""
    spec = cj.Chunks(P(None, AXIS), P(None, AXIS))
    body = partial(cj.batch_pass, axis_name=AXIS)
    return _replicated(body, mesh, (P(), P(), spec))(model, local, chunks)


@partial(jax.jit, static_argnames=("mesh", "point_mass"))
def sharded_svi_step(
    model: cj.ConjugateModel,
    state: cj.SVIState,
    x: jax.Array,
    w: jax.Array,
    n_total,
    learning_offset,
    learning_decay,
    mesh: Mesh,
    point_mass: bool = False,
) -> tuple[cj.SVIState, cj.SVIInfo]:
    """:func:`vbayes.infer.conjugate.svi_step` with the minibatch ``x`` (S, D), ``w`` (S,) split over the mesh
    (S a multiple of the number of devices) and the statistics ``psum``-ed; the update is replicated."""
    body = partial(cj.svi_step, point_mass=point_mass, axis_name=AXIS)
    specs = (P(), P(), P(AXIS), P(AXIS), P(), P(), P())
    return _replicated(body, mesh, specs)(model, state, x, w, n_total, learning_offset, learning_decay)


@partial(jax.jit, static_argnames=("mesh", "point_mass"))
def sharded_svi_run(model, state, xb, n_total, offset, decay, point_mass: bool = False, *, mesh: Mesh):
    """The SVI driver's compiled block (``steps`` minibatches ``xb`` (steps, S, D)) with each minibatch split
    over the mesh along S: :func:`vbayes.infer.conjugate._svi_run` under ``shard_map``."""
    body = partial(cj._svi_run, point_mass=point_mass, axis_name=AXIS)
    specs = (P(), P(), P(None, AXIS), P(), P(), P())
    return _replicated(body, mesh, specs)(model, state, xb, n_total, offset, decay)


class ShardedData(cj.DataSource):
    """An (N, D) array held across the devices of a mesh, in blocks whose chunks are split along their rows;
    the conjugate drivers (``cj.cavi``, ``cj.em``, ``cj.update``, ``cj.objective``) sum each block's statistics
    over the devices with :func:`sharded_pass`. The chunk length is rounded up to a multiple of the device
    count (zero-weight padding)."""

    def __init__(self, x, devices: str | int | Sequence[Any] = "all", chunk_size: int = 1024, block_chunks: int = 64):
        x = cj.check_data(x)
        self.mesh = data_mesh(devices)
        n, self.dim = x.shape
        size = self.mesh.size
        spec = cj.Chunks(rows(self.mesh, 3, 1), rows(self.mesh, 2, 1))
        self.blocks = []
        for start in range(0, n, chunk_size * block_chunks):
            part = x[start : start + chunk_size * block_chunks]
            chunk, n_chunks = cj._block_shape(part.shape[0], chunk_size, block_chunks)
            block = cj._block(part, -(-chunk // size) * size, n_chunks)
            self.blocks.append(jax.device_put(block, spec))
        self.n_samples = float(n)

    def stats(self, model, local, pool=None):
        return cj._tree_sum([sharded_pass(model, local, b, self.mesh) for b in self.blocks])


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
