"""The reference sampler: BlackJAX's NUTS with Stan-style window adaptation, chains vectorised.

``nuts(target)`` returns the same :class:`Fit` as every VI method, with q an :class:`Empirical`
distribution of the draws; ``fit.summary()`` adds R-hat and bulk ESS (ArviZ). A run with a few divergent
transitions is rerun once with a higher target acceptance and a longer warm-up (:func:`rerun_accept`).
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.checks import verify
from vbayes.compilation import import_ahead
from vbayes.diagnostics import import_arviz, rhat_ess
from vbayes.errors import VBayesError, is_count, is_fraction, is_positive, require
from vbayes.fit import Fit, FitInfo
from vbayes.keys import as_key
from vbayes.samples import Empirical
from vbayes.targets import Target, check_initial_point

Array = jax.Array

RERUN_MAX_FRACTION = 0.01
"""A run is rerun only when its divergent transitions are at most this fraction of its draws: a few mean the step
size was a little too long somewhere; more mean the geometry (a funnel's neck) is out of reach of any step size the
adaptation will choose, and a rerun would not help (reparameterise instead)."""

RERUN_MIN_ACCEPT = 0.95
"""The lowest target acceptance a rerun uses (the first rerun from the default 0.8 goes straight to it)."""


class Run(NamedTuple):
    """One NUTS run of all chains: draws ``(chains, num_samples, d)``, each draw's acceptance probability
    ``(chains, num_samples)``, the adapted step sizes ``(chains,)``, its settings, what it found and what it cost
    (leapfrog steps, warm-up included; transitions)."""

    positions: Array
    accept: np.ndarray
    step_sizes: np.ndarray
    target_accept: float
    num_warmup: int
    divergences: int
    max_rhat: float
    min_ess_bulk: float
    grad_evals: int
    steps: int

    @property
    def divergence_fraction(self) -> float:
        """Divergent transitions over draws (chains × num_samples)."""
        return self.divergences / self.accept.size

    def record(self) -> dict[str, Any]:
        """The run's line in ``info.extra["reruns"]``."""
        return {
            "target_accept": self.target_accept,
            "num_warmup": self.num_warmup,
            "divergences": self.divergences,
            "max_rhat": self.max_rhat,
        }


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _run_chains(target: Target, key: Array, init: Array, num_warmup: int, num_samples: int, target_accept: float):
    """Warm-up and sampling for each row of ``init`` ``(chains, d)``, vmapped; returns positions
    ``(chains, num_samples, d)``, divergences, integration steps, acceptance, step sizes, warm-up steps."""
    import blackjax

    warmup = blackjax.window_adaptation(blackjax.nuts, target.log_density, target_acceptance_rate=target_accept)

    def one_chain(k, position):
        k_warm, k_draw = jax.random.split(k)
        (state, params), warm_info = warmup.run(k_warm, position, num_steps=num_warmup)
        kernel = blackjax.nuts(target.log_density, **params)

        def body(s, kk):
            s, info = kernel.step(kk, s)
            return s, (s.position, info.is_divergent, info.num_integration_steps, info.acceptance_rate)

        _, draws = jax.lax.scan(body, state, jax.random.split(k_draw, num_samples))
        return draws, params["step_size"], jnp.sum(warm_info.info.num_integration_steps)

    return jax.vmap(one_chain)(jax.random.split(key, init.shape[0]), init)


def _sample(target: Target, key: Array, init: Array, num_warmup: int, num_samples: int, target_accept: float) -> Run:
    """One run of every chain from ``init`` ``(chains, d)``, with its R-hat and ESS."""
    (positions, divergent, steps, accept), step_sizes, warm_steps = _run_chains(
        target, key, init, num_warmup, num_samples, target_accept
    )
    positions = jax.block_until_ready(positions)
    rhat, ess = max_rhat_min_ess(np.asarray(positions))
    return Run(
        positions=positions,
        accept=np.asarray(accept),
        step_sizes=np.asarray(step_sizes),
        target_accept=float(target_accept),
        num_warmup=num_warmup,
        divergences=int(np.sum(divergent)),
        max_rhat=rhat,
        min_ess_bulk=ess,
        grad_evals=int(np.sum(steps) + np.sum(warm_steps)),
        steps=init.shape[0] * (num_warmup + num_samples),
    )


def rerun_accept(target_accept: float) -> float:
    """A rerun's target acceptance: halfway to 1, and at least :data:`RERUN_MIN_ACCEPT`:
    a′ = max(1 − (1 − a)/2, 0.95), so 0.8 → 0.95 → 0.975 → 0.9875."""
    return max(1.0 - (1.0 - target_accept) / 2.0, RERUN_MIN_ACCEPT)


def _needs_rerun(run: Run) -> bool:
    """A few divergent transitions: more than none, at most :data:`RERUN_MAX_FRACTION` of the draws."""
    return 0 < run.divergence_fraction <= RERUN_MAX_FRACTION


def _kept_run(runs: list[Run]) -> Run:
    """The run with the smallest divergence fraction; on a tie the later (more careful) one."""
    return min(reversed(runs), key=lambda r: r.divergence_fraction)


def nuts(
    target: Target,
    chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    *,
    target_accept: float = 0.8,
    reruns: int = 1,
    init_radius: float = 2.0,
    key: Array | int | None = 0,
    checks: Any = "default",
) -> Fit:
    """NUTS (Hoffman & Gelman 2014) with window adaptation of step size and diagonal mass matrix.

    Each chain starts at a uniform draw in [−init_radius, init_radius]^d of the unconstrained space
    (Stan's default). A run with a few divergent transitions (more than none, at most :data:`RERUN_MAX_FRACTION`
    of the draws) is run again, up to ``reruns`` times (0: never), from the same starts with a fresh key
    (``fold_in(key, i)`` for rerun i), the target acceptance raised halfway to 1 and at least to 0.95
    (a′ = max(1 − (1 − a)/2, 0.95): 0.8 → 0.95 → 0.975) and twice the previous warm-up. The first clean run is
    kept; if every run diverges, the one with the smallest divergence fraction (the verdict then flags it). More
    divergences than that fraction are not rerun: a smaller step size does not reach a funnel's neck. A rerun
    compiles a program of its own (the warm-up's length and target are static).

    ``info.grad_evals`` counts leapfrog steps and ``info.steps`` transitions, warm-up included, of every run;
    ``info.wall_time`` covers every run. ``info.extra``: of the kept run, ``divergences``,
    ``divergence_fraction``, ``target_accept``, ``num_warmup``, ``acceptance_rate``, ``step_sizes`` ``(chains,)``,
    ``max_rhat``, ``min_ess_bulk``; ``chains``; and ``reruns``, one dict per run made (the first included:
    target_accept, num_warmup, divergences, max_rhat). The verdict (:mod:`vbayes.checks`) flags divergent
    transitions in the kept run (only notes a first run's that a clean rerun cleared) and R-hat ≥ 1.01.
    """
    t_start = time.perf_counter()
    if not isinstance(target, Target):
        raise VBayesError(f"nuts needs a vbayes Target, got {type(target).__name__}")
    require(
        [
            ("chains", chains, is_count(chains), "an integer ≥ 1"),
            (
                "num_warmup",
                num_warmup,
                is_count(num_warmup),
                "an integer ≥ 1 (the step size and mass matrix adapt in it)",
            ),
            ("num_samples", num_samples, is_count(num_samples), "an integer ≥ 1"),
            ("target_accept", target_accept, is_fraction(target_accept), "between 0 and 1"),
            ("reruns", reruns, is_count(reruns, 0), "an integer ≥ 0 (0: never rerun)"),
            ("init_radius", init_radius, is_positive(init_radius), "positive and finite"),
        ],
        "nuts",
    )
    import_ahead(import_arviz)  # R-hat and ESS at the end: the import overlaps the sampling
    key = as_key(key)
    k_init, k_run = jax.random.split(key)
    init = jax.random.uniform(k_init, (chains, target.dim), minval=-init_radius, maxval=init_radius)
    check_initial_point(target, init[0])
    runs = [_sample(target, k_run, init, num_warmup, num_samples, target_accept)]
    while len(runs) <= reruns and _needs_rerun(runs[-1]):
        last = runs[-1]
        k = jax.random.fold_in(key, len(runs))
        runs.append(_sample(target, k, init, 2 * last.num_warmup, num_samples, rerun_accept(last.target_accept)))
    kept = _kept_run(runs)
    info = FitInfo(
        method="nuts",
        outcome="completed",
        message=_run_message(runs, kept, chains, num_samples, reruns),
        steps=sum(r.steps for r in runs),
        grad_evals=sum(r.grad_evals for r in runs),
        skipped_steps=0,
        wall_time=time.perf_counter() - t_start,
        extra={
            "divergences": kept.divergences,
            "divergence_fraction": kept.divergence_fraction,
            "target_accept": kept.target_accept,
            "num_warmup": kept.num_warmup,
            "reruns": [r.record() for r in runs],
            "acceptance_rate": float(np.mean(kept.accept)),
            "step_sizes": kept.step_sizes.tolist(),
            "max_rhat": kept.max_rhat,
            "min_ess_bulk": kept.min_ess_bulk,
            "chains": chains,
        },
        trace_of="the acceptance rate of each draw, averaged over the chains",
    )
    fit = Fit(target=target, q=Empirical(kept.positions), trace=kept.accept.mean(0), info=info)
    return verify(fit, checks)


def _run_message(runs: list[Run], kept: Run, chains: int, num_samples: int, reruns: int) -> str:
    """What the runs found, one clause per run, and which run was kept (``FitInfo.message``)."""
    first = runs[0]
    text = (
        f"{chains} chains of {first.num_warmup} warm-up and {num_samples} draws at target_accept "
        f"{first.target_accept:g}: {_divergent(first)}"
    )
    for r in runs[1:]:
        text += f"; rerun at {r.target_accept:g} with {r.num_warmup} warm-up steps: {_divergent(r)}"
    if len(runs) > 1:
        which = "the first run" if kept is runs[0] else f"the run at {kept.target_accept:g}"
        text += f"; kept {which}"
    elif reruns and first.divergence_fraction > RERUN_MAX_FRACTION:
        text += (
            f"; not rerun (more than {RERUN_MAX_FRACTION:.0%} of the draws diverged: the geometry, not the step "
            "size, is at fault; reparameterise the model, or sample in a flow's space: neutra)"
        )
    return text + f"; max R-hat {kept.max_rhat:.3f}, min bulk ESS {kept.min_ess_bulk:.0f}"


def _divergent(run: Run) -> str:
    n = run.divergences
    return f"{n} divergent transitions" + (f" ({run.divergence_fraction:.2%} of the draws)" if n else "")


def max_rhat_min_ess(samples: np.ndarray) -> tuple[float, float]:
    """Max rank-normalised R-hat and min bulk ESS over coordinates of ``(chains, draws, d)`` (ArviZ)."""
    rhat, ess = rhat_ess({"z": samples})
    return float(rhat["z"].max()), float(ess["z"].min())
