"""Importance sampling from a Gaussian fit: the posterior as PSIS-weighted draws of a defensive mixture around it.

A Gaussian q fitted by minimising KL(q‖p) is too narrow where the posterior's tails are heavier than its own (Yao,
Vehtari, Simpson & Gelman 2018). The proposal here is the equal mixture of q widened by c about its mean and the
multivariate Student-t with ν degrees of freedom and q's mean and covariance matrix,

    m(z) = ½ N(z; μ, c²Σ) + ½ t_ν(z; μ, Σ),

half of the draws from each (a defensive mixture, Hesterberg 1995; the balance heuristic of Veach & Guibas 1995):
the Gaussian keeps the draws where the posterior's mass is, the t's polynomial tails reach a heavier tail or a skew
that every Gaussian misses. Pareto-smoothed weights w_s ∝ p̃(z_s)/m(z_s) (Vehtari, Simpson, Gelman, Yao & Gabry
2024) turn the draws into the posterior's: q = Σ_s w_s δ(z − z_s), a :class:`~vbayes.samples.Weighted`. In tens of
dimensions the weights degenerate (the proposal's volume outgrows the posterior's), which k̂ says.

The verdict's checks (:mod:`vbayes.checks` names):

- ``importance``: k̂ of the weights below min(1 − 1/log10 S, 0.7): the mixture covers the posterior.
- ``reweighting``: the t's draws alone, weighted by p̃/t, give the same means and sds (the checks' margin of
  posteriordb's rule: mean W₁/sd ≤ 0.09, every sd ratio in [0.85, 1.18]); only a note when their own k̂ is too
  high to say.
- ``convergence``: the proposal's ADVI run ended by its own rule (a run stopped by its budget is only noted: the
  checks above judge the answer itself).
- ``restarts`` (opt-in): the whole method again from another seed agrees.

A log density that is NaN at a few of the far draws (an overflow in the model) gives them no weight, and the check
says how many; at more than :data:`MAX_NAN_SHARE` of them the fit is flagged.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from vbayes.checks import MAX_W1, SD_BAND, gaussian_w1, resolve, support_message, verify
from vbayes.compilation import QUICK, sized_jit
from vbayes.errors import VBayesError, is_count, is_positive, require
from vbayes.families import Gaussian
from vbayes.fit import Check, Fit, Verdict
from vbayes.keys import as_key
from vbayes.psis import ImportanceCheck, khat_threshold, psis
from vbayes.samples import Weighted
from vbayes.stored import stored
from vbayes.targets import Target

Array = jax.Array

WIDEN = 2.0
"""How much wider than q (about its mean) the mixture's Gaussian half is."""
DOF = 3.0
"""Degrees of freedom of the mixture's Student-t half."""
NUM_DRAWS = 32_000
"""Draws from the mixture, half from each component."""
MAX_NAN_SHARE = 0.01
"""At most this share of the draws may have a NaN log density (given no weight) before the fit is flagged."""


