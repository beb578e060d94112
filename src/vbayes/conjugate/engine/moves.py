"""Delete and merge moves for models with components (Hughes & Sudderth 2013), and the CAVI and SVI schedules that
interleave them with the plain drivers.

With more components than clusters (K = 10 on 5, the usual way to use a Dirichlet-process mixture) plain CAVI
drains the spare components over hundreds to thousands of iterations, or never merges a cluster split in two;
SVI's decaying steps stall earlier still. A sweep tries removing each component, smallest first: *delete* it (its
statistics zeroed) or else *merge* it into its nearest component (statistics added), then CAVI updates; a move is
kept only if it raises the ELBO. The CAVI ELBO therefore never decreases.

A model takes part by giving ``counts(stats) -> (K,)`` (the expected points per component) and
``distance(λ) -> (K, K)`` (how near two components are; the merge partner is the nearest), and by statistics
whose every leaf has the component on axis 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.checks import verify
from vbayes.conjugate.engine.cavi import cavi, objective, update
from vbayes.conjugate.engine.posterior import ConjugatePosterior
from vbayes.conjugate.model import ConjugateModel, call
from vbayes.data import InMemory, as_source
from vbayes.errors import VBayesError
from vbayes.fit import Fit

PyTree = Any
MOVE_TOL = 1e-4  # nats per point: CAVI's change below which delete / merge moves are tried
MAX_SWEEPS = 20
SVI_TRIAL_STEPS = 3  # CAVI updates on the subset for the baseline of SVI's delete/merge sweep
SVI_MAX_TRIAL_STEPS = 6  # and at most this many after each of its moves
POINTS_PER_PARAMETER = 512  # SVI's moves are judged on this many rows per statistic of q(β), within:
SUBSET_ROWS = (1 << 15, 1 << 16)


class Sweep(NamedTuple):
    """What :func:`delete_merge_sweep` did: λ and ELBO after it, the components it removed, the components
    left with an expected count N_k ≥ ½, the passes over the data."""

    params: PyTree
    elbo: float
    removed: int
    live: int
    passes: int


def delete_merge_sweep(
    model: ConjugateModel,
    params: PyTree,
    data,
    n_total: float,
    scale: float = 1.0,
    trial_steps: int = 1,
    max_trial_steps: int | None = None,
) -> Sweep:
    """One sweep of delete and merge moves. From ``trial_steps`` CAVI updates of ``params`` (λ_b, ELBO L_b), for
    each component k in increasing order of its expected count N_k ≥ ½: *delete* (row k of the statistics set to
    0) and, if refused, *merge* into its nearest component j (row j += row k, row k = 0); a move is
    λ' = global_step(edited statistics) followed by CAVI updates, kept as soon as its ELBO exceeds L_b by more than
    1e-9 · N (it becomes the baseline), refused after ``max_trial_steps`` updates (default ``trial_steps``) or
    earlier, from the second update on, when even its last gain repeated every remaining update would not reach
    L_b. ``scale`` = N / n when ``data`` is a subset of n points (ELBO estimates on the same points)."""
    if model.counts is None or model.distance is None:
        raise VBayesError("delete / merge moves need a model with components (its counts and distance functions)")
    max_trial = max(trial_steps, max_trial_steps or trial_steps)
    if trial_steps > 1:
        params = cavi(model, params, data, tol=0.0, max_iter=trial_steps - 1, scale=scale, checks="none").q.params
    params, best, stats = update(model, params, data, scale=scale)
    removed, passes, tried = 0, trial_steps, set()
    min_gain = 1e-9 * n_total
    while True:
        counts = scale * np.asarray(call(model, "counts", stats))
        live = [int(k) for k in np.argsort(counts, kind="stable") if counts[k] >= 0.5]
        order = [k for k in live if k not in tried]
        if not order or len(live) < 2:
            break
        k = order[0]
        tried.add(k)
        for j in (k, None):  # delete k; else merge k into its nearest component
            j = _nearest(model, params, k, live) if j is None else j
            trial = _edited_global_step(model, stats, k, j, scale)
            new, value, new_stats, used = _trial(model, trial, data, scale, best + min_gain, max_trial)
            passes += used
            if value > best + min_gain:
                params, best, stats, removed = new, value, new_stats, removed + 1
                break
    counts = scale * np.asarray(call(model, "counts", stats))
    return Sweep(params, best, removed, int(np.sum(counts >= 0.5)), passes)


def _trial(model, params, data, scale: float, beat: float, max_steps: int):
    """CAVI updates from a move's λ until its ELBO exceeds ``beat`` or cannot: after ``max_steps``, or
    once value + gain · (steps left) ≤ beat (from the second update). Returns (λ, ELBO, stats, updates)."""
    previous = -np.inf
    for step in range(1, max_steps + 1):
        params, value, stats = update(model, params, data, scale=scale)
        if value > beat or (step > 1 and value + (value - previous) * (max_steps - step) <= beat):
            break
        previous = value
    return params, value, stats, step


@jax.jit
def _edited_global_step(model, stats, k, j, scale):
    """global_step of the statistics with row k moved onto row j (merge) or, for j = k, removed (delete)."""
    moved = jax.tree.map(lambda a: a.at[j].add(jnp.where(j == k, 0.0, 1.0) * a[k]).at[k].set(0.0), stats)
    return model.global_step(moved, scale)


def _nearest(model, params, k: int, live: list[int]) -> int:
    """The live component j ≠ k nearest to k by the model's ``distance``."""
    dist = np.asarray(call(model, "distance", params))
    others = [j for j in live if j != k]
    return others[int(np.argmin(dist[k, others]))]


