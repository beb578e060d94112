"""posteriordb, per observation: the regression posteriors as :func:`~vbayes.from_loglik` targets, for LOO and
posterior predictive checks.

The same posterior as :func:`~vbayes.examples.posteriordb.posteriordb_target` (up to a constant: the normal
densities here are complete), with the same parameters, constraints and so the same z, but its log-likelihood
given row by row: log p(y_i | θ) = log N(y_i | x_iᵀβ, σ) for each observation i of ``MODELS.md``'s regressions.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from vbayes.errors import VBayesError
from vbayes.examples.posteriordb.loader import load_data
from vbayes.examples.posteriordb.models import nes_design
from vbayes.targets import Target, from_loglik

Array = jax.Array


def _kidiq(d: dict, name: str) -> Target:
    """kid_score_i ~ N(β₁ + β₂ mom_iq_i, σ); σ ~ half-Cauchy(0, 2.5) (its kernel), β flat."""
    rows = (np.asarray(d["kid_score"], np.float64), np.asarray(d["mom_iq"], np.float64))

    def log_lik(p: dict, r: tuple) -> Array:
        return jnp.sum(norm.logpdf(r[0], p["beta"][0] + p["beta"][1] * r[1], p["sigma"]))

    def log_prior(p: dict) -> Array:
        return -jnp.log1p(p["sigma"] ** 2 / 6.25)

    example = {"beta": np.zeros(2), "sigma": 1.0}
    return from_loglik(log_lik, example, {"sigma": "positive"}, data=rows, log_prior=log_prior, name=name)


def _kilpisjarvi(d: dict, name: str) -> Target:
    """y_i ~ N(α + β x_i, σ); α ~ N(pmualpha, psalpha), β ~ N(pmubeta, psbeta) (kernels), σ flat."""
    rows = (np.asarray(d["x"], np.float64), np.asarray(d["y"], np.float64))
    hyper = {k: float(d[k]) for k in ("pmualpha", "psalpha", "pmubeta", "psbeta")}

    def log_lik(p: dict, r: tuple) -> Array:
        return jnp.sum(norm.logpdf(r[1], p["alpha"] + p["beta"] * r[0], p["sigma"]))

    def log_prior(p: dict) -> Array:
        a = (p["alpha"] - hyper["pmualpha"]) / hyper["psalpha"]
        b = (p["beta"] - hyper["pmubeta"]) / hyper["psbeta"]
        return -0.5 * (a**2 + b**2)

    example = {"alpha": 0.0, "beta": 0.0, "sigma": 1.0}
    return from_loglik(log_lik, example, {"sigma": "positive"}, data=rows, log_prior=log_prior, name=name)


def _linear(X: np.ndarray, y: np.ndarray, name: str, prior_sd: float | None) -> Target:
    """y_i ~ N(x_iᵀβ, σ); β and σ flat (``prior_sd`` None) or N(0, prior_sd) each (σ's truncated at 0)."""

    def log_lik(p: dict, r: tuple) -> Array:
        return jnp.sum(norm.logpdf(r[1], r[0] @ p["beta"], p["sigma"]))

    def log_prior(p: dict) -> Array:
        return jnp.sum(norm.logpdf(p["beta"], 0.0, prior_sd)) + norm.logpdf(p["sigma"], 0.0, prior_sd)

    example = {"beta": np.zeros(X.shape[1]), "sigma": 1.0}
    rows = (np.asarray(X, np.float64), np.asarray(y, np.float64))
    prior = None if prior_sd is None else log_prior
    return from_loglik(log_lik, example, {"sigma": "positive"}, data=rows, log_prior=prior, name=name)


_BUILDERS = {
    "kidiq-kidscore_momiq": _kidiq,
    "kilpisjarvi_mod-kilpisjarvi": _kilpisjarvi,
    "nes2000-nes": lambda d, name: _linear(nes_design(d), d["partyid7"], name, None),
    "sblri-blr": lambda d, name: _linear(d["X"], d["y"], name, 10.0),
    "sblrc-blr": lambda d, name: _linear(d["X"], d["y"], name, 10.0),
}
OBSERVATION_POSTERIORS: tuple[str, ...] = tuple(_BUILDERS)
"""The posteriors with a row-by-row form."""


def observation_target(name: str, root: str | os.PathLike | None = None) -> Target:
    """The posterior ``name`` (one of :data:`OBSERVATION_POSTERIORS`) as a :func:`~vbayes.from_loglik` target on the
    same z as :func:`~vbayes.examples.posteriordb.posteriordb_target`."""
    if name not in _BUILDERS:
        raise VBayesError(f"{name!r} has no per-observation form here; these do: {', '.join(OBSERVATION_POSTERIORS)}")
    return _BUILDERS[name](load_data(name, root), name)
