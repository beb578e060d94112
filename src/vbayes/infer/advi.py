"""Automatic differentiation variational inference (Kucukelbir et al. 2017) on any :class:`Target`.

The driver, :func:`advi`, runs the functional core's ``step`` (:mod:`vbayes.infer.advi_core`: ``init_state``,
``build_step``, re-exported here) in compiled chunks of ``lax.scan`` with a progress bar between chunks, decides
there when to decay the step size and when to stop, and returns a :class:`Fit`; :func:`auto_family` chooses the
family when none is named.

Default schedule, robust to Monte Carlo noise: the mean objective of each chunk is compared with the
previous chunk's; when it has not risen by more than twice its standard error the step size is halved.
After ``max_decays`` halvings a further plateau means *converged*. The returned q is the average of the
iterates over the last chunk (Polyak averaging), which removes most of the remaining gradient noise.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from concurrent.futures import Future
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vbayes.checks import ratio_draws_args, support_message, verify
from vbayes.checks import resolve as resolve_checks
from vbayes.compilation import QUICK, compile_ahead
from vbayes.errors import VBayesError
from vbayes.families import FAMILIES, Family, FullRankGaussian
from vbayes.fit import Fit, FitInfo
from vbayes.flows import FLOWS, Flow, build_flow
from vbayes.infer.advi_config import FLOW_FIRST_STAGE, ADVIConfig
from vbayes.infer.advi_core import ADVIInfo, ADVIState, build_step, chunk_runner, init_state, polyak_average
from vbayes.infer.initial import initial_q, make_q
from vbayes.infer.preconditioner import OPTIMIZERS, register_optimizer
from vbayes.infer.progress import ChunkProgress
from vbayes.keys import as_key
from vbayes.objectives import objective_for
from vbayes.targets import Target, value_and_grad

Array = jax.Array

__all__ = ["ADVIConfig", "ADVIInfo", "ADVIState", "advi", "auto_family", "build_step", "init_state", "polyak_average"]

FULLRANK_MAX_DIM = 500
"""Up to this dimension the automatic family is full rank (d² scale parameters); above it, low rank."""
ESCALATE_MAX_DIM = 200
"""Up to this dimension a flagged Gaussian is followed by the flow :data:`ESCALATE_FLOW`."""
ESCALATE_FLOW = "flow"
"""The flow a flagged Gaussian escalates to: affine coupling, whose draws and densities each cost one pass (a masked
autoregressive flow's draw costs d passes). On the shared posteriors where full rank is flagged it was never
trusted where inaccurate; the masked autoregressive flow, accurate there a little more often, was once silently
wrong (``benchmarks/RESULTS.md``, first-fit latency)."""


def advi(
    target: Target,
    family: str | None = None,
    *,
    key: Array | int | None = 0,
    init: Any = "mode",
    optimizer: optax.GradientTransformation | None = None,
    devices: Any = None,
    progress: bool = True,
    checks: Any = "default",
    config: ADVIConfig | None = None,
    **options: Any,
) -> Fit:
    """Fit ``q`` in ``family`` to ``target`` by maximising a variational objective with stochastic gradients.

    family: ``meanfield`` | ``fullrank`` | ``lowrank`` | ``pointmass`` (MAP) | ``flow`` | ``maf`` (normalizing flows,
    :mod:`vbayes.flows`, started from a Gaussian fit), or None: chosen by :func:`auto_family` (full rank when the
    dimension allows, a flow when that is flagged), which says what it chose and why in
    ``info.extra["family_choice"]``. ``options`` (or ``config``): the
    fields of :class:`ADVIConfig` (``max_steps``, ``learning_rate``, ``objective``, ``rank``, ``batch_size``, ...).
    ``init``: ``"mode"`` (L-BFGS to the mode, Laplace scales; :func:`~vbayes.infer.initial.initial_q`),
    ``"pathfinder"`` (the mean and covariance of one Pathfinder path from z = 0), ``"zero"``, a family instance,
    or a previous :class:`Fit` to resume. ``optimizer``: any optax transformation
    (default: Adam in q's whitened coordinates, :func:`~vbayes.infer.preconditioner.default_optimizer`).
    ``devices`` (``"all"``, a count or a list): each minibatch is split over the JAX devices
    (:mod:`vbayes.data.devices`); B must be a multiple of their number. ``checks``: the verdict's checks
    (:mod:`vbayes.checks`; ``"default"``, ``"all"`` to add restarts, ``"none"``), run at the end, their cost in
    the record. Returns a :class:`Fit` whose ``info.outcome`` is ``converged``, ``max_steps``, ``diverged`` or
    ``interrupted`` and whose ``verdict`` says whether to trust it.
    """
    t_start = time.perf_counter()
    if not isinstance(target, Target):
        raise VBayesError(f"advi needs a vbayes Target (from_numpyro, from_logdensity), got {type(target).__name__}")
    if family is None:
        args = dict(key=key, init=init, optimizer=optimizer, devices=devices, progress=progress, config=config)
        return auto_family(target, checks, **args, **options)
    if family not in FAMILIES and family not in FLOWS:
        raise VBayesError(f"unknown family {family!r}; choose one of {sorted(FAMILIES) + list(FLOWS)}")
    unknown = sorted(set(options) - set(ADVIConfig._fields))
    if unknown:
        raise VBayesError(f"unknown option(s) {unknown} for advi; its options are {', '.join(ADVIConfig._fields)}")
    given = (config or ADVIConfig())._replace(**options)
    c = given.checked(family, target.dim)
    if family in FLOWS and optimizer is None and _staged(given, init) and resolve_checks(checks):
        args = dict(key=key, optimizer=optimizer, devices=devices, progress=progress, checks=checks)
        return _in_two_stages(target, family, init, c, **args)
    checks = resolve_checks(checks)
    mesh = None
    if c.batch_size is not None or devices is not None:
        from vbayes.data.devices import minibatch_mesh

        mesh = minibatch_mesh(target, c.batch_size, devices)
    key, init_key, check_key, verify_key = _keys(as_key(key))

    opt_key = register_optimizer(optimizer, c.learning_rate, flow=family in FLOWS)
    ahead = (
        None if mesh is not None or family in FLOWS else _compile_ahead(target, family, init, c, opt_key, key, checks)
    )
    resuming = isinstance(init, Fit) and (family not in FLOWS or isinstance(init.q, Flow))
    if resuming:
        state, note, done = init.state, {"init": "resumed"}, init.info.steps
        prior_trace = [init.trace]
    else:
        if family in FLOWS:
            q0, note = _flow_start(target, family, init, init_key)
            if mesh is None:  # the checks' program compiles in the background while the chunk runner compiles
                ahead = (None, _checks_ahead(target, q0, key, checks, family))
        else:
            q0, note = initial_q(target, family, c.rank, init, init_key)
        state, done, prior_trace = _init_state(q0, opt_key), 0, []
    chunk = min(c.chunk_size, c.max_steps)
    run = chunk_runner(objective_for(c.objective, c.renyi_alpha), opt_key, c.num_samples, c.batch_size, mesh)
    q_bar = state.q
    traces: list[np.ndarray] = list(prior_trace)
    outcome, message, decays, prev = "max_steps", "", 0, None
    steps, skipped, bad_in_row = 0, 0, 0
    bar = ChunkProgress(progress, c.max_steps, target.name)
    if ahead is not None and ahead[0] is not None:
        ahead[0].result()
    try:
        while steps < c.max_steps:
            n_active = min(chunk, c.max_steps - steps)
            state, key, values, check, q_bar = run(state, target, key, n_active, check_key, chunk, c.num_check)
            values, check = jax.device_get((values, check))
            values = values[:n_active]
            traces.append(values)
            steps += n_active
            bar.update(n_active, values)
            bad = np.isnan(values)
            skipped += int(bad.sum())
            bad_in_row = bad_in_row + bad.size if bad.all() else int(np.argmin(bad[::-1]))
            if bad_in_row >= c.max_bad_in_row:
                outcome, message = "diverged", _divergence_message(target, state, c.max_bad_in_row)
                break
            both = np.isfinite(check) & (np.isfinite(prev) if prev is not None else False)  # no NaN arithmetic
            diff = None if prev is None else check[both] - prev[both]
            if diff is not None and diff.size >= c.num_check // 2:
                gain, se = chunk_gain(diff)
                if gain <= max(2.0 * se, c.tol):
                    if decays >= c.max_decays:
                        outcome = "converged"
                        message = (
                            f"the ELBO of the averaged q changed by {gain:+.2g} ± {se:.2g} nats over the last "
                            f"{chunk} steps, after {decays} step-size halvings"
                        )
                        break
                    decays += 1
                    state = state._replace(step_size=np.asarray(state.step_size) * 0.5)  # on the host: no program
            prev = check
    except KeyboardInterrupt:
        outcome, message = "interrupted", f"interrupted after {steps} steps; pass this Fit as init= to resume"
    finally:
        bar.close()
    if outcome == "max_steps":
        message = f"reached max_steps={c.max_steps} before the objective levelled off ({decays} halvings)"
    if prev is not None and outcome != "diverged" and not np.all(np.isfinite(prev)):
        message += "; but the ELBO of q is not finite: " + support_message(target.name, prev)
        note = {**note, "elbo": -np.inf if np.all(np.isfinite(prev) | (prev == -np.inf)) else np.nan}

    q = q_bar
    trace = np.concatenate(traces) if traces else np.zeros(0)
    info = FitInfo(
        method=f"advi-{family}",
        outcome=outcome,
        message=message,
        steps=done + steps,
        grad_evals=(done + steps) * c.num_samples + note.get("init_evals", 0),
        skipped_steps=skipped,
        wall_time=time.perf_counter() - t_start,
        extra={
            **note,
            "objective": c.objective,
            **({"renyi_alpha": float(c.renyi_alpha)} if c.objective == "renyi" else {}),
            "num_samples": c.num_samples,
            "step_size_halvings": decays,
        },
        trace_of=f"the {c.objective} objective estimate at each step (NaN: a skipped step)",
    )
    fit = Fit(target=target, q=q, trace=trace, info=info, state=state)

    def refit(k: Array) -> Fit:
        return advi(
            target,
            family,
            key=k,
            init=init,
            optimizer=optimizer,
            devices=devices,
            progress=False,
            checks="none",
            config=c,
        )

    if ahead is not None and ahead[1] is not None:
        ahead[1].result()
    # a resumed fit has no start to vary; a flow from a Gaussian fit restarts from it with another seed
    return verify(fit, checks, refit=None if resuming else refit, key=verify_key)


def chunk_gain(diff: np.ndarray) -> tuple[float, float]:
    """The mean of the per-draw ELBO changes ``diff`` ``(n,)`` between two chunks and its standard error, computed
    in units of max|diff|: a q gone far off has ELBOs near 1e300, whose squares would overflow."""
    scale = float(np.max(np.abs(diff))) or 1.0
    x = diff / scale
    return float(x.mean() * scale), float(x.std(ddof=1) * scale / np.sqrt(x.size))


FLOW_START_MAX_DIM = 200
"""Up to this dimension a flow starts from a full-rank ADVI fit (its Cholesky factor as the flow's last layer);
above it, from a mean-field one."""


def auto_family(target: Target, checks: Any = "default", **kwargs: Any) -> Fit:
    """ADVI with the family chosen for the fit to pass its checks: full rank up to :data:`FULLRANK_MAX_DIM` (low
    rank above); when that fit is flagged and d ≤ :data:`ESCALATE_MAX_DIM`, the flow :data:`ESCALATE_FLOW` started at
    it (not when its ELBO is −inf: q's unbounded support meets a region where the density is −inf, which no flow
    mends). Returns the flow's fit when it passes its checks or has the higher ELBO, else the Gaussian's; either way
    ``info.extra["family_choice"]`` says what was tried and why, and ``grad_evals`` counts every fit made.
    Mean-field stays available by name (``advi(target, "meanfield")``)."""
    d = target.dim
    family = "fullrank" if d <= FULLRANK_MAX_DIM else "lowrank"
    why = f"{family}: d = {d} {'≤' if family == 'fullrank' else '>'} {FULLRANK_MAX_DIM}"
    first = advi(target, family, checks=checks, **kwargs)
    if first.verdict.status != "flagged" or d < 2 or d > ESCALATE_MAX_DIM or first.info.outcome == "diverged":
        return _chose(first, why, 0)
    if not np.isfinite(first.elbo):  # q has mass where the density is −inf: a flow's support is unbounded too
        return _chose(first, f"{why}; not a flow: the ELBO is {first.elbo}, a support the model must declare", 0)
    if (kwargs.get("objective") or (kwargs.get("config") or ADVIConfig()).objective) == "elbo":
        return _chose(
            first, f"{why}; not a flow: objective 'elbo' needs a closed-form entropy, which a flow has not", 0
        )
    flow = advi(target, ESCALATE_FLOW, checks=checks, **{**kwargs, "init": first})
    reason = first.verdict.flags[0] if first.verdict.flags else "flagged"
    if flow.trusted or flow.elbo > first.elbo:
        return _chose(
            flow, f"{ESCALATE_FLOW}: the {why.split(':')[0]} fit was flagged ({reason}); a flow started at it", 0
        )
    extra = flow.info.grad_evals - flow.info.extra.get("init_evals", 0)
    return _chose(first, f"{why}; a flow started at it was flagged too, with a lower ELBO ({flow.elbo:.4g})", extra)


def _staged(given: ADVIConfig, init: Any) -> bool:
    """A flow runs in two stages when the user left its schedule to the defaults and is not resuming a flow (and
    there are checks to decide whether the first stage is enough)."""
    schedule = (given.chunk_size, given.num_samples, given.learning_rate)
    resuming = isinstance(init, Flow) or (isinstance(init, Fit) and isinstance(init.q, Flow))
    return all(v is None for v in schedule) and not resuming


def _in_two_stages(target: Target, family: str, init: Any, c: ADVIConfig, **kwargs: Any) -> Fit:
    """A flow fitted first on the short schedule :data:`~vbayes.infer.advi_config.FLOW_FIRST_STAGE`; when that fit
    is flagged, fitted again from the same start on the full default schedule (a first stage gone wrong, say at
    too high a rate for a badly scaled posterior, is no start to go on from). Returns the fit kept, with the first
    stage's cost in ``grad_evals`` and ``info.extra["schedule"]`` saying which stages ran. ``c``: the settings
    checked, with the full schedule's defaults filled in."""
    start = init if isinstance(init, Fit) else _gaussian_start(target, init, _keys(as_key(kwargs["key"]))[1])
    first = advi(target, family, init=start, config=c._replace(**FLOW_FIRST_STAGE), **kwargs)
    stage = ", ".join(f"{k} {v}" for k, v in FLOW_FIRST_STAGE.items())
    if first.verdict.status != "flagged" or first.info.outcome in ("diverged", "interrupted"):
        return _noted(first, "schedule", f"short ({stage})", 0)
    full = advi(target, family, init=start, config=c, **kwargs)
    reason = first.verdict.flags[0] if first.verdict.flags else "flagged"
    why = f"short ({stage}), flagged ({reason}); then the full schedule from the same start"
    return _noted(full, "schedule", why, first.info.grad_evals - first.info.extra["init_evals"])


def _chose(fit: Fit, why: str, extra_evals: int) -> Fit:
    """``fit`` with the automatic family's reason in its record (and the cost of a fit it did not keep)."""
    return _noted(fit, "family_choice", why, extra_evals, prefix="family")


def _noted(fit: Fit, field: str, why: str, extra_evals: int, prefix: str = "") -> Fit:
    """``fit`` with ``why`` in ``info.extra[field]`` (and at the head of its message when ``prefix`` is given) and
    ``extra_evals`` more gradient evaluations (a fit made on the way to it)."""
    extra = {**fit.info.extra, field: why}
    message = f"{prefix} {why}; {fit.info.message}" if prefix else fit.info.message
    info = dataclasses.replace(fit.info, grad_evals=fit.info.grad_evals + extra_evals, extra=extra, message=message)
    return dataclasses.replace(fit, info=info)


def _flow_start(target: Target, kind: str, init: Any, key: Array) -> tuple[Family, dict]:
    """A flow's start: the given flow, or the flow of ``kind`` around a Gaussian ADVI fit from ``init`` (full rank
    up to :data:`FLOW_START_MAX_DIM`, mean-field above): its layers start as the identity, so q starts as that
    Gaussian, found in a few hundred whitened steps instead of thousands of the flow's plain Adam."""
    if isinstance(init, Flow):
        return init, {"init": "given", "init_evals": 0}
    gauss = init if isinstance(init, Fit) else _gaussian_start(target, init, key)
    family = gauss.info.method.removeprefix("advi-")
    scale = gauss.q.scale_tril if isinstance(gauss.q, FullRankGaussian) else gauss.q.marginal_sd()
    how = gauss.info.extra.get("init", "")
    note = f"advi-{family} ({gauss.info.outcome} after {gauss.info.steps} steps{'; ' + how if how else ''})"
    return build_flow(kind, gauss.q.loc, scale, key), {"init": note, "init_evals": gauss.info.grad_evals}


def _gaussian_start(target: Target, init: Any, key: Array) -> Fit:
    """A flow's Gaussian start from ``init``: a full-rank ADVI fit up to :data:`FLOW_START_MAX_DIM`, mean-field
    above, unchecked."""
    family = "fullrank" if target.dim <= FLOW_START_MAX_DIM else "meanfield"
    return advi(target, family, key=key, init=init, progress=False, checks="none")


def _compile_ahead(
    target: Target, family: str, init: Any, c: ADVIConfig, opt_key: Any, key: Array, checks: tuple
) -> tuple[Future, Future | None]:
    """Compile the chunk runner and the checks' program in the background while the start is searched for
    (their shapes are known before its result): on a first fit the compilations overlap."""
    if isinstance(init, Fit):
        state = init.state
    else:

        def build() -> ADVIState:
            q = init
            if isinstance(init, str):
                z = jnp.zeros(target.dim, jnp.result_type(float))
                q = make_q(FAMILIES[family], z, jnp.full(target.dim, 0.1, z.dtype), c.rank, jax.random.PRNGKey(0))
            return init_state(q, OPTIMIZERS[opt_key])

        state = jax.eval_shape(build)
    chunk = min(c.chunk_size, c.max_steps)
    run = chunk_runner(objective_for(c.objective, c.renyi_alpha), opt_key, c.num_samples, c.batch_size, None)
    first = compile_ahead(run, state, target, key, chunk, key, chunk, c.num_check)
    return first, _checks_ahead(target, state.q, key, checks, family)


def _checks_ahead(target: Target, q: Any, key: Array, checks: tuple, family: str) -> Future | None:
    """Compile the program of the reweighting checks for ``q``'s shapes in the background, when they will run."""
    wants = {"importance", "reweighting"} & set(checks) and family != "pointmass"
    return compile_ahead(*ratio_draws_args(target, q, key)) if wants else None


@functools.partial(jax.jit, compiler_options=QUICK)
def _keys(key: Array) -> tuple[Array, Array, Array, Array]:
    """A fit's keys from its seed: the steps', the initialisation's, the stopping rule's common draws', the checks'."""
    key, init_key = jax.random.split(key)
    return key, init_key, jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)


@functools.partial(jax.jit, static_argnums=1, compiler_options=QUICK)
def _init_state(q: Family, optimizer_key: Any) -> ADVIState:
    """:func:`init_state` for a registered optimiser, compiled (a handful of eager operations otherwise)."""
    return init_state(q, OPTIMIZERS[optimizer_key])


def _divergence_message(target: Target, state: ADVIState, n: int) -> str:
    """Name the cause: the log density or its gradient is non-finite where q puts mass."""
    loc = state.q.loc
    value, grad = value_and_grad(target, loc)
    where = "at q's mean" if not (np.isfinite(float(value)) and bool(jnp.all(jnp.isfinite(grad)))) else "at draws of q"
    shown = {k: np.round(np.asarray(v), 3).tolist() for k, v in target.constrain(loc).items()}
    return (
        f"{n} steps in a row had a non-finite objective or gradient even after halving the step size "
        f"{n} times; the log density of {target.name!r} is NaN/inf {where} (q's mean: {shown}). Check the "
        "model there (constraints, overflow), or lower the learning rate"
    )