def importance_sampling(
    target: Target,
    proposal: Fit | None = None,
    *,
    key: Array | int | None = 0,
    family: str = "fullrank",
    widen: float = WIDEN,
    dof: float = DOF,
    num_draws: int = NUM_DRAWS,
    checks: Any = "default",
    progress: bool = False,
    **advi_options: Any,
) -> Fit:
    """The posterior of ``target`` as ``num_draws`` draws of the mixture of ``proposal``'s Gaussian q widened by
    ``widen`` and a Student-t with ``dof`` degrees of freedom, weighted by PSIS weights p̃/m: a :class:`Fit` whose q
    is a :class:`~vbayes.samples.Weighted` ``(S, d)``.

    ``proposal``: a fit of ``target`` with a Gaussian q (ADVI in a Gaussian family, Laplace), or None: ADVI in
    ``family`` with ``advi_options``, fitted now (its cost counts in ``grad_evals``; the draws' evaluations of log p̃,
    which need no gradient, in ``info.extra["density_evals"]``). ``checks``: ``"default"`` (convergence,
    importance, reweighting), ``"all"`` (and restarts: the whole method from another seed, its proposal ADVI in
    ``family`` with ``advi_options``, whatever ``proposal`` was given) or ``"none"``. ``info.importance``: k̂, ESS
    and the importance-sampling estimate of log Z from the weights.
    """
    require(
        [
            ("widen", widen, is_positive(widen) and widen >= 1, "a number ≥ 1"),
            ("dof", dof, is_positive(dof), "a number > 0"),
            ("num_draws", num_draws, is_count(num_draws, 2000), "an integer ≥ 2000 (half from each component)"),
        ],
        "importance_sampling",
    )
    names = resolve(checks)
    key = as_key(key)
    k_fit, k_draw, k_restart = jax.random.split(key, 3)
    if proposal is None:
        from vbayes.infer.advi import advi

        proposal = advi(target, family, key=k_fit, checks="none", progress=progress, **advi_options)
    elif advi_options:
        raise VBayesError(f"importance_sampling: the ADVI option(s) {sorted(advi_options)} need proposal=None")
    q = proposal.q
    if proposal.target is not target or not isinstance(q, Gaussian):
        what = "a fit of another target" if proposal.target is not target else f"a {type(q).__name__} q"
        raise VBayesError(f"importance_sampling needs a Gaussian fit of this target as its proposal, not {what}")
    t0 = time.perf_counter()
    half = int(num_draws) // 2
    z, r, r_t = jax.device_get(_mixture_draws(target, q, k_draw, half, float(widen), float(dof)))
    r, r_t = np.asarray(r, np.float64), np.asarray(r_t, np.float64)
    khat, log_w = _psis_finite(r)
    answer = Weighted(jnp.asarray(z), jnp.asarray(log_w, dtype=jnp.asarray(z).dtype))
    record = _record(r, khat, log_w)
    found = _checks(names, proposal, z, r, record, r_t, target)
    share = (time.perf_counter() - t0) / max(len(found), 1)
    found = [dataclasses.replace(c, seconds=share) for c in found]
    outcome = proposal.info.outcome if proposal.info.outcome in ("diverged", "interrupted") else "completed"
    extra = {
        "proposal": f"{proposal.info.method} ({proposal.info.outcome} after {proposal.info.steps} steps)",
        "widen": float(widen),
        "dof": float(dof),
        "num_draws": 2 * half,
        "density_evals": 2 * half,
        "ess": record.ess,
    }
    info = dataclasses.replace(
        proposal.info,
        method="advi-is",
        outcome=outcome,
        message=f"{2 * half} draws of ½ q widened {widen:g}× + ½ Student-t (ν = {dof:g}), weighted by PSIS",
        wall_time=proposal.info.wall_time + time.perf_counter() - t0,
        extra=extra,
        importance=record,
        verdict=Verdict(),
        trace_of=f"the proposal's trace: {proposal.info.trace_of}",
    )
    fit = Fit(target=target, q=answer, trace=proposal.trace, info=info)
    if "restarts" in names:

        def refit(k: Array) -> Fit:
            args = dict(family=family, widen=widen, dof=dof, num_draws=num_draws, **advi_options)
            return importance_sampling(target, key=k, checks="none", **args)

        found += verify(fit, ("restarts",), refit=refit, key=k_restart).verdict.checks
    return dataclasses.replace(fit, info=dataclasses.replace(info, verdict=Verdict(tuple(found))))


def _checks(names, proposal: Fit, z, r, record: ImportanceCheck, r_t, target: Target) -> list[Check]:
    """The ``convergence``, ``importance`` and ``reweighting`` checks named in ``names``."""
    found: list[Check] = []
    if "convergence" in names:
        outcome = proposal.info.outcome
        status = "pass" if outcome == "converged" else "flag" if outcome == "diverged" else "note"
        found.append(Check("convergence", status, f"the proposal ({proposal.info.method}) {outcome}"))
    if "importance" in names:
        found.append(_importance(r, record, target))
    if "reweighting" in names:
        found.append(_confirmation(z, record.log_weights, r_t))
    return found


def _importance(r: np.ndarray, record: ImportanceCheck, target: Target) -> Check:
    n_nan, limit, khat = int(np.sum(np.isnan(r))), record.khat_threshold, record.khat
    if n_nan > MAX_NAN_SHARE * r.size or np.any(r == np.inf):
        return Check("importance", "flag", support_message(target.name, r), float(khat), 0, r.size)
    note = f"; {n_nan} draws with log p̃ NaN get no weight" if n_nan else ""
    if khat < limit:
        message = f"k̂ {khat:.2f} < {limit:.2f} (ESS {record.ess:.0f} of {r.size}){note}"
        return Check("importance", "pass", message, float(khat), 0, r.size)
    message = (
        f"k̂ = {khat:.2f} ≥ {limit:.2f}: the mixture around q does not reach the posterior (too many dimensions for "
        f"importance sampling, or mass far from q){note}"
    )
    return Check("importance", "flag", message, float(khat), 0, r.size)


