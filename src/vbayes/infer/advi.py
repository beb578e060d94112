"""Automatic differentiation variational inference (Kucukelbir et al. 2017) on any :class:`Target`.

Functional core in the style of BlackJAX / optax::

    state = init_state(q, optimizer)
    step = build_step(objective, optimizer, num_samples)
    state, info = step(key, state, target)          # one stochastic gradient step on the ELBO

and one driver, :func:`advi`, that runs ``step`` in compiled chunks of ``lax.scan`` with a progress bar
between chunks, decides there when to decay the step size and when to stop, and returns a :class:`Fit`.

Default schedule, robust to Monte Carlo noise: the mean objective of each chunk is compared with the
previous chunk's; when it has not risen by more than twice its standard error the step size is halved.
After ``max_decays`` halvings a further plateau means *converged*. The returned q is the average of the
iterates over the last chunk (Polyak averaging), which removes most of the remaining gradient noise.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vbayes.errors import VBayesError
from vbayes.families import FAMILIES, Family, FullRankGaussian, LowRankGaussian, PointMass
from vbayes.fit import Fit, FitInfo, as_key
from vbayes.infer.optimize import STATUS, find_map
from vbayes.objectives import OBJECTIVES, Objective, elbo
from vbayes.psis import importance_check
from vbayes.targets import Target, check_initial_point, value_and_grad

Array = jax.Array


class ADVIState(NamedTuple):
    """``q``: current approximation; ``step_size``: multiplies every update (the driver's schedule);
    ``backoff``: a further factor, halved by each non-finite step and recovering by 5% per good step;
    ``q_sum``: running sum of iterates since the driver last reset it (Polyak averaging)."""

    q: Family
    opt_state: optax.OptState
    step_size: Array
    backoff: Array
    q_sum: Family


class ADVIInfo(NamedTuple):
    """Per step: the objective estimate, NaN when the step was skipped as non-finite."""

    objective: Array


def _loc_whitener(q: Family) -> tuple[Callable, Callable]:
    """Maps of the mean's gradient into q's whitened coordinates and of updates back: ``Lᵀg`` and ``L u``
    with ``L`` the Cholesky factor for full rank, the marginal sds for the diagonal families."""
    q = jax.lax.stop_gradient(q)
    if isinstance(q, FullRankGaussian):
        L = q.scale_tril
        return (lambda g: L.T @ g), (lambda u: L @ u)
    sd = q.marginal_sd()
    return (lambda g: sd * g), (lambda u: sd * u)


def whiten_loc(inverse: bool = False) -> optax.GradientTransformation:
    """Whiten the mean's gradient by q's own scale (``Lᵀg``), or, with ``inverse``, map the update back
    (``L u``). Wrapped around Adam, a unit step moves the mean by one sd of q along each of q's principal
    axes, whatever the posterior's scale and correlation: an Adam-normalised natural gradient."""

    def update(updates, state, params=None):
        if params is None or isinstance(params, PointMass):
            return updates, state
        into, back = _loc_whitener(params)
        return updates._replace(loc=(back if inverse else into)(updates.loc)), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def scale_rows_by_q_sd() -> optax.GradientTransformation:
    """Row i of a scale factor (FullRank's strict lower triangle, LowRank's factor) is in units of
    coordinate i: multiply its update by q's conditional sd L_ii (full rank; the marginal sd there feeds
    back into its own step and can run away) or the marginal sd (low rank). Log-scales are unitless."""

    def update(updates, state, params=None):
        if isinstance(params, FullRankGaussian):
            row = jax.lax.stop_gradient(jnp.exp(jnp.diag(params.raw_tril)))
            off = jnp.tril(updates.raw_tril, -1) * row[:, None]
            updates = updates._replace(raw_tril=off + jnp.diag(jnp.diag(updates.raw_tril)))
        elif isinstance(params, LowRankGaussian):
            sd = jax.lax.stop_gradient(params.marginal_sd())
            updates = updates._replace(factor=updates.factor * sd[:, None])
        return updates, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def default_optimizer(learning_rate: float = 0.02, warmup_steps: int = 100) -> optax.GradientTransformation:
    """Adam in q's whitened coordinates (see :func:`whiten_loc`, :func:`scale_rows_by_q_sd`), with a
    linear warm-up so that Adam's first, unit-size steps do not throw away a good initial q."""
    warmup = optax.linear_schedule(learning_rate / warmup_steps, learning_rate, warmup_steps)
    return optax.chain(
        whiten_loc(),
        optax.scale_by_adam(),
        whiten_loc(inverse=True),
        scale_rows_by_q_sd(),
        optax.scale_by_learning_rate(warmup),
    )


def init_state(q: Family, optimizer: optax.GradientTransformation) -> ADVIState:
    """Initial state at ``q``."""
    one = jnp.ones((), q.loc.dtype)
    return ADVIState(q, optimizer.init(q), one, one, jax.tree_util.tree_map(jnp.zeros_like, q))


def build_step(
    objective: Objective, optimizer: optax.GradientTransformation, num_samples: int
) -> Callable[[Array, ADVIState, Target], tuple[ADVIState, ADVIInfo]]:
    """One step: q ← q + step_size · backoff · optimizer(∇_q objective). A step whose objective or
    update is non-finite is skipped (its objective is reported as NaN) and halves ``backoff``."""

    def step(key: Array, state: ADVIState, target: Target, active: Array = True) -> tuple[ADVIState, ADVIInfo]:
        loss, grad = jax.value_and_grad(lambda q: -objective(target, q, key, num_samples))(state.q)
        value = -loss
        updates, opt_state = optimizer.update(grad, state.opt_state, state.q)
        scale = state.step_size * state.backoff
        updates = jax.tree_util.tree_map(lambda u: scale * u, updates)
        # one reduction sees any NaN/inf in the objective, the gradient (through the update) or the update
        ok = jnp.isfinite(value + sum(jnp.sum(u) for u in jax.tree_util.tree_leaves(updates)))
        take = ok & active
        add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)

        def accept():
            q = optax.apply_updates(state.q, updates)
            return q, opt_state, jnp.minimum(1.0, 1.05 * state.backoff), add(state.q_sum, q)

        def reject():
            return state.q, state.opt_state, jnp.where(active, 0.5, 1.0) * state.backoff, add(state.q_sum, state.q)

        q, opt_state, backoff, q_sum = jax.lax.cond(take, accept, reject)
        return ADVIState(q, opt_state, state.step_size, backoff, q_sum), ADVIInfo(jnp.where(take, value, jnp.nan))

    return step


