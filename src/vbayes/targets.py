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
class _RowsDensity(_LogDensityFn):
    """``z ↦ log_prior(θ) + (N / B) · fn(θ, rows) + log|J|`` with ``fn`` = Σ over the B rows given of the
    log-likelihood: B = N on the full data, a minibatch's unbiased estimate otherwise (B from the shapes,
    so static under ``jit``)."""

    log_prior: Callable | None = None
    n_rows: int = 0

    def _key(self) -> tuple:
        return super()._key() + (self.log_prior, self.n_rows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _RowsDensity) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __call__(self, z: Array, data: tuple) -> Array:
        params, log_jac = self._params_and_log_jacobian(z)
        batch = jnp.shape(data[0])[0]
        value = (self.n_rows / batch) * jnp.asarray(self.fn(params, self.frozen.merge(data)))
        if self.log_prior is not None:
            value = value + jnp.asarray(self.log_prior(params))
        return value + log_jac


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

    @property
    def n_rows(self) -> int | None:
        """N, the rows of the data, for a target with a minibatch form (:func:`from_loglik`); else None."""
        return self.density.n_rows if isinstance(self.density, _RowsDensity) else None

    def take(self, index: Array) -> Target:
        """The minibatch form: the same target on rows ``index`` (B,) of the data, its log-likelihood
        scaled by N/B — log p(θ) + (N/B) Σ_{i ∈ batch} log p(x_i | θ) + log|J|, an unbiased estimate of
        :meth:`log_density`. Only for targets built by :func:`from_loglik`."""
        if self.n_rows is None:
            raise VBayesError(
                f"target {self.name!r} has no minibatch form; build it with vbayes.from_loglik(log_lik, ...) "
                "from a per-row log-likelihood and a log prior"
            )
        return Target(self.density, tuple(a[index] for a in self.data), self.name)

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


def from_loglik(
    log_lik: Callable,
    example_params: Mapping[str, Any],
    constraints: Mapping[str, Any] | None = None,
    *,
    data: PyTree,
    log_prior: Callable | None = None,
    name: str = "loglik",
) -> Target:
    """Target with a minibatch form: log p̃(z) = log_prior(θ) + Σ_{i=1}^N log p(x_i | θ) + log|J|, θ = θ(z).

    ``log_lik(params, rows) -> Σ_i log p(x_i | θ)`` over the rows it is given (vectorised); ``data``: a
    pytree whose array leaves all have the N rows on axis 0 (other leaves are static); ``log_prior(params)``
    (None: flat). ``target.log_density`` is the full-data density (every algorithm works on it unchanged);
    ``target.take(index)`` / ``target.sample_batch(key, B)`` give the minibatch target, with the
    log-likelihood scaled by N/B, for ``advi(..., batch_size=B)``."""
    if data is None:
        raise VBayesError("from_loglik needs data: a pytree of arrays with the N rows on axis 0")
    base = from_logdensity(log_lik, example_params, constraints, data=data, name=name)
    leading = {np.shape(a)[0] if np.ndim(a) else None for a in base.data}
    if not base.data or len(leading) != 1 or None in leading:
        shapes = [np.shape(a) for a in base.data]
        raise VBayesError(f"from_loglik: every data array must have the N rows on axis 0, got shapes {shapes}")
    n_rows = leading.pop()
    if n_rows < 1:
        raise VBayesError("from_loglik: the data have no rows")
    d = base.density
    density = _RowsDensity(d.fn, d.specs, d.constraints, d.frozen, log_prior=log_prior, n_rows=int(n_rows))
    target = Target(density, base.data, name)
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
def value_and_grad(target: Target, z: Array) -> tuple[Array, Array]:
    """(log p̃(z), ∇ log p̃(z)) for ``z`` ``(d,)``, compiled once per target layout."""
    return jax.value_and_grad(target.log_density)(z)


def check_initial_point(target: Target, z: Array) -> None:
    """Raise, naming the parameter values, if log p̃ or its gradient is not finite at ``z``."""
    value, grad = value_and_grad(target, z)
    if bool(jnp.isfinite(value)) and bool(jnp.all(jnp.isfinite(grad))):
        return
    shown = {k: np.round(np.asarray(v), 4).tolist() for k, v in target.constrain(z).items()}
    what = "log density" if not bool(jnp.isfinite(value)) else "gradient of the log density"
    raise VBayesError(
        f"the {what} of {target.name!r} is not finite ({float(value)}) at the initial point {shown}; "
        "check the model and data there, or pass a different init"
    )


