"""Which method to trust for this model? Run several on one target, check each with its own diagnostics,
measure each against a reference, and recommend the cheapest one whose diagnostics pass.

A VI answer is *flagged* when any of its own checks fails (none of them needs the reference):

* the optimiser did not converge;
* PSIS k̂ of p̃/q is at or above min(1 − 1/log10 S, 0.7);
* two restarts from different seeds disagree (means more than 0.1 sd apart, or sds more than 10%);
* importance reweighting from a *widened* q (every draw pushed 1.5× further from q's mean) moves the
  mean by more than 0.2 sd of q or the sd by more than 15%: q has missed mass that a broader proposal
  finds. This catches what k̂ alone misses when q sits inside a funnel (the centred eight schools).

NUTS (target_accept 0.95: a careful reference) is flagged on divergences or R-hat ≥ 1.01. The
recommendation is the unflagged VI method with the fewest gradient evaluations, else NUTS, else (NUTS
flagged too) ``"none"`` with what to do next.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from vbayes.diagnostics import DrawComparison, compare_draws
from vbayes.errors import VBayesError
from vbayes.families import Empirical
from vbayes.fit import Fit, as_key
from vbayes.psis import importance_check, psis
from vbayes.targets import Target

Array = jax.Array

DEFAULT_METHODS = ("advi-meanfield", "advi-fullrank", "advi-lowrank", "laplace", "nuts")
WIDEN = 1.5
NUM_DRAWS = 4000


def _runners() -> dict[str, Callable[[Target, Array], Fit]]:
    from vbayes.infer.advi import advi
    from vbayes.infer.laplace import laplace
    from vbayes.infer.nuts import nuts

    def run_advi(family: str) -> Callable[[Target, Array], Fit]:
        return lambda target, key: advi(target, family, key=key, progress=False)

    return {
        "advi-meanfield": run_advi("meanfield"),
        "advi-fullrank": run_advi("fullrank"),
        "advi-lowrank": run_advi("lowrank"),
        "laplace": lambda target, key: laplace(target, key=key),
        "nuts": lambda target, key: nuts(target, target_accept=0.95, key=key),
    }


class MethodResult(NamedTuple):
    """One method's fit, the flags its own diagnostics raised, and (with a reference) its accuracy."""

    method: str
    fit: Fit
    flags: tuple[str, ...]
    accuracy: DrawComparison | None
    grad_evals: int
    wall_time: float

    @property
    def trusted(self) -> bool:
        return not self.flags


class Comparison(NamedTuple):
    """The methods side by side; ``recommended`` with the ``reason``; the reference's z-draws ``(S, d)``."""

    target: Target
    results: tuple[MethodResult, ...]
    reference: str
    recommended: str
    reason: str
    reference_draws: np.ndarray | None = None

    def table(self) -> pd.DataFrame:
        """One row per method: cost, ELBO, k̂, flags, and accuracy against the reference when there is one."""
        return pd.DataFrame(self.records()).set_index("method")

    def records(self) -> list[dict[str, Any]]:
        rows = []
        for r in self.results:
            imp = r.fit.info.importance
            row: dict[str, Any] = {
                "method": r.method,
                "wall_s": r.wall_time,
                "grad_evals": r.grad_evals,
                "elbo": r.fit.elbo if imp is not None else math.nan,
                "khat": imp.khat if imp is not None else math.nan,
                "outcome": r.fit.info.outcome,
                "trusted": r.trusted,
                "flags": "; ".join(r.flags),
            }
            if r.accuracy is not None:
                row.update(r.accuracy.as_dict())
                row["accurate"] = r.accuracy.accurate()
            rows.append(row)
        return rows


