"""The :class:`Target` pytree: an unnormalised log density on a flat unconstrained vector, and its layout.

A :class:`Target` holds ``log p(data, θ(z)) + log|det ∂θ/∂z|`` for ``z ∈ R^d`` and the map ``z ↦ θ``
back to named, constrained parameters. It is a JAX pytree whose *leaves are the data arrays*: the
density function and the parameter layout are static, so a jitted algorithm compiled for one target is
reused, without recompiling, for another built from the same model with new data of the same shapes.

Also here: :class:`ParamSpec`, the static/dynamic split of user data (:class:`Frozen`, :func:`split`), the
densities of a user log-density function with the Jacobian (:class:`LogDensityFn`, and :class:`RowsDensity`,
the minibatch form that :attr:`Target.n_rows` recognises), and the checks every builder runs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.errors import VBayesError

Array = jax.Array
PyTree = Any


@functools.partial(jax.jit, static_argnums=0)
def _density_program(density: Callable, z: Array, data: tuple) -> Array:
    """``density(z, data)`` as one compiled function, keyed by the (hashable) density and the shapes. Inside another
    program it is traced once and reused: a fit's start, steps and checks, and the gradients and batches of them
    JAX derives, all call this one trace instead of running the model's Python again (for a NumPyro model
    each run of it costs ~0.1 s)."""
    return density(z, data)


def biject_to(constraint: Any) -> Any:
    """NumPyro's bijection from unconstrained space onto ``constraint``'s support (NumPyro is imported
    on first use, not with vbayes)."""
    from numpyro.distributions.transforms import biject_to as numpyro_biject_to

    return numpyro_biject_to(constraint)


class ParamSpec(NamedTuple):
    """One named parameter: its constrained ``shape`` and its ``size`` in the flat vector z."""

    name: str
    shape: tuple[int, ...]
    unconstrained_shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.unconstrained_shape)


# static / dynamic split of user data: arrays are leaves (traced), everything else is static


class Frozen:
    """Static (hashable) half of a data pytree: its structure and its non-array leaves."""

    def __init__(self, treedef: Any, static: tuple[Any, ...], is_array: tuple[bool, ...]):
        self.treedef, self.static, self.is_array = treedef, static, is_array

    def _key(self) -> tuple:
        return (self.treedef, tuple(_hashable(s) for s in self.static), self.is_array)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Frozen) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def merge(self, arrays: tuple[Any, ...]) -> PyTree:
        it = iter(arrays)
        leaves = [next(it) if a else s for s, a in zip(self.static, self.is_array, strict=True)]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def _hashable(x: Any) -> Any:
    try:
        hash(x)
        return x
    except TypeError:
        return ("id", id(x))


def _is_array(x: Any) -> bool:
    return isinstance(x, (np.ndarray, jax.Array, np.generic, float)) and not isinstance(x, bool)


def split(tree: PyTree) -> tuple[Frozen, tuple[Any, ...]]:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    mask = tuple(_is_array(x) for x in leaves)
    static = tuple(None if a else x for x, a in zip(leaves, mask, strict=True))
    arrays = tuple(x for x, a in zip(leaves, mask, strict=True) if a)
    return Frozen(treedef, static, mask), arrays


def check_finite(tree: PyTree, what: str = "data ") -> None:
    """Raise :class:`VBayesError` naming the first array in ``tree`` that holds NaN or ±inf."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not _is_array(leaf):
            continue
        arr = np.asarray(leaf)
        if not np.issubdtype(arr.dtype, np.number):
            continue
        bad = ~np.isfinite(arr)
        if bad.any():
            where = np.argwhere(bad)[:5].tolist() if arr.ndim else []
            name = jax.tree_util.keystr(path)
            raise VBayesError(
                f"{what}{name} has {int(bad.sum())} non-finite value(s) (NaN or inf) out of {arr.size}"
                + (f", first at index {where}" if where else "")
                + "; remove or impute them before fitting."
            )