@functools.lru_cache(maxsize=64)
def _chunk_runner(
    objective: Objective, optimizer_key: Any, num_samples: int, batch_size: int | None = None, mesh: Any = None
) -> Callable:
    """Jitted ``(state, target, key, n_active, check_key, chunk, num_check) -> (state, next key, objective per
    step, check values)``: ``chunk`` steps, of which the first ``n_active`` update q. With ``batch_size``
    each step sees the minibatch target of ``batch_size`` rows drawn afresh (``Target.sample_batch``); with a
    ``mesh`` (:func:`vbayes.infer.sharding.data_mesh`) that minibatch is split over its devices.

    After the chunk it evaluates ``log p̃(z) − log q̄(z)`` at ``num_check`` draws of the chunk-averaged
    q̄ made from the fixed ``check_key``: common random numbers, so successive chunks are compared by a
    paired difference with little Monte Carlo noise. Cached so that a fit on a new target of the same
    layout and shapes reuses the compiled program.
    """
    optimizer = _OPTIMIZERS[optimizer_key]
    step = build_step(objective, optimizer, num_samples)
    if mesh is not None:
        from vbayes.infer.sharding import data_parallel

        step = data_parallel(step, mesh, batch_argnum=2)

    @functools.partial(jax.jit, static_argnums=(5, 6))
    def run(
        state: ADVIState, target: Target, key: Array, n_active: Array, check_key: Array, chunk: int, num_check: int
    ):
        state = state._replace(q_sum=jax.tree_util.tree_map(jnp.zeros_like, state.q_sum))
        key, sub = jax.random.split(key)

        def body(s, xs):
            i, k = xs
            batch = target
            if batch_size is not None:
                k, k_batch = jax.random.split(k)
                batch = target.sample_batch(k_batch, batch_size)
            s, info = step(k, s, batch, i < n_active)
            return s, info.objective

        state, values = jax.lax.scan(body, state, (jnp.arange(chunk), jax.random.split(sub, chunk)))
        q_bar = polyak_average(state, chunk)
        z = q_bar.sample(check_key, num_check)
        check = jax.vmap(target.log_density)(z) - q_bar.log_prob(z)
        return state, key, values, check

    return run


