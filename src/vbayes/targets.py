"""What we approximate: an unnormalised log density on a flat unconstrained vector.

A :class:`Target` holds ``log p(data, θ(z)) + log|det ∂θ/∂z|`` for ``z ∈ R^d`` and the map ``z ↦ θ``
back to named, constrained parameters. It is a JAX pytree whose *leaves are the data arrays*: the
density function and the parameter layout are static, so a jitted algorithm compiled for one target is
reused, without recompiling, for another built from the same model with new data of the same shapes.

Constraints are NumPyro's (``numpyro.distributions.constraints``) and so are the bijections to
unconstrained space (``biject_to``): we do not re-derive Jacobians that NumPyro already gets right.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions import constraints as C
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import constrain_fn, potential_energy

from vbayes.errors import VBayesError

Array = jax.Array
PyTree = Any

_CONSTRAINT_NAMES: dict[str, C.Constraint] = {
    "real": C.real,
    "positive": C.positive,
    "unit_interval": C.unit_interval,
    "simplex": C.simplex,
    "ordered": C.ordered_vector,
    "ordered_vector": C.ordered_vector,
    "positive_ordered": C.positive_ordered_vector,
    "corr_cholesky": C.corr_cholesky,
    "corr_matrix": C.corr_matrix,
    "positive_definite": C.positive_definite,
    "lower_cholesky": C.lower_cholesky,
    "softplus_positive": C.softplus_positive,
}


class ParamSpec(NamedTuple):
    """One named parameter: its constrained ``shape`` and its ``size`` in the flat vector z."""

    name: str
    shape: tuple[int, ...]
    unconstrained_shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.unconstrained_shape)


# ----------------------------------------------------------------------------------------------
# static / dynamic split of user data: arrays are leaves (traced), everything else is static


class _Frozen:
    """Static (hashable) half of a data pytree: its structure and its non-array leaves."""

    def __init__(self, treedef: Any, static: tuple[Any, ...], is_array: tuple[bool, ...]):
        self.treedef, self.static, self.is_array = treedef, static, is_array

    def _key(self) -> tuple:
        return (self.treedef, tuple(_hashable(s) for s in self.static), self.is_array)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Frozen) and self._key() == other._key()

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


def _split(tree: PyTree) -> tuple[_Frozen, tuple[Any, ...]]:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    mask = tuple(_is_array(x) for x in leaves)
    static = tuple(None if a else x for x, a in zip(leaves, mask, strict=True))
    arrays = tuple(x for x, a in zip(leaves, mask, strict=True) if a)
    return _Frozen(treedef, static, mask), arrays


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


def _unflatten(specs: tuple[ParamSpec, ...], z: Array) -> dict[str, Array]:
    """Split flat ``z`` of shape ``(d,)`` into named unconstrained blocks."""
    out, i = {}, 0
    for s in specs:
        out[s.name] = z[i : i + s.size].reshape(s.unconstrained_shape)
        i += s.size
    return out


# ----------------------------------------------------------------------------------------------
# densities: static, hashable callables (z, data_arrays) -> log density


@dataclass(frozen=True, eq=False)
class _LogDensityFn:
    """``z ↦ fn(θ(z)[, data]) + log|J|`` for a user function ``fn`` of a parameter dict."""

    fn: Callable
    specs: tuple[ParamSpec, ...]
    constraints: tuple[Any, ...]
    frozen: _Frozen | None

    def _key(self) -> tuple:
        return (self.fn, self.specs, tuple(repr(c) for c in self.constraints), self.frozen)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _LogDensityFn) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def unconstrained(self, z: Array) -> dict[str, Array]:
        return _unflatten(self.specs, z)

    def constrain(self, z: Array, data: tuple) -> dict[str, Array]:
        u = self.unconstrained(z)
        return {s.name: biject_to(c)(u[s.name]) for s, c in zip(self.specs, self.constraints, strict=True)}

    def __call__(self, z: Array, data: tuple) -> Array:
        u = self.unconstrained(z)
        params, log_jac = {}, 0.0
        for s, c in zip(self.specs, self.constraints, strict=True):
            t = biject_to(c)
            x = t(u[s.name])
            params[s.name] = x
            log_jac = log_jac + jnp.sum(t.log_abs_det_jacobian(u[s.name], x))
        value = self.fn(params) if self.frozen is None else self.fn(params, self.frozen.merge(data))
        return jnp.asarray(value) + log_jac


@dataclass(frozen=True, eq=False)
class _NumPyroDensity:
    """``z ↦ −potential_energy(model, args, kwargs, unflatten(z))``, NumPyro's own transforms."""

    model: Callable
    specs: tuple[ParamSpec, ...]
    frozen: _Frozen  # (args, kwargs)

    def _key(self) -> tuple:
        return (self.model, self.specs, self.frozen)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _NumPyroDensity) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def unconstrained(self, z: Array) -> dict[str, Array]:
        return _unflatten(self.specs, z)

    def constrain(self, z: Array, data: tuple) -> dict[str, Array]:
        args, kwargs = self.frozen.merge(data)
        return constrain_fn(self.model, args, kwargs, self.unconstrained(z), return_deterministic=True)

    def __call__(self, z: Array, data: tuple) -> Array:
        args, kwargs = self.frozen.merge(data)
        return -potential_energy(self.model, args, kwargs, self.unconstrained(z))


