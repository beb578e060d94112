"""Posterior predictive draws and pointwise log-likelihoods, for any fit with a target.

* log p(y_i | θ) per observation (:func:`pointwise_log_likelihood`): for a NumPyro model, NumPyro's own
  ``log_likelihood`` (one entry per element of each observed site); for a :func:`~vbayes.from_loglik` target, the
  user's ``log_lik`` on one row at a time (``{"rows": (S, N)}``). A target from a bare log density has no
  observations to split it by: a :class:`VBayesError` says so.
* ỹ ~ p(ỹ | θ), θ ~ q (:func:`posterior_predictive`): for a NumPyro model, ``numpyro.infer.Predictive`` with the
  arguments given (new covariates; pass the observed site's argument as ``None`` to draw it), or, with none,
  replicates of every observed site at the fit's own data (the posterior predictive check); for any other target,
  a ``simulator(params, key) -> {name: array}`` the user passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.errors import VBayesError, is_count, require
from vbayes.keys import as_key
from vbayes.targets import Target
from vbayes.targets.builders import NumPyroDensity
from vbayes.targets.core import RowsDensity

Array = jax.Array
ROWS = "rows"
"""The name of a :func:`~vbayes.from_loglik` target's observations in the log-likelihood's dict."""
DRAW_BLOCK = 256
"""Draws whose pointwise log-likelihoods one compiled call computes (the (draws × N) matrix is built in blocks)."""


def has_observations(target: Target | None) -> bool:
    """Whether ``target`` can be split into per-observation log-likelihoods (a NumPyro model or a
    :func:`~vbayes.from_loglik` target)."""
    return target is not None and isinstance(target.density, NumPyroDensity | RowsDensity)


def require_observations(target: Target | None) -> Target:
    """``target`` itself when :func:`has_observations`; else a :class:`VBayesError` saying how to build one."""
    if not has_observations(target):
        what = "a fit without a target" if target is None else f"target {target.name!r}"
        raise VBayesError(
            f"{what} has no per-observation log-likelihood: build the target with vbayes.from_numpyro(model, ...) "
            "or vbayes.from_loglik(log_lik, ...) to predict, compute LOO or compare models"
        )
    return target


def n_observations(target: Target) -> int:
    """N, the observations a LOO of ``target`` has one elpd_i for: the elements of a NumPyro model's observed
    sites, or a :func:`~vbayes.from_loglik` target's rows (without evaluating the log-likelihood)."""
    target = require_observations(target)
    if isinstance(target.density, RowsDensity):
        return int(target.n_rows)
    return int(sum(np.size(v) for v in observed_data(target).values()))


def _latent(target: Target, z: Array) -> dict[str, Array]:
    """The model's latent sites, constrained, at ``z`` ``(d,)`` (no deterministic sites)."""
    theta = target.constrain(z)
    return {name: theta[name] for name in target.names}


def _log_lik_one(target: Target, z: Array) -> dict[str, Array]:
    """{site: log p(y | θ(z)) per element} at one ``z`` ``(d,)``."""
    density = target.density
    if isinstance(density, RowsDensity):
        params = target.constrain(z)
        one_row = lambda row: density.fn(params, density.frozen.merge(tuple(a[None] for a in row)))  # noqa: E731
        return {ROWS: jax.vmap(one_row)(target.data)}
    from numpyro.infer import log_likelihood

    args, kwargs = density.frozen.merge(target.data)
    return log_likelihood(density.model, _latent(target, z), *args, batch_ndims=0, **kwargs)


@jax.jit
def _log_lik_block(target: Target, z: Array) -> dict[str, Array]:
    return jax.vmap(lambda one: _log_lik_one(target, one))(z)


@jax.jit
def _flat_block(target: Target, z: Array) -> Array:
    sites = _log_lik_block(target, z)
    return jnp.concatenate([v.reshape(v.shape[0], -1) for v in sites.values()], axis=1)


def pointwise_log_likelihood(target: Target, z: Array | np.ndarray) -> dict[str, np.ndarray]:
    """log p(y_i | θ(z_s)) for draws ``z`` ``(S, d)``: ``{site: (S, *site_shape)}`` (``{"rows": (S, N)}`` for a
    :func:`~vbayes.from_loglik` target)."""
    return _in_blocks(_log_lik_block, require_observations(target), z)


def flat_log_likelihood(target: Target, z: Array | np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
    """:func:`pointwise_log_likelihood` as one matrix ``(S, N)``, N the observations of every observed site in
    order; only the observations ``columns`` when given (a :func:`~vbayes.from_loglik` target then evaluates
    those rows only)."""
    target = require_observations(target)
    if columns is not None and isinstance(target.density, RowsDensity):
        target, columns = target.take(jnp.asarray(columns)), None
    return _in_blocks(_flat_block, target, z, columns)


def _in_blocks(program: Callable, target: Target, z: Array | np.ndarray, columns: np.ndarray | None = None) -> Any:
    """``program(target, block)`` for :data:`DRAW_BLOCK` draws at a time (fewer draws: all at once), written into
    arrays of all ``S`` draws (only ``columns`` of a matrix when given); one compiled program for every block (the
    last one is padded)."""
    z = np.asarray(z)
    total = z.shape[0]
    size = min(DRAW_BLOCK, total)
    pick = (lambda v: v) if columns is None else (lambda v: v[:, columns])
    out = None
    for first in range(0, total, size):
        block = z[first : first + size]
        n = block.shape[0]
        if n < size:
            block = np.concatenate([block, np.repeat(block[-1:], size - n, axis=0)])
        got = jax.tree_util.tree_map(lambda v, n=n: pick(np.asarray(v)[:n]), jax.device_get(program(target, block)))
        if out is None:
            out = jax.tree_util.tree_map(lambda v: np.empty((total, *v.shape[1:]), v.dtype), got)
        for o, v in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(got), strict=True):
            o[first : first + n] = v
    return out