# ----------------------------------------------------------------------------------------------
# Gaussian priors on z: precision operators and their Cholesky factors
#
# A precision P (d×d, symmetric positive definite) is kept in the form it was given (a diagonal, a dense
# matrix, or a sparse matrix) and used through products only: ``matvec`` in the log density and in
# Gauss-Newton products, and a Cholesky factor P = L Lᵀ for prior preconditioning, sampling and
# log|P|. Vectors are rows: every method maps ``(..., d) -> (..., d)``. No method forms a dense d×d
# matrix unless P was given as one.


@jax.tree_util.register_pytree_node_class
class DiagonalPrecision:
    """P = diag(p). ``p``: ``(d,)``, positive."""

    def __init__(self, diagonal: Array):
        self.diagonal = diagonal

    def tree_flatten(self):
        return (self.diagonal,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    @property
    def dim(self) -> int:
        return int(np.shape(self.diagonal)[-1])

    def matvec(self, x: Array) -> Array:
        """P x for rows ``x``: ``(..., d) -> (..., d)``."""
        return self.diagonal * x

    def cholesky(self) -> DiagonalCholesky:
        """L = diag(√p)."""
        return DiagonalCholesky(jnp.sqrt(jnp.asarray(self.diagonal)))

    def logdet(self) -> float:
        """log|P| = Σ log p_i (host)."""
        return float(np.sum(np.log(np.asarray(self.diagonal, dtype=np.float64))))


@jax.tree_util.register_pytree_node_class
class DensePrecision:
    """P a dense symmetric positive definite matrix ``(d, d)``."""

    def __init__(self, matrix: Array):
        self.matrix = matrix

    def tree_flatten(self):
        return (self.matrix,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    @property
    def dim(self) -> int:
        return int(np.shape(self.matrix)[-1])

    def matvec(self, x: Array) -> Array:
        """P x for rows ``x``: ``(..., d) -> (..., d)`` (P symmetric, so x Pᵀ = x P)."""
        return x @ self.matrix

    def cholesky(self) -> DenseCholesky:
        """L = chol(P), lower triangular ``(d, d)``; O(d³)."""
        chol = jnp.linalg.cholesky(jnp.asarray(self.matrix))
        if not bool(jnp.all(jnp.isfinite(chol))):
            raise VBayesError("the prior precision matrix is not positive definite (its Cholesky factorisation failed)")
        return DenseCholesky(chol)

    def logdet(self) -> float:
        """log|P| (host, via the Cholesky factor)."""
        return 2.0 * float(self.cholesky().half_logdet)


@jax.tree_util.register_pytree_node_class
class SparsePrecision:
    """P a sparse symmetric positive definite matrix, ``jax.experimental.sparse.BCOO`` of shape ``(d, d)``.

    Its Cholesky factor is sparse too: a fill-reducing ordering q and P[q][:, q] = C Cᵀ, computed once on
    the host (SuperLU with a symmetric ordering and no pivoting); see :class:`SparseCholesky`.
    """

    def __init__(self, matrix: Any):
        self.matrix = matrix

    def tree_flatten(self):
        return (self.matrix,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[-1])

    def matvec(self, x: Array) -> Array:
        """P x for rows ``x``: ``(..., d) -> (..., d)``, a sparse product (differentiable)."""
        d = self.dim
        flat = jnp.reshape(x, (-1, d))
        return jnp.reshape((self.matrix @ flat.T).T, jnp.shape(x))

    def to_scipy(self):
        """The matrix as ``scipy.sparse.csc_matrix`` (host)."""
        import scipy.sparse as sp

        data = np.asarray(self.matrix.data, dtype=np.float64)
        idx = np.asarray(self.matrix.indices)
        return sp.csc_matrix(sp.coo_matrix((data, (idx[:, 0], idx[:, 1])), shape=self.matrix.shape))

    def cholesky(self) -> SparseCholesky:
        """Sparse Cholesky factor and diag(P⁻¹) (host, once); O(nnz(C)) memory."""
        return SparseCholesky.from_scipy(self.to_scipy())

    def logdet(self) -> float:
        """log|P| = 2 Σ log C_ii (host)."""
        return 2.0 * float(SparseCholesky.from_scipy(self.to_scipy(), inverse_diag=False).half_logdet)


Precision = DiagonalPrecision | DensePrecision | SparsePrecision


class DiagonalCholesky(NamedTuple):
    """L = diag(s), P = diag(s²). ``s``: ``(d,)``."""

    sqrt_diagonal: Array

    @property
    def half_logdet(self) -> Array:
        """½ log|P| = Σ log s_i."""
        return jnp.sum(jnp.log(self.sqrt_diagonal))

    def apply_lt(self, x: Array) -> Array:
        """Lᵀ x, rows ``(..., d)``."""
        return x * self.sqrt_diagonal

    def solve_lt(self, y: Array) -> Array:
        """L⁻ᵀ y, rows ``(..., d)``."""
        return y / self.sqrt_diagonal

    def solve_l(self, x: Array) -> Array:
        """L⁻¹ x, rows ``(..., d)``."""
        return x / self.sqrt_diagonal

    def inverse_diag(self) -> Array:
        """diag(P⁻¹) ``(d,)``."""
        return 1.0 / self.sqrt_diagonal**2


class DenseCholesky(NamedTuple):
    """P = L Lᵀ, ``chol`` = L lower triangular ``(d, d)``."""

    chol: Array

    @property
    def half_logdet(self) -> Array:
        return jnp.sum(jnp.log(jnp.diag(self.chol)))

    def apply_lt(self, x: Array) -> Array:
        """Lᵀ x for rows: (Lᵀ x)ᵀ = xᵀ L."""
        return x @ self.chol

    def solve_lt(self, y: Array) -> Array:
        """L⁻ᵀ y for rows ``(..., d)``."""
        flat = jnp.reshape(y, (-1, y.shape[-1])).T
        out = jax.scipy.linalg.solve_triangular(self.chol, flat, lower=True, trans="T")
        return jnp.reshape(out.T, y.shape)

    def solve_l(self, x: Array) -> Array:
        """L⁻¹ x for rows ``(..., d)``."""
        flat = jnp.reshape(x, (-1, x.shape[-1])).T
        out = jax.scipy.linalg.solve_triangular(self.chol, flat, lower=True)
        return jnp.reshape(out.T, x.shape)

    def inverse_diag(self) -> Array:
        """diag(P⁻¹)_i = ‖L⁻¹ e_i‖², the squared column norms of L⁻¹; O(d³)."""
        inv = jax.scipy.linalg.solve_triangular(
            self.chol, jnp.eye(self.chol.shape[0], dtype=self.chol.dtype), lower=True
        )
        return jnp.sum(inv**2, axis=0)


def selected_inverse_diag(c_lower: Any) -> np.ndarray:
    """diag((C Cᵀ)⁻¹) for a sparse lower-triangular C ``(d, d)``, without forming the inverse.

    Takahashi, Fagan & Chen (1973); Rue & Martino (2007): Σ = (CCᵀ)⁻¹ satisfies, for i = d−1 … 0 and
    j ∈ {i} ∪ pattern(C[:, i]), Σ_ji = δ_ij / C_ii² − (1/C_ii) Σ_{k ∈ pattern(C[:, i]), k > i} C_ki Σ_kj, and
    the Σ_kj needed lie on the pattern of C. Cost O(Σ_i m_i²), m_i the count of column i.
    """
    import scipy.sparse as sp

    c = sp.csc_matrix(c_lower)
    c.sort_indices()
    d = c.shape[0]
    rows_of: list[np.ndarray] = [np.zeros(0, np.int64)] * d
    sigma_of: list[np.ndarray] = [np.zeros(0)] * d
    out = np.empty(d)
    for i in range(d - 1, -1, -1):
        rows = c.indices[c.indptr[i] : c.indptr[i + 1]]
        vals = c.data[c.indptr[i] : c.indptr[i + 1]]
        if rows.size == 0 or rows[0] != i:
            raise VBayesError("selected_inverse_diag needs a lower-triangular factor with a nonzero diagonal")
        cii, rows, vals = vals[0], rows[1:], vals[1:]
        block = np.empty((rows.size, rows.size))
        for a, j in enumerate(rows):  # Σ[rows, rows] from the columns already done (all > i)
            col = sigma_of[j][np.searchsorted(rows_of[j], rows[a:])]
            block[a:, a] = col
            block[a, a:] = col
        s = -(block @ vals) / cii
        sii = 1.0 / cii**2 - (vals @ s) / cii
        rows_of[i] = np.concatenate([[i], rows])
        sigma_of[i] = np.concatenate([[sii], s])
        out[i] = sii
    return out


def _csr(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray):
    import scipy.sparse as sp

    indptr, indices, data = (np.ravel(a) for a in (indptr, indices, data))  # vmap's expand_dims adds axes
    n = indptr.shape[0] - 1
    return sp.csr_matrix((np.asarray(data, np.float64), indices, indptr), shape=(n, n))


def _host_triangular_solve(indptr, indices, data, b, lower: bool) -> np.ndarray:
    """T⁻¹ b for a sparse triangular T (CSR arrays) and rows ``b`` ``(..., d)`` (host, scipy)."""
    from scipy.sparse.linalg import spsolve_triangular

    flat = np.reshape(np.asarray(b, np.float64), (-1, b.shape[-1])).T
    out = spsolve_triangular(_csr(indptr, indices, data), flat, lower=lower)
    return np.reshape(np.asarray(out).T, b.shape).astype(b.dtype)


@jax.tree_util.register_pytree_node_class
class SparseCholesky:
    """P = L Lᵀ with L = Πᵀ C: ``order`` q is a fill-reducing permutation and P[q][:, q] = C Cᵀ, C sparse lower.

    Every part is an array leaf (C as CSR arrays and as a BCOO of Cᵀ, the permutation, ½ log|P| and
    diag(P⁻¹)), so factors of equal sparsity share compiled code. Products with Lᵀ run in JAX (differentiable);
    solves with L and Lᵀ run on the host (scipy's sparse triangular solve) through ``jax.pure_callback``, so
    they also work under ``jit``, ``vmap`` and reverse-mode ``grad`` (not forward mode). diag(P⁻¹) comes from
    Takahashi's recursions (:func:`selected_inverse_diag`): no dense inverse.
    """

    def __init__(self, ct, lower, upper, order, half_logdet, inv_diag=None):
        self.ct = ct  # Cᵀ as BCOO
        self.lower = lower  # (indptr, indices, data) of C in CSR
        self.upper = upper  # (indptr, indices, data) of Cᵀ in CSR
        self.order = order
        self._half_logdet = half_logdet
        self.inv_diag = inv_diag

    def tree_flatten(self):
        return (self.ct, self.lower, self.upper, self.order, self._half_logdet, self.inv_diag), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    @classmethod
    def from_scipy(cls, matrix: Any, inverse_diag: bool = True) -> SparseCholesky:
        """Factor a symmetric positive definite ``scipy.sparse`` matrix ``(d, d)`` (and, by default, find diag(P⁻¹))."""
        from jax.experimental import sparse as jsparse

        c, order = _sparse_cholesky(matrix)
        lower, upper = c.tocsr(), c.T.tocsr()
        arrays = lambda m: (jnp.asarray(m.indptr), jnp.asarray(m.indices), jnp.asarray(m.data))
        inv = jnp.asarray(selected_inverse_diag(c)[np.argsort(order)]) if inverse_diag else None
        ct = jsparse.BCOO.from_scipy_sparse(c.T.tocoo())
        return cls(ct, arrays(lower), arrays(upper), jnp.asarray(order), jnp.asarray(np.sum(np.log(c.diagonal()))), inv)

    @property
    def half_logdet(self) -> Array:
        return self._half_logdet

    def apply_lt(self, x: Array) -> Array:
        """Lᵀ x = Cᵀ (x[q]) for rows ``(..., d)``."""
        d = x.shape[-1]
        flat = jnp.reshape(x, (-1, d))[:, self.order]
        return jnp.reshape((self.ct @ flat.T).T, x.shape)

    def _solve(self, x: Array, transpose: bool) -> Array:
        """C⁻¹x (or C⁻ᵀx) on the host; reverse-mode differentiable (the two solves are each other's transpose)."""
        arrays = self.upper if transpose else self.lower

        @jax.custom_vjp
        def solve(b):
            fn = lambda *a: _host_triangular_solve(*a, lower=not transpose)
            out = jax.ShapeDtypeStruct(b.shape, b.dtype)
            return jax.pure_callback(fn, out, *arrays, b, vmap_method="expand_dims")

        solve.defvjp(lambda b: (solve(b), None), lambda _, ct: (self._solve(ct, not transpose),))
        return solve(x)

    def solve_lt(self, y: Array) -> Array:
        """L⁻ᵀ y = Πᵀ C⁻ᵀ y for rows ``(..., d)``."""
        return self._solve(y, True)[..., jnp.argsort(self.order)]

    def solve_l(self, x: Array) -> Array:
        """L⁻¹ x = C⁻¹ (x[q]) for rows ``(..., d)``."""
        return self._solve(x[..., self.order], False)

    def inverse_diag(self) -> Array:
        """diag(P⁻¹) ``(d,)``: precomputed by :meth:`from_scipy`, else computed now on the host."""
        if self.inv_diag is not None:
            return self.inv_diag

        def host(indptr, indices, data, order):
            c = _csr(indptr, indices, data)
            return selected_inverse_diag(c)[np.argsort(np.ravel(order))].astype(data.dtype)

        out = jax.ShapeDtypeStruct(self.order.shape, self.lower[2].dtype)
        return jax.pure_callback(host, out, *self.lower, self.order, vmap_method="sequential")


def _sparse_cholesky(matrix: Any) -> tuple[Any, np.ndarray]:
    """(C, q) with P[q][:, q] = C Cᵀ, C sparse lower triangular; raise if P is not symmetric positive definite."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    p = sp.csc_matrix(matrix, dtype=np.float64)
    if p.shape[0] != p.shape[1]:
        raise VBayesError(f"the prior precision must be square, got shape {p.shape}")
    scale = float(abs(p).max()) if p.nnz else 0.0
    if not np.all(np.isfinite(p.data)) or scale == 0.0:
        raise VBayesError("the prior precision has non-finite entries or is zero")
    if p.nnz and float(abs(p - p.T).max()) > 1e-10 * scale:
        raise VBayesError("the prior precision is not symmetric")
    try:
        lu = splu(p, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    except RuntimeError as e:  # an exactly singular matrix
        raise VBayesError(f"the prior precision is not positive definite ({e})") from None
    pivots = lu.U.diagonal()
    if not np.array_equal(lu.perm_r, lu.perm_c) or not np.all(pivots > 0):
        raise VBayesError(
            "the prior precision is not positive definite "
            f"({int(np.sum(pivots <= 0))} non-positive pivot(s) in its symmetric factorisation)"
        )
    c = (lu.L @ sp.diags(np.sqrt(pivots))).tocsc()
    order = np.argsort(lu.perm_c)
    x = np.random.default_rng(0).normal(size=p.shape[0])
    err = np.linalg.norm(c @ (c.T @ x) - p[order][:, order] @ x)
    if not err <= 1e-8 * scale * np.linalg.norm(x) * max(1.0, np.sqrt(p.shape[0])):
        raise VBayesError("the prior precision could not be factored as L Lᵀ (is it symmetric positive definite?)")
    return c, order


def as_precision(value: Any, dim: int) -> Precision:
    """A precision operator from a scalar or vector (diagonal), a dense ``(d, d)`` array, a sparse matrix
    (``jax.experimental.sparse.BCOO`` or ``scipy.sparse``), a precision instance, or a function
    ``v ↦ P v`` on ``(d,)`` (materialised once into a dense matrix by d products; d ≤ 4096 only)."""
    from jax.experimental import sparse as jsparse

    if isinstance(value, (DiagonalPrecision, DensePrecision, SparsePrecision)):
        out = value
    elif isinstance(value, jsparse.BCOO):
        out = SparsePrecision(value)
    elif hasattr(value, "tocoo") and hasattr(value, "nnz"):  # scipy.sparse
        out = SparsePrecision(jsparse.BCOO.from_scipy_sparse(value.tocoo()))
    elif callable(value):
        if dim > 4096:
            raise VBayesError(
                f"a prior precision given as a function is materialised into a dense matrix, which is too big at "
                f"d={dim}; pass a sparse matrix (BCOO or scipy.sparse) or a vector (diagonal) instead"
            )
        eye = jnp.eye(dim, dtype=jnp.result_type(float))
        out = DensePrecision(jax.vmap(value)(eye))
    else:
        arr = jnp.asarray(value, dtype=jnp.result_type(float))
        if arr.ndim == 0:
            arr = jnp.full((dim,), arr)
        if arr.ndim == 1:
            out = DiagonalPrecision(arr)
        elif arr.ndim == 2:
            out = DensePrecision(arr)
        else:
            raise VBayesError(f"a prior precision must be a scalar, a (d,) vector or a (d, d) matrix, got {arr.shape}")
    if out.dim != dim:
        raise VBayesError(f"the prior precision is for dimension {out.dim}, but the parameters have dimension {dim}")
    _check_precision_values(out)
    return out


def _check_precision_values(p: Precision) -> None:
    if isinstance(p, DiagonalPrecision):
        diag = np.asarray(p.diagonal)
        if not np.all(np.isfinite(diag)) or np.any(diag <= 0):
            raise VBayesError("a diagonal prior precision must be positive and finite everywhere")
    elif isinstance(p, DensePrecision):
        m = np.asarray(p.matrix)
        if not np.all(np.isfinite(m)):
            raise VBayesError("the prior precision matrix has non-finite entries")
        if not np.allclose(m, m.T, rtol=1e-10, atol=1e-12 * np.abs(m).max()):
            raise VBayesError("the prior precision matrix is not symmetric")


# ----------------------------------------------------------------------------------------------
# least-squares targets: Gaussian observations of a forward model, Gaussian prior on z


class LeastSquaresParts(NamedTuple):
    """The structure of a least-squares target, for Gauss-Newton: the data term −½‖r(z)‖² has Gauss-Newton
    matrix Jᵀ W J. Plain targets: ``residual(z)`` = (y − f(θ(z)))/σ, flat ``(N,)``, J its Jacobian, W = I
    (``gram`` None). Targets with an ``operator`` A (f = A g): ``latent(z)`` = g(θ(z)) ``(m,)``, J its Jacobian,
    W = ``gram`` = AᵀΣ⁻¹A ``(m, m)`` with ``gram_sqrt`` S, S Sᵀ = W, for m ≤ 4,000 (else None); ``residual`` is
    None: the N rows are not kept. The prior z ~ N(``prior_mean`` ``(d,)``, ``prior_precision``⁻¹)."""

    residual: Callable[[Array], Array] | None
    prior_mean: Array
    prior_precision: Precision
    latent: Callable[[Array], Array] | None = None
    gram: Array | None = None
    gram_sqrt: Array | None = None


@dataclass(frozen=True, eq=False)
class _LeastSquaresDensity:
    """log p̃(z) = −½‖(y − f(θ(z)))/σ‖² − ½(z − m)ᵀP(z − m) + log N and prior normalising constants."""

    forward: Callable
    specs: tuple[ParamSpec, ...]
    constraints: tuple[Any, ...]
    frozen: _Frozen  # {"observations", "noise_sd", "prior_mean", "prior_precision", "prior_logdet", "data"}

    def _key(self) -> tuple:
        return (self.forward, self.specs, tuple(repr(c) for c in self.constraints), self.frozen)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _LeastSquaresDensity) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def unconstrained(self, z: Array) -> dict[str, Array]:
        return _unflatten(self.specs, z)

    def constrain(self, z: Array, data: tuple) -> dict[str, Array]:
        u = self.unconstrained(z)
        return {s.name: biject_to(c)(u[s.name]) for s, c in zip(self.specs, self.constraints, strict=True)}

    def predict(self, z: Array, data: tuple) -> Array:
        """f(θ(z)), the shape of the observations."""
        parts = self.frozen.merge(data)
        params = self.constrain(z, data)
        return self.forward(params) if parts["data"] is None else self.forward(params, parts["data"])

    def residual(self, z: Array, data: tuple) -> Array:
        """(y − f(θ(z)))/σ, flat ``(N,)``."""
        parts = self.frozen.merge(data)
        r = (parts["observations"] - self.predict(z, data)) / parts["noise_sd"]
        return jnp.ravel(r)

    def parts(self, data: tuple) -> LeastSquaresParts:
        merged = self.frozen.merge(data)
        return LeastSquaresParts(lambda z: self.residual(z, data), merged["prior_mean"], merged["prior_precision"])

    def __call__(self, z: Array, data: tuple) -> Array:
        parts = self.frozen.merge(data)
        r = self.residual(z, data)
        dz = z - parts["prior_mean"]
        n, d = r.shape[0], z.shape[-1]
        log_sd = jnp.sum(jnp.log(jnp.broadcast_to(parts["noise_sd"], jnp.shape(parts["observations"]))))
        const = -0.5 * (n + d) * math.log(2 * math.pi) - log_sd + 0.5 * parts["prior_logdet"]
        return -0.5 * jnp.sum(r**2) - 0.5 * jnp.sum(dz * parts["prior_precision"].matvec(dz)) + const


@dataclass(frozen=True, eq=False)
class _CompressedLeastSquaresDensity(_LeastSquaresDensity):
    """y = A g(θ(z)) + ε with A fixed: the data enter only through b = AᵀΣ⁻¹y ``(m,)``, W = AᵀΣ⁻¹A ``(m, m)``
    and c = yᵀΣ⁻¹y, since ‖(y − A g)/σ‖² = c − 2 bᵀg + gᵀWg; each evaluation costs O(m²), not O(nnz(A))."""

    def latent(self, z: Array, data: tuple) -> Array:
        """g(θ(z)) ``(m,)``."""
        return self.predict(z, data)

    def residual(self, z: Array, data: tuple) -> Array:  # pragma: no cover - guarded in parts()
        raise VBayesError("a least-squares target built with an operator keeps AᵀΣ⁻¹A, not the N residuals")

    def parts(self, data: tuple) -> LeastSquaresParts:
        merged = self.frozen.merge(data)
        return LeastSquaresParts(
            None,
            merged["prior_mean"],
            merged["prior_precision"],
            lambda z: self.latent(z, data),
            merged["gram"],
            merged.get("gram_sqrt"),
        )

    def __call__(self, z: Array, data: tuple) -> Array:
        parts = self.frozen.merge(data)
        g = self.latent(z, data)
        quad = parts["yy"] - 2.0 * jnp.dot(parts["b"], g) + jnp.dot(g, parts["gram"] @ g)
        dz = z - parts["prior_mean"]
        n, d = parts["n_obs"], z.shape[-1]
        const = -0.5 * (n + d) * math.log(2 * math.pi) - parts["log_sd_sum"] + 0.5 * parts["prior_logdet"]
        return -0.5 * quad - 0.5 * jnp.sum(dz * parts["prior_precision"].matvec(dz)) + const


def _as_scipy(operator: Any):
    """A scipy CSR matrix (or a dense NumPy array) for a scipy sparse matrix, a BCOO matrix or an array."""
    import scipy.sparse as sp

    if sp.issparse(operator):
        return operator.tocsr()
    if hasattr(operator, "indices") and hasattr(operator, "data") and hasattr(operator, "todense"):  # BCOO
        idx = np.asarray(operator.indices)
        return sp.csr_matrix((np.asarray(operator.data), (idx[:, 0], idx[:, 1])), shape=operator.shape)
    return np.asarray(operator)


GRAM_SQRT_MAX = 4000  # largest m for which W's square root is formed (for Gauss-Newton diagonal probes)


def _compress(operator: Any, y: np.ndarray, sd: np.ndarray) -> dict[str, Any]:
    """b = AᵀΣ⁻¹y, W = AᵀΣ⁻¹A (dense m×m), c = yᵀΣ⁻¹y, one pass over A; and for m ≤ ``GRAM_SQRT_MAX`` a square
    root S of W (S Sᵀ = W, by eigh)."""
    a = _as_scipy(operator)
    if a.ndim != 2 or a.shape[0] != y.shape[0]:
        raise VBayesError(f"operator must have shape (N, m) with N = {y.shape[0]} observations, got {a.shape}")
    w = 1.0 / np.broadcast_to(sd, y.shape) ** 2
    aw = a.multiply(w[:, None]).tocsr() if not isinstance(a, np.ndarray) else a * w[:, None]
    gram = aw.T @ a
    gram = np.asarray(gram.toarray() if hasattr(gram, "toarray") else gram)
    gram = 0.5 * (gram + gram.T)
    out = {"b": np.asarray(aw.T @ y).ravel(), "gram": gram, "yy": float(np.sum(w * y * y))}
    if gram.shape[0] <= GRAM_SQRT_MAX:  # O(m³): only where it is cheap
        s, u = np.linalg.eigh(gram)
        out["gram_sqrt"] = u * np.sqrt(np.maximum(s, 0.0))
    return out


def from_least_squares(
    forward: Callable,
    observations: Any,
    noise_sd: Any,
    prior_mean: Any,
    prior_precision: Any,
    example_params: Mapping[str, Any],
    constraints: Mapping[str, Any] | None = None,
    data: PyTree = None,
    name: str = "least_squares",
    operator: Any = None,
) -> Target:
    """Target for y = f(θ) + ε, ε ~ N(0, diag(σ²)), with a Gaussian prior z ~ N(m, P⁻¹) on the flat unconstrained z.

    log p̃(z) = −½ Σ ((y − f(θ(z)))/σ)² − ½ (z − m)ᵀ P (z − m) − N/2 log 2π − Σ log σ − d/2 log 2π + ½ log|P|,
    the exact log joint, so Laplace's evidence is that of this model. θ(z) maps z to named parameters
    (``constraints`` as in :func:`from_logdensity`); the prior is on z itself, so there is no Jacobian.

    ``forward(params) -> predictions`` of the shape of ``observations`` (or ``forward(params, data)`` when
    ``data`` is given). ``noise_sd``: scalar or broadcastable to ``observations``. ``prior_mean``: scalar or
    ``(d,)``. ``prior_precision``: scalar or ``(d,)`` (diagonal), ``(d, d)`` (dense), a sparse matrix (BCOO or
    scipy.sparse; factored sparsely, never densified), or a function v ↦ P v (small d). Observations, noise,
    prior and ``data`` arrays are pytree leaves: new values of the same shapes reuse the compiled code.
    :func:`least_squares_parts` exposes the residual and the prior for Gauss-Newton curvature.

    ``operator`` A ``(N, m)`` (scipy sparse, BCOO or dense), optional: the predictions are A g(θ) with
    ``forward`` returning the ``(m,)`` vector g (a field on a mesh seen through a linear instrument, say) and
    ``observations`` flat ``(N,)``. Then the N observations are compressed once, at construction, into
    b = AᵀΣ⁻¹y, W = AᵀΣ⁻¹A and yᵀΣ⁻¹y: the log density, its gradient, Hessian-vector and Gauss-Newton products
    cost O(m²) instead of a pass over A — the same values up to rounding (the quadratic is expanded, so use
    float64). A itself is not kept.
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
        specs.append(ParamSpec(str(k), shape, tuple(biject_to(c).inverse_shape(shape))))
        cons.append(c)
    dim = sum(s.size for s in specs)
    dtype = jnp.result_type(float)
    y = jnp.asarray(observations, dtype=dtype)
    sd = jnp.asarray(noise_sd, dtype=dtype)
    check_finite({"observations": y, "noise_sd": sd, "prior_mean": np.asarray(prior_mean)}, what="")
    if data is not None:
        check_finite(data, what="data ")
    if np.any(np.asarray(sd) <= 0):
        raise VBayesError("noise_sd must be positive")
    try:
        jnp.broadcast_shapes(sd.shape, y.shape)
    except ValueError:
        raise VBayesError(f"noise_sd of shape {sd.shape} does not broadcast to observations {y.shape}") from None
    mean = jnp.broadcast_to(jnp.asarray(prior_mean, dtype=dtype), (dim,)) if np.ndim(prior_mean) == 0 else None
    if mean is None:
        mean = jnp.asarray(prior_mean, dtype=dtype)
        if mean.shape != (dim,):
            raise VBayesError(f"prior_mean must be a scalar or have shape ({dim},), got {mean.shape}")
    precision = as_precision(prior_precision, dim)
    bundle = {
        "observations": y,
        "noise_sd": sd,
        "prior_mean": mean,
        "prior_precision": precision,
        "prior_logdet": precision.logdet(),
        "data": data,
    }
    if operator is not None:
        if y.ndim != 1:
            raise VBayesError(f"with an operator the observations must be flat (N,), got shape {y.shape}")
        compressed = _compress(operator, np.asarray(y, np.float64), np.asarray(sd, np.float64))
        log_sd_sum = float(np.sum(np.log(np.broadcast_to(np.asarray(sd, np.float64), y.shape))))
        bundle = {k: v for k, v in bundle.items() if k not in ("observations", "noise_sd")}
        bundle.update({k: jnp.asarray(v, dtype) for k, v in compressed.items()})
        bundle.update(log_sd_sum=jnp.asarray(log_sd_sum, dtype), n_obs=int(y.shape[0]))
    frozen, arrays = _split(bundle)
    cls = _LeastSquaresDensity if operator is None else _CompressedLeastSquaresDensity
    density = cls(forward, tuple(specs), tuple(cons), frozen)
    target = Target(density, arrays, name)
    z = jax.ShapeDtypeStruct((dim,), dtype)
    try:
        out = jax.eval_shape(lambda z: target.density.predict(z, target.data), z)
    except Exception:
        _check_scalar(target)  # raises the library's message for a forward model that cannot run
        raise
    if operator is not None:
        m = bundle["b"].shape[0]
        if out.shape != (m,):
            raise VBayesError(
                f"with an operator of shape {(y.shape[0], m)} forward must return shape ({m},), got {out.shape}"
            )
    elif out.shape != y.shape:
        raise VBayesError(
            f"forward returns predictions of shape {out.shape}, but the observations have shape {y.shape}"
        )
    _check_scalar(target)
    return target


def least_squares_parts(target: Target) -> LeastSquaresParts | None:
    """The residual and prior of a target made by :func:`from_least_squares` (``None`` for other targets)."""
    if isinstance(target.density, _LeastSquaresDensity):
        return target.density.parts(target.data)
    return None
