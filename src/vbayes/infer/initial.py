"""Where ADVI starts: a Gaussian at the mode of log p̃ with the Laplace scale there, unless that is worse than
a narrow Gaussian at z = 0 (on funnels the mode search runs off towards a degenerate neck, and a q started
there never leaves it)."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.compilation import QUICK
from vbayes.errors import VBayesError
from vbayes.families import FAMILIES, Family, FullRankGaussian, LowRankGaussian, PointMass
from vbayes.infer.optimize import STATUS, ModeResult, find_map_program
from vbayes.objectives import elbo
from vbayes.stored import stored
from vbayes.targets import Target, raise_if_not_finite

Array = jax.Array


class _Start(NamedTuple):
    """Everything :func:`initial_q` decides from, computed by one compiled program: log p̃ and its gradient at
    z = 0, the q at z = 0, the mode search, the q at the mode and how it was made (index into :data:`_HOW`),
    and both q's 64-draw ELBO estimates."""

    value0: Array
    grad0: Array
    zero: Family
    mode: ModeResult | None
    candidate: Family | None
    how: Array | None
    elbo_candidate: Array | None
    elbo_zero: Array | None


_HOW = ("mode", "mode+laplace", "mode+laplace-diagonal")


@functools.partial(stored, name="initial._start", static_argnums=(2, 3, 4), options=QUICK)
@functools.partial(jax.jit, static_argnums=(2, 3, 4), compiler_options=QUICK)
def _start(target: Target, key: Array, family: str, rank: int, search: bool) -> _Start:
    """The candidates of :func:`initial_q` in one program (a first fit compiles it once, not dozens of small
    eager operations)."""
    cls = FAMILIES[family]
    d = target.dim
    z0 = jnp.zeros(d, jnp.result_type(float))
    value0, grad0 = jax.value_and_grad(target.log_density)(z0)
    zero = make_q(cls, z0, jnp.full(d, 0.1, z0.dtype), rank, key)
    if not search:
        return _Start(value0, grad0, zero, None, None, None, None, None)
    mode = find_map_program(target, z0, None, 1000, 1e-6, 100)
    candidate, how = _laplace_q(target, cls, mode.z, rank, key)
    elbo_key = jax.random.PRNGKey(17)
    return _Start(
        value0, grad0, zero, mode, candidate, how, _elbo64(target, candidate, elbo_key), _elbo64(target, zero, elbo_key)
    )


def initial_q(target: Target, family: str, rank: int, init: Any, key: Array) -> tuple[Family, dict]:
    """q at the start: a given family instance, or (``init="mode"``) the better, by a 64-draw ELBO estimate,
    of a Gaussian at the mode of log p̃ with the Laplace scale and a Gaussian at z = 0 with scale 0.1, or
    only the latter (``init="zero"``). ``note["init_evals"]`` counts the gradient evaluations spent (mode
    search, plus d for the Hessian's columns)."""
    if not isinstance(init, str):
        return init, {"init": "given", "init_evals": 0}
    if init not in ("mode", "zero", "pathfinder"):
        raise VBayesError(f"init must be 'mode', 'zero', 'pathfinder', a family instance or a Fit, got {init!r}")
    if init == "pathfinder":
        return _pathfinder_q(target, FAMILIES[family], rank, key)
    start = _start(target, key, family, rank, init == "mode")
    value0, grad0 = jax.device_get((start.value0, start.grad0))
    raise_if_not_finite(target, np.zeros(target.dim, grad0.dtype), value0, grad0)
    note = {"init": "zero", "init_evals": 0}
    if init == "zero":
        return start.zero, note
    mode, how, elbo_candidate, elbo_zero = jax.device_get(
        (start.mode._replace(trace=None), start.how, start.elbo_candidate, start.elbo_zero)
    )
    note["init_evals"] = int(mode.evaluations)
    status = STATUS[int(mode.status)]
    if status == "failed" or not np.isfinite(mode.value) or mode.value < value0:
        note["init"] = f"zero (mode search: {status}, max|grad| {np.max(np.abs(mode.grad)):.2g})"
        return start.zero, note
    how = _HOW[int(how)]
    note["init_evals"] += target.dim if how != "mode" else 0
    if elbo_candidate >= elbo_zero:
        note["init"] = how
        return start.candidate, note
    note["init"] = f"zero (a q at the mode ({status}) has a lower ELBO)"
    return start.zero, note