def observed_data(target: Target) -> dict[str, np.ndarray]:
    """The observed sites' values at the target's data (NumPyro models; empty for other targets)."""
    if target is None or not isinstance(target.density, NumPyroDensity):
        return {}
    from numpyro import handlers

    density = target.density
    args, kwargs = density.frozen.merge(target.data)
    z = jnp.zeros(target.dim, jnp.result_type(float))
    with handlers.block(), handlers.seed(rng_seed=0):
        trace = handlers.trace(handlers.substitute(density.model, _latent(target, z))).get_trace(*args, **kwargs)
    return {k: np.asarray(s["value"]) for k, s in trace.items() if s["type"] == "sample" and s["is_observed"]}


def _replicate_one(target: Target, z: Array, key: Array) -> dict[str, Array]:
    """Draws of every observed site given θ(z), at the target's own data."""
    from numpyro import handlers

    density = target.density
    args, kwargs = density.frozen.merge(target.data)
    with handlers.block():
        model = handlers.seed(handlers.substitute(density.model, _latent(target, z)), key)
        trace = handlers.trace(model).get_trace(*args, **kwargs)
    observed = [k for k, s in trace.items() if s["type"] == "sample" and s["is_observed"]]
    keys = jax.random.split(key, len(observed) + 1)[1:]
    return {k: trace[k]["fn"].sample(sub) for k, sub in zip(observed, keys, strict=True)}


@jax.jit
def _replicates(target: Target, z: Array, key: Array) -> dict[str, Array]:
    keys = jax.random.split(key, z.shape[0])
    return jax.vmap(lambda one, k: _replicate_one(target, one, k))(z, keys)


def posterior_predictive(
    fit: Any,
    *args: Any,
    n: int = 1000,
    key: Array | int = 0,
    simulator: Callable | None = None,
    **kwargs: Any,
) -> dict[str, np.ndarray]:
    """Draws ỹ ~ p(ỹ | θ), θ ~ q: ``{site: (n, *shape)}``.

    NumPyro model: with ``args``/``kwargs`` (the model's arguments: new covariates, the observed site's argument
    ``None``) through ``numpyro.infer.Predictive`` (every sample site that is not a latent of the fit, and the
    deterministic sites); without them, replicates of the observed sites at the fit's own data. Other targets:
    ``simulator(params, key)`` (``params`` the constrained parameters of one draw) vectorised over the draws."""
    if fit.target is None:
        raise VBayesError("posterior predictive draws need a fit with a target (a log density or a model)")
    require([("n", n, is_count(n), "an integer ≥ 1")], "predict")
    k_draw, k_pred = jax.random.split(as_key(key))
    z = jnp.asarray(fit.draws_unconstrained(int(n), k_draw))
    return predict_at(fit.target, z, k_pred, args, kwargs, simulator)


def predict_at(
    target: Target,
    z: Array,
    key: Array,
    args: tuple = (),
    kwargs: dict | None = None,
    simulator: Callable | None = None,
) -> dict[str, np.ndarray]:
    """:func:`posterior_predictive` at given draws ``z`` ``(S, d)``: ``{site: (S, *shape)}``."""
    if simulator is not None:
        return _simulate(target, z, key, simulator)
    if not isinstance(target.density, NumPyroDensity):
        raise VBayesError(
            f"target {target.name!r} is not a NumPyro model: pass simulator=fn(params, key) -> {{name: draws}} "
            "to draw predictions from it"
        )
    if not args and not kwargs:
        return {k: np.asarray(v) for k, v in jax.device_get(_replicates(target, z, key)).items()}
    from numpyro.infer import Predictive

    latent = jax.vmap(lambda one: _latent(target, one))(z)
    try:
        out = Predictive(target.density.model, posterior_samples=latent)(key, *args, **(kwargs or {}))
    except Exception as e:  # noqa: BLE001 - the user's model on the user's new arguments: name both
        given = [type(a).__name__ + str(list(np.shape(a))) for a in args] + [f"{k}=..." for k in kwargs or {}]
        raise VBayesError(
            f"the model could not be run with the arguments given for prediction ({', '.join(given)}): "
            f"{type(e).__name__}: {e}"
        ) from e
    return {k: np.asarray(v) for k, v in out.items()}


def _simulate(target: Target, z: Array, key: Array, simulator: Callable) -> dict[str, np.ndarray]:
    params = jax.vmap(lambda one: _latent(target, one))(z)
    keys = jax.random.split(key, z.shape[0])
    try:
        out = jax.vmap(simulator)(params, keys)
    except Exception as e:  # noqa: BLE001 - the simulator is the user's: say what it must be
        raise VBayesError(
            f"the simulator failed on the fit's draws ({type(e).__name__}: {e}); it must be a JAX function "
            "simulator(params, key) -> {name: array} of one draw's parameters"
        ) from e
    if not isinstance(out, dict):
        out = {"y": out}
    return {k: np.asarray(v) for k, v in out.items()}