def unflatten(specs: tuple[ParamSpec, ...], z: Array) -> dict[str, Array]:
    """Split flat ``z`` of shape ``(d,)`` into named unconstrained blocks."""
    out, i = {}, 0
    for s in specs:
        out[s.name] = z[i : i + s.size].reshape(s.unconstrained_shape)
        i += s.size
    return out


# densities: static, hashable callables (z, data_arrays) -> log density


@dataclass(frozen=True, eq=False)
class LogDensityFn:
    """``z ↦ fn(θ(z)[, data]) + log|J|`` for a user function ``fn`` of a parameter dict."""

    fn: Callable
    specs: tuple[ParamSpec, ...]
    constraints: tuple[Any, ...]
    frozen: Frozen | None

    def _key(self) -> tuple:
        return (self.fn, self.specs, tuple(repr(c) for c in self.constraints), self.frozen)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LogDensityFn) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def unconstrained(self, z: Array) -> dict[str, Array]:
        return unflatten(self.specs, z)

    def constrain(self, z: Array, data: tuple) -> dict[str, Array]:
        u = self.unconstrained(z)
        return {s.name: biject_to(c)(u[s.name]) for s, c in zip(self.specs, self.constraints, strict=True)}

    def _params_and_log_jacobian(self, z: Array) -> tuple[dict[str, Array], Array]:
        u = self.unconstrained(z)
        params, log_jac = {}, 0.0
        for s, c in zip(self.specs, self.constraints, strict=True):
            t = biject_to(c)
            x = t(u[s.name])
            params[s.name] = x
            log_jac = log_jac + jnp.sum(t.log_abs_det_jacobian(u[s.name], x))
        return params, log_jac

    def __call__(self, z: Array, data: tuple) -> Array:
        params, log_jac = self._params_and_log_jacobian(z)
        value = self.fn(params) if self.frozen is None else self.fn(params, self.frozen.merge(data))
        return jnp.asarray(value) + log_jac


@dataclass(frozen=True, eq=False)
class RowsDensity(LogDensityFn):
    """``z ↦ log_prior(θ) + (N / B) · fn(θ, rows) + log|J|`` with ``fn`` = Σ over the B rows given of the
    log-likelihood: B = N on the full data, a minibatch's unbiased estimate otherwise (B from the shapes,
    so static under ``jit``)."""

    log_prior: Callable | None = None
    n_rows: int = 0

    def _key(self) -> tuple:
        return super()._key() + (self.log_prior, self.n_rows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RowsDensity) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __call__(self, z: Array, data: tuple) -> Array:
        params, log_jac = self._params_and_log_jacobian(z)
        batch = jnp.shape(data[0])[0]
        value = (self.n_rows / batch) * jnp.asarray(self.fn(params, self.frozen.merge(data)))
        if self.log_prior is not None:
            value = value + jnp.asarray(self.log_prior(params))
        return value + log_jac


class _Label:
    """A target's display name and its conjugate form (or None) inside its static pytree data, equal to every
    other label, so that two targets differing only in these share compiled code."""

    def __init__(self, text: str, conjugate: Any = None):
        self.text, self.conjugate = text, conjugate

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Label)

    def __hash__(self) -> int:
        return 0


BLOCK_ELEMENTS = 2**24
"""A block of :meth:`Target.log_density_rows` has this over the data's size in draws (at least 8)."""


