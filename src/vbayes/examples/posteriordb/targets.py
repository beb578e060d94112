"""posteriordb, the targets: :data:`POSTERIORS`, the builders from ``data.json`` to a
:class:`~vbayes.targets.Target` (derived data computed once), and the maps between reference columns and the
target's z (:func:`to_unconstrained`, :func:`to_reference_columns`)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.errors import VBayesError
from vbayes.examples.posteriordb.loader import load_data
from vbayes.examples.posteriordb.models import (
    ark_log_density,
    blr_log_density,
    diamonds_log_density,
    eight_schools_centered_log_density,
    eight_schools_noncentered_log_density,
    gauss_mix_log_density,
    kidiq_log_density,
    kilpisjarvi_log_density,
    nes_design,
    one_comp_log_density,
    regression_flat_log_density,
)
from vbayes.targets import Target, from_logdensity

Array = jax.Array

POSTERIORS: tuple[str, ...] = (
    "eight_schools-eight_schools_noncentered",
    "eight_schools-eight_schools_centered",
    "kidiq-kidscore_momiq",
    "kilpisjarvi_mod-kilpisjarvi",
    "nes2000-nes",
    "sblri-blr",
    "sblrc-blr",
    "arK-arK",
    "diamonds-diamonds",
    "low_dim_gauss_mix-low_dim_gauss_mix",
    "one_comp_mm_elim_abs-one_comp_mm_elim_abs",
)
"""The 11 posteriors, in the order of ``MODELS.md``."""


# ----------------------------------------------------------------------------------------------
# builders: data.json dict -> Target (derived data computed here, once)


def _eight_schools_data(d: dict) -> dict:
    return {"y": d["y"], "sigma": d["sigma"]}


def _build_eight_schools_noncentered(d: dict, name: str) -> Target:
    """z = (θ̃₁..θ̃₈, μ, log τ)."""
    J = int(d["J"])
    example = {"theta_tilde": np.zeros(J), "mu": 0.0, "tau": 1.0}
    return from_logdensity(
        eight_schools_noncentered_log_density, example, {"tau": "positive"}, data=_eight_schools_data(d), name=name
    )


def _build_eight_schools_centered(d: dict, name: str) -> Target:
    """z = (θ₁..θ₈, μ, log τ)."""
    J = int(d["J"])
    example = {"theta": np.zeros(J), "mu": 0.0, "tau": 1.0}
    return from_logdensity(
        eight_schools_centered_log_density, example, {"tau": "positive"}, data=_eight_schools_data(d), name=name
    )


def _build_kidiq(d: dict, name: str) -> Target:
    """z = (β₁, β₂, log σ); ``mom_hs`` and the ``*_new`` prediction inputs are unused."""
    data = {"kid_score": d["kid_score"], "mom_iq": d["mom_iq"]}
    example = {"beta": np.zeros(2), "sigma": 1.0}
    return from_logdensity(kidiq_log_density, example, {"sigma": "positive"}, data=data, name=name)


def _build_kilpisjarvi(d: dict, name: str) -> Target:
    """z = (α, β, log σ); prior hyperparameters from the data; ``xpred`` unused."""
    data = {"x": d["x"], "y": d["y"]} | {k: float(d[k]) for k in ("pmualpha", "psalpha", "pmubeta", "psbeta")}
    example = {"alpha": 0.0, "beta": 0.0, "sigma": 1.0}
    return from_logdensity(kilpisjarvi_log_density, example, {"sigma": "positive"}, data=data, name=name)


def _build_nes(d: dict, name: str) -> Target:
    """z = (β₁..β₉, log σ); ``year`` unused."""
    data = {"X": nes_design(d), "y": d["partyid7"]}
    example = {"beta": np.zeros(9), "sigma": 1.0}
    return from_logdensity(regression_flat_log_density, example, {"sigma": "positive"}, data=data, name=name)


def _build_blr(d: dict, name: str) -> Target:
    """z = (β₁..β_D, log σ)."""
    data = {"X": d["X"], "y": d["y"]}
    example = {"beta": np.zeros(int(d["D"])), "sigma": 1.0}
    return from_logdensity(blr_log_density, example, {"sigma": "positive"}, data=data, name=name)


def _build_ark(d: dict, name: str) -> Target:
    """z = (α, β₁..β_K, log σ); the first K observations enter only as lags."""
    K, T, y = int(d["K"]), int(d["T"]), d["y"]
    lags = np.stack([y[K - k : T - k] for k in range(1, K + 1)], axis=1)
    example = {"alpha": 0.0, "beta": np.zeros(K), "sigma": 1.0}
    data = {"lags": lags, "y": y[K:]}
    return from_logdensity(ark_log_density, example, {"sigma": "positive"}, data=data, name=name)


def _build_diamonds(d: dict, name: str) -> Target:
    """z = (b₁..b₂₄, a, log σ); X̃ = X[:, 1:] minus its column means (column 1 of X, all ones, dropped);
    the data leaves are the sufficient statistics X̃ᵀX̃ (24, 24), X̃ᵀY_c (24,), Y_cᵀY_c, Ȳ (see the density)."""
    X, Y = d["X"][:, 1:], d["Y"]
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean()
    data = {"xtx": Xc.T @ Xc, "xty": Xc.T @ Yc, "yty": float(Yc @ Yc), "ybar": float(Y.mean()), "N": int(Y.size)}
    data["prior_only"] = int(d["prior_only"])
    example = {"b": np.zeros(X.shape[1]), "Intercept": 0.0, "sigma": 1.0}
    return from_logdensity(diamonds_log_density, example, {"sigma": "positive"}, data=data, name=name)


def _build_gauss_mix(d: dict, name: str) -> Target:
    """z = (μ₁, log(μ₂ − μ₁), log σ₁, log σ₂, logit θ)."""
    example = {"mu": np.array([-1.0, 1.0]), "sigma": np.ones(2), "theta": 0.5}
    constraints = {"mu": "ordered", "sigma": "positive", "theta": "unit_interval"}
    return from_logdensity(gauss_mix_log_density, example, constraints, data={"y": d["y"]}, name=name)


def _build_one_comp(d: dict, name: str) -> Target:
    """z = (log k_a, log K_m, log V_m, log σ)."""
    data = {"times": d["times"], "C_hat": d["C_hat"], "D": float(d["D"]), "V": float(d["V"]), "t0": float(d["t0"])}
    example = {"k_a": 1.0, "K_m": 1.0, "V_m": 1.0, "sigma": 1.0}
    constraints = dict.fromkeys(example, "positive")
    return from_logdensity(one_comp_log_density, example, constraints, data=data, name=name)


# ----------------------------------------------------------------------------------------------
# reference columns <-> z (numpy in, numpy out; jax in, jax out; any leading shape)


def _xp(x: Any):
    return jnp if isinstance(x, jax.Array) else np


def _as_float(x: Any):
    return x if isinstance(x, jax.Array) else np.asarray(x, dtype=np.float64)


def _log_tail_to_z(cols: Array, first: int) -> Array:
    """Columns ``[first:]`` are positive: z = (c[:first], log c[first:])."""
    xp = _xp(cols)
    return xp.concatenate([cols[..., :first], xp.log(cols[..., first:])], axis=-1)


def _log_tail_from_z(z: Array, first: int) -> Array:
    """Inverse of :func:`_log_tail_to_z`: (z[:first], exp z[first:])."""
    xp = _xp(z)
    return xp.concatenate([z[..., :first], xp.exp(z[..., first:])], axis=-1)


def _eight_schools_nc_to_z(cols: Array) -> Array:
    """(θ₁..θ₈, μ, τ) → (θ̃ = (θ − μ)/τ, μ, log τ)."""
    xp = _xp(cols)
    theta, mu, tau = cols[..., :-2], cols[..., -2:-1], cols[..., -1:]
    return xp.concatenate([(theta - mu) / tau, mu, xp.log(tau)], axis=-1)


def _eight_schools_nc_from_z(z: Array) -> Array:
    """(θ̃, μ, log τ) → (θ = μ + τθ̃, μ, τ)."""
    xp = _xp(z)
    tt, mu, tau = z[..., :-2], z[..., -2:-1], xp.exp(z[..., -1:])
    return xp.concatenate([mu + tau * tt, mu, tau], axis=-1)


def _gauss_mix_to_z(cols: Array) -> Array:
    """(μ₁, μ₂, σ₁, σ₂, θ) → (μ₁, log(μ₂ − μ₁), log σ₁, log σ₂, log θ − log(1 − θ))."""
    xp = _xp(cols)
    mu1, mu2, sig, th = cols[..., :1], cols[..., 1:2], cols[..., 2:4], cols[..., 4:5]
    return xp.concatenate([mu1, xp.log(mu2 - mu1), xp.log(sig), xp.log(th) - xp.log1p(-th)], axis=-1)


def _gauss_mix_from_z(z: Array) -> Array:
    """(u₁..u₅) → (u₁, u₁ + e^{u₂}, e^{u₃}, e^{u₄}, logistic(u₅))."""
    xp = _xp(z)
    mu1 = z[..., :1]
    return xp.concatenate([mu1, mu1 + xp.exp(z[..., 1:2]), xp.exp(z[..., 2:4]), 1.0 / (1.0 + xp.exp(-z[..., 4:5]))], -1)


class _Posterior(NamedTuple):
    build: Callable[[dict, str], Target]
    density: Callable  # the module-level log density: identifies a target built here
    to_z: Callable[[Array], Array]
    from_z: Callable[[Array], Array]
    n_columns: int


def _logs_from(first: int) -> tuple[Callable, Callable]:
    """(to_z, from_z) for reference columns that are z but for ``exp`` on columns ``first`` onwards."""
    return partial(_log_tail_to_z, first=first), partial(_log_tail_from_z, first=first)


_SPECS: dict[str, _Posterior] = dict(
    zip(
        POSTERIORS,
        [
            _Posterior(
                _build_eight_schools_noncentered,
                eight_schools_noncentered_log_density,
                _eight_schools_nc_to_z,
                _eight_schools_nc_from_z,
                10,
            ),
            _Posterior(_build_eight_schools_centered, eight_schools_centered_log_density, *_logs_from(9), 10),
            _Posterior(_build_kidiq, kidiq_log_density, *_logs_from(2), 3),
            _Posterior(_build_kilpisjarvi, kilpisjarvi_log_density, *_logs_from(2), 3),
            _Posterior(_build_nes, regression_flat_log_density, *_logs_from(9), 10),
            _Posterior(_build_blr, blr_log_density, *_logs_from(5), 6),
            _Posterior(_build_blr, blr_log_density, *_logs_from(5), 6),
            _Posterior(_build_ark, ark_log_density, *_logs_from(6), 7),
            _Posterior(_build_diamonds, diamonds_log_density, *_logs_from(25), 26),
            _Posterior(_build_gauss_mix, gauss_mix_log_density, _gauss_mix_to_z, _gauss_mix_from_z, 5),
            _Posterior(_build_one_comp, one_comp_log_density, *_logs_from(0), 4),
        ],
        strict=True,
    )
)


def _spec(name: str) -> _Posterior:
    spec = _SPECS.get(name)
    if spec is None:
        close = difflib.get_close_matches(str(name), POSTERIORS, n=2)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise VBayesError(
            f"no vbayes model for the posteriordb posterior {name!r}; {hint}the {len(POSTERIORS)} implemented "
            f"(vbayes.examples.posteriordb.POSTERIORS): {', '.join(POSTERIORS)}"
        )
    return spec


def _spec_of(target: Target | str) -> _Posterior:
    """The posterior of a name, or of a target by its name, else by its density function."""
    if isinstance(target, str):
        return _spec(target)
    if target.name in _SPECS:
        return _SPECS[target.name]
    fn = getattr(target.density, "fn", None)
    for spec in _SPECS.values():
        if spec.density is fn:
            return spec
    raise VBayesError(f"target {target.name!r} is not one of the posteriordb targets ({', '.join(POSTERIORS)})")


def posteriordb_target(name: str, root: str | os.PathLike | None = None) -> Target:
    """The posterior ``name`` as a Target on the unconstrained z of ``MODELS.md`` (reads only its data, from a folder
    in either layout: see :func:`~vbayes.examples.posteriordb.load_data`). Only the :data:`POSTERIORS` have a model
    here; any other name raises :class:`VBayesError` listing them, before any file is read.

    Dimensions: 10, 10, 3, 3, 10, 6, 6, 7, 26, 5, 4 in the order of :data:`POSTERIORS`. Needs float64
    (``jax_enable_x64``): kilpisjarvi's posterior covariance has condition number ≈ 7e11."""
    spec = _spec(name)
    return spec.build(load_data(name, root), name)