PATHFINDER_START = {"max_iter": 1000, "history": 10, "num_elbo_draws": 25}
"""The single Pathfinder path that ``init="pathfinder"`` runs (:func:`vbayes.pathfinder`'s defaults)."""


def _pathfinder_q(target: Target, cls: type, rank: int, key: Array) -> tuple[Family, dict]:
    """q in family ``cls`` from one Pathfinder path from z = 0 (:mod:`vbayes.infer.pathfinder`): its mean, and its
    covariance (full rank; diagonal when not positive definite), its marginal sds (the other families); the
    Gaussian at z = 0 with scale 0.1 when the path found no q with a finite ELBO."""
    from vbayes.infer.pathfinder import path_cost, single_path

    start = PATHFINDER_START
    found = single_path(target, key, start["max_iter"], start["history"], start["num_elbo_draws"])
    elbo, best, iterations = (float(x) for x in jax.device_get((found.elbo, found.best, found.iterations)))
    evals = sum(path_cost(int(iterations), start["num_elbo_draws"]))
    z0 = jnp.zeros(target.dim, jnp.result_type(float))
    if not np.isfinite(elbo):
        return make_q(cls, z0, jnp.full(target.dim, 0.1, z0.dtype), rank, key), {
            "init": "zero (no Pathfinder iterate had a finite ELBO)",
            "init_evals": evals,
        }
    q = _pathfinder_to(cls, found.q, rank, key)
    note = f"pathfinder (iterate {int(best)} of {int(iterations)}, ELBO {elbo:.4g})"
    return q, {"init": note, "init_evals": evals}


@functools.partial(jax.jit, static_argnums=(0, 2), compiler_options=QUICK)
def _pathfinder_to(cls: type, q: Any, rank: int, key: Array) -> Family:
    """Pathfinder's Gaussian as a member of family ``cls``."""
    sd = q.marginal_sd()
    diagonal = make_q(cls, q.mean, sd, rank, key)
    if cls is not FullRankGaussian:
        return diagonal
    full = FullRankGaussian.from_covariance(q.mean, 0.5 * (q.covariance() + q.covariance().T))
    ok = jnp.all(jnp.isfinite(full.raw_tril))
    return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), full, diagonal)


def make_q(cls: type, loc: Array, scale: Array, rank: int, key: Array) -> Family:
    """A member of family ``cls`` with mean ``loc`` and diagonal scale ``scale`` (a random low-rank factor)."""
    if cls is PointMass:
        return PointMass.init(loc)
    if cls is LowRankGaussian:
        return LowRankGaussian.init(loc, scale, rank, key)
    return cls.init(loc, scale)


def _laplace_q(target: Target, cls: type, z: Array, rank: int, key: Array) -> tuple[Family, Array]:
    """q at the mode ``z`` (traced) and how it was made (index into :data:`_HOW`): Cholesky of the inverse
    Hessian (full rank, when finite), 1/√H_ii (others), scale 0.1 where the curvature is not usable (not positive,
    or d > 2000 for the diagonal families)."""
    d = z.shape[0]
    if cls is not FullRankGaussian and d > 2000:
        return make_q(cls, z, jnp.full(d, 0.1, z.dtype), rank, key), jnp.asarray(0)
    h = -jax.hessian(target.log_density)(z)
    diag = jnp.diag(h)
    good = jnp.isfinite(diag) & (diag > 0)
    scale = jnp.where(good, 1.0 / jnp.sqrt(jnp.where(good, diag, 1.0)), 0.1)
    diagonal = make_q(cls, z, scale, rank, key)
    if cls is not FullRankGaussian:
        return diagonal, jnp.asarray(2)
    chol = jnp.linalg.cholesky(jnp.linalg.inv(0.5 * (h + h.T)))
    ok = jnp.all(jnp.isfinite(chol))
    full = FullRankGaussian.from_covariance(z, jnp.where(ok, chol @ chol.T, jnp.eye(d, dtype=z.dtype)))
    pick = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), full, diagonal)
    return pick, jnp.where(ok, 1, 2)


def _elbo64(target: Target, q: Family, key: Array) -> Array:
    """ELBO estimate from 64 draws (−inf if not finite)."""
    value = elbo(target, q, key, 64)
    return jnp.where(jnp.isfinite(value), value, -jnp.inf)