# optax transformations are not hashable by value: register each under a key so the compiled chunk
# runner can be cached (the default optimiser always has the same key, so it never recompiles).
_OPTIMIZERS: dict[Any, optax.GradientTransformation] = {}


def _register_optimizer(optimizer: optax.GradientTransformation | None, learning_rate: float) -> Any:
    if optimizer is None:
        key = ("default", float(learning_rate))
        _OPTIMIZERS.setdefault(key, default_optimizer(learning_rate))
    else:
        key = ("user", id(optimizer))
        _OPTIMIZERS[key] = optimizer
    return key


# ----------------------------------------------------------------------------------------------
# initialisation


@jax.jit
def _hessian(target: Target, z: Array) -> Array:
    return jax.hessian(target.log_density)(z)


def _initial_q(target: Target, family: str, rank: int, init: Any, key: Array) -> tuple[Family, dict]:
    """q at the start: a given family instance, or (``init="mode"``) the better, by a 64-draw ELBO estimate,
    of a Gaussian at the mode of log p̃ with the Laplace scale and a Gaussian at z = 0 with scale 0.1, or
    only the latter (``init="zero"``).

    The comparison guards against modes that are not where the mass is: on funnels the mode search runs
    off towards a degenerate neck, and a q started there never leaves it. ``note["init_evals"]`` counts
    the gradient evaluations spent (mode search, plus d for the Hessian's columns)."""
    cls = FAMILIES[family]
    d = target.dim
    z0 = jnp.zeros(d, jnp.result_type(float))
    if not isinstance(init, str):
        return init, {"init": "given", "init_evals": 0}
    if init not in ("mode", "zero"):
        raise VBayesError(f"init must be 'mode', 'zero', a family instance or a Fit, got {init!r}")
    check_initial_point(target, z0)
    zero = _make_q(cls, z0, jnp.full(d, 0.1), rank, key)
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


def _make_q(cls: type, loc: Array, scale: Array, rank: int, key: Array) -> Family:
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
        return _make_q(cls, z, jnp.full(d, 0.1), rank, key), "mode"
    h = -_hessian(target, z)
    if cls is FullRankGaussian:
        chol = jnp.linalg.cholesky(jnp.linalg.inv(0.5 * (h + h.T)))
        if bool(jnp.all(jnp.isfinite(chol))):
            return FullRankGaussian.from_covariance(z, chol @ chol.T), "mode+laplace"
    diag = jnp.diag(h)
    good = jnp.isfinite(diag) & (diag > 0)
    scale = jnp.where(good, 1.0 / jnp.sqrt(jnp.where(good, diag, 1.0)), 0.1)
    return _make_q(cls, z, scale, rank, key), "mode+laplace-diagonal"


@jax.jit
def _elbo64(target: Target, q: Family, key: Array) -> Array:
    """ELBO estimate from 64 draws (−inf if not finite)."""
    value = elbo(target, q, key, 64)
    return jnp.where(jnp.isfinite(value), value, -jnp.inf)


# ----------------------------------------------------------------------------------------------
# driver


