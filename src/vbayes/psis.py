"""Pareto-smoothed importance sampling of p̃/q (Vehtari, Simpson, Gelman, Yao & Gabry 2024, JMLR 25(72)).

:func:`psis` smooths the largest ratios by a fitted generalised Pareto tail, as ArviZ's ``psislw`` does (the
tests hold the two to agree); it lives here because importing ArviZ costs seconds, which every first fit's checks
would pay. The rest of the module gives the quantities a VI user needs from it, computed from draws of q.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

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
    ``log_weights``: the smoothed, normalised log weights ``(S,)``; ``log_ratios``: the raw r_s ``(S,)``;
    ``draws``: the z_s ``(S, d)`` and ``q``: the q they came from (both kept in memory, not in a fit's record, for
    :func:`vbayes.loo` to reuse when the fit's q is still that q; None where not kept).
    """

    khat: float
    khat_threshold: float
    ess: float
    log_evidence: float
    elbo: float
    elbo_se: float
    num_draws: int
    log_weights: np.ndarray
    log_ratios: np.ndarray | None = None
    draws: np.ndarray | None = None
    q: Any = None

    @property
    def reliable(self) -> bool:
        """k̂ below the sample-size-aware threshold."""
        return self.khat < self.khat_threshold


def khat_threshold(num_draws: int) -> float:
    """min(1 − 1/log10 S, 0.7): 0.5 at S = 100, 0.667 at S = 1000, 0.7 from S ≈ 2154."""
    return min(1.0 - 1.0 / math.log10(num_draws), 0.7)


def psis(log_ratios: np.ndarray) -> tuple[float, np.ndarray]:
    """(k̂, smoothed normalised log weights) for log ratios ``(S,)``; k̂ = 0 when the ratios are constant
    (q proportional to p̃), +inf when any ratio is not finite. One row of :func:`psis_rows`."""
    khat, log_w = psis_rows(np.asarray(log_ratios)[None])
    return float(khat[0]), log_w[0]


ROW_BLOCK = 256
"""Rows smoothed together by :func:`psis_rows` (its Pareto fits hold rows × 50 × 200 numbers at S = 4000)."""


