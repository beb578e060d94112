"""Shared helpers for the benchmarks: machine description, a compile counter, timing, accuracy metrics.

Nothing here imports vbayes at module level except its compile counter (``vbayes.compilation``), so the helpers
can be reused by other benchmark scripts.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from vbayes.compilation import count_compilations

# ----------------------------------------------------------------------------------------------
# machine and versions


def machine_info() -> dict[str, str]:
    """CPU model (``lscpu``), core count, Python and library versions."""
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    info = {"cpu": model, "cores": str(cores), "python": platform.python_version(), "jax": jax.__version__}
    info["device"] = str(jax.devices()[0].platform)
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        info["git"] = (
            subprocess.run(
                ["git", "-C", root, "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
            ).stdout.strip()
            or "unknown"
        )
    except OSError:
        info["git"] = "unknown"
    for name in ("numpyro", "blackjax", "optax", "vbayes", "scipy"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # pragma: no cover - a missing optional library
            info[name] = "not installed"
    return info


# ----------------------------------------------------------------------------------------------
# counting XLA compilations: vbayes's own counter (programs compiled or loaded from the persistent cache)

count_compiles = count_compilations


# ----------------------------------------------------------------------------------------------
# timing


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (VmHWM; ``ru_maxrss`` would include the parent's at fork). Runs
    on Dask workers too (``client.run``: they import this module from the path their parent gave them)."""
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used."""
    return time.process_time()


def wall(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn()`` took, its outputs blocked until ready; and the outputs."""
    t0 = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return time.perf_counter() - t0, out


@dataclass
class StepTiming:
    """Per-step time from runs of n and 2n steps (best of ``repeats`` each) and the per-call rest."""

    n: int
    t_n: float
    t_2n: float

    @property
    def per_step(self) -> float:
        return max(self.t_2n - self.t_n, 0.0) / self.n

    @property
    def per_call(self) -> float:
        """What a run of n steps costs beyond n · per_step (dispatch, driver, set-up)."""
        return self.t_n - self.n * self.per_step


def time_steps_interleaved(runs: dict[str, Callable[[int], Any]], n: int, repeats: int) -> dict[str, StepTiming]:
    """As :func:`time_steps` for several runners at once, interleaved: each repeat times every runner at n
    and 2n steps in turn, so that load from other processes on the machine hits all of them alike."""
    for run in runs.values():
        jax.block_until_ready(run(n))
        jax.block_until_ready(run(2 * n))
    t1: dict[str, list[float]] = {k: [] for k in runs}
    t2: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, run in runs.items():
            t1[k].append(wall(lambda run=run: run(n))[0])
            t2[k].append(wall(lambda run=run: run(2 * n))[0])
    return {k: StepTiming(n, min(t1[k]), min(t2[k])) for k in runs}


def time_steps(run: Callable[[int], Any], n: int, repeats: int) -> StepTiming:
    """``run(k)`` performs k steps; it is called once per size to compile, then timed ``repeats`` times.

    Runs of n and 2n alternate, so slow drifts of the machine hit both sizes alike.
    """
    jax.block_until_ready(run(n))
    jax.block_until_ready(run(2 * n))
    t1, t2 = [], []
    for _ in range(repeats):
        t1.append(wall(lambda: run(n))[0])
        t2.append(wall(lambda: run(2 * n))[0])
    return StepTiming(n, min(t1), min(t2))


# ----------------------------------------------------------------------------------------------
# accuracy


def w1_over_sd(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per column W1(x_j, y_j) / sd(y_j): ``(S, d), (R, d) -> (d,)``."""
    from scipy.stats import wasserstein_distance

    x, y = np.asarray(x), np.asarray(y)
    return np.array([wasserstein_distance(x[:, j], y[:, j]) / y[:, j].std(ddof=1) for j in range(y.shape[1])])


def sd_ratio(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.asarray(x).std(0, ddof=1) / np.asarray(y).std(0, ddof=1)


def noise_floor(ref: np.ndarray, s: int, splits: int = 20, seed: int = 0) -> tuple[float, float]:
    """Mean-over-columns W1/sd that ``s`` exact draws score: ``s`` reference draws picked at random against
    the remaining ones, ``splits`` times. Returns (median, 95th percentile) over the splits."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(splits):
        idx = rng.permutation(ref.shape[0])
        vals.append(w1_over_sd(ref[idx[:s]], ref[idx[s:]]).mean())
    return float(np.median(vals)), float(np.quantile(vals, 0.95))


def rhat_ess(chains: np.ndarray) -> tuple[float, float]:
    """Max rank-normalised split R-hat and min bulk ESS over columns of ``(chains, draws, d)`` (ArviZ)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        ds = az.convert_to_dataset({"x": np.asarray(chains)})
        rhat = float(az.rhat(ds)["x"].max())
        ess = float(az.ess(ds, method="bulk")["x"].min())
    return rhat, ess


# ----------------------------------------------------------------------------------------------
# formatting


def fmt_time(seconds: float) -> str:
    """µs / ms / s with 3 significant digits."""
    if not np.isfinite(seconds):
        return "n/a"
    a = abs(seconds)
    if a < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if a < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
