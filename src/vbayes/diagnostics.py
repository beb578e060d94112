"""Is q any good? Distances between draws of an approximation and reference draws, per coordinate and
jointly, in the units the posteriordb metrics use (reference sds).

Draw-free checks of q (PSIS k̂, ESS, ELBO standard error) live in :mod:`vbayes.psis` and are computed at
the end of every VI fit (``fit.info.importance``).
"""

from __future__ import annotations

import logging
import warnings
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from vbayes.errors import VBayesError


def import_arviz() -> ModuleType:
    """ArviZ, imported without the FutureWarning that its 0.x line prints once a day about the coming 1.x rewrite
    (vbayes pins 0.x: the notice is about a version it does not use, and would otherwise appear in vbayes's output).
    The filter added matches that notice only."""
    warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning)
    import arviz

    return arviz


def rhat_ess(chains: dict[str, np.ndarray]) -> tuple[Any, Any]:
    """ArviZ's rank-normalised split R-hat and bulk ESS of MCMC draws ``{name: (chains, draws, *shape)}``, as
    datasets by name. With one chain R-hat compares its two halves; ArviZ's log message that it wants two chains
    is kept from the user's terminal."""
    az = import_arviz()
    log = getattr(az, "_log", None) or logging.getLogger("arviz")  # ArviZ 0.x keeps its logger out of logging's tree
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        data = az.convert_to_dataset(chains)
        return az.rhat(data), az.ess(data)
    finally:
        log.setLevel(level)


class DrawComparison(NamedTuple):
    """Per coordinate ``(d,)``: ``mean_error`` = |x̄ − ȳ|/sd(y), ``sd_ratio`` = sd(x)/sd(y), ``w1`` = W₁(x, y)/sd(y);
    jointly: ``corr_error`` = max |corr(x) − corr(y)| over pairs (sees correlation errors the margins
    cannot). ``names``: coordinate labels."""

    mean_error: np.ndarray
    sd_ratio: np.ndarray
    w1: np.ndarray
    corr_error: float
    names: tuple[str, ...]

    @property
    def worst(self) -> str:
        """The coordinate with the largest W₁/sd."""
        return self.names[int(np.argmax(self.w1))]

    def accurate(self, w1_mean: float = 0.1, sd_band: tuple[float, float] = (0.8, 1.25)) -> bool:
        """posteriordb's accuracy rule: mean W₁/sd ≤ ``w1_mean`` and every sd ratio within ``sd_band``."""
        return bool(self.w1.mean() <= w1_mean and np.all((self.sd_ratio >= sd_band[0]) & (self.sd_ratio <= sd_band[1])))

    def as_dict(self) -> dict[str, float | str]:
        return {
            "mean_error_max": float(self.mean_error.max()),
            "sd_ratio_min": float(self.sd_ratio.min()),
            "sd_ratio_max": float(self.sd_ratio.max()),
            "w1_mean": float(self.w1.mean()),
            "w1_max": float(self.w1.max()),
            "corr_error": self.corr_error,
            "worst": self.worst,
        }


def _as_draws(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 2:
        raise VBayesError(f"{what} must be an array of shape (draws, coordinates) with at least 2 draws, got {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise VBayesError(
            f"{what} contain {int(bad.sum())} non-finite values in {rows.size} draws (first rows {rows[:5].tolist()})"
        )
    return x


def compare_draws(
    x: np.ndarray, reference: np.ndarray, names: list[str] | tuple[str, ...] | None = None
) -> DrawComparison:
    """Compare draws ``x`` ``(S, d)`` with ``reference`` ``(R, d)`` coordinate by coordinate (same order)."""
    x, y = _as_draws(x, "draws"), _as_draws(reference, "reference draws")
    if x.shape[1] != y.shape[1]:
        raise VBayesError(f"draws have {x.shape[1]} coordinates but the reference has {y.shape[1]}")
    sd_y = y.std(0, ddof=1)
    if np.any(sd_y <= 0):
        raise VBayesError("a reference coordinate has zero spread; cannot measure errors in its sd units")
    from scipy.stats import wasserstein_distance

    labels = tuple(names) if names is not None else tuple(f"z[{j}]" for j in range(x.shape[1]))
    with np.errstate(over="ignore", invalid="ignore"):  # draws of a diverged q overflow: inf/NaN, i.e. inaccurate
        w1 = np.array([wasserstein_distance(x[:, j], y[:, j]) for j in range(x.shape[1])]) / sd_y
        corr_error = 0.0
        if x.shape[1] > 1:
            corr_error = float(np.max(np.abs(np.corrcoef(x.T) - np.corrcoef(y.T))))
        return DrawComparison(
            mean_error=np.abs(x.mean(0) - y.mean(0)) / sd_y,
            sd_ratio=x.std(0, ddof=1) / sd_y,
            w1=w1,
            corr_error=corr_error,
            names=labels,
        )
