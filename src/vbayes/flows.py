"""Normalizing-flow families for ADVI, built with flowjax: q = (A ∘ F)_# N(0, I), F a flow, A(u) = loc + scale ⊙ u.

Two kinds (:data:`FLOWS`), their sizes defaulted from the dimension d (:func:`default_size`):

* ``flow``: affine coupling layers (RealNVP, Dinh, Sohl-Dickstein & Bengio 2017): half the coordinates are shifted
  and scaled by an MLP of the other half, the halves swapped between layers. Draws and densities both cost one
  pass, so the sticking-the-landing gradient is as cheap as the ELBO's. (Spline couplings, bounded to an interval,
  cannot make the large shifts a curved posterior needs in unconstrained coordinates: on the banana they stalled.)
* ``maf``: masked autoregressive affine layers (Papamakarios et al. 2017), built for a one-pass density and a
  sequential draw (d passes per draw), an autoregressive flow to set beside the coupling one.

A starts at ADVI's start (the mode and the Laplace scales), and the layers start near the identity, so a fit starts
where the Gaussian families do and the flow only has to learn what a Gaussian cannot. A flow has no closed-form
moments or entropy: ``mean``, ``marginal_sd`` and ``covariance`` are Monte Carlo estimates from
:data:`MOMENT_DRAWS` fixed draws, and ``entropy`` raises (the ADVI objectives other than ``elbo`` do not need it).
"""

from __future__ import annotations

import concurrent.futures
import functools
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.compilation import QUICK
from vbayes.errors import VBayesError
from vbayes.stored import kept

Array = jax.Array

FLOWS = ("flow", "maf")
MOMENT_DRAWS = 4096
"""Draws behind a flow's ``mean``, ``marginal_sd`` and ``covariance`` (fixed key: the same q gives the same moments)."""
_MOMENT_KEY = 20_240_601


class FlowSize(NamedTuple):
    """``layers`` flow layers of ``width`` hidden units (one hidden layer)."""

    layers: int
    width: int


def default_size(kind: str, dim: int) -> FlowSize:
    """Sizes from the dimension: 4 layers up to d = 20, 6 above (more coordinate pairs to couple); hidden width
    2d clipped to [16, 128]: a handful of parameters per coordinate pair, not thousands."""
    layers = 4 if dim <= 20 else 6
    return FlowSize(layers, int(min(max(2 * dim, 16), 128)))


class _Structure:
    """A flow layout's static part (functions and integer settings), compared by ``signature``: the kind, the size,
    and the shapes and dtypes of ``loc`` and ``scale``. Its functions are closures that flowjax makes afresh in each
    build, but from those same inputs; so flows of one layout share their compiled programs (a restart, a second
    stage, another seed or another fit of the same model compiles nothing new). Built on first use
    (:meth:`built`, by tracing :func:`_build`): a process that runs only stored programs (:mod:`vbayes.stored`)
    on a flow never traces flowjax's construction. One per signature in a process (:func:`_structure_of`)."""

    def __init__(self, signature: tuple):
        self.signature = signature
        self.value: Any = None
        self.params_def: Any = None
        self.buffers_def: Any = None
        self.cells: list = []

    def built(self) -> _Structure:
        """This structure with its parts, tracing :func:`_build` for them on first use."""
        if self.value is None:
            kind, size, loc_shape, loc_dtype, scale_shape, scale_dtype = self.signature
            scale = np.eye(loc_shape[-1]) if len(scale_shape) == 2 else np.ones(scale_shape)
            args = kind, size, np.zeros(2, np.uint32), np.zeros(loc_shape, loc_dtype), scale.astype(scale_dtype)
            # on a thread of its own: JAX's trace state is per thread, so this runs as a program of its own also
            # when the structure is first needed inside another trace
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                _fill(self, pool.submit(lambda: _build(*args)[2]).result())
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Structure) and self.signature == other.signature

    def __hash__(self) -> int:
        return hash(self.signature)

    def __repr__(self) -> str:
        return f"_Structure{self.signature!r}"

    def _stored_description(self) -> str:
        """What :mod:`vbayes.stored`'s keys name it by: its signature (flowjax's version is in every key)."""
        return repr(self)

    def __reduce__(self) -> tuple:
        """Pickled as its signature (:mod:`vbayes.stored` keeps a program's output structure)."""
        return _structure_of, (self.signature,)