def advi(
    target: Target,
    family: str = "meanfield",
    *,
    rank: int = 2,
    objective: str = "stl",
    num_samples: int | None = None,
    max_steps: int = 20_000,
    learning_rate: float = 0.02,
    optimizer: optax.GradientTransformation | None = None,
    init: Any = "mode",
    key: Array | int | None = 0,
    chunk_size: int = 250,
    max_decays: int = 4,
    tol: float = 1e-3,
    num_check: int = 64,
    max_bad_in_row: int = 20,
    importance_draws: int = 4000,
    progress: bool = True,
    batch_size: int | None = None,
    devices: Any = None,
) -> Fit:
    """Fit ``q`` in ``family`` to ``target`` by maximising ``objective`` with stochastic gradients.

    family: ``meanfield`` | ``fullrank`` | ``lowrank`` (``rank`` columns) | ``pointmass`` (MAP).
    objective: ``stl`` (default) | ``elbo`` | ``score`` | ``iwelbo``; ``num_samples`` draws per step
    (default 1, or 8 for ``score`` and ``iwelbo``). ``init``: ``"mode"`` (L-BFGS to the mode, Laplace
    scales), ``"zero"``, a family instance, or a previous :class:`Fit` to resume. ``optimizer``: any optax
    transformation (default: :func:`default_optimizer` with ``learning_rate``). Stopping: after each
    chunk the ELBO of the chunk-averaged q is compared with the previous chunk's on ``num_check`` common
    draws; a rise below ``max(2 se, tol)`` nats halves the step size, and after ``max_decays`` halvings
    ends the run as converged. At the end, ``importance_draws`` draws of q give PSIS k̂, the ELBO and
    an importance-sampling log evidence in ``fit.info.importance`` (0 to skip). Returns a :class:`Fit`
    whose ``info.outcome`` is ``converged``, ``max_steps``, ``diverged`` or ``interrupted``.

    ``batch_size``: doubly stochastic ADVI on a target with a minibatch form (:func:`vbayes.from_loglik`):
    each step's objective uses B rows drawn with replacement, the log-likelihood scaled by N/B (Titsias &
    Lázaro-Gredilla 2014); the stopping rule's check still uses all the data. ``devices`` (``"all"``, a count
    or a list): each minibatch is split over the JAX devices (:mod:`vbayes.infer.sharding`); B must be a
    multiple of their number.
    """
    t_start = time.perf_counter()
    if not isinstance(target, Target):
        raise VBayesError(f"advi needs a vbayes Target (from_numpyro, from_logdensity), got {type(target).__name__}")
    if family not in FAMILIES:
        raise VBayesError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    if objective not in OBJECTIVES:
        raise VBayesError(f"unknown objective {objective!r}; choose one of {sorted(OBJECTIVES)}")
    if family == "lowrank" and not 1 <= rank <= target.dim:
        raise VBayesError(f"rank must be between 1 and the dimension {target.dim}, got {rank}")
    if max_steps < 1:
        raise VBayesError(f"max_steps must be at least 1, got {max_steps}")
    num_samples = num_samples or (8 if objective in ("score", "iwelbo") else 1)
    mesh = _minibatch_mesh(target, batch_size, devices)
    key = as_key(key)
    key, init_key = jax.random.split(key)

    opt_key = _register_optimizer(optimizer, learning_rate)
    if isinstance(init, Fit):
        state, note, done = init.state, {"init": "resumed"}, init.info.steps
        prior_trace = [init.trace]
    else:
        q0, note = _initial_q(target, family, rank, init, init_key)
        state, done, prior_trace = init_state(q0, _OPTIMIZERS[opt_key]), 0, []
    run = _chunk_runner(OBJECTIVES[objective], opt_key, num_samples, batch_size, mesh)

    chunk = min(chunk_size, max_steps)
    check_key = jax.random.fold_in(key, 1)
    traces: list[np.ndarray] = list(prior_trace)
    outcome, message, decays, prev = "max_steps", "", 0, None
    steps, skipped, bad_in_row = 0, 0, 0
    bar = _progress(progress, max_steps, target.name)
    try:
        while steps < max_steps:
            n_active = min(chunk, max_steps - steps)
            state, key, values, check = run(state, target, key, n_active, check_key, chunk, num_check)
            values, check = jax.device_get((values, check))
            values = values[:n_active]
            traces.append(values)
            steps += n_active
            bar.update(n_active, values)
            bad = np.isnan(values)
            skipped += int(bad.sum())
            bad_in_row = bad_in_row + bad.size if bad.all() else int(np.argmin(bad[::-1]))
            if bad_in_row >= max_bad_in_row:
                outcome, message = "diverged", _divergence_message(target, state, max_bad_in_row)
                break
            diff = None if prev is None else (check - prev)[np.isfinite(check - prev)]
            if diff is not None and diff.size >= num_check // 2:
                gain, se = diff.mean(), diff.std(ddof=1) / np.sqrt(diff.size)
                if gain <= max(2.0 * se, tol):
                    if decays >= max_decays:
                        outcome = "converged"
                        message = (
                            f"the ELBO of the averaged q changed by {gain:+.2g} ± {se:.2g} nats over the last "
                            f"{chunk} steps, after {decays} step-size halvings"
                        )
                        break
                    decays += 1
                    state = state._replace(step_size=state.step_size * 0.5)
            prev = check
    except KeyboardInterrupt:
        outcome, message = "interrupted", f"interrupted after {steps} steps; pass this Fit as init= to resume"
    finally:
        bar.close()
    if outcome == "max_steps":
        message = f"reached max_steps={max_steps} before the objective levelled off ({decays} halvings)"

    q = polyak_average(state, chunk) if steps else state.q
    check = None
    if importance_draws and not isinstance(q, PointMass):
        check = importance_check(target, q, importance_draws, jax.random.fold_in(key, 2))
    trace = np.concatenate(traces) if traces else np.zeros(0)
    info = FitInfo(
        method=f"advi-{family}",
        outcome=outcome,
        message=message,
        steps=done + steps,
        grad_evals=(done + steps) * num_samples + note.get("init_evals", 0),
        skipped_steps=skipped,
        wall_time=time.perf_counter() - t_start,
        extra={**note, "objective": objective, "num_samples": num_samples, "step_size_halvings": decays},
        importance=check,
    )
    return Fit(target=target, q=q, trace=trace, info=info, state=state)