def widened_reweighting(fit: Fit, widen: float = WIDEN, num_draws: int = NUM_DRAWS, key: Array | int = 0):
    """(k̂, max mean shift in q-sd units, sd ratios ``(d,)``) from PSIS-reweighted draws of q widened by ``widen``.

    z = μ + widen·(u − μ), u ~ q, has density q(μ + (z − μ)/widen)·widen^{−d}; the weights p̃/q_wide give
    the posterior's moments as far as the wider proposal reaches.
    """
    q, target = fit.q, fit.target
    mean, sd = np.asarray(q.mean), np.asarray(q.marginal_sd())
    z, log_r = _widened_log_ratios(target, q, as_key(key), num_draws, float(widen))
    khat, log_w = psis(np.asarray(log_r))
    if not np.isfinite(khat):
        return khat, math.inf, np.full(mean.shape, math.nan)
    w = np.exp(log_w)
    z = np.asarray(z)
    m = w @ z
    s = np.sqrt(w @ (z - m) ** 2)
    return khat, float(np.max(np.abs(m - mean) / sd)), s / sd


@functools.partial(jax.jit, static_argnums=(3, 4))
def _widened_log_ratios(target: Target, q: Any, key: Array, n: int, widen: float):
    u = q.sample(key, n)
    mu = q.mean
    z = mu + widen * (u - mu)
    log_q = q.log_prob(u) - mu.shape[-1] * jnp.log(widen)
    return z, jax.vmap(target.log_density)(z) - log_q


def self_check(fit: Fit, restart: Fit | None = None, key: Array | int = 0) -> tuple[str, ...]:
    """The flags a fit's own diagnostics raise (see the module docstring); empty when it passes."""
    flags = []
    info = fit.info
    if isinstance(fit.q, Empirical):
        if info.extra.get("divergences", 0):
            flags.append(f"{info.extra['divergences']} divergent transitions")
        if info.extra.get("max_rhat", 1.0) >= 1.01:
            flags.append(f"R-hat {info.extra['max_rhat']:.3f} ≥ 1.01")
        return tuple(flags)
    if info.outcome != "converged":
        flags.append(f"{info.outcome}: {info.message}")
    imp = info.importance
    if imp is not None and not imp.reliable:
        flags.append(f"k̂ = {imp.khat:.2f} ≥ {imp.khat_threshold:.2f}")
    if restart is not None:
        sd = np.asarray(fit.q.marginal_sd())
        shift = np.max(np.abs(np.asarray(fit.q.mean) - np.asarray(restart.q.mean)) / sd)
        ratio = np.max(np.abs(np.log(np.asarray(restart.q.marginal_sd()) / sd)))
        if shift > 0.1 or ratio > math.log(1.1):
            flags.append(f"restarts disagree (means {shift:.2f} sd apart, sds {math.exp(ratio) - 1:.0%} apart)")
    khat, shift, ratios = widened_reweighting(fit, key=key)
    if khat < 0.7 and (shift > 0.2 or np.any(ratios < 1 / 1.15) or np.any(ratios > 1.15)):
        flags.append(
            f"reweighting from a {WIDEN}× wider q moves the mean by {shift:.2f} sd and the sds by a factor "
            f"{ratios.min():.2f}–{ratios.max():.2f}: q misses part of the posterior"
        )
    return tuple(flags)


def _reference_draws(reference: Any, target: Target, results: dict[str, MethodResult], key: Array):
    """(name, z-draws ``(S, d)`` or None) for ``reference``: ``"nuts"``, ``"posteriordb"``, an array, or None."""
    if reference is None:
        return "none", None
    if isinstance(reference, str) and reference == "nuts":
        fit = results["nuts"].fit if "nuts" in results else _runners()["nuts"](target, key)
        return "nuts", np.asarray(fit.q.flat)
    if isinstance(reference, str) and reference == "posteriordb":
        from vbayes.examples.posteriordb import POSTERIORS, load_reference, to_unconstrained

        if target.name not in POSTERIORS:
            raise VBayesError(
                f"reference='posteriordb' needs one of the shared posteriors (posteriordb:NAME), not {target.name!r}"
            )
        return "posteriordb", np.asarray(to_unconstrained(target.name, load_reference(target.name).pooled))
    draws = np.asarray(reference, dtype=np.float64)
    if draws.ndim != 2 or draws.shape[1] != target.dim:
        raise VBayesError(f"reference draws must have shape (S, {target.dim}) in the target's z, got {draws.shape}")
    return "given draws", draws


