"""Leave-one-out cross-validation that is right for an approximate posterior (PSIS-LOO with the q-correction).

For draws θ_s ~ q with importance ratios r_s = p̃(θ_s)/q(θ_s), the leave-one-out predictive density of
observation i is estimated by self-normalised importance sampling with ratios r_s / p(y_i | θ_s), Pareto-smoothed
per observation (Vehtari, Gelman & Gabry 2017; with the correction for q ≠ p of Magnusson, Andersen, Jonasson &
Vehtari 2019, 2020):

    elpd_i = log Σ_s w̃_is p(y_i | θ_s),   w̃_i = PSIS-normalised( r_s / p(y_i | θ_s) ).

For MCMC draws r_s = 1 (the usual PSIS-LOO); ``correct=False`` treats q's draws as posterior draws (what
``az.loo`` does with a VI fit's draws). Each observation gets its k̂ (reliable below min(1 − 1/log10 S, 0.7)), and
the correction its own k̂, that of r alone. For large N, ``subsample=m`` computes elpd_i exactly on m observations
drawn without replacement and corrects a cheap approximation of all N by the difference estimator of Magnusson et
al. (2019) (the approximation: log p(y_i | θ̄) at the weighted posterior mean), reporting its subsampling error.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import numpy as np

from vbayes.checks import NUM_DRAWS
from vbayes.errors import VBayesError, is_count, require
from vbayes.families import PointMass
from vbayes.fit import Fit
from vbayes.keys import as_key, numpy_rng
from vbayes.predictive import flat_log_likelihood, require_observations
from vbayes.psis import khat_threshold, log_ratios, psis, psis_rows
from vbayes.samples import Empirical, Weighted

Array = jax.Array


class LOO(NamedTuple):
    """PSIS-LOO of a fit. ``elpd``: Σ_i elpd_i; ``se``: √(N · var_i elpd_i) (ArviZ's convention); ``p_loo``: the
    in-sample log predictive density less ``elpd`` (the effective number of parameters); ``pointwise`` and
    ``khat``: per observation ``(N,)`` (only the m subsampled ones with ``subsample``, NaN elsewhere);
    ``weights_khat``: k̂ of the ratios p̃/q themselves (NaN for MCMC draws or without the correction);
    ``subsample_se``: the standard error from subsampling (0 when every observation was used); ``nan_draws``: the
    draws at which log p̃ was NaN (the model fails there: the correction, and so elpd, is undefined)."""

    elpd: float
    se: float
    p_loo: float
    pointwise: np.ndarray
    khat: np.ndarray
    weights_khat: float
    num_draws: int
    corrected: bool
    subsample: int | None
    subsample_se: float
    method: str
    nan_draws: int = 0

    @property
    def n_obs(self) -> int:
        return int(self.pointwise.size)

    @property
    def threshold(self) -> float:
        return khat_threshold(self.num_draws)

    @property
    def bad_observations(self) -> np.ndarray:
        """Indices of the observations whose k̂ is at or above :attr:`threshold` (their elpd_i is unreliable)."""
        return np.flatnonzero(~(np.nan_to_num(self.khat, nan=0.0) < self.threshold))

    @property
    def reliable(self) -> bool:
        """Every observation's k̂, and the correction's, below the threshold."""
        corr = math.isnan(self.weights_khat) or self.weights_khat < self.threshold
        return corr and self.bad_observations.size == 0

    def warnings(self) -> list[str]:
        out = []
        if self.nan_draws:
            out.append(
                f"log p̃ is NaN at {self.nan_draws} of {self.num_draws} draws (the model's log density fails there): "
                "the q-correction, and so elpd_loo, is undefined"
            )
        elif not (math.isnan(self.weights_khat) or self.weights_khat < self.threshold):
            out.append(
                f"the q-correction's k̂ is {self.weights_khat:.2f} ≥ {self.threshold:.2f}: the fit's q is too far "
                "from the posterior for importance weights to correct it"
            )
        bad = self.bad_observations
        if bad.size:
            out.append(f"{bad.size} observation(s) with k̂ ≥ {self.threshold:.2f} (e.g. {bad[:5].tolist()})")
        return out

    def summary(self) -> str:
        """One line: elpd_loo ± se, p_loo, and what makes it unreliable."""
        sub = f", subsampled {self.subsample} of {self.n_obs} (± {self.subsample_se:.2f})" if self.subsample else ""
        how = "q-corrected PSIS-LOO" if self.corrected else "PSIS-LOO of q's draws, uncorrected"
        how = "PSIS-LOO of MCMC draws" if self.method == "mcmc" else how
        text = f"elpd_loo {self.elpd:.2f} ± {self.se:.2f}, p_loo {self.p_loo:.2f} ({how}{sub})"
        return text + ("; " + "; ".join(self.warnings()) if self.warnings() else "")

    def to_arviz(self):
        """ArviZ's ``ELPDData`` of this LOO, for ``az.compare`` (stacking weights and the like)."""
        from vbayes.diagnostics import import_arviz

        az = import_arviz()
        import pandas as pd
        import xarray as xr

        if self.subsample:
            raise VBayesError("a subsampled LOO has no elpd_i for every observation, which az.compare needs")
        pointwise = xr.DataArray(self.pointwise, dims=["obs"], name="loo_i")
        khat = xr.DataArray(np.nan_to_num(self.khat, nan=0.0), dims=["obs"])
        data = [self.elpd, self.se, self.p_loo, self.num_draws, self.n_obs, not self.reliable, pointwise, khat]
        data += ["log", self.threshold]
        index = ["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "loo_i", "pareto_k", "scale"]
        return az.stats.ELPDData(data=data, index=pd.Index([*index, "good_k"]))


def loo(
    fit: Fit,
    *,
    num_draws: int | None = None,
    key: Array | int | None = None,
    correct: bool = True,
    subsample: int | None = None,
) -> LOO:
    """PSIS-LOO of ``fit`` (a VI, Laplace or Pathfinder fit: draws of q, corrected by p̃/q unless ``correct=False``;
    an MCMC fit: all its draws; importance sampling's fit: ``num_draws`` of its weighted draws, at random, always
    with their weights). A fit's q is drawn from anew only when ``num_draws`` or ``key`` is given or its importance
    check kept no draws of this q: otherwise the LOO reuses the draws that check evaluated log p̃ at, and their
    ratios (no new evaluation of the full log density). Defaults: as many draws as the check's
    (:data:`vbayes.checks.NUM_DRAWS`), key 0. ``subsample``: compute elpd_i on that many observations only (for N
    in the tens of thousands and more). Needs a target with per-observation log-likelihoods
    (:func:`vbayes.from_numpyro`, :func:`vbayes.from_loglik`)."""
    target = require_observations(fit.target)
    require(
        [
            ("num_draws", num_draws, num_draws is None or is_count(num_draws, 100),
             "None or an integer ≥ 100 (PSIS fits the largest ratios' tail)"),
            ("subsample", subsample, subsample is None or is_count(subsample, 2), "None or an integer ≥ 2"),
            ("correct", correct, isinstance(correct, bool), "True or False"),
        ],
        "loo",
    )  # fmt: skip
    if isinstance(fit.q, PointMass):
        raise VBayesError("LOO needs draws from the posterior: a point estimate (MAP) has none")
    checked = fit.info.importance if num_draws is None and key is None else None
    num_draws = NUM_DRAWS if num_draws is None else int(num_draws)
    k_draw, k_pick = jax.random.split(as_key(key))
    if isinstance(fit.q, Empirical):
        z = np.asarray(fit.q.samples).reshape(-1, target.dim)
        log_r, corrected, method = np.zeros(z.shape[0]), False, "mcmc"
    elif isinstance(fit.q, Weighted):  # the weights p̃/q of importance sampling are the correction's ratios
        log_r = np.asarray(fit.q.log_weights, dtype=np.float64)
        kept = np.flatnonzero(np.isfinite(log_r))  # a draw of weight 0 adds nothing (and its log-likelihood may be NaN)
        if kept.size > num_draws:  # a uniform subset keeps the weights' meaning
            kept = np.sort(np.asarray(jax.random.choice(k_draw, kept, (num_draws,), replace=False)))
        z, log_r = np.asarray(fit.q.draws)[kept], log_r[kept]
        corrected, method = True, fit.info.method
    else:
        if checked is not None and checked.draws is not None and checked.q is fit.q:  # the draws of this very q
            z, log_r = np.asarray(checked.draws), np.asarray(checked.log_ratios, dtype=np.float64)
        else:
            z, log_r = jax.device_get(log_ratios(target, fit.q, k_draw, num_draws))
            z, log_r = np.asarray(z), np.asarray(log_r, dtype=np.float64)
        corrected, method = bool(correct), fit.info.method
        if not correct:
            log_r = np.zeros_like(log_r)
    s = z.shape[0]
    weights_khat, log_w = psis(log_r) if corrected else (math.nan, np.full(s, -math.log(s)))
    if subsample is None:
        elpd_i, khat, lpd = _elpd_rows(flat_log_likelihood(target, z), log_r, log_w)
        elpd, se = float(elpd_i.sum()), float(math.sqrt(elpd_i.size * np.var(elpd_i)))
        out = LOO(elpd, se, float(lpd.sum() - elpd), elpd_i, khat, weights_khat, s, corrected, None, 0.0, method)
    else:
        out = _subsampled(target, z, log_r, log_w, int(subsample), k_pick, weights_khat, corrected, method)
    return out._replace(nan_draws=int(np.sum(np.isnan(log_r))))


OBS_BLOCK = 1024
"""Observations whose leave-one-out weights are smoothed together (a (block, S) array at a time)."""


def _elpd_rows(ll: np.ndarray, log_r: np.ndarray, log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """elpd_i, k̂_i and the in-sample lpd_i = log Σ_s w_s p(y_i | θ_s) from log-likelihoods ``(S, N)``, log ratios
    ``(S,)`` and the ratios' normalised smoothed log weights ``(S,)``; a block of observations at a time."""
    n = ll.shape[1]
    elpd, khat, lpd = np.empty(n), np.empty(n), np.empty(n)
    for first in range(0, n, OBS_BLOCK):
        part = np.ascontiguousarray(ll[:, first : first + OBS_BLOCK].T)  # (block, S)
        k, loo_w = psis_rows(log_r[None, :] - part)
        done = slice(first, first + part.shape[0])
        elpd[done], khat[done], lpd[done] = _logsumexp(loo_w + part, axis=1), k, _logsumexp(log_w + part, axis=1)
    return elpd, khat, lpd


def _subsampled(target, z, log_r, log_w, m, key, weights_khat, corrected, method) -> LOO:
    """The difference estimator (Magnusson et al. 2019, §3): elpd ≈ Σ_i π_i + (N/m) Σ_{j∈S} (elpd_j − π_j), π_i =
    log p(y_i | θ̄); its subsampling variance N² (1 − m/N) s²/m, s² the sample variance of elpd_j − π_j; and
    Σ_i elpd_i² by the same estimator, for se."""
    s = z.shape[0]
    mean = np.exp(log_w) @ z  # the weighted posterior mean of z
    point = flat_log_likelihood(target, mean[None])[0]  # π_i (N,)
    n = point.size
    if not 1 < m < n:
        raise VBayesError(f"subsample must be between 2 and the number of observations ({n}) exclusive, got {m}")
    pick = np.sort(numpy_rng(key).choice(n, m, replace=False))  # no compiled permutation of N
    elpd_j, khat_j, lpd_j = _elpd_rows(flat_log_likelihood(target, z, columns=pick), log_r, log_w)
    diff = elpd_j - point[pick]
    elpd = float(point.sum() + n / m * diff.sum())
    sub_var = n**2 * (1.0 - m / n) * np.var(diff, ddof=1) / m
    sum_sq = point @ point + n / m * np.sum(elpd_j**2 - point[pick] ** 2)
    var_i = max(sum_sq / n - (elpd / n) ** 2, 0.0)
    p_loo = float(n / m * np.sum(lpd_j - elpd_j))
    pointwise, khat = np.full(n, np.nan), np.full(n, np.nan)
    pointwise[pick], khat[pick] = elpd_j, khat_j
    return LOO(
        elpd, float(math.sqrt(n * var_i)), p_loo, pointwise, khat, weights_khat, s, corrected, m,
        float(math.sqrt(sub_var)), method,
    )  # fmt: skip


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))