def to_unconstrained(target: Target | str, draws: Any) -> Any:
    """Reference columns ``(..., n_columns)`` (constrained, ``MODELS.md`` order) → the target's z ``(..., d)``.

    NumPy in, float64 NumPy out; a JAX array in, a JAX array out (usable under ``jit``)."""
    spec = _spec_of(target)
    draws = _as_float(draws)
    if draws.shape[-1:] != (spec.n_columns,):
        raise VBayesError(f"expected draws with {spec.n_columns} columns (last axis), got shape {draws.shape}")
    if isinstance(draws, jax.Array):
        return spec.to_z(draws)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = spec.to_z(draws)
    if not np.all(np.isfinite(z)):
        bad = int((~np.isfinite(z)).any(axis=-1).sum())
        raise VBayesError(f"{bad} draw(s) lie outside the support (a scale ≤ 0, θ ∉ (0, 1) or μ₁ ≥ μ₂)")
    return z


def to_reference_columns(target: Target | str, z: Any) -> Any:
    """The target's z ``(..., d)`` → reference columns ``(..., n_columns)``, e.g. θ = μ + τθ̃ for non-centred
    eight schools. NumPy in, NumPy out; a JAX array in, a JAX array out."""
    spec = _spec_of(target)
    z = _as_float(z)
    d = spec.n_columns  # every posterior here has as many columns as unconstrained coordinates
    if z.shape[-1:] != (d,):
        raise VBayesError(f"expected z with {d} coordinates (last axis), got shape {z.shape}")
    return spec.from_z(z)
