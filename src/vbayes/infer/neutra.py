"""NUTS in the space of a normalizing flow fitted by ADVI (NeuTra: Hoffman, Sountsov, Dillon, Langmore, Tran &
Vasudevan 2019): a reparameterisation learned from the target, for the geometry that no step size reaches.

A flow q = T_# N(0, I) fitted by ADVI straightens the posterior's curvature into the bijection T, even where q
itself is too narrow to be the answer (a funnel's neck). NUTS then samples the target pulled back through T,

    log p̃_T(u) = log p̃(T(u)) + log |det ∂T/∂u|,   u ∈ R^d,

which is close to N(0, I) wherever q fits, and its draws u map back to the posterior's, z = T(u). The answer is an
MCMC answer, exact in the limit whatever the flow: a poor flow costs efficiency (and shows in NUTS's own
diagnostics), not correctness. The verdict is NUTS's (:mod:`vbayes.checks`): divergent transitions of the run kept
(a few are rerun with a higher target acceptance, as :func:`vbayes.nuts` does) and R-hat of the draws z.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np

from vbayes.checks import resolve, verify
from vbayes.errors import VBayesError
from vbayes.fit import Fit
from vbayes.flows import FLOWS, Flow
from vbayes.infer.nuts import max_rhat_min_ess, nuts
from vbayes.keys import as_key
from vbayes.samples import Empirical
from vbayes.targets import Target
from vbayes.transport import pulled_back, push_forward

Array = jax.Array

FLOW_FAMILIES = ("flow", "maf")
"""The flows fitted, in turn, when none is given: the affine-coupling flow (cheaper to fit, and the better NUTS space
on the centred eight schools), then, when NUTS in its space is flagged, the masked autoregressive flow (the better
one on Neal's funnel). Their record over seeds: ``benchmarks/RESULTS.md``."""
TARGET_ACCEPT = 0.95
"""NUTS's first target acceptance in the flow's space: the method is for geometry that defeated NUTS at 0.8 (its
record over seeds: ``benchmarks/RESULTS.md``)."""
RERUNS = 2
"""Reruns of the NUTS run in the flow's space (a target acceptance raised twice: 0.95 → 0.975 → 0.9875)."""


def neutra(
    target: Target,
    flow: Fit | None = None,
    chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    *,
    target_accept: float = TARGET_ACCEPT,
    reruns: int = RERUNS,
    key: Array | int | None = 0,
    checks: Any = "default",
    progress: bool = False,
    **advi_options: Any,
) -> Fit:
    """NUTS (:func:`vbayes.nuts`, with its settings and reruns, from target_accept :data:`TARGET_ACCEPT`) on
    ``target`` pulled back through the bijection T of a flow's q, its draws u mapped back to z = T(u): a
    :class:`Fit` whose q is an :class:`~vbayes.samples.Empirical` ``(chains, num_samples, d)`` of z.

    ``flow``: an ADVI fit of ``target`` in a flow family (``advi-flow``, ``advi-maf``), used as it is; or None:
    ADVI (with ``advi_options``) in each of :data:`FLOW_FAMILIES` in turn, the next only when NUTS in the space of
    the last is flagged (and checks are on); the fit kept is the first trusted one, else the last, and
    ``info.extra["flow_choice"]`` says which flows ran and why. Every flow's gradient evaluations count in
    ``grad_evals`` and its wall time in ``wall_time``, with NUTS's (each of whose gradients also passes through T).
    ``info.extra``: NUTS's (divergences, reruns, step sizes, ...), ``max_rhat`` and ``min_ess_bulk`` of z, and
    ``flow`` (the flow's method, outcome and cost). ``checks``: NUTS's (divergences, R-hat), ``"none"`` to skip.
    A flow whose fit diverged still defines a bijection (MCMC in its space is still exact in the limit; its
    diagnostics say how well it mixed); a pulled-back density that is not finite at the chains' starts is a
    :class:`VBayesError`.
    """
    if not isinstance(target, Target):
        raise VBayesError(f"neutra needs a vbayes Target, got {type(target).__name__}")
    resolve(checks)  # a bad name fails now, not after the sampling
    key = as_key(key)
    k_flow, k_nuts = jax.random.split(key)
    settings = dict(chains=chains, num_warmup=num_warmup, num_samples=num_samples, target_accept=target_accept)
    settings |= dict(reruns=reruns, key=k_nuts, checks=checks)
    if flow is not None:
        if advi_options:
            raise VBayesError(f"neutra: the ADVI option(s) {sorted(advi_options)} need flow=None")
        _check_flow(target, flow)
        return _in_space_of(target, flow, **settings)
    from vbayes.infer.advi import advi

    tried: list[tuple[str, Fit]] = []
    for i, family in enumerate(FLOW_FAMILIES):
        k = k_flow if i == 0 else jax.random.fold_in(k_flow, i)
        flow = advi(target, family, key=k, checks="none", progress=progress, **advi_options)
        tried.append((flow.info.method, _in_space_of(target, flow, **settings)))
        if tried[-1][1].verdict.status != "flagged":
            break
    return _kept(tried)


def _check_flow(target: Target, flow: Any) -> None:
    """A :class:`VBayesError` unless ``flow`` is an ADVI fit of ``target`` in a flow family."""
    if not isinstance(flow, Fit) or flow.target is not target or not isinstance(flow.q, Flow):
        what = (
            f"a {type(flow).__name__}"
            if not isinstance(flow, Fit)
            else "a fit of another target"
            if flow.target is not target
            else f"a fit with a {type(flow.q).__name__} q"
        )
        raise VBayesError(f"neutra needs an ADVI fit of this target in a flow family {FLOWS}, not {what}")


def _in_space_of(target: Target, flow: Fit, *, key: Array, checks: Any, **nuts_settings: Any) -> Fit:
    """NUTS on ``target`` pulled back through ``flow``'s bijection, its draws pushed forward: the checked fit, with
    the flow's cost in its record."""
    t_nuts = time.perf_counter()
    run = nuts(pulled_back(target, flow.q), key=key, checks="none", **nuts_settings)
    z = jax.block_until_ready(push_forward(flow.q, run.q.samples))
    rhat, ess = max_rhat_min_ess(np.asarray(z))
    flow_record = f"{flow.info.method} ({flow.info.outcome} after {flow.info.steps} steps, {flow.info.grad_evals} "
    flow_record += "gradient evaluations)"
    info = dataclasses.replace(
        run.info,
        method="neutra",
        message=f"NUTS in the space of {flow_record}: {run.info.message}",
        steps=flow.info.steps + run.info.steps,
        grad_evals=flow.info.grad_evals + run.info.grad_evals,
        wall_time=flow.info.wall_time + time.perf_counter() - t_nuts,
        extra={**run.info.extra, "max_rhat": rhat, "min_ess_bulk": ess, "flow": flow_record},
    )
    return verify(Fit(target=target, q=Empirical(z), trace=run.trace, info=info), checks)


def _kept(tried: list[tuple[str, Fit]]) -> Fit:
    """The last run of ``tried`` (pairs of the flow's method and NUTS's run in its space: the first trusted run, or
    the last flagged one), its record counting the cost of the runs before it and saying why each flow ran."""
    flow, fit = tried[-1]
    if len(tried) == 1:
        return fit
    earlier = [run for _, run in tried[:-1]]
    flagged = [f"{method} flagged ({'; '.join(run.verdict.flags)})" for method, run in tried[:-1]]
    why = f"NUTS in the space of {', then '.join(flagged)}; then {flow}"
    info = dataclasses.replace(
        fit.info,
        message=f"{why}. {fit.info.message}",
        steps=fit.info.steps + sum(run.info.steps for run in earlier),
        grad_evals=fit.info.grad_evals + sum(run.info.grad_evals for run in earlier),
        wall_time=fit.info.wall_time + sum(run.info.wall_time for run in earlier),
        extra={**fit.info.extra, "flow_choice": why},
    )
    return dataclasses.replace(fit, info=info)
