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

FLOW_FAMILY = "flow"
"""The flow fitted when none is given: the affine-coupling flow (cheaper to fit than the autoregressive one)."""
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
    ``target`` pulled back through the bijection T of ``flow``'s q, its draws u mapped back to z = T(u): a
    :class:`Fit` whose q is an :class:`~vbayes.samples.Empirical` ``(chains, num_samples, d)`` of z.

    ``flow``: an ADVI fit of ``target`` in a flow family (``advi-flow``, ``advi-maf``), or None: ADVI in the
    :data:`FLOW_FAMILY` with ``advi_options``, fitted now. Its gradient evaluations count in ``grad_evals`` and its
    wall time in ``wall_time``, with NUTS's (each of whose gradients also passes through T). ``info.extra``: NUTS's
    (divergences, reruns, step sizes, ...), ``max_rhat`` and ``min_ess_bulk`` of z, and ``flow`` (the flow's
    method, outcome and cost). ``checks``: NUTS's (divergences, R-hat), ``"none"`` to skip. A flow whose fit
    diverged still defines a bijection (MCMC in its space is still exact in the limit; its diagnostics say how well
    it mixed); a pulled-back density that is not finite at the chains' starts is a :class:`VBayesError`.
    """
    if not isinstance(target, Target):
        raise VBayesError(f"neutra needs a vbayes Target, got {type(target).__name__}")
    resolve(checks)  # a bad name fails now, not after the sampling
    key = as_key(key)
    k_flow, k_nuts = jax.random.split(key)
    if flow is None:
        from vbayes.infer.advi import advi

        flow = advi(target, FLOW_FAMILY, key=k_flow, checks="none", progress=progress, **advi_options)
    elif advi_options:
        raise VBayesError(f"neutra: the ADVI option(s) {sorted(advi_options)} need flow=None")
    if not isinstance(flow, Fit) or flow.target is not target or not isinstance(flow.q, Flow):
        what = (
            f"a {type(flow).__name__}"
            if not isinstance(flow, Fit)
            else "a fit of another target"
            if flow.target is not target
            else f"a fit with a {type(flow.q).__name__} q"
        )
        raise VBayesError(f"neutra needs an ADVI fit of this target in a flow family {FLOWS}, not {what}")
    t_nuts = time.perf_counter()
    run = nuts(
        pulled_back(target, flow.q),
        chains,
        num_warmup,
        num_samples,
        target_accept=target_accept,
        reruns=reruns,
        key=k_nuts,
        checks="none",
    )
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