def psis_rows(log_ratios: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """k̂ ``(N,)`` and smoothed normalised log weights ``(N, S)`` for ``N`` rows of log ratios ``(N, S)``, each
    row smoothed on its own (PSIS-LOO smooths one row per observation).

    Vehtari et al. (2024), §3: the M = ⌈min(S/5, 3√S)⌉ largest ratios are replaced by the expected order
    statistics of a generalised Pareto distribution fitted to their excess over the (M+1)-th largest (Zhang &
    Stephens 2009, with the weakly informative prior on k̂ of Vehtari et al.), truncated at the largest raw ratio;
    then the weights are normalised. Agrees with ArviZ 0.x's ``psislw`` (tested), without importing ArviZ (whose
    import costs seconds on every first fit)."""
    r = np.atleast_2d(np.asarray(log_ratios, dtype=np.float64))
    n_rows, n = r.shape
    khat, log_w = np.zeros(n_rows), np.empty_like(r)
    top, low = r.max(axis=1), r.min(axis=1)
    finite = np.isfinite(top) & np.isfinite(low)  # (a NaN anywhere makes the row's maximum NaN)
    khat[~finite], log_w[~finite] = math.inf, -math.inf
    constant = finite & (top - low < 1e-10 * np.maximum(1.0, np.maximum(np.abs(top), np.abs(low))))
    log_w[constant] = -math.log(n)
    rows = np.flatnonzero(finite & ~constant)
    for first in range(0, rows.size, ROW_BLOCK):
        block = rows[first : first + ROW_BLOCK]
        khat[block], log_w[block] = _smooth(r[block] - top[block, None])
    return khat, log_w


def _smooth(lw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`psis_rows` on finite rows ``(B, S)`` whose maximum is 0 (only each row's M + 1 largest are sorted)."""
    b, n = lw.shape
    tail_len = math.ceil(min(0.2 * n, 3.0 * math.sqrt(n)))
    top = np.argpartition(lw, n - tail_len - 1, axis=1)[:, n - tail_len - 1 :]  # the M + 1 largest, unordered
    top = np.take_along_axis(top, np.argsort(np.take_along_axis(lw, top, axis=1), axis=1), axis=1)
    values = np.take_along_axis(lw, top, axis=1)
    cutoff = np.maximum(values[:, 0], math.log(np.finfo(np.float64).tiny))
    tail, where = values[:, 1:], top[:, 1:]
    khat = np.full(b, math.inf)
    clean = np.all(tail > cutoff[:, None], axis=1)  # no ties at the cutoff: every row's tail has M entries
    if tail_len > 4 and clean.any():
        excess = np.exp(tail[clean]) - np.exp(cutoff[clean])[:, None]
        k, sigma = _gpd_fit(excess)
        khat[clean] = k
        fitted = np.flatnonzero(clean)[np.isfinite(k)]
        if fitted.size:
            probs = (np.arange(tail_len) + 0.5) / tail_len
            quantiles = _gpd_quantile(probs[None], khat[fitted][:, None], sigma[np.isfinite(k)][:, None])
            smoothed = np.minimum(np.log(quantiles + np.exp(cutoff[fitted])[:, None]), 0.0)
            rows = lw[fitted]
            np.put_along_axis(rows, where[fitted], smoothed, axis=1)
            lw[fitted] = rows
    for i in np.flatnonzero(~clean):  # ties at the cutoff (rare): this row's tail is what exceeds it
        khat[i], lw[i] = _smooth_row_with_ties(lw[i], cutoff[i])
    m = lw.max(axis=1, keepdims=True)
    return khat, lw - (m + np.log(np.sum(np.exp(lw - m), axis=1, keepdims=True)))


def _smooth_row_with_ties(lw: np.ndarray, cutoff: float) -> tuple[float, np.ndarray]:
    lw = lw.copy()
    tail = np.flatnonzero(lw > cutoff)
    if tail.size <= 4:
        return math.inf, lw
    tail = tail[np.argsort(lw[tail])]
    k, sigma = _gpd_fit((np.exp(lw[tail]) - math.exp(cutoff))[None])
    if np.isfinite(k[0]):
        probs = (np.arange(tail.size) + 0.5) / tail.size
        lw[tail] = np.minimum(np.log(_gpd_quantile(probs, k[0], sigma[0]) + math.exp(cutoff)), 0.0)
    return float(k[0]), lw


_PRIOR_K_WEIGHT = 10.0  # the prior on k̂: 10 pseudo-observations at k = 0.5 (Vehtari et al. 2024, appendix)
_PRIOR_B = 3.0  # Zhang & Stephens' (2009) prior scale for the grid of b = −k/σ


def _gpd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k̂, σ̂) ``(B,)`` of generalised Pareto distributions with location 0 for rows of sorted positive ``x``
    ``(B, n)``: Zhang & Stephens' (2009) empirical Bayes estimate (the posterior mean of θ = −k/σ over a grid of
    m = 30 + ⌊√n⌋ points weighted by the profile likelihood, k = mean log(1 − θx)), then k̂ shrunk towards 0.5 by
    the weakly informative prior; k̂ = +inf where the fit fails."""
    n = x.shape[1]
    m = 30 + int(math.sqrt(n))
    grid = 1.0 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))
    theta = grid[None] / (_PRIOR_B * x[:, int(n / 4 + 0.5) - 1 : int(n / 4 + 0.5)]) + 1.0 / x[:, -1:]  # (B, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        k_grid = np.mean(np.log1p(-theta[:, :, None] * x[:, None, :]), axis=2)  # the profile estimate k(θ)
        log_lik = n * (np.log(-theta / k_grid) - k_grid - 1.0)  # the profile log-likelihood at θ
        weights = np.exp(log_lik - log_lik.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        weights = np.where(weights >= 10 * np.finfo(np.float64).eps, weights, 0.0)
        weights /= weights.sum(axis=1, keepdims=True)
        theta_hat = np.sum(theta * weights, axis=1)
        k = np.mean(np.log1p(-theta_hat[:, None] * x), axis=1)
        sigma = -k / theta_hat
    k = (n * k + _PRIOR_K_WEIGHT * 0.5) / (n + _PRIOR_K_WEIGHT)
    bad = ~np.isfinite(k)
    return np.where(bad, math.inf, k), np.where(bad, math.nan, sigma)


def _gpd_quantile(p: np.ndarray, k: np.ndarray | float, sigma: np.ndarray | float) -> np.ndarray:
    """Quantiles at ``p`` of the generalised Pareto distribution with location 0, shape k, scale σ:
    σ ((1 − p)^{−k} − 1)/k, and −σ log(1 − p) at k = 0 (broadcast)."""
    k = np.asarray(k, dtype=np.float64)
    safe = np.where(k == 0.0, 1.0, k)
    return np.where(k == 0.0, -sigma * np.log1p(-p), sigma * np.expm1(-safe * np.log1p(-p)) / safe)


@functools.partial(jax.jit, static_argnums=3)
def log_ratios(target: Target, q: Family, key: Array, num_draws: int) -> tuple[Array, Array]:
    """Draws z ~ q ``(S, d)`` and their log ratios log p̃(z) − log q(z) ``(S,)``."""
    z = q.sample(key, num_draws)
    return z, target.log_density_rows(z) - q.log_prob(z)


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


KEPT_DRAWS = 2**21
"""The most numbers (S·d) of draws an :class:`ImportanceCheck` keeps (16 MiB in float64: d ≤ 524 at S = 4000)."""


def importance_from_ratios(log_ratios: np.ndarray, draws: np.ndarray | None = None, q: Any = None) -> ImportanceCheck:
    """The :class:`ImportanceCheck` of log ratios r_s = log p̃(z_s) − log q(z_s) ``(S,)``, z_s ~ q (``draws``
    ``(S, d)`` of ``q``, kept with the ratios when given and not too many)."""
    from scipy.special import logsumexp

    r = np.asarray(log_ratios, dtype=np.float64)
    khat, lw = psis(r)
    finite = bool(np.all(np.isfinite(r)))
    # a −inf ratio (q puts mass where p̃ has none) makes the ELBO −inf; a NaN or +inf one leaves it undefined
    elbo = float(r.mean()) if finite else -math.inf if np.all(np.isfinite(r) | (r == -math.inf)) else math.nan
    ess = float(1.0 / np.sum(np.exp(2 * lw))) if np.all(np.isfinite(lw)) else 0.0
    keep = q if draws is not None and q is not None and np.size(draws) <= KEPT_DRAWS else None
    return ImportanceCheck(
        khat=khat,
        khat_threshold=khat_threshold(r.size),
        ess=ess,
        log_evidence=float(logsumexp(r) - math.log(r.size)) if finite else math.nan,
        elbo=elbo,
        elbo_se=_std(r) / math.sqrt(r.size) if finite else math.nan,
        num_draws=r.size,
        log_weights=lw,
        log_ratios=r,
        draws=None if keep is None else np.asarray(draws),
        q=keep,
    )
