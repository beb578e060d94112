"""Static reports of a fit: PNG figures drawn with matplotlib's Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vbayes.outputs import save_figure, write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DRAWING_MODULES = ("matplotlib.figure", "matplotlib.backends.backend_agg")
"""What drawing a report imports (on first use; the commands import them ahead, while they compute)."""


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


def _new_figure(width: float, height: float, dpi: int = 100) -> Figure:
    """A figure drawn by the Agg canvas, never a GUI backend (matplotlib is imported on first use)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_trace(trace: np.ndarray, path: str | Path, title: str) -> Path:
    """Write the objective trace ``(steps,)`` to the PNG ``path``: each step's estimate (light), its running
    mean (dark), y-limits robust to the first steps; skipped (NaN) steps are left out. Returns the path."""
    trace = np.asarray(trace, dtype=np.float64).ravel()
    path = Path(path)
    fig = _new_figure(8, 4.5, dpi=110)
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
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# `vbayes compare` report

_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
_COLOURS += ("tab:cyan", "navy", "gold", "black")  # cycled; the reference is grey, which no method gets


def _method_draws(comparison, num_draws: int = 4000) -> dict[str, np.ndarray]:
    """z-draws ``(S, d)`` of every method in the comparison (all draws for MCMC)."""
    out = {}
    for r in comparison.results:
        q = r.fit.q
        z = q.flat if hasattr(q, "flat") else r.fit.draws_unconstrained(num_draws, 7)
        out[r.method] = np.asarray(z)
    return out