@jax.tree_util.register_pytree_node_class
class Flow:
    """q = (A ∘ F)_# N(0, I): built from the list of the flow's floating-point arrays (what ADVI optimises), the
    list of its integer and boolean arrays (the layers' masks and permutations, drawn from the build's key: arrays,
    not constants, so that a flow built from another key runs the same compiled programs) and the layout's
    ``structure``, the rest; ``params`` and ``buffers`` give the arrays as flowjax's modules hold them.
    ``sample(key, n)`` ``(n, d)``; ``log_prob(z)`` for ``z`` ``(..., d)``."""

    def __init__(self, params: list, buffers: list, structure: _Structure):
        self._params = params
        self._buffers = buffers
        self.structure = structure

    def tree_flatten(self):  # lists of leaves: a treedef that holds only the structure's signature
        return (self._params, self._buffers), self.structure

    @classmethod
    def tree_unflatten(cls, structure, children):
        return cls(*children, structure)

    @property
    def params(self) -> Any:
        """The floating-point arrays as flowjax's modules hold them (absent ones None)."""
        return self.structure.built().params_def.unflatten(self._params)

    @property
    def buffers(self) -> Any:
        """The integer and boolean arrays as flowjax's modules hold them."""
        return self.structure.built().buffers_def.unflatten(self._buffers)

    def _dist(self):
        import equinox as eqx
        import paramax

        return paramax.unwrap(eqx.combine(self.params, self.buffers, self.structure.value))

    def sample(self, key: Array, n: int) -> Array:
        return _sample(self, key, n)

    def log_prob(self, z: Array) -> Array:
        return _log_prob(self, z)

    def sample_and_log_prob(self, key: Array, n: int) -> tuple[Array, Array]:
        return self._dist().sample_and_log_prob(_typed(key), (n,))

    def widened_sample(self, key: Array, n: int, factor: float) -> tuple[Array, Array]:
        """``n`` draws of q widened in its base space, z = T(factor·ε), and their log density
        log N(ε; 0, factor² I) − log|det ∂T/∂ε|: the flow's own shape with heavier tails (widening about the mean, as
        for a Gaussian, would straighten a curved q and miss the posterior's curved tails)."""
        bijection = self._dist().bijection
        eps = factor * jax.random.normal(key, (n,) + self.structure.built().value.shape, self._moment_dtype())
        z, log_det = jax.vmap(bijection.transform_and_log_det)(eps)
        d = eps.shape[-1]
        base = -0.5 * jnp.sum((eps / factor) ** 2, -1) - d * jnp.log(factor) - 0.5 * d * jnp.log(2 * jnp.pi)
        return z, base - log_det

    def _moment_dtype(self):
        return self._params[0].dtype

    @property
    def mean(self) -> Array:
        return _moments(self)[0]

    @property
    def loc(self) -> Array:
        return self.mean

    def marginal_sd(self) -> Array:
        return _moments(self)[1]

    def covariance(self) -> Array:
        return _moments(self)[2]

    def entropy(self) -> Array:
        raise NotImplementedError(
            "a flow's entropy has no closed form; use objective='renyi' (the flows' default), 'stl' or 'iwelbo'"
        )


# A flow's methods are compiled (its structure is static and shared by flows of one layout): called eagerly, each
# would trace flowjax's layers again, ~0.1 s a call.
@functools.partial(jax.jit, static_argnums=2)
def _sample(flow: Flow, key: Array, n: int) -> Array:
    """``n`` draws ``(n, d)``."""
    return flow._dist().sample(_typed(key), (n,))


@jax.jit
def _log_prob(flow: Flow, z: Array) -> Array:
    """log q(z) for ``z`` ``(..., d)``."""
    return flow._dist().log_prob(z)


@jax.jit
def _moments(flow: Flow) -> tuple[Array, Array, Array]:
    """Mean ``(d,)``, marginal sds ``(d,)`` and covariance ``(d, d)`` from :data:`MOMENT_DRAWS` draws with a fixed
    key (the same q gives the same moments); no gradient flows through them."""
    draws = jax.lax.stop_gradient(flow._dist().sample(_typed(jax.random.PRNGKey(_MOMENT_KEY)), (MOMENT_DRAWS,)))
    return jnp.mean(draws, 0), jnp.std(draws, 0), jnp.cov(draws.T)


def _typed(key: Array) -> Array:
    """flowjax takes typed PRNG keys; vbayes passes raw ``uint32[2]`` ones."""
    return key if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(key)


def build_flow(kind: str, loc: Array, scale: Array, key: Array, size: FlowSize | None = None) -> Flow:
    """A flow of ``kind`` (:data:`FLOWS`) whose affine part starts at ``loc`` ``(d,)`` and ``scale``: ``(d,)``
    marginal sds, or a ``(d, d)`` lower-triangular Cholesky factor (a full-rank start); flowjax draws the layers'
    initial weights from ``key``."""
    if kind not in FLOWS:
        raise VBayesError(f"unknown flow {kind!r}; choose one of {', '.join(FLOWS)}")
    d = int(loc.shape[-1])
    if d < 2:
        raise VBayesError(f"a flow family needs a target of dimension ≥ 2 (got {d}); use a Gaussian family")
    size = size or default_size(kind, d)
    loc, scale = jnp.asarray(loc), jnp.asarray(scale)
    structure = _structure_of(_signature(kind, size, loc, scale))

    def build() -> tuple[list, list]:
        params, buffers, closed_over = _build(kind, size, key, loc, scale)
        _fill(structure, closed_over)
        return params, buffers

    params, buffers = kept("flows.build_flow", (kind, size, key, loc, scale), build)
    return Flow(params, buffers, structure)