def compare(
    target: Target,
    methods: Sequence[str] = DEFAULT_METHODS,
    reference: Any = "nuts",
    *,
    restarts: bool = True,
    key: Array | int | None = 0,
    log: Callable[[str], None] | None = None,
) -> Comparison:
    """Run ``methods`` on ``target``, flag each by its own diagnostics, measure each against ``reference``
    (``"nuts"``, ``"posteriordb"`` for a shared posterior, draws ``(S, d)`` in z, or None), and recommend one.

    ``restarts``: fit each ADVI method twice (different seeds) and flag disagreement. Accuracy is measured in
    the unconstrained space z, on ``NUM_DRAWS`` draws of each q (all draws for NUTS).
    """
    runners = _runners()
    unknown = [m for m in methods if m not in runners]
    if unknown:
        raise VBayesError(f"unknown method(s) {unknown}; available: {', '.join(runners)}")
    if not methods:
        raise VBayesError("give at least one method")
    key = as_key(key)
    if not (reference is None or isinstance(reference, str) and reference == "nuts"):
        _reference_draws(reference, target, {}, key)  # fail on a bad reference before the fits, not after
    results: dict[str, MethodResult] = {}
    names = target.coordinate_names()
    for i, method in enumerate(methods):
        k = jax.random.fold_in(key, i)
        if log:
            log(f"running {method}")
        t0 = time.perf_counter()
        fit = runners[method](target, k)
        if fit.info.importance is None and not isinstance(fit.q, Empirical):
            check = importance_check(target, fit.q, NUM_DRAWS, k)
            fit = dataclasses.replace(fit, info=dataclasses.replace(fit.info, importance=check))
        restart = None
        cost = fit.info.grad_evals
        if restarts and method.startswith("advi-"):
            restart = runners[method](target, jax.random.fold_in(k, 1))
            cost += restart.info.grad_evals
        wall = time.perf_counter() - t0
        flags = self_check(fit, restart, key=k)
        results[method] = MethodResult(method, fit, flags, None, cost, wall)
    ref_name, ref = _reference_draws(reference, target, results, key)
    if ref is not None:
        for method, r in results.items():
            if ref_name == "nuts" and method == "nuts":
                continue
            z = (
                np.asarray(r.fit.q.flat)
                if isinstance(r.fit.q, Empirical)
                else np.asarray(r.fit.draws_unconstrained(NUM_DRAWS, jax.random.fold_in(key, 99)))
            )
            results[method] = r._replace(accuracy=compare_draws(z, ref, names))
    recommended, reason = _recommend(list(results.values()))
    return Comparison(target, tuple(results.values()), ref_name, recommended, reason, ref)


def _recommend(results: list[MethodResult]) -> tuple[str, str]:
    vi = [r for r in results if not isinstance(r.fit.q, Empirical)]
    passing = sorted((r for r in vi if r.trusted), key=lambda r: r.grad_evals)
    nuts = [r for r in results if isinstance(r.fit.q, Empirical)]
    if passing:
        best = passing[0]
        why = f"{best.method} passes its own checks (k̂ {best.fit.info.importance.khat:.2f}, converged"
        why += ", restarts agree" if best.method.startswith("advi-") else ""
        why += f") at the lowest cost of those that do ({best.grad_evals} gradient evaluations"
        if nuts:
            why += f"; NUTS took {nuts[0].grad_evals}"
        return best.method, why + ")"
    failed = "; ".join(f"{r.method}: {r.flags[0]}" for r in vi) or "no VI method was run"
    why = f"every VI method is flagged by its own diagnostics ({failed})"
    if nuts and nuts[0].flags:
        why += (
            f", and NUTS itself warns ({'; '.join(nuts[0].flags)}): no answer here can be trusted yet; "
            "reparameterise the model (e.g. non-centre it) or rerun NUTS longer with a higher target_accept"
        )
        return "none", why
    return "nuts", why