def plot_marginals(comparison, reference: np.ndarray | None, path: str | Path, max_panels: int = 12) -> Path:
    """Histograms of each method's marginals over the reference's (grey), worst coordinates first."""
    names = comparison.target.coordinate_names()
    draws = _method_draws(comparison)
    order = _worst_first(comparison, len(names))[:max_panels]
    cols = min(4, len(order))
    rows = int(np.ceil(len(order) / cols))
    fig = _new_figure(3.2 * cols, 2.4 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, j in zip(axes, order, strict=False):
        pool = [d[:, j] for d in draws.values()] + ([reference[:, j]] if reference is not None else [])
        lo, hi = np.quantile(np.concatenate(pool), [0.005, 0.995])
        bins = np.linspace(lo, hi, 50)
        if reference is not None:
            ax.hist(reference[:, j], bins=bins, density=True, color="0.8", label=f"reference ({comparison.reference})")
        for c, (method, d) in zip(itertools.cycle(_COLOURS), draws.items()):
            ax.hist(d[:, j], bins=bins, density=True, histtype="step", lw=1.4, color=c, label=method)
        ax.set_title(names[j], fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[len(order) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=6, loc="upper right")
    fig.suptitle(f"{comparison.target.name}: marginals in the unconstrained space (worst first)")
    return save_figure(fig, path)


def plot_traces(comparison, path: str | Path) -> Path:
    """The objective traces (running means) of the optimisation-based methods."""
    fig = _new_figure(8, 4.5)
    ax = fig.add_subplot()
    for c, r in zip(itertools.cycle(_COLOURS), comparison.results):
        trace = np.asarray(r.fit.trace, dtype=np.float64)
        if r.method == "nuts" or not np.isfinite(trace).any():
            continue
        smooth = running_mean(trace, max(20, trace.size // 25))
        ax.plot(np.arange(1, trace.size + 1), smooth, color=c, lw=1.6, label=r.method)
        ylim = robust_ylim(trace, smooth)
        if ylim is not None:
            ax.set_ylim(*ylim)
    ax.set_xlabel("step (ADVI) / iteration (Laplace's mode search)")
    ax.set_ylabel("objective (running mean)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_pair(comparison, reference: np.ndarray | None, path: str | Path) -> Path:
    """Scatter of the two worst coordinates: the reference (grey) and each method's draws."""
    names = comparison.target.coordinate_names()
    i, j = (_worst_first(comparison, len(names)) + [0, 0])[:2] if len(names) > 1 else (0, 0)
    draws = _method_draws(comparison)
    fig = _new_figure(6.5, 6)
    ax = fig.add_subplot()
    if reference is not None:
        ax.scatter(reference[:2000, i], reference[:2000, j], s=3, color="0.7", label="reference")
    for c, (method, d) in zip(itertools.cycle(_COLOURS), draws.items()):
        ax.scatter(d[:1000, i], d[:1000, j], s=3, alpha=0.5, color=c, label=method)
    ax.set_xlabel(names[i])
    ax.set_ylabel(names[j])
    ax.legend(markerscale=4, fontsize=8)
    ax.set_title("the two worst coordinates")
    return save_figure(fig, path)


def _worst_first(comparison, d: int) -> list[int]:
    """Coordinates ordered by their largest W₁/sd over methods (by q's sd spread without a reference)."""
    scores = np.zeros(d)
    for r in comparison.results:
        if r.accuracy is not None:
            scores = np.maximum(scores, r.accuracy.w1)
    return [int(k) for k in np.argsort(-scores)]


def write_compare_report(comparison, directory: str | Path) -> Path:
    """``index.html`` with the table, the recommendation and three figures, in ``directory``."""
    import html

    directory = Path(directory)
    reference = comparison.reference_draws
    plot_marginals(comparison, reference, directory / "marginals.png")
    plot_traces(comparison, directory / "traces.png")
    plot_pair(comparison, reference, directory / "pair.png")
    predictive = _predictive_section(comparison, directory)
    table = comparison.table().to_html(float_format=lambda x: f"{x:.3g}", border=0, classes="t")
    name = html.escape(comparison.target.name)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>vbayes compare: {name}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}
table.t{{border-collapse:collapse;font-size:12px}}
table.t td,table.t th{{padding:3px 8px;border-bottom:1px solid #ddd}} img{{max-width:100%}}</style></head><body>
<h1>{name} (dim {comparison.target.dim})</h1>
<p><b>Trust: {html.escape(comparison.recommended)}</b>. {html.escape(comparison.reason)}.</p>
<p>Reference: {html.escape(comparison.reference)}. Accuracy is measured in the unconstrained space: mean error
and W₁ in reference-sd units, sd ratio q/reference; "accurate" means mean W₁/sd ≤ 0.1 and every sd ratio in
[0.8, 1.25]. A method is trusted when none of its own diagnostics (convergence, PSIS k̂, restarts, reweighting
from a widened q, the curvature of Laplace, NUTS's divergences and R-hat) raises a flag.</p>
{table}
<h2>Marginals</h2><img src="marginals.png"><h2>Objective traces</h2><img src="traces.png">
<h2>Pair plot</h2><img src="pair.png">{predictive}</body></html>"""
    return write_text(directory / "index.html", page)


def _predictive_section(comparison, directory: Path) -> str:
    """HTML for the recommended fit's posterior predictive check (``ppc.png``, NumPyro models) and its q-corrected
    PSIS-LOO; empty when nothing is recommended or the target has no per-observation likelihood."""
    import html

    from vbayes.cross_validation import loo
    from vbayes.predictive import has_observations, observed_data

    fits = {r.method: r.fit for r in comparison.results}
    fit = fits.get(comparison.recommended)
    if fit is None or not has_observations(comparison.target):
        return ""
    out = f"<h2>Checking the model: {html.escape(comparison.recommended)}</h2>"
    observed = observed_data(fit.target)
    if observed:
        title = f"{fit.target.name}: posterior predictive check ({comparison.recommended})"
        plot_ppc(observed, fit.predict(n=200, key=3), directory / "ppc.png", title)
        out += '<img src="ppc.png">'
    return out + f"<p>LOO: {html.escape(loo(fit).summary())}.</p>"


# ----------------------------------------------------------------------------------------------
# model criticism: posterior predictive check, model comparison


def plot_ppc(
    observed: dict[str, np.ndarray], replicated: dict[str, np.ndarray], path: str | Path, title: str, lines: int = 40
) -> Path:
    """The posterior predictive check: per observed site (up to four), the histogram of the observed values (black)
    over those of ``lines`` replicated data sets ``(n, *shape)`` (light), on common bins. Returns the path."""
    names = [k for k in observed if k in replicated][:4]
    fig = _new_figure(max(6.5, 4.2 * len(names)), 3.8, dpi=110)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        y = np.asarray(observed[name], dtype=np.float64).ravel()
        reps = np.asarray(replicated[name], dtype=np.float64).reshape(len(replicated[name]), -1)[:lines]
        both = np.concatenate([y, reps.ravel()])
        lo, hi = np.quantile(both[np.isfinite(both)], [0.005, 0.995])
        bins = np.linspace(lo, hi, max(8, min(40, int(np.sqrt(y.size)) * 2)))
        for rep in reps:
            ax.hist(rep, bins=bins, density=True, histtype="step", color="tab:blue", alpha=0.15, lw=0.8)
        ax.hist(y, bins=bins, density=True, histtype="step", color="black", lw=2.0, label="observed")
        ax.plot([], [], color="tab:blue", alpha=0.5, label=f"{len(reps)} replicated data sets")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, Path(path))


def plot_model_comparison(comparison, path: str | Path) -> Path:
    """elpd_loo ± se of each model (filled) and its difference to the best ± the paired difference's se (open),
    best on top, with the stacking weights. Returns the path."""
    table = comparison.table()
    fig = _new_figure(8, 1.6 + 0.6 * len(table), dpi=110)
    ax = fig.add_subplot()
    rows = np.arange(len(table))[::-1]
    ax.errorbar(table["elpd_loo"], rows, xerr=table["se"], fmt="o", color="black", label="elpd_loo ± se")
    shifted = table["elpd_loo"].iloc[0] + table["elpd_diff"].to_numpy() * -1
    ax.errorbar(shifted[1:], rows[1:] + 0.2, xerr=table["se_diff"].iloc[1:], fmt="o", mfc="white", color="tab:red",
                label="difference to the best ± se")  # fmt: skip
    labels = [f"{m}  (weight {w:.2f})" for m, w in zip(table.index, table["weight"], strict=True)]
    ax.set_yticks(rows, labels)
    ax.set_xlabel("expected log predictive density (LOO)")
    ax.set_title(textwrap.fill(comparison.verdict, 100), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return save_figure(fig, Path(path))


# ----------------------------------------------------------------------------------------------
# fields on a triangular mesh (e.g. the posterior sd of the plasma tomography example)


def plot_mesh_fields(
    points: np.ndarray, triangles: np.ndarray, fields: dict[str, np.ndarray], path: str | Path, title: str
) -> Path:
    """One ``tripcolor`` panel per field: ``points`` ``(V, 2)``, ``triangles`` ``(T, 3)``, each field ``(V,)``
    (vertex values, shaded linearly over the triangles). Returns the PNG path."""
    from matplotlib.tri import Triangulation

    points, triangles = np.asarray(points, float), np.asarray(triangles, int)
    tri = Triangulation(points[:, 0], points[:, 1], triangles)
    n = max(len(fields), 1)
    aspect = np.ptp(points[:, 1]) / max(np.ptp(points[:, 0]), 1e-12)
    fig = _new_figure(3.6 * n, 3.6 * min(max(aspect, 0.6), 2.0) + 0.6, dpi=110)
    axes = np.atleast_1d(fig.subplots(1, n))
    for ax, (name, values) in zip(axes, fields.items(), strict=False):
        shaded = ax.tripcolor(tri, np.asarray(values, float), shading="gouraud", cmap="viridis")
        fig.colorbar(shaded, ax=ax, shrink=0.85)
        ax.set_title(name)
        ax.set_aspect("equal")
        ax.set_xlabel("R")
        ax.set_ylabel("Z")
    fig.suptitle(title)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# `vbayes gmm` picture


def plot_mixture(X: np.ndarray, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray, trace, path) -> Path:
    """Left: the data projected on its first two principal axes, with each component's 2-sd ellipse
    (components weighing over 1%); right: the objective per iteration. ``X``: (N, D); ``means``: (K, D);
    ``covariances``: (K, D, D)."""
    X = np.asarray(X, dtype=np.float64)
    centre = X.mean(0)
    if X.shape[1] > 2:
        _, _, vt = np.linalg.svd(X[: min(len(X), 100_000)] - centre, full_matrices=False)
        proj = vt[:2].T
    else:
        proj = np.eye(X.shape[1])[:, :2] if X.shape[1] == 2 else np.array([[1.0], [0.0]])[:1]
    fig = _new_figure(12, 5)
    ax, ax2 = fig.subplots(1, 2)
    shown = X[np.random.default_rng(0).permutation(len(X))[:20_000]]
    if X.shape[1] >= 2:
        pts = (shown - centre) @ proj
        ax.scatter(pts[:, 0], pts[:, 1], s=2, color="0.6", alpha=0.4)
        angles = np.linspace(0, 2 * np.pi, 100)
        circle = np.stack([np.cos(angles), np.sin(angles)])
        for k in np.argsort(-weights):
            if weights[k] < 0.01:
                continue
            m = (means[k] - centre) @ proj
            c = proj.T @ covariances[k] @ proj
            vals, vecs = np.linalg.eigh(c)
            ell = m[:, None] + 2 * vecs @ np.diag(np.sqrt(np.maximum(vals, 0))) @ circle
            ax.plot(ell[0], ell[1], lw=1.5)
            ax.annotate(f"{weights[k]:.2f}", m, fontsize=8, ha="center")
        ax.set_xlabel("PC 1" if X.shape[1] > 2 else "x1")
        ax.set_ylabel("PC 2" if X.shape[1] > 2 else "x2")
        ax.set_title("components (2-sd ellipses, weights)")
    else:
        ax.hist(shown[:, 0], bins=80, density=True, color="0.7")
        ax.set_title("data")
    trace = np.asarray(trace, dtype=np.float64)
    ax2.plot(np.arange(1, trace.size + 1), trace, marker=".")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("objective per point (nats)")
    ax2.set_title("ELBO per point" if trace.size else "no trace")
    ax2.grid(alpha=0.3)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------
# topic models


def top_words(topics: np.ndarray, vocabulary: list[str], n: int = 10) -> list[list[tuple[str, float]]]:
    """Each topic's ``n`` most probable words with their probabilities, from λ ``(K, V)`` (rows normalised)."""
    probs = topics / topics.sum(1, keepdims=True)
    order = np.argsort(-probs, 1)[:, :n]
    return [[(vocabulary[v], float(probs[k, v])) for v in order[k]] for k in range(len(probs))]


def plot_topics(words: list[list[tuple[str, float]]], path: str | Path, shares: np.ndarray | None = None) -> Path:
    """A panel of horizontal bars per topic (its top words by probability), titled with the topic's share of the
    corpus when ``shares`` ``(K,)`` is given."""
    k = len(words)
    cols = min(k, 5)
    rows = -(-k // cols)
    fig = _new_figure(3.0 * cols, 2.6 * rows)
    for i, topic in enumerate(words):
        ax = fig.add_subplot(rows, cols, i + 1)
        labels, probs = [w for w, _ in topic], [p for _, p in topic]
        y = np.arange(len(labels))[::-1]
        ax.barh(y, probs, color="C0")
        ax.set_yticks(y, labels, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        share = f" ({100 * shares[i]:.1f}%)" if shares is not None else ""
        ax.set_title(f"topic {i}{share}", fontsize=9)
    return save_figure(fig, path, dpi=100)


def plot_topics_over_time(
    times: np.ndarray, proportions: np.ndarray, labels: list[str], path: str | Path, top: int = 8
) -> Path:
    """The mean topic proportion of the documents at each time ``(T,)``: ``proportions`` ``(T, K)``, as lines for
    the ``top`` topics whose share varies most, each labelled by its words."""
    fig = _new_figure(10, 5)
    ax = fig.add_subplot(1, 1, 1)
    chosen = np.argsort(-proportions.std(0))[:top]
    for k in chosen:
        ax.plot(times, proportions[:, k], label=f"{k}: {labels[k]}")
    ax.set_xlabel("time")
    ax.set_ylabel("mean share of a document")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_figure(fig, path, dpi=100)