def _confirmation(z: np.ndarray, log_w: np.ndarray, r_t: np.ndarray) -> Check:
    """Whether the Student-t's draws alone (the second half of ``z`` ``(S, d)``), weighted by p̃/t (``r_t``),
    give the answer's means and sds."""
    khat_t, log_w_t = _psis_finite(r_t)
    if not khat_t < khat_threshold(r_t.size):
        message = f"the Student-t's draws alone are too few to confirm the answer (their k̂ {khat_t:.2f})"
        return Check("reweighting", "note", message, None, 0, 0)
    z = np.asarray(z, np.float64)
    mean, sd = _moments(z, log_w)
    mean_t, sd_t = _moments(z[-r_t.size :], log_w_t)
    ratios = sd_t / sd
    w1 = gaussian_w1((mean_t - mean) / sd, ratios)
    low, high = SD_BAND
    agree = w1 <= MAX_W1 and bool(np.all((ratios >= 1 / high) & (ratios <= 1 / low)))
    found = f"the Student-t's draws alone: mean W₁/sd {w1:.3f} from the answer, sd ratios "
    found += f"{1 / ratios.max():.2f}–{1 / ratios.min():.2f}"
    if agree:
        return Check("reweighting", "pass", found, float(w1))
    return Check("reweighting", "flag", found + ": the two disagree", float(w1))


def _psis_finite(r: np.ndarray) -> tuple[float, np.ndarray]:
    """(k̂, normalised log weights ``(S,)``) of the log ratios ``r``: draws where ``r`` is −inf (no posterior mass)
    or NaN weigh nothing; +inf makes k̂ +inf."""
    keep = np.isfinite(r) | (r == np.inf)
    log_w = np.full(r.shape, -np.inf)
    if not np.any(keep):
        return np.inf, np.full(r.shape, -np.log(r.size))
    khat, log_w[keep] = psis(r[keep])
    return khat, log_w


def _record(r: np.ndarray, khat: float, log_w: np.ndarray) -> ImportanceCheck:
    """k̂, ESS and log Z ≈ log (1/S) Σ_s p̃(z_s)/m(z_s) of the mixture's draws (a NaN or −inf ratio counts as 0);
    no ELBO: the answer has no density."""
    from scipy.special import logsumexp  # as in vbayes.psis: kept off the import of vbayes

    kept = np.isfinite(r)
    log_z = float(logsumexp(r[kept]) - np.log(r.size)) if np.any(kept) else -np.inf
    ess = float(1.0 / np.sum(np.exp(2 * log_w)))
    return ImportanceCheck(khat, khat_threshold(r.size), ess, log_z, np.nan, np.nan, r.size, log_w)


def _moments(z: np.ndarray, log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted means and sds ``(d,)`` of draws ``z`` ``(S, d)``."""
    w = np.exp(log_w)
    mean = w @ z
    return mean, np.sqrt(w @ (z - mean) ** 2)


@functools.partial(stored, name="importance._mixture_draws", static_argnums=(3,))
@sized_jit(0, QUICK, static_argnums=3)  # run once per fit: a small model's compiles quickly
def _mixture_draws(target: Target, q: Any, key: Array, n: int, widen: float, dof: float):
    """``n`` draws of the Gaussian q widened ``widen``× then ``n`` of the Student-t with ``dof`` degrees of freedom
    and q's mean and covariance matrix, with their log ratios to the equal mixture of the two and the t's draws'
    log ratios to the t alone: ``(z (2n, d), log p̃ − log m (2n,), log p̃ − log t (n,))``.

    The t: z = μ + (u − μ)√(ν/g), u ~ q, g ~ χ²_ν; log t(z) = log Γ((ν+d)/2) − log Γ(ν/2) − (d/2) log(ν/2) +
    log q(μ) − (ν+d)/2 · log(1 + δ²/ν), δ² = 2(log q(μ) − log q(z)) (q is Gaussian). The widened Gaussian:
    log q(μ + (z − μ)/c) − d log c."""
    k1, k2 = jax.random.split(key)
    mu, d = q.mean, q.mean.shape[-1]
    u = q.sample(k1, 2 * n)
    g = 2.0 * jax.random.gamma(k2, dof / 2, (n,), dtype=u.dtype)
    z = jnp.concatenate([mu + widen * (u[:n] - mu), mu + (u[n:] - mu) * jnp.sqrt(dof / g)[:, None]])
    log_q_mu = q.log_prob(mu)
    log_gauss = q.log_prob(mu + (z - mu) / widen) - d * jnp.log(widen)
    delta2 = 2.0 * (log_q_mu - q.log_prob(z))
    log_norm = gammaln((dof + d) / 2) - gammaln(dof / 2) - 0.5 * d * jnp.log(dof / 2)
    log_t = log_norm + log_q_mu - 0.5 * (dof + d) * jnp.log1p(delta2 / dof)
    log_p = target.log_density_rows(z)
    return z, log_p - (jnp.logaddexp(log_gauss, log_t) - jnp.log(2.0)), log_p[n:] - log_t[n:]