def cavi_with_moves(model: ConjugateModel, params: PyTree, data, tol: float, max_iter: int, checks="default") -> Fit:
    """CAVI to |ΔELBO|/N < max(tol, MOVE_TOL), a delete/merge sweep, repeated while the sweep removes; then
    CAVI to ``tol``. The ELBO never decreases (a deletion is kept only if it raises it)."""
    data = as_source(data)
    fits, deleted, passes, sweeps = [], 0, 0, 0
    coarse = max(tol, MOVE_TOL)
    while True:
        budget = max_iter - sum(f.info.steps for f in fits)
        fit = cavi(model, params, data, tol=coarse, max_iter=max(budget, 1), checks="none")
        fits.append(fit)
        params = fit.q.params
        if fit.info.outcome != "converged" or sweeps == MAX_SWEEPS:
            break
        sweep = delete_merge_sweep(model, params, data, data.n_samples)
        sweeps, passes = sweeps + 1, passes + sweep.passes
        if not sweep.removed:
            break
        deleted, params = deleted + sweep.removed, sweep.params
        fits.append(_point(fits[-1], sweep.params, sweep.elbo))
    if fits[-1].info.outcome == "converged" and coarse > tol:
        budget = max(max_iter - sum(f.info.steps for f in fits), 1)
        fits.append(cavi(model, params, data, tol=tol, max_iter=budget, checks="none"))
    return verify(chain(fits, deleted, passes), checks)


def move_rows(n_parameters: int) -> int:
    """Rows of the uniform subset on which SVI's delete/merge moves are judged: ``POINTS_PER_PARAMETER`` per
    statistic of q(β) (``n_parameters``; K (1 + D + D(D+1)/2) for a full-covariance mixture), within
    ``SUBSET_ROWS``. The moves fit CAVI updates to the subset, so with too few points per parameter they fit its
    noise: at D = 10, K = 10 (660 statistics), 32,768 rows made SVI 6× slower at N = 1e6 (moves kept, then undone
    by the data); at D = 2 (60) 32,768 rows judge as well as 65,536 at half the cost."""
    low, high = SUBSET_ROWS
    return int(min(high, max(low, POINTS_PER_PARAMETER * n_parameters)))