@jax.tree_util.register_pytree_node_class
class Target:
    """An unnormalised log density ``log p̃(z)`` on ``z ∈ R^d`` (Jacobian included) and its parameters.

    ``log_density(z)``: ``(d,) -> ()``. ``constrain(z)``: ``(d,) -> {name: array of the parameter's shape}``.
    Leaves of the pytree are the data arrays; everything else is static. ``conjugate``: the same model as a
    conjugate-exponential model (a :class:`vbayes.conjugate.model.ConjugateForm`), when it has one, so that the
    conjugate algorithms (CAVI, SVI) can fit it too (:meth:`with_conjugate`).
    """

    def __init__(self, density: Any, data: tuple, name: str = "target", conjugate: Any = None):
        self.density = density
        self.data = data
        self.name = name
        self.conjugate = conjugate

    def tree_flatten(self):
        return (self.data,), (self.density, _Label(self.name, self.conjugate))

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(aux[0], children[0], aux[1].text, aux[1].conjugate)

    def renamed(self, name: str) -> Target:
        """The same target under another name."""
        return Target(self.density, self.data, name, self.conjugate)

    def with_conjugate(self, form: Any) -> Target:
        """The same target, which the conjugate algorithms can also fit through ``form``."""
        return Target(self.density, self.data, self.name, form)

    @property
    def params(self) -> tuple[ParamSpec, ...]:
        return self.density.specs

    @property
    def dim(self) -> int:
        return sum(s.size for s in self.params)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.params)

    def log_density(self, z: Array) -> Array:
        """log p̃(z) for one flat unconstrained point ``z`` of shape ``(d,)``."""
        return _density_program(self.density, z, self.data)

    def log_density_rows(self, z: Array) -> Array:
        """log p̃ at each row of ``z`` ``(S, d)``: ``(S,)``, vmapped over blocks of :data:`BLOCK_ELEMENTS` draws' worth
        of data: one vmap over S draws of a 10⁵-row model would hold a 10⁵ × S matrix (gigabytes, and far slower)."""
        block = max(8, BLOCK_ELEMENTS // max(sum(np.size(a) for a in jax.tree_util.tree_leaves(self.data)), 1))
        if block >= z.shape[0]:
            return jax.vmap(self.log_density)(z)
        return jax.lax.map(self.log_density, z, batch_size=block)

    def constrain(self, z: Array) -> dict[str, Array]:
        """Named constrained parameters (and NumPyro deterministic sites) at ``z`` of shape ``(d,)``."""
        return self.density.constrain(z, self.data)

    def unflatten(self, z: Array) -> dict[str, Array]:
        """Named *unconstrained* blocks of ``z``."""
        return self.density.unconstrained(z)

    def unconstrain(self, params: dict[str, Array]) -> Array:
        """z ``(d,)`` of named constrained parameters (the inverse of :meth:`constrain` on the parameters)."""
        return self._bijections().unconstrain(params)

    def log_abs_det_jacobian(self, z: Array) -> Array:
        """log |det ∂θ/∂z| at ``z`` ``(d,)``: the density of θ(z) on z is the density on θ times it."""
        return self._bijections().log_abs_det_jacobian(z)

    def _bijections(self) -> Any:
        if not hasattr(self.density, "constraints"):
            raise VBayesError(
                f"target {self.name!r} does not expose its transforms (only targets built by from_logdensity, "
                "from_loglik or from_least_squares do)"
            )
        return Bijections(self.density.specs, self.density.constraints)

    @property
    def n_rows(self) -> int | None:
        """N, the rows of the data, for a target with a minibatch form (:func:`from_loglik`); else None."""
        return self.density.n_rows if isinstance(self.density, RowsDensity) else None

    def take(self, index: Array) -> Target:
        """The minibatch form: the same target on rows ``index`` (B,) of the data, its log-likelihood
        scaled by N/B — log p(θ) + (N/B) Σ_{i ∈ batch} log p(x_i | θ) + log|J|, an unbiased estimate of
        :meth:`log_density`. Only for targets built by :func:`from_loglik`."""
        if self.n_rows is None:
            raise VBayesError(
                f"target {self.name!r} has no minibatch form; build it with vbayes.from_loglik(log_lik, ...) "
                "from a per-row log-likelihood and a log prior"
            )
        return Target(self.density, tuple(a[index] for a in self.data), self.name, self.conjugate)

    def sample_batch(self, key: Array, size: int) -> Target:
        """:meth:`take` on ``size`` rows drawn uniformly with replacement (an unbiased minibatch)."""
        return self.take(jax.random.randint(key, (size,), 0, self.n_rows or 1))

    def coordinate_names(self) -> list[str]:
        """One label per entry of z, e.g. ``['mu', 'tau', 'theta[0]', ...]`` (0-based)."""
        out = []
        for s in self.params:
            if s.unconstrained_shape == ():
                out.append(s.name)
            else:
                out += [f"{s.name}[{','.join(map(str, ix))}]" for ix in np.ndindex(*s.unconstrained_shape)]
        return out

    def __repr__(self) -> str:
        parts = ", ".join(f"{s.name}{list(s.shape) if s.shape else ''}" for s in self.params)
        return f"Target({self.name!r}, dim={self.dim}: {parts})"


class Bijections(NamedTuple):
    """The maps between named constrained parameters and the flat unconstrained z (NumPyro's ``biject_to``)."""

    specs: tuple[ParamSpec, ...]
    constraints: tuple[Any, ...]

    def unconstrain(self, params: dict[str, Array]) -> Array:
        pairs = zip(self.specs, self.constraints, strict=True)
        return jnp.concatenate([jnp.ravel(biject_to(c).inv(jnp.asarray(params[s.name]))) for s, c in pairs])

    def log_abs_det_jacobian(self, z: Array) -> Array:
        u = unflatten(self.specs, z)
        total = 0.0
        for s, c in zip(self.specs, self.constraints, strict=True):
            t = biject_to(c)
            total = total + jnp.sum(t.log_abs_det_jacobian(u[s.name], t(u[s.name])))
        return jnp.asarray(total)


def check_scalar(target: Target) -> None:
    """Fail early, with the cause, if the log density cannot be evaluated to a scalar."""
    z = jax.ShapeDtypeStruct((target.dim,), jnp.result_type(float))
    try:
        out = jax.eval_shape(target.log_density, z)
    except Exception as e:
        raise VBayesError(
            f"the log density of {target.name!r} cannot be evaluated with parameters of shapes "
            f"{ {s.name: s.shape for s in target.params} } and the given data (check the data shapes): "
            f"{type(e).__name__}: {e}"
        ) from e
    if out.shape != ():
        raise VBayesError(f"the log density of {target.name!r} must return a scalar, got shape {out.shape}")


@jax.jit
def value_and_grad(target: Target, z: Array) -> tuple[Array, Array]:
    """(log p̃(z), ∇ log p̃(z)) for ``z`` ``(d,)``, compiled once per target layout."""
    return jax.value_and_grad(target.log_density)(z)


def check_initial_point(target: Target, z: Array) -> None:
    """Raise, naming the parameter values, if log p̃ or its gradient is not finite at ``z``."""
    value, grad = value_and_grad(target, z)
    raise_if_not_finite(target, z, value, grad)


def raise_if_not_finite(target: Target, z: Array, value: Array, grad: Array) -> None:
    """Raise, naming the parameter values, if ``value`` = log p̃(z) or ``grad`` = ∇ log p̃(z) is not finite."""
    value, grad = np.asarray(value), np.asarray(grad)
    if np.isfinite(value) and np.all(np.isfinite(grad)):
        return
    shown = {k: np.round(np.asarray(v), 4).tolist() for k, v in target.constrain(z).items()}
    what = "log density" if not np.isfinite(value) else "gradient of the log density"
    raise VBayesError(
        f"the {what} of {target.name!r} is not finite ({float(value)}) at the initial point {shown}; "
        "check the model and data there: the log density must be finite wherever the parameters' declared support "
        "allows (from the Python API, init= starts a fit elsewhere)"
    )


@jax.jit
def constrain_rows(target: Target, z: Array) -> dict[str, Array]:
    """θ(z) for each row: ``(n, d) -> {name: (n, *shape)}`` (compiled once per target layout)."""
    return jax.vmap(target.constrain)(z)
