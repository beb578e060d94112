"""The checks a fit runs on itself, and the verdict they give: whether its answer can be trusted.

None of the checks needs a reference; every driver runs them at the end of its fit (``checks="default"``), and
:func:`vbayes.compare.compare` reads the same verdicts. What "trusted" promises: the fit's means and sds agree
with the posterior's as far as importance sampling from the fit can tell.

============== ====================================================================================================
``convergence`` the run ended by its own stopping rule (``converged``; ``completed`` for fixed-budget methods);
                a run stopped by its step budget or by the user is only noted when ``importance`` and ``reweighting``
                both pass (they check the answer itself); a diverged run is always flagged
``curvature``   (Laplace) the precision at the mode is positive definite (no eigenvalue had to be clipped)
``importance``  PSIS k̂ of p̃/q from draws of q below min(1 − 1/log10 S, 0.7) (Vehtari et al. 2024): q covers the
                posterior's tails. Above it, the fit is flagged unless ``reweighting`` confirms q's moments from
                the widened proposal and a 2× wider one confirms them too (then k̂ is a *note*: q's tails are too
                light for importance sampling from q, but its means and sds are right).
``reweighting`` the posterior's per-coordinate means and sds, estimated by PSIS from q widened 1.5× about its
                mean (a flow: in its base space, so that its curved tails widen along their curve), or, when
                that proposal's own k̂ ≥ 0.7, from q itself, if reliable, agree with q's by posteriordb's
                accuracy rule with a safety margin: the mean over coordinates of W₁/sd between
                Gaussians with q's and the reweighted moments is ≤ 0.09 (the rule: 0.1), and every sd ratio lies in
                [0.85, 1.18] (the rule: [0.8, 1.25]). It sees what k̂ alone misses:
                a q sitting inside a funnel, a mode that is not the mean, sds that are too small.
``restarts``    (opt-in: costs a second fit) a fit from another seed agrees: means within 0.1 sd, sds within 10%.
``monotone``    (CAVI, EM) the objective never fell between iterations (beyond rounding).
``divergences`` (NUTS) no divergent transitions in the run kept (the message gives their fraction of the draws).
                A run with a few (≤ 1%) is rerun by :func:`vbayes.nuts` with a higher target_accept; a clean rerun
                is only a *note*, naming the first run's divergences.
``rhat``        (NUTS) rank-normalised R-hat < 1.01 on every coordinate.
============== ====================================================================================================

Each check records what it found and what it cost (seconds; evaluations of log p̃ or of its gradient).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.compilation import QUICK, sized_jit
from vbayes.errors import VBayesError
from vbayes.families import PointMass
from vbayes.fit import Check, Fit, Verdict
from vbayes.keys import as_key
from vbayes.psis import importance_from_ratios, psis
from vbayes.samples import Empirical, Weighted
from vbayes.stored import stored

Array = jax.Array

NAMES = ("convergence", "curvature", "importance", "reweighting", "restarts", "monotone", "divergences", "rhat")
DEFAULT = ("convergence", "curvature", "importance", "reweighting", "monotone", "divergences", "rhat")
"""The checks every fit runs unless told otherwise: all but ``restarts``, which costs a second fit."""

NUM_DRAWS = 4000
WIDEN = 1.5
# reweighting: the largest mean W₁/sd between q's margins and the reweighted ones, and the band every sd ratio must
# lie in. posteriordb's accuracy rule is 0.1 and [0.8, 1.25]; the margin covers the reweighted moments' pull towards
# q (a proposal cannot show mass it never reaches: on the shared posteriors the smallest sd ratio of a failed fit
# was estimated 0.79 where the truth was 0.57, its W₁/sd 0.105 where it was 0.133).
CONFIRM = 2.0
"""Where k̂ ≥ 0.7 but the 1.5× wider q confirms q's moments, a second proposal this much wider must confirm them
too before k̂ is only a note: a heavy tail that the first does not reach (a coupling flow on one_comp_mm_elim_abs
had a margin's sd 28% short, which the 1.5× proposal put at 0.89–0.98) shows there."""
MAX_W1 = 0.09
SD_BAND = (0.85, 1.18)
RESTART_SHIFT = 0.1
RESTART_SD_CHANGE = 1.1
RELIABLE_KHAT = 0.7


def resolve(checks: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"default"``, ``"all"``, ``"none"``/None/``()``, or names from :data:`NAMES`; a :class:`VBayesError`
    naming the unknown ones."""
    if checks is None or checks == "none":
        return ()
    if isinstance(checks, str):
        if checks == "default":
            return DEFAULT
        if checks == "all":
            return NAMES
        checks = (checks,)
    names = tuple(checks)
    unknown = [c for c in names if c not in NAMES]
    if unknown:
        raise VBayesError(f"unknown check(s) {unknown}; choose from {', '.join(NAMES)}, or 'default', 'all', 'none'")
    return names


def verify(
    fit: Fit, checks: str | Iterable[str] | None = "default", refit: Callable[[Array], Fit] | None = None, key=0
) -> Fit:
    """``fit`` with its verdict: the named checks that apply to its kind of q, run now. ``refit(key)`` fits the
    same model again from another seed (for ``restarts``). Adds ``info.importance`` when it computes k̂."""
    names = resolve(checks)
    key = as_key(key)
    q = fit.q
    found: list[Check] = []
    importance = fit.info.importance
    if isinstance(q, Empirical):
        runners = {"divergences": _divergences, "rhat": _rhat}
        found += [runners[n](fit) for n in names if n in runners]
    else:
        if "convergence" in names:
            found.append(_convergence(fit))
        if "curvature" in names and "clipped" in fit.info.extra:
            found.append(_curvature(fit))
        if "monotone" in names and fit.info.extra.get("monotone_objective"):
            found.append(_monotone(fit))
        wants = [n for n in ("importance", "reweighting") if n in names]
        if wants:
            reason = _no_density_reason(fit)
            if reason:
                found += [Check(n, "skip", reason) for n in wants]
            else:
                checked, importance = _reweighting(fit, wants, key)
                found += checked
        if "restarts" in names:
            found.append(_restarts(fit, refit, jax.random.fold_in(key, 7)))
        found = _cleared_by_reweighting(found)
    info = dataclasses.replace(fit.info, verdict=Verdict(tuple(found)), importance=importance)
    return dataclasses.replace(fit, info=info)


# ----------------------------------------------------------------------------------------------------
# the checks


def _convergence(fit: Fit) -> Check:
    i = fit.info
    if not _finite_q(fit.q):
        return Check("convergence", "flag", f"{i.outcome}, but q's parameters are not finite (NaN or inf)")
    if i.outcome in ("converged", "completed"):
        return Check("convergence", "pass", f"{i.outcome}")
    return Check("convergence", "flag", f"{i.outcome}: {i.message}")


def _finite_q(q: Any) -> bool:
    """Every floating-point array in q's pytree is finite."""
    leaves = (np.asarray(x) for x in jax.tree_util.tree_leaves(q))
    return all(np.all(np.isfinite(x)) for x in leaves if np.issubdtype(x.dtype, np.inexact))


def _cleared_by_reweighting(found: list[Check]) -> list[Check]:
    """A run stopped by its budget or by the user (not by its own rule) is only *noted* when the importance
    checks vouch for the answer itself: k̂ below its threshold and a passing reweighting."""
    by_name = {c.name: c for c in found}
    conv, imp, moments = by_name.get("convergence"), by_name.get("importance"), by_name.get("reweighting")
    stopped_early = conv is not None and conv.status == "flag" and not conv.message.startswith("diverged")
    if stopped_early and imp is not None and imp.status == "pass" and moments is not None and moments.status == "pass":
        cleared = dataclasses.replace(
            conv, status="note", message=conv.message + " (but the answer passes k̂ and the reweighting)"
        )
        return [cleared if c is conv else c for c in found]
    return found


def _curvature(fit: Fit) -> Check:
    extra = fit.info.extra
    if extra["clipped"]:
        return Check(
            "curvature", "flag", extra.get("clip_message", "the curvature was clipped"), float(extra["clipped"])
        )
    return Check("curvature", "pass", "the precision at the mode is positive definite", 0.0)


def _monotone(fit: Fit) -> Check:
    trace = np.asarray(fit.trace, dtype=np.float64)
    if trace.size < 2:
        return Check("monotone", "skip", "fewer than two iterations")
    drops = -np.diff(trace)
    allowed = 1e-9 * np.maximum(1.0, np.abs(trace[1:]))
    worst = int(np.argmax(drops - allowed))
    if drops[worst] > allowed[worst]:
        return Check(
            "monotone",
            "flag",
            f"the objective fell by {drops[worst]:.3g} at iteration {worst + 2}: coordinate ascent must never lower "
            "it (a numerical breakdown, e.g. a degenerate component)",
            float(drops[worst]),
        )
    return Check("monotone", "pass", "objective never fell", float(max(drops.max(), 0.0)))


def _no_density_reason(fit: Fit) -> str | None:
    """Why the importance checks cannot run on this fit's q (None: they can)."""
    if fit.target is None:
        return "no log density to compare q with (a conjugate model fitted without a target)"
    if isinstance(fit.q, PointMass) or getattr(fit.q, "point_mass", False):
        return "q is a point mass: it claims no uncertainty to check"
    if isinstance(fit.q, Weighted):
        return "q is importance-weighted draws, checked by importance sampling itself (vbayes.infer.importance)"
    if fit.info.outcome == "diverged":
        return "the fit diverged"
    if not _finite_q(fit.q):
        return "q's parameters are not finite"
    return None


def _reweighting(fit: Fit, wants: list[str], key: Array) -> tuple[list[Check], Any]:
    """The ``importance`` and ``reweighting`` checks from one compiled evaluation of log p̃ at 2 × NUM_DRAWS draws."""
    t0 = time.perf_counter()
    q, target = fit.q, fit.target
    z_q, r_q, z_w, r_w, mean, sd = jax.device_get(_ratio_draws(target, q, key, NUM_DRAWS, WIDEN))
    imp = importance_from_ratios(r_q, z_q, q)
    mean, sd = mean.astype(np.float64), sd.astype(np.float64)
    khat_w, shift, ratios = _reweighted_moments(z_w, r_w, mean, sd)
    proposal = f"a {WIDEN}× wider q"
    if not khat_w < RELIABLE_KHAT and imp.khat < RELIABLE_KHAT:
        proposal = f"q itself (a {WIDEN}× wider q is no reliable proposal, k̂ {khat_w:.2f})"
        _, shift, ratios = _reweighted_moments(z_q, r_q, mean, sd)
    estimated = khat_w < RELIABLE_KHAT or imp.khat < RELIABLE_KHAT
    w1 = gaussian_w1(shift, ratios) if estimated else math.inf
    agree = estimated and w1 <= MAX_W1 and _within(ratios)
    wider = None
    if not imp.reliable and agree and khat_w < RELIABLE_KHAT:  # k̂ would be only a note: ask a wider q too
        _, _, z_2, r_2, _, _ = jax.device_get(_ratio_draws(target, q, jax.random.fold_in(key, 1), NUM_DRAWS, CONFIRM))
        khat_2, shift_2, ratios_2 = _reweighted_moments(z_2, r_2, mean, sd)
        if not (khat_2 < RELIABLE_KHAT and gaussian_w1(shift_2, ratios_2) <= MAX_W1 and _within(ratios_2)):
            wider = f"k̂ {khat_2:.2f}" if not khat_2 < RELIABLE_KHAT else f"sd ratios {_ratio_range(ratios_2)}"
    seconds = time.perf_counter() - t0
    out = []
    if "importance" in wants:
        value = imp.khat
        if imp.reliable:
            out.append(Check("importance", "pass", f"k̂ {value:.2f} < {imp.khat_threshold:.2f}", value))
        elif "reweighting" in wants and agree and khat_w < RELIABLE_KHAT and wider is None:
            message = (
                f"k̂ {value:.2f} ≥ {imp.khat_threshold:.2f}: q's tails are lighter than the posterior's (importance "
                f"sampling from q is unreliable), but {proposal} and a {CONFIRM:g}× wider q confirm its means and sds"
            )
            out.append(Check("importance", "note", message, value))
        elif not np.all(np.isfinite(r_q)):
            out.append(Check("importance", "flag", support_message(target.name, r_q), value))
        else:
            message = (
                f"k̂ = {value:.2f} ≥ {imp.khat_threshold:.2f}: importance sampling from q does not reach the "
                "posterior (q misses part of its mass, or differs from it in many dimensions at once)"
            )
            if wider is not None:
                message += f"; a {CONFIRM:g}× wider q does not confirm q's sds ({wider})"
            out.append(Check("importance", "flag", message, value))
    if "reweighting" in wants:
        if not estimated:
            message = f"neither q nor a {WIDEN}× wider q is a reliable proposal (k̂ {imp.khat:.2f}, {khat_w:.2f})"
            out.append(Check("reweighting", "skip", message))
        else:
            found = (
                f"reweighting from {proposal}: mean W₁/sd {w1:.3f} between q's margins and the reweighted ones, sd "
                f"ratios {_ratio_range(ratios)}"
            )
            if agree:
                out.append(Check("reweighting", "pass", found, float(w1)))
            else:
                out.append(Check("reweighting", "flag", found + ": q misses part of the posterior", float(w1)))
    share = seconds / max(len(out), 1)
    out = [dataclasses.replace(c, seconds=share, evaluations=2 * NUM_DRAWS // len(out)) for c in out]
    return out, imp


def support_message(name: str, log_ratios: np.ndarray) -> str:
    """Why log p̃ − log q ``(S,)`` at draws of q is not finite everywhere: where, and what to do about it."""
    n_bad = int(np.sum(~np.isfinite(log_ratios)))
    if np.any(np.isnan(log_ratios)):
        return (
            f"log p̃ of {name!r} is NaN at {n_bad} of {log_ratios.size} draws of q: the model's log density fails "
            "there (an overflow, an invalid argument); check the model"
        )
    return (
        f"log p̃ of {name!r} is −inf at {n_bad} of {log_ratios.size} draws of q: q puts mass where the target has "
        "none, so its support is bounded in a way its parameterisation does not express. Declare the support "
        "(constraints= in from_logdensity, a constrained distribution in a NumPyro model) so that the fit runs in "
        "unconstrained coordinates"
    )


def _ratio_range(ratios: np.ndarray) -> str:
    """The q-sd / reweighted-sd ratios ``(d,)`` (``ratios`` are their inverses) as "low–high"."""
    return f"{1 / ratios.max():.2f}–{1 / ratios.min():.2f}"


def _within(ratios: np.ndarray) -> bool:
    """Every posterior-sd / q-sd ratio (hence every q-sd / posterior-sd ratio) within :data:`SD_BAND`."""
    low, high = SD_BAND
    return bool(np.all((ratios >= 1.0 / high) & (ratios <= 1.0 / low)))


def gaussian_w1(shift: np.ndarray, ratios: np.ndarray) -> float:
    """Mean over coordinates of W₁(N(0, 1), N(δ, r²)) / r: the W₁ distance, in units of the second sd, between
    q's margin (standardised) and a Gaussian with the reweighted mean δ and sd r (in q's sds). With the quantile
    coupling x₂ = δ + r x₁ it is E|(r − 1)Z + δ| = a√(2/π) e^{−δ²/2a²} + δ(1 − 2Φ(−δ/a)), a = |r − 1|."""
    from scipy.special import erf  # 1 − 2Φ(−x) = erf(x/√2); scipy.stats would cost a first fit a second to import

    d, r = np.abs(np.asarray(shift, dtype=np.float64)), np.asarray(ratios, dtype=np.float64)
    a = np.abs(r - 1.0)
    safe = np.maximum(a, 1e-300)
    e = np.where(
        a > 1e-12, a * np.sqrt(2 / np.pi) * np.exp(-(d**2) / (2 * safe**2)) + d * erf(d / (safe * np.sqrt(2))), d
    )
    return float(np.mean(e / r))


def _reweighted_moments(z: np.ndarray, log_r: np.ndarray, mean: np.ndarray, sd: np.ndarray):
    """(k̂, mean shifts ``(d,)`` and sd ratios ``(d,)`` in q's sds) of PSIS-reweighted draws ``z`` ``(S, d)``."""
    khat, log_w = psis(np.asarray(log_r))
    if not np.isfinite(khat):
        return khat, np.full(mean.shape, math.inf), np.full(mean.shape, math.nan)
    w = np.exp(log_w)
    m = w @ z
    s = np.sqrt(w @ (z - m) ** 2)
    return khat, (m - mean) / sd, s / sd


@functools.partial(stored, name="checks._ratio_draws", static_argnums=(3,))
@sized_jit(0, QUICK, static_argnums=3)  # run once per fit: a small model's compiles quickly
def _ratio_draws(target, q, key: Array, n: int, widen: float):
    """Draws of q and of q widened by ``widen`` about its mean, with their log ratios log p̃ − log q, and q's
    mean and marginal sds: ``(z_q (n, d), r_q (n,), z_w (n, d), r_w (n,), mean (d,), sd (d,))``.
    z = μ + widen·(u − μ), u ~ q, has density q(μ + (z − μ)/widen)·widen^{−d}; a q with ``widened_sample`` (a flow)
    widens in its own base space instead."""
    k1, k2 = jax.random.split(key)
    z_q = q.sample(k1, n)
    mu = q.mean
    if hasattr(q, "widened_sample"):  # a q with a shape of its own (a flow) widens in its own coordinates
        z_w, log_q_w = q.widened_sample(k2, n, widen)
    else:
        u = q.sample(k2, n)
        z_w, log_q_w = mu + widen * (u - mu), q.log_prob(u) - mu.shape[-1] * jnp.log(widen)
    log_p = target.log_density_rows(jnp.concatenate([z_q, z_w]))
    r_q = log_p[:n] - q.log_prob(z_q)
    return z_q, r_q, z_w, log_p[n:] - log_q_w, mu, q.marginal_sd()


def ratio_draws_args(target: Any, q: Any, key: Array) -> tuple:
    """The program and arguments the ``importance`` and ``reweighting`` checks evaluate, for
    :func:`vbayes.compilation.compile_ahead`."""
    return _ratio_draws, target, q, key, NUM_DRAWS, WIDEN


def widened_reweighting(fit: Fit, widen: float = WIDEN, num_draws: int = NUM_DRAWS, key: Array | int = 0):
    """(k̂, max mean shift in q-sd units, sd ratios ``(d,)``) from PSIS-reweighted draws of q widened by ``widen``:
    the weights p̃/q_wide give the posterior's moments as far as the wider proposal reaches."""
    q = fit.q
    _, _, z, log_r, mean, sd = jax.device_get(_ratio_draws(fit.target, q, as_key(key), num_draws, float(widen)))
    khat, shift, ratios = _reweighted_moments(z, log_r, mean.astype(np.float64), sd.astype(np.float64))
    return khat, float(np.max(np.abs(shift))), ratios


def _restarts(fit: Fit, refit: Callable[[Array], Fit] | None, key: Array) -> Check:
    if refit is None:
        return Check("restarts", "skip", "this method has no random start to vary")
    t0 = time.perf_counter()
    other = refit(key)
    seconds = time.perf_counter() - t0
    sd = np.asarray(fit.q.marginal_sd())
    shift = float(np.max(np.abs(np.asarray(fit.q.mean) - np.asarray(other.q.mean)) / sd))
    ratio = float(np.max(np.abs(np.log(np.asarray(other.q.marginal_sd()) / sd))))
    cost = int(other.info.grad_evals)
    if shift > RESTART_SHIFT or ratio > math.log(RESTART_SD_CHANGE):
        message = f"restarts disagree (means {shift:.2f} sd apart, sds {math.exp(ratio) - 1:.0%} apart)"
        return Check("restarts", "flag", message, shift, seconds, cost)
    message = f"a restart agrees (means {shift:.2f} sd apart, sds {math.exp(ratio) - 1:.0%} apart)"
    return Check("restarts", "pass", message, shift, seconds, cost)


def _divergences(fit: Fit) -> Check:
    """Flags divergent transitions in the run NUTS kept, with their fraction of the draws. A clean run kept after a
    rerun (``extra["reruns"]``: one record per run) is a *note*: trusted, with the first run's divergences shown."""
    extra, n = fit.info.extra, int(fit.info.extra.get("divergences", 0))
    fraction = float(extra.get("divergence_fraction", n / max(int(np.prod(fit.q.samples.shape[:2])), 1)))
    found = f"{n} divergent transitions ({fraction:.2%} of the draws)" if n else "no divergent transitions"
    if len(runs := extra.get("reruns") or []) < 2:
        return Check("divergences", "flag" if n else "pass", found, float(n))
    first, last = runs[0], runs[-1]
    if extra.get("num_warmup") == first["num_warmup"]:  # every rerun warms up longer: the first run was kept
        message = (
            f"{found} in the first run, at target_accept {first['target_accept']:g}; a rerun at "
            f"{last['target_accept']:g} with {last['num_warmup']} warm-up steps had {last['divergences']}"
        )
    else:
        message = (
            f"{found} after a rerun at target_accept {extra['target_accept']:g} with {extra['num_warmup']} warm-up "
            f"steps (the first run, at {first['target_accept']:g}, had {first['divergences']})"
        )
    return Check("divergences", "flag" if n else "note", message, float(n))


def _rhat(fit: Fit) -> Check:
    rhat = float(fit.info.extra.get("max_rhat", math.nan))
    tail = f", min bulk ESS {ess:.0f}" if (ess := fit.info.extra.get("min_ess_bulk")) is not None else ""
    if not rhat < 1.01:
        return Check("rhat", "flag", f"R-hat {rhat:.3f} ≥ 1.01 (the chains disagree){tail}", rhat)
    return Check("rhat", "pass", f"R-hat {rhat:.3f} < 1.01{tail}", rhat)
