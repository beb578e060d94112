"""Pareto-smoothed importance sampling of p̃/q (Vehtari, Simpson, Gelman, Yao & Gabry 2024, JMLR 25(72)).

The smoothing itself is ArviZ's (``az.psislw``; in ArviZ 0.x it takes the log ratios log p̃ − log q as
they are). This module adds the quantities a VI user needs from it, computed from draws of q.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import jax
import numpy as np
from scipy.special import logsumexp

from vbayes.families import Family
from vbayes.targets import Target

Array = jax.Array


class ImportanceCheck(NamedTuple):
    """What the importance ratios r_s = log p̃(z_s) − log q(z_s), z_s ~ q, say about q.

    ``khat``: Pareto shape of the ratios' upper tail; ``khat_threshold``: min(1 − 1/log10 S, 0.7), below
    which importance sampling from q is reliable; ``ess``: PSIS effective sample size 1/Σw̃²;
    ``log_evidence``: log (1/S) Σ exp(r_s), an importance-sampling estimate of log Z (a lower bound in
    expectation); ``elbo`` and ``elbo_se``: mean of r_s (−inf when some r_s is −inf) and its Monte Carlo standard error;
    ``log_weights``: the smoothed, normalised log weights ``(S,)``.
    """

    khat: float
    khat_threshold: float
    ess: float
    log_evidence: float
    elbo: float
    elbo_se: float
    num_draws: int
    log_weights: np.ndarray

    @property
    def reliable(self) -> bool:
        """k̂ below the sample-size-aware threshold."""
        return self.khat < self.khat_threshold


def khat_threshold(num_draws: int) -> float:
    """min(1 − 1/log10 S, 0.7): 0.5 at S = 100, 0.667 at S = 1000, 0.7 from S ≈ 2154."""
    return min(1.0 - 1.0 / math.log10(num_draws), 0.7)


def psis(log_ratios: np.ndarray) -> tuple[float, np.ndarray]:
    """(k̂, smoothed normalised log weights) for log ratios ``(S,)``; k̂ = 0 when the ratios are constant
    (q proportional to p̃), +inf when any ratio is not finite."""
    import arviz as az

    r = np.asarray(log_ratios, dtype=np.float64)
    if not np.all(np.isfinite(r)):
        return math.inf, np.full(r.shape, -math.inf)
    if np.ptp(r) < 1e-10 * max(1.0, np.abs(r).max()):
        return 0.0, np.full(r.shape, -math.log(r.size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log_weights, khat = az.psislw(r)
    return float(khat), np.asarray(log_weights)


@functools.partial(jax.jit, static_argnums=3)
def log_ratios(target: Target, q: Family, key: Array, num_draws: int) -> tuple[Array, Array]:
    """Draws z ~ q ``(S, d)`` and their log ratios log p̃(z) − log q(z) ``(S,)``."""
    z = q.sample(key, num_draws)
    return z, jax.vmap(target.log_density)(z) - q.log_prob(z)


def importance_check(target: Target, q: Family, num_draws: int = 4000, key: Array | int = 0) -> ImportanceCheck:
    """PSIS k̂, ESS, importance-sampling log evidence and the ELBO with its standard error, from
    ``num_draws`` draws of q (4,000 by default: k̂ is noisy below that)."""
    key = jax.random.PRNGKey(key) if isinstance(key, int) else key
    _, r = log_ratios(target, q, key, num_draws)
    return importance_from_ratios(r)


def _std(r: np.ndarray) -> float:
    """The sample sd (ddof 1) of finite ``r`` ``(S,)``, scaled first so that ratios near 1e200 do not overflow."""
    centred = r - r.mean()
    scale = float(np.max(np.abs(centred))) if r.size else 0.0
    if scale == 0.0 or r.size < 2:
        return 0.0
    return scale * float(np.std(centred / scale, ddof=1))


def importance_from_ratios(log_ratios: np.ndarray) -> ImportanceCheck:
    """The :class:`ImportanceCheck` of log ratios r_s = log p̃(z_s) − log q(z_s) ``(S,)``, z_s ~ q."""
    r = np.asarray(log_ratios, dtype=np.float64)
    khat, lw = psis(r)
    finite = bool(np.all(np.isfinite(r)))
    # a −inf ratio (q puts mass where p̃ has none) makes the ELBO −inf; a NaN or +inf one leaves it undefined
    elbo = float(r.mean()) if finite else -math.inf if np.all(np.isfinite(r) | (r == -math.inf)) else math.nan
    ess = float(1.0 / np.sum(np.exp(2 * lw))) if np.all(np.isfinite(lw)) else 0.0
    return ImportanceCheck(
        khat=khat,
        khat_threshold=khat_threshold(r.size),
        ess=ess,
        log_evidence=float(logsumexp(r) - math.log(r.size)) if finite else math.nan,
        elbo=elbo,
        elbo_se=_std(r) / math.sqrt(r.size) if finite else math.nan,
        num_draws=r.size,
        log_weights=lw,
    )
