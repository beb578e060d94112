"""Pareto-smoothed importance sampling of p̃/q (Vehtari, Simpson, Gelman, Yao & Gabry 2024, JMLR 25(72)).

:func:`psis` smooths the largest ratios by a fitted generalised Pareto tail, as ArviZ's ``psislw`` does (the
tests hold the two to agree); it lives here because importing ArviZ costs seconds, which every first fit's checks
would pay. The rest of the module gives the quantities a VI user needs from it, computed from draws of q.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.errors import VBayesError
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
    (q proportional to p̃), +inf when any ratio is not finite.

    Vehtari et al. (2024), §3: the M = ⌈min(S/5, 3√S)⌉ largest ratios are replaced by the expected order
    statistics of a generalised Pareto distribution fitted to their excess over the (M+1)-th largest (Zhang &
    Stephens 2009, with the weakly informative prior on k̂ of Vehtari et al.), truncated at the largest raw ratio;
    then the weights are normalised. Agrees with ArviZ 0.x's ``psislw`` (tested), without importing ArviZ (whose
    import costs seconds on every first fit)."""
    r = np.asarray(log_ratios, dtype=np.float64)
    if not np.all(np.isfinite(r)):
        return math.inf, np.full(r.shape, -math.inf)
    if np.ptp(r) < 1e-10 * max(1.0, np.abs(r).max()):
        return 0.0, np.full(r.shape, -math.log(r.size))
    lw = r - r.max()
    n = lw.size
    tail_len = math.ceil(min(0.2 * n, 3.0 * math.sqrt(n)))
    order = np.argsort(lw)
    cutoff = max(lw[order[-tail_len - 1]], math.log(np.finfo(np.float64).tiny))
    tail = np.flatnonzero(lw > cutoff)
    khat = math.inf
    if tail.size > 4:
        tail = tail[np.argsort(lw[tail])]
        excess = np.exp(lw[tail]) - math.exp(cutoff)
        khat, sigma = _gpd_fit(excess)
        if np.isfinite(khat):
            probs = (np.arange(tail.size) + 0.5) / tail.size
            smoothed = np.log(_gpd_quantile(probs, khat, sigma) + math.exp(cutoff))
            lw[tail] = np.minimum(smoothed, 0.0)  # truncated at the largest raw weight, exp(0)
    m = lw.max()
    return float(khat), lw - (m + math.log(np.sum(np.exp(lw - m))))


_PRIOR_K_WEIGHT = 10.0  # the prior on k̂: 10 pseudo-observations at k = 0.5 (Vehtari et al. 2024, appendix)
_PRIOR_B = 3.0  # Zhang & Stephens' (2009) prior scale for the grid of b = −k/σ


def _gpd_fit(x: np.ndarray) -> tuple[float, float]:
    """(k̂, σ̂) of a generalised Pareto distribution with location 0 for sorted positive ``x`` ``(n,)``: Zhang &
    Stephens' (2009) empirical Bayes estimate (the posterior mean of θ = −k/σ over a grid of m = 30 + ⌊√n⌋ points
    weighted by the profile likelihood, k = mean log(1 − θx)), then k̂ shrunk towards 0.5 by the weakly
    informative prior."""
    n = x.size
    m = 30 + int(math.sqrt(n))
    theta = 1.0 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))
    theta = theta / (_PRIOR_B * x[int(n / 4 + 0.5) - 1]) + 1.0 / x[-1]
    k_grid = np.mean(np.log1p(-theta[:, None] * x), axis=1)  # the profile estimate k(θ) = mean log(1 − θx)
    log_lik = n * (np.log(-theta / k_grid) - k_grid - 1.0)  # the profile log-likelihood at θ
    weights = np.exp(log_lik - log_lik.max())
    weights /= weights.sum()
    keep = weights >= 10 * np.finfo(np.float64).eps
    weights, theta = weights[keep] / weights[keep].sum(), theta[keep]
    theta_hat = float(np.sum(theta * weights))
    k = float(np.mean(np.log1p(-theta_hat * x)))
    sigma = -k / theta_hat
    k = (n * k + _PRIOR_K_WEIGHT * 0.5) / (n + _PRIOR_K_WEIGHT)
    return (k, sigma) if np.isfinite(k) else (math.inf, math.nan)


def _gpd_quantile(p: np.ndarray, k: float, sigma: float) -> np.ndarray:
    """Quantiles at ``p`` of the generalised Pareto distribution with location 0, shape k, scale σ:
    σ ((1 − p)^{−k} − 1)/k, and −σ log(1 − p) at k = 0."""
    if k == 0.0:
        return -sigma * np.log1p(-p)
    return sigma * np.expm1(-k * np.log1p(-p)) / k


@functools.partial(jax.jit, static_argnums=3)
def log_ratios(target: Target, q: Family, key: Array, num_draws: int) -> tuple[Array, Array]:
    """Draws z ~ q ``(S, d)`` and their log ratios log p̃(z) − log q(z) ``(S,)``."""
    z = q.sample(key, num_draws)
    return z, jax.vmap(target.log_density)(z) - q.log_prob(z)


def psis_resample(
    target: Target, q: Family, n: int, key: Array, num_draws: int | None = None
) -> tuple[np.ndarray, float]:
    """``n`` draws ``(n, d)`` approximately from the posterior: ``num_draws`` (default max(4n, 4000)) draws of q
    resampled with replacement by their PSIS-smoothed weights p̃/q (sampling-importance-resampling), and k̂. Raises a
    :class:`VBayesError` when k̂ ≥ min(1 − 1/log10 S, 0.7): then the weights cannot correct q (Vehtari et al. 2024)."""
    num = int(num_draws or max(4 * n, 4000))
    k_draw, k_pick = jax.random.split(key)
    z, r = jax.device_get(log_ratios(target, q, k_draw, num))
    khat, log_w = psis(np.asarray(r))
    limit = khat_threshold(num)
    if not khat < limit:
        raise VBayesError(
            f"k̂ = {khat:.2f} ≥ {limit:.2f}: importance weights p̃/q cannot correct this q (it misses part of the "
            "posterior's mass); use another method (vbayes compare)"
        )
    pick = np.asarray(jax.random.choice(k_pick, num, (n,), p=jnp.asarray(np.exp(log_w))))
    return np.asarray(z)[pick], float(khat)


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
    from scipy.special import logsumexp

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