def svi_with_moves(
    run: Callable[..., Fit],
    model: ConjugateModel,
    params: PyTree,
    subset: InMemory,
    n_total: float,
    first_epochs: float,
    data,
    checks="default",
) -> Fit:
    """SVI (``run(params, start_step=t, ...)``, a :func:`vbayes.conjugate.engine.svi.svi` with its data and settings
    bound) for at most ``first_epochs`` passes' worth of points, then delete/merge sweeps judged on ``subset``
    (ELBO estimates scaled by N / n; the baseline after ``SVI_TRIAL_STEPS`` CAVI updates, each move after up to
    ``SVI_MAX_TRIAL_STEPS``: after one, SVI's averaged λ refused every move on overlapping clusters where a few
    updates reach CAVI's optimum). SVI continues, from the step it had reached, while it has not converged, or
    from the sweep's λ after a sweep that left fewer live components (N_k ≥ ½) than every sweep before it (else a
    component of a few points that SVI's steps revive after each deletion keeps the loop going). The ELBO on all
    of ``data`` is computed once, for the last λ (the runs skip their own final pass)."""
    run = partial(run, final_pass=False, checks="none")
    fits, deleted, passes, fewest = [run(params, max_epochs=first_epochs)], 0, 0, np.inf
    for _ in range(MAX_SWEEPS):
        last = fits[-1]
        if last.info.outcome == "diverged":
            break
        sweep = delete_merge_sweep(
            model,
            last.q.params,
            subset,
            n_total,
            scale=n_total / subset.n_samples,
            trial_steps=SVI_TRIAL_STEPS,
            max_trial_steps=SVI_MAX_TRIAL_STEPS,
        )
        passes += sweep.passes
        moved = sweep.removed > 0 and sweep.live < fewest
        fewest = min(fewest, sweep.live)
        if not moved and last.info.outcome == "converged":
            break
        deleted += sweep.removed if moved else 0
        fits.append(run(sweep.params if moved else last.q.params, start_step=float(last.state.step)))
    last = fits[-1]
    if last.info.outcome != "diverged":
        value = objective(model, last.q.params, data)
        extra = {**last.info.extra, "objective": value, "elbo": value}
        fits[-1] = dataclasses.replace(last, info=dataclasses.replace(last.info, extra=extra))
    return verify(chain(fits, deleted, passes), checks)


def _point(fit: Fit, params: PyTree, value: float) -> Fit:
    """A one-entry fit: λ after a sweep that removed components and its ELBO (no iteration counted)."""
    q = fit.q
    info = dataclasses.replace(fit.info, steps=0, extra={"objective": value, "elbo": value, "n_samples": 0.0})
    return dataclasses.replace(
        fit, q=ConjugatePosterior(q.model, params, q.mode, q.target), trace=np.asarray([value]), info=info
    )


def chain(fits: list[Fit], deleted: int, sweep_passes: int) -> Fit:
    """Consecutive runs as one: the last λ and objective, traces concatenated, iterations and seconds summed."""
    last = fits[-1]
    extra = dict(last.info.extra)
    extra.update(removed_components=deleted, move_passes=sweep_passes)
    if "passes" in extra:
        extra["passes"] = sum(f.info.extra.get("passes", 0) for f in fits) + sweep_passes
    removed = f"; {deleted} component(s) removed by delete/merge moves" if deleted else ""
    info = dataclasses.replace(
        last.info,
        steps=sum(f.info.steps for f in fits),
        wall_time=sum(f.info.wall_time for f in fits),
        message=last.info.message + removed,
        extra=extra,
    )
    trace = np.concatenate([np.asarray(f.trace) for f in fits])
    return dataclasses.replace(last, trace=trace, info=info)


def best_run(runs: list[Fit]) -> Fit:
    """The run with the highest objective; a :class:`VBayesError` when every run broke down."""
    finite = [r for r in runs if r.info.outcome != "diverged"]
    if not finite:
        raise VBayesError(
            f"the fit broke down: {runs[0].info.message}. A component collapsed onto too few or "
            "collinear points: increase reg_covar, lower n_components, or scale the features"
        )
    return max(finite, key=lambda r: r.info.extra["objective"])