# ----------------------------------------------------------------------------------------------


class _Label:
    """A target's display name inside its static pytree data, equal to every other label, so that two
    targets differing only in name share compiled code."""

    def __init__(self, text: str):
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Label)

    def __hash__(self) -> int:
        return 0


@jax.tree_util.register_pytree_node_class
class Target:
    """An unnormalised log density ``log p̃(z)`` on ``z ∈ R^d`` (Jacobian included) and its parameters.

    ``log_density(z)``: ``(d,) -> ()``. ``constrain(z)``: ``(d,) -> {name: array of the parameter's shape}``.
    Leaves of the pytree are the data arrays; everything else is static.
    """

    def __init__(self, density: Any, data: tuple, name: str = "target"):
        self.density = density
        self.data = data
        self.name = name

    def tree_flatten(self):
        return (self.data,), (self.density, _Label(self.name))

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(aux[0], children[0], aux[1].text)

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
        return self.density(z, self.data)

    def constrain(self, z: Array) -> dict[str, Array]:
        """Named constrained parameters (and NumPyro deterministic sites) at ``z`` of shape ``(d,)``."""
        return self.density.constrain(z, self.data)

    def unflatten(self, z: Array) -> dict[str, Array]:
        """Named *unconstrained* blocks of ``z``."""
        return self.density.unconstrained(z)

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


def _as_constraint(c: Any, name: str) -> C.Constraint:
    if c is None:
        return C.real
    if isinstance(c, str):
        if c not in _CONSTRAINT_NAMES:
            raise VBayesError(
                f"unknown constraint {c!r} for parameter {name!r}; use one of {sorted(_CONSTRAINT_NAMES)} "
                "or a numpyro.distributions.constraints object (e.g. constraints.interval(0, 1))"
            )
        return _CONSTRAINT_NAMES[c]
    if isinstance(c, tuple) and len(c) == 2:
        return C.interval(*c)
    if isinstance(c, C.Constraint):
        return c
    raise VBayesError(f"constraint for {name!r} must be a name, a (low, high) pair or a NumPyro constraint, got {c!r}")


