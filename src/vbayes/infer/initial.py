"""Where ADVI starts: a Gaussian at the mode of log p̃ with the Laplace scale there, unless that is worse than
a narrow Gaussian at z = 0 (on funnels the mode search runs off towards a degenerate neck, and a q started
there never leaves it)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vbayes.errors import VBayesError
from vbayes.families import FAMILIES, Family, FullRankGaussian, LowRankGaussian, PointMass
from vbayes.infer.optimize import STATUS, find_map
from vbayes.objectives import elbo
from vbayes.targets import Target, check_initial_point

Array = jax.Array


@jax.jit
def _hessian(target: Target, z: Array) -> Array:
    return jax.hessian(target.log_density)(z)


def initial_q(target: Target, family: str, rank: int, init: Any, key: Array) -> tuple[Family, dict]:
    """q at the start: a given family instance, or (``init="mode"``) the better, by a 64-draw ELBO estimate,
    of a Gaussian at the mode of log p̃ with the Laplace scale and a Gaussian at z = 0 with scale 0.1, or
    only the latter (``init="zero"``). ``note["init_evals"]`` counts the gradient evaluations spent (mode
    search, plus d for the Hessian's columns)."""
    cls = FAMILIES[family]
    d = target.dim
    z0 = jnp.zeros(d, jnp.result_type(float))
    if not isinstance(init, str):
        return init, {"init": "given", "init_evals": 0}
    if init not in ("mode", "zero"):
        raise VBayesError(f"init must be 'mode', 'zero', a family instance or a Fit, got {init!r}")
    check_initial_point(target, z0)
    zero = make_q(cls, z0, jnp.full(d, 0.1), rank, key)
    note = {"init": "zero", "init_evals": 0}
    if init == "zero":
        return zero, note
    mode = find_map(target, z0, max_iter=1000, gtol=1e-6)
    note["init_evals"] = int(mode.evaluations)
    status = STATUS[int(mode.status)]
    if status == "failed" or not bool(jnp.isfinite(mode.value)) or float(mode.value) < float(target.log_density(z0)):
        note["init"] = f"zero (mode search: {status}, max|grad| {float(jnp.max(jnp.abs(mode.grad))):.2g})"
        return zero, note
    candidate, how = _laplace_q(target, cls, mode.z, rank, key)
    note["init_evals"] += d if how != "mode" else 0
    elbo_key = jax.random.PRNGKey(17)
    if float(_elbo64(target, candidate, elbo_key)) >= float(_elbo64(target, zero, elbo_key)):
        note["init"] = how
        return candidate, note
    note["init"] = f"zero (a q at the mode ({status}) has a lower ELBO)"
    return zero, note


def make_q(cls: type, loc: Array, scale: Array, rank: int, key: Array) -> Family:
    """A member of family ``cls`` with mean ``loc`` and diagonal scale ``scale`` (a random low-rank factor)."""
    if cls is PointMass:
        return PointMass.init(loc)
    if cls is LowRankGaussian:
        return LowRankGaussian.init(loc, scale, rank, key)
    return cls.init(loc, scale)


def _laplace_q(target: Target, cls: type, z: Array, rank: int, key: Array) -> tuple[Family, str]:
    """q at the mode ``z``: Cholesky of the inverse Hessian (full rank), 1/√H_ii (others), scale 0.1 where
    the curvature is not usable (not positive, or d > 2000 for the diagonal families)."""
    d = z.shape[0]
    if cls is not FullRankGaussian and d > 2000:
        return make_q(cls, z, jnp.full(d, 0.1), rank, key), "mode"
    h = -_hessian(target, z)
    if cls is FullRankGaussian:
        chol = jnp.linalg.cholesky(jnp.linalg.inv(0.5 * (h + h.T)))
        if bool(jnp.all(jnp.isfinite(chol))):
            return FullRankGaussian.from_covariance(z, chol @ chol.T), "mode+laplace"
    diag = jnp.diag(h)
    good = jnp.isfinite(diag) & (diag > 0)
    scale = jnp.where(good, 1.0 / jnp.sqrt(jnp.where(good, diag, 1.0)), 0.1)
    return make_q(cls, z, scale, rank, key), "mode+laplace-diagonal"


@jax.jit
def _elbo64(target: Target, q: Family, key: Array) -> Array:
    """ELBO estimate from 64 draws (−inf if not finite)."""
    value = elbo(target, q, key, 64)
    return jnp.where(jnp.isfinite(value), value, -jnp.inf)
