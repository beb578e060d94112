"""Static reports of a fit: PNG figures drawn with matplotlib's Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def running_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean of the finite values among the last ``window`` entries: ``(n,) -> (n,)``, NaN where none."""
    x = np.asarray(x, dtype=np.float64).ravel()
    finite = np.isfinite(x)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, x, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    end = np.arange(1, x.size + 1)
    start = np.maximum(end - window, 0)
    n = counts[end] - counts[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[end] - sums[start]) / np.maximum(n, 1), np.nan)


def robust_ylim(trace: np.ndarray, smooth: np.ndarray) -> tuple[float, float] | None:
    """y-limits from the 1%–99% quantiles of the second half of the trace (and of the smoothed curve there),
    padded by 15% (at least 0.05 nats), so that the first wild steps do not squash the rest; ``None`` if
    nothing is finite."""
    half = slice(trace.size // 2, None)
    values = np.concatenate([trace[half], smooth[half]])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    lo, hi = np.quantile(values, [0.01, 0.99])
    pad = max(0.15 * (hi - lo), 0.05)  # differences below a few hundredths of a nat are noise: don't zoom on them
    return float(lo - pad), float(hi + pad)


def plot_trace(trace: np.ndarray, path: str | Path, title: str) -> Path:
    """Write the objective trace ``(steps,)`` to the PNG ``path``: each step's estimate (light), its running
    mean (dark), y-limits robust to the first steps; skipped (NaN) steps are left out. Returns the path."""
    trace = np.asarray(trace, dtype=np.float64).ravel()
    path = Path(path)
    fig = Figure(figsize=(8, 4.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = np.arange(1, trace.size + 1)
    if np.isfinite(trace).any():
        window = max(20, trace.size // 25)
        smooth = running_mean(trace, window)
        ax.plot(steps, trace, color="tab:blue", alpha=0.25, lw=0.6, label="ELBO estimate per step")
        ax.plot(steps, smooth, color="tab:blue", lw=1.8, label=f"running mean ({window} steps)")
        ylim = robust_ylim(trace, smooth)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_xlim(1, max(trace.size, 2))
        ax.legend(loc="lower right", framealpha=0.9)
    else:
        ax.text(0.5, 0.5, "no finite objective values to plot", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("ELBO (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