def from_logdensity(
    fn: Callable,
    example_params: Mapping[str, Any],
    constraints: Mapping[str, Any] | None = None,
    data: PyTree = None,
    name: str = "logdensity",
) -> Target:
    """Target from ``fn(params) -> log p`` (or ``fn(params, data)`` when ``data`` is given).

    ``params`` is a dict ``{name: array}`` shaped like ``example_params``; ``constraints`` maps names to
    ``"positive"``, ``"simplex"``, ``"ordered"``, ``(low, high)`` or any NumPyro constraint (default: real).
    The target is ``fn(θ(z)) + Σ log|J|`` on the flat unconstrained ``z``. ``data`` arrays are pytree
    leaves, so refitting with new data of the same shapes reuses the compiled code.
    """
    if not isinstance(example_params, Mapping) or not example_params:
        raise VBayesError("example_params must be a non-empty dict {name: example value}")
    constraints = dict(constraints or {})
    unknown = set(constraints) - set(example_params)
    if unknown:
        raise VBayesError(f"constraints name parameters not in example_params: {sorted(unknown)}")
    specs, cons = [], []
    for k, v in example_params.items():
        shape = tuple(np.shape(v))
        c = _as_constraint(constraints.get(k), k)
        ushape = tuple(biject_to(c).inverse_shape(shape))
        specs.append(ParamSpec(str(k), shape, ushape))
        cons.append(c)
    frozen, arrays = (None, ()) if data is None else _split(data)
    if data is not None:
        check_finite(data, what="data ")
    density = _LogDensityFn(fn, tuple(specs), tuple(cons), frozen)
    target = Target(density, arrays, name)
    _check_scalar(target)
    return target


def from_numpyro(model: Callable, *args: Any, **kwargs: Any) -> Target:
    """Target from a NumPyro model and its arguments, using NumPyro's transforms and potential energy.

    log p̃(z) = −potential_energy(model, args, kwargs, unflatten(z)). Latent sites are laid out in
    the order the model samples them. Array arguments are pytree leaves (new data, same shapes: no
    recompilation); other arguments are static.
    """
    for i, a in enumerate(args):
        check_finite(a, what=f"model argument {i}")
    for k, v in kwargs.items():
        check_finite(v, what=f"model argument {k!r}")
    try:
        with handlers.block(), handlers.seed(rng_seed=0):
            trace = handlers.trace(model).get_trace(*args, **kwargs)
    except Exception as e:  # the user's model failed on its own data: say so, with NumPyro's reason
        raise VBayesError(f"the model could not be run with the given data: {type(e).__name__}: {e}") from e
    specs = []
    for site in trace.values():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if site["fn"].support.is_discrete:
            raise VBayesError(
                f"latent site {site['name']!r} is discrete; vbayes targets need continuous latents "
                "(marginalise it out or enumerate it in the model)"
            )
        shape = tuple(np.shape(site["value"]))
        ushape = tuple(biject_to(site["fn"].support).inverse_shape(shape))
        specs.append(ParamSpec(site["name"], shape, ushape))
    if not specs:
        raise VBayesError("the model has no latent sample sites: there is nothing to infer")
    frozen, arrays = _split((tuple(args), dict(kwargs)))
    density = _NumPyroDensity(model, tuple(specs), frozen)
    target = Target(density, arrays, getattr(model, "__name__", "model"))
    _check_scalar(target)
    return target


def _check_scalar(target: Target) -> None:
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
def _value_and_grad(target: Target, z: Array) -> tuple[Array, Array]:
    return jax.value_and_grad(target.log_density)(z)


def check_initial_point(target: Target, z: Array) -> None:
    """Raise, naming the parameter values, if log p̃ or its gradient is not finite at ``z``."""
    value, grad = _value_and_grad(target, z)
    if bool(jnp.isfinite(value)) and bool(jnp.all(jnp.isfinite(grad))):
        return
    shown = {k: np.round(np.asarray(v), 4).tolist() for k, v in target.constrain(z).items()}
    what = "log density" if not bool(jnp.isfinite(value)) else "gradient of the log density"
    raise VBayesError(
        f"the {what} of {target.name!r} is not finite ({float(value)}) at the initial point {shown}; "
        "check the model and data there, or pass a different init"
    )
