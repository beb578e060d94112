"""Targets from a log-density function, a per-row log-likelihood (with a minibatch form) or a NumPyro model.

Constraints are NumPyro's (``numpyro.distributions.constraints``) and so are the bijections to
unconstrained space (``biject_to``): we do not re-derive Jacobians that NumPyro already gets right.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from vbayes.errors import VBayesError
from vbayes.targets.core import (
    Frozen,
    LogDensityFn,
    ParamSpec,
    RowsDensity,
    Target,
    biject_to,
    check_finite,
    check_scalar,
    split,
    unflatten,
)

if TYPE_CHECKING:
    from numpyro.distributions.constraints import Constraint

Array = jax.Array
PyTree = Any

# Constraint names a user may pass as strings; NumPyro itself is imported when first needed.
_CONSTRAINT_NAMES = {
    "real": "real",
    "positive": "positive",
    "unit_interval": "unit_interval",
    "simplex": "simplex",
    "ordered": "ordered_vector",
    "ordered_vector": "ordered_vector",
    "positive_ordered": "positive_ordered_vector",
    "corr_cholesky": "corr_cholesky",
    "corr_matrix": "corr_matrix",
    "positive_definite": "positive_definite",
    "lower_cholesky": "lower_cholesky",
    "softplus_positive": "softplus_positive",
}


@dataclass(frozen=True, eq=False)
class NumPyroDensity:
    """``z ↦ −potential_energy(model, args, kwargs, unflatten(z))``, NumPyro's own transforms."""

    model: Callable
    specs: tuple[ParamSpec, ...]
    frozen: Frozen  # (args, kwargs)

    def _key(self) -> tuple:
        return (self.model, self.specs, self.frozen)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NumPyroDensity) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def unconstrained(self, z: Array) -> dict[str, Array]:
        return unflatten(self.specs, z)

    def constrain(self, z: Array, data: tuple) -> dict[str, Array]:
        from numpyro.infer.util import constrain_fn

        args, kwargs = self.frozen.merge(data)
        return constrain_fn(self.model, args, kwargs, self.unconstrained(z), return_deterministic=True)

    def __call__(self, z: Array, data: tuple) -> Array:
        from numpyro.infer.util import potential_energy

        args, kwargs = self.frozen.merge(data)
        return -potential_energy(self.model, args, kwargs, self.unconstrained(z))


def as_constraint(c: Any, name: str) -> Constraint:
    """A NumPyro constraint from a name, a ``(low, high)`` pair, a constraint or ``None`` (real)."""
    from numpyro.distributions import constraints as C

    if c is None:
        return C.real
    if isinstance(c, str):
        if c not in _CONSTRAINT_NAMES:
            raise VBayesError(
                f"unknown constraint {c!r} for parameter {name!r}; use one of {sorted(_CONSTRAINT_NAMES)} "
                "or a numpyro.distributions.constraints object (e.g. constraints.interval(0, 1))"
            )
        return getattr(C, _CONSTRAINT_NAMES[c])
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
        c = as_constraint(constraints.get(k), k)
        ushape = tuple(biject_to(c).inverse_shape(shape))
        specs.append(ParamSpec(str(k), shape, ushape))
        cons.append(c)
    frozen, arrays = (None, ()) if data is None else split(data)
    if data is not None:
        check_finite(data, what="data ")
    density = LogDensityFn(fn, tuple(specs), tuple(cons), frozen)
    target = Target(density, arrays, name)
    check_scalar(target)
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
    density = RowsDensity(d.fn, d.specs, d.constraints, d.frozen, log_prior=log_prior, n_rows=int(n_rows))
    target = Target(density, base.data, name)
    check_scalar(target)
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
    specs = _latent_specs(model, args, kwargs)
    if not specs:
        raise VBayesError("the model has no latent sample sites: there is nothing to infer")
    frozen, arrays = split((tuple(args), dict(kwargs)))
    density = NumPyroDensity(model, tuple(specs), frozen)
    target = Target(density, arrays, getattr(model, "__name__", "model"))
    check_scalar(target)
    return target


def _latent_specs(model: Callable, args: tuple, kwargs: dict) -> list[ParamSpec]:
    """The model's continuous latent sites in the order it samples them. The model is traced abstractly
    (``jax.eval_shape``: nothing is computed or compiled); a model that cannot be traced so is run once."""

    from numpyro import handlers

    def sites() -> list[ParamSpec]:
        with handlers.block(), handlers.seed(rng_seed=0):
            trace = handlers.trace(model).get_trace(*args, **kwargs)
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
        return specs

    found: list[list[ParamSpec]] = []
    try:
        jax.eval_shape(lambda: found.append(sites()))
        return found[0]
    except VBayesError:
        raise
    except Exception:  # not traceable abstractly: run it, and report its own failure
        pass
    try:
        return sites()
    except VBayesError:
        raise
    except Exception as e:  # the user's model failed on its own data: say so, with NumPyro's reason
        raise VBayesError(f"the model could not be run with the given data: {type(e).__name__}: {e}") from e