def _minibatch_mesh(target: Target, batch_size: int | None, devices: Any):
    """Check ``batch_size`` and ``devices``; the device mesh (None: no sharding)."""
    if batch_size is not None:
        if target.n_rows is None:
            target.take(jnp.zeros(1, jnp.int32))  # raises: the target has no minibatch form
        if not isinstance(batch_size, int) or batch_size < 1:
            raise VBayesError(f"batch_size must be a positive integer, got {batch_size!r}")
    if devices is None:
        return None
    if batch_size is None:
        raise VBayesError("devices= splits minibatches over devices: give batch_size too (and a from_loglik target)")
    from vbayes.infer.sharding import data_mesh

    mesh = data_mesh(devices)
    if batch_size % mesh.size:
        raise VBayesError(f"batch_size={batch_size} must be a multiple of the {mesh.size} devices")
    return mesh


def polyak_average(state: ADVIState, n: int) -> Family:
    """Mean of the ``n`` iterates summed in ``q_sum`` since the driver last reset it."""
    return jax.tree_util.tree_map(lambda x: x / n, state.q_sum)


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


class _progress:
    """A rich progress bar between chunks (no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, name: str):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("advi {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("ELBO {task.fields[elbo]}"),
                TimeElapsedColumn(),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(name, total=total, elbo="…")

    def update(self, n: int, values: np.ndarray) -> None:
        if self.bar is not None:
            finite = values[np.isfinite(values)]
            self.bar.update(self.task, advance=n, elbo=f"{finite.mean():.3f}" if finite.size else "nan")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