_STRUCTURES: dict[tuple, _Structure] = {}
"""The structure of each flow layout used in this process, by signature."""


def _signature(kind: str, size: FlowSize, loc: Array, scale: Array) -> tuple:
    """A flow layout's signature: what :func:`_build`'s trace depends on (its static arguments, and the shapes and
    dtypes of the others)."""
    return kind, size, loc.shape, str(loc.dtype), scale.shape, str(scale.dtype)


def _structure_of(signature: tuple) -> _Structure:
    """The one structure of ``signature`` in this process."""
    return _STRUCTURES.setdefault(signature, _Structure(signature))


@functools.partial(jax.jit, static_argnums=(0, 1), compiler_options=QUICK)
def _build(kind: str, size: FlowSize, key: Array, loc: Array, scale: Array) -> tuple[list, list, list]:
    """The flow's parameters and buffers (lists of leaves) built in one program (flowjax's construction run eagerly
    is ~60 small programs, each compiled or loaded on a first fit), and the values its functions close over. The
    trace gives the layout's structure its parts; flowjax's layers keep functions that close over arrays (their
    transformer's initial parameters), which the trace makes traced values: :func:`_fill` puts the computed values
    in their place. flowjax checks its permutations with a host callback, so this program is compiled in each
    process that runs it rather than cached on disk; :func:`build_flow` keeps its results instead
    (:func:`vbayes.stored.kept`)."""
    import equinox as eqx
    from flowjax.bijections import Affine, Chain, TriangularAffine
    from flowjax.distributions import StandardNormal, Transformed
    from flowjax.flows import coupling_flow, masked_autoregressive_flow

    d = loc.shape[-1]
    base = StandardNormal((d,))
    if kind == "flow":
        inner = coupling_flow(
            _typed(key),
            base_dist=base,
            transformer=Affine(),
            flow_layers=size.layers,
            nn_width=size.width,
            invert=False,
        )
    else:
        inner = masked_autoregressive_flow(
            _typed(key), base_dist=base, flow_layers=size.layers, nn_width=size.width, invert=True
        )
    affine = TriangularAffine(loc, scale) if scale.ndim == 2 else Affine(loc, scale)
    inner = _zero_last_layers(inner)
    q = Transformed(base, Chain([inner.bijection, affine]))
    params, rest = eqx.partition(q, eqx.is_inexact_array)
    buffers, static = eqx.partition(rest, eqx.is_array)
    structure = _structure_of(_signature(kind, size, loc, scale))
    if structure.value is None:
        structure.params_def = jax.tree_util.tree_structure(params)
        structure.buffers_def = jax.tree_util.tree_structure(buffers)
        structure.value = static
        structure.cells = _traced_cells(jax.tree_util.tree_leaves(static))
    return (
        jax.tree_util.tree_leaves(params),
        jax.tree_util.tree_leaves(buffers),
        [c.cell_contents for c in structure.cells],
    )


def _fill(structure: _Structure, closed_over: list) -> None:
    """Put the values a build computed into the structure's closure cells that held traced values."""
    for cell, value in zip(structure.cells, closed_over, strict=True):
        cell.cell_contents = value


def _traced_cells(leaves: list) -> list:
    """The closure cells, in the functions among ``leaves`` and the functions they close over, that hold traced
    values (directly or in a pytree)."""
    found, seen, stack = [], set(), [leaf for leaf in leaves if callable(leaf)]
    while stack:
        fun = stack.pop()
        if id(fun) in seen:
            continue
        seen.add(id(fun))
        for cell in getattr(fun, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if callable(value):
                stack.append(value)
            elif any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(value)):
                found.append(cell)
    return found


_LAYER = re.compile(r"^(.*)\.layers\[(\d+)\]")


def _zero_last_layers(tree: Any) -> Any:
    """``tree`` with the last layer of every MLP (weights and biases) set to zero: each conditioner then outputs
    zeros, which flowjax maps to its transformer's initial, identity parameters, so the flow starts as the identity
    (and q as the Gaussian it starts from)."""
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    last: dict[str, int] = {}
    for path, _ in paths:
        found = _LAYER.match(jax.tree_util.keystr(path))
        if found:
            last[found[1]] = max(last.get(found[1], -1), int(found[2]))

    def zero(path, leaf):
        found = _LAYER.match(jax.tree_util.keystr(path))
        inexact = hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)
        return jnp.zeros_like(leaf) if found and inexact and int(found[2]) == last[found[1]] else leaf

    return jax.tree_util.tree_map_with_path(zero, tree)
