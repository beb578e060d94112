"""Laplace curvature at scale: dense versus low-rank on the plasma tomography example, in one process.

    python benchmarks/laplace_scaling.py [--quick] [--map-iter 300] [--fine-map-iter 150]

Problem: ``vbayes.examples.plasma_tomography`` (full size: 685 vertices × 3 fields, d = 2,055; four cameras
of 500×500 pixels, N = 10⁶) and its ``fine`` variant (6,679 vertices, d = 20,037, same cameras).

Measured, at one point z (the L-BFGS iterate after ``--map-iter`` iterations; every method uses the same z):

1. time of one gradient of log p̃ and of one Hessian-vector product (alone and in vmapped batches of 16);
2. for each curvature (``dense``; ``lowrank`` and ``ggn`` at ranks 25, 50, 100, 200; ``ggn`` with the adaptive
   rank, all eigenvalues ≥ 0.1): the time from z to the marginal sds (curvature + ``q.marginal_sd()``, compiled
   code warmed up first), the peak resident memory above the level before the method (Linux VmHWM, reset per
   method), the number of products, and the cost in gradient-equivalents (time / time of one gradient);
3. the accuracy of each against ``dense``: mean (and max) relative error of the marginal sds, overall and per field;
4. at d = 20,454: ``ggn`` and ``lowrank`` at rank 100 (time, memory), and what ``dense`` would need.

Prints a markdown table and ratios; ``--quick`` runs the small problem only (a smoke test).
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt_time, machine_info, markdown_table  # noqa: E402

from vbayes import laplace  # noqa: E402
from vbayes.examples.tomography import plasma_tomography_problem  # noqa: E402
from vbayes.infer.curvature import hessian_rows  # noqa: E402
from vbayes.infer.optimize import find_map  # noqa: E402
from vbayes.targets import least_squares_parts  # noqa: E402

RANKS = (25, 50, 100, 200)


# ----------------------------------------------------------------------------------------------
# memory: resident set size and its peak (Linux /proc), the peak reset before each method


def _status(field: str) -> float:
    """A ``/proc/self/status`` field in MiB (NaN where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _total_memory_gib() -> float:
    try:
        line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal:"))
        return int(line.split()[1]) / 2**20
    except (OSError, StopIteration):
        return float("nan")


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
    except OSError:
        pass


def measure(fn):
    """(seconds, peak MiB above the RSS before, result) of ``fn()``, its outputs blocked until ready."""
    _reset_peak()
    before = _status("VmRSS")
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - t0, _status("VmHWM") - before, out


# ----------------------------------------------------------------------------------------------


@jax.jit
def _value_and_grad(target, z):
    return jax.value_and_grad(target.log_density)(z)


def time_gradient(target, z, repeats: int = 5) -> float:
    jax.block_until_ready(_value_and_grad(target, z))
    return min(measure(lambda: _value_and_grad(target, z))[0] for _ in range(repeats))


def time_hvp(target, z, batch: int, repeats: int = 3) -> float:
    """Seconds per Hessian-vector product in vmapped batches of ``batch``."""
    rows = jax.random.normal(jax.random.PRNGKey(0), (batch, target.dim), z.dtype)
    jax.block_until_ready(hessian_rows(target, z, rows, batch))
    return min(measure(lambda: hessian_rows(target, z, rows, batch))[0] for _ in range(repeats)) / batch


def run_method(target, z, curvature: str, rank: int | None):
    """(seconds to marginal sds, peak MiB, fit, sds) for one curvature at ``z`` (no mode search, no polish)."""

    def go():
        # gtol=inf: no L-BFGS step at all (one step from a mode can land where the Hessian is indefinite)
        fit = laplace(target, curvature, rank=rank, init=z, max_iter=1, gtol=float("inf"), polish_steps=0)
        return fit, fit.q.marginal_sd()

    seconds, peak, (fit, sd) = measure(go)
    return seconds - fit.info.extra["map"]["seconds"], peak, fit, np.asarray(sd)


def warm_up(target, z) -> None:
    """Compile every product function once (small ranks) so that timings below exclude compilation."""
    for curvature, rank in (("lowrank", 4), ("ggn", 4)):
        laplace(target, curvature, rank=rank, init=z, max_iter=1, polish_steps=0).q.marginal_sd()


def per_field(err: np.ndarray, fields: tuple[str, ...]) -> str:
    blocks = np.split(err, len(fields))
    return ", ".join(f"{f} {100 * b.mean():.1f}%" for f, b in zip(fields, blocks, strict=True))


def full_size(
    size: str, map_iter: int, with_dense: bool, ranks, adaptive: bool, plain: bool, plain_search: bool = True
) -> tuple[list, dict]:
    """Both forms of the target (``plain``: G applied in every evaluation; ``compressed``: operator=G), the same
    point z, and each method on each form; errors against plain ``dense``. z is the mode: L-BFGS on the compressed
    target then dense Laplace's Newton polish (cheap there), unless ``with_dense`` is off (the L-BFGS iterate)."""
    t_gen, mem_gen, problem = measure(lambda: plasma_tomography_problem(size))
    target = problem.target
    d, fields = target.dim, target.names
    print(f"\n## {target.name}: d = {d}, N = {4 * problem.pixels**2:,}, nnz(G) = {problem.nnz:,}", flush=True)
    print(f"generated and compressed (GᵀΣ⁻¹G, GᵀΣ⁻¹y) in {t_gen:.1f} s (+{mem_gen:.0f} MiB peak)", flush=True)
    parts = least_squares_parts(target)
    factor = parts.prior_precision.cholesky()
    search = lambda t: find_map(t, parts.prior_mean, max_iter=map_iter, gtol=1e-9, whiten=factor)
    jax.block_until_ready(search(target).z)  # compile
    t_map, _, mode = measure(lambda: search(target))
    gnorm = float(jnp.linalg.norm(factor.solve_l(mode.grad)))
    print(
        f"L-BFGS (prior-whitened, memory 100) on the compressed target: {int(mode.iterations)} iterations, "
        f"{int(mode.evaluations)} evaluations in {t_map:.2f} s; whitened gradient norm {gnorm:.3g}",
        flush=True,
    )
    z = mode.z
    if with_dense:  # on to the mode (L-BFGS + Newton steps): at a non-stationary z the Hessian can be indefinite
        t_polish, _, polished = measure(lambda: laplace(target, "dense", init=z))
        z = polished.q.mean
        print(
            f"mode (dense Laplace on the compressed target: L-BFGS, Newton steps) in {t_polish:.1f} s, "
            f"outcome {polished.info.outcome}, Newton decrement "
            f"{polished.info.extra['newton'].get('decrement_after', float('nan')):.2g} posterior sds",
            flush=True,
        )
    forms = {"compressed": target}
    record = {"d": d, "map_compressed": t_map, "gen": t_gen}
    if plain:
        t_gen_plain, _, problem_plain = measure(lambda: plasma_tomography_problem(size, compress=False))
        forms = {"plain": problem_plain.target, **forms}
        record["gen_plain"] = t_gen_plain
        print(f"plain form generated in {t_gen_plain:.1f} s", flush=True)
        if plain_search:
            t_map_plain, _, _ = measure(lambda: search(problem_plain.target))
            record["map_plain"] = t_map_plain
            print(f"the same L-BFGS on it: {t_map_plain:.1f} s ({t_map_plain / t_map:.0f}× the compressed search)")
    for name, t in forms.items():
        t_grad, t_hvp1, t_hvp16 = time_gradient(t, z), time_hvp(t, z, 1), time_hvp(t, z, 16)
        record[f"gradient_{name}"], record[f"hvp16_{name}"] = t_grad, t_hvp16
        print(
            f"{name}: gradient {fmt_time(t_grad)}; HVP {fmt_time(t_hvp1)} alone = {t_hvp1 / t_grad:.2f} gradients, "
            f"{fmt_time(t_hvp16)} each in batches of 16 = {t_hvp16 / t_grad:.2f} gradients",
            flush=True,
        )
        warm_up(t, z)
    unit = record["gradient_plain" if plain else "gradient_compressed"]
    rows, sds = [], {}
    runs = []
    if plain:
        runs += [("plain", "dense", None)] if with_dense else []
        runs += [("plain", c, r) for c in ("lowrank", "ggn") for r in ranks]
        runs += [("plain", "ggn", None)] if ranks else []
    runs += [("compressed", "dense", None)] if with_dense else []
    runs += [("compressed", c, r) for c in ("lowrank", "ggn") for r in (ranks if not plain else ())]
    runs += [("compressed", c, None) for c in ("ggn", "lowrank")] if adaptive else []
    for form, curvature, rank in runs:
        seconds, peak, fit, sd = run_method(forms[form], z, curvature, rank)
        label = f"{form} {curvature}" + ("" if curvature == "dense" else f" r={fit.info.extra['rank']}")
        label += " (adaptive)" if curvature != "dense" and rank is None else ""
        sds[label] = sd
        if curvature == "ggn" and rank is None:
            record["spectrum"] = np.sort(np.asarray(fit.q.eigenvalues))[::-1]
        ref = sds.get("plain dense")
        err = np.abs(sd / ref - 1) if ref is not None else None
        rows.append(
            {
                "method": label,
                "products": fit.info.extra["products"],
                "seconds": seconds,
                "grad_equiv": seconds / unit,
                "peak_mib": peak,
                "err_mean": None if err is None else float(err.mean()),
                "err_max": None if err is None else float(err.max()),
                "per_field": "" if err is None else per_field(err, fields),
                "log_evidence": fit.info.extra["log_evidence"],
            }
        )
        r = rows[-1]
        print(
            f"{label:>34}: {r['products']:5d} products, {seconds:7.1f} s = {r['grad_equiv']:7.0f} gradients, "
            f"peak +{peak:6.0f} MiB"
            + ("" if err is None else f", sd error mean {100 * err.mean():.2f}% max {100 * err.max():.1f}% ")
            + (f"({r['per_field']})" if err is not None else ""),
            flush=True,
        )
    return rows, record


def table(rows: list, dense_seconds: float | None) -> str:
    header = ["method", "products", "time to sds", "gradients", "× faster than plain dense", "peak memory"]
    header += ["sd error mean"]
    header += ["sd error max", "per field (mean)", "log evidence"]
    out = []
    for r in rows:
        speed = "" if dense_seconds is None or r["method"] == "plain dense" else f"{dense_seconds / r['seconds']:.1f}"
        err = "—" if r["err_mean"] is None else f"{100 * r['err_mean']:.2f}%"
        emax = "—" if r["err_max"] is None else f"{100 * r['err_max']:.1f}%"
        out.append(
            [
                r["method"],
                r["products"],
                fmt_time(r["seconds"]),
                f"{r['grad_equiv']:.0f}",
                speed,
                f"{r['peak_mib']:.0f} MiB",
                err,
                emax,
                r["per_field"] or "—",
                f"{r['log_evidence']:.1f}",
            ]
        )
    return markdown_table(header, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small problem only")
    parser.add_argument("--map-iter", type=int, default=300)
    parser.add_argument("--fine-map-iter", type=int, default=150)
    parser.add_argument("--no-plain-ranks", action="store_true", help="plain form: dense only, no mode search")
    parser.add_argument("--no-fine", action="store_true", help="skip the d = 20,037 runs")
    args = parser.parse_args()
    t_start = time.perf_counter()
    info = machine_info()
    print("# Laplace scaling benchmark")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)

    size, ranks = ("small", (10, 25)) if args.quick else ("full", RANKS)
    ranks = () if args.no_plain_ranks else ranks
    rows, rec = full_size(
        size, args.map_iter, True, ranks, adaptive=True, plain=True, plain_search=not args.no_plain_ranks
    )
    dense = next(r for r in rows if r["method"] == "plain dense")
    print("\n" + table(rows, dense["seconds"]))
    good = [r for r in rows if r["method"] != "plain dense" and r["err_mean"] is not None and r["err_mean"] <= 0.05]
    best = max(good, key=lambda r: dense["seconds"] / r["seconds"], default=None)
    if best is not None:
        print(
            f"\nfastest within 5% mean sd error: {best['method']}, {dense['seconds'] / best['seconds']:.1f}× faster "
            f"than plain dense ({best['grad_equiv']:.1f} vs {dense['grad_equiv']:.0f} gradient-equivalents)"
            + (
                f"; mode search {rec['map_plain'] / rec['map_compressed']:.0f}× faster on the compressed form"
                if "map_plain" in rec
                else ""
            )
        )
    else:
        print("\nno other run came within 5% mean sd error of plain dense")
    lam = rec.get("spectrum")
    if lam is not None:
        ks = [k for k in (1, 10, 25, 50, 100, 200, 400, len(lam)) if k <= len(lam)]
        print(
            "eigenvalues λ_k of the prior-preconditioned Gauss-Newton Hessian L⁻¹JᵀJL⁻ᵀ (adaptive run): "
            + ", ".join(f"λ_{k} = {lam[k - 1]:.3g}" for k in ks)
        )

    if not args.quick and not args.no_fine:
        fine_rows, fine = full_size(
            "fine", args.fine_map_iter, with_dense=False, ranks=(100,), adaptive=False, plain=False
        )
        d = fine["d"]
        print("\n" + table(fine_rows, None))
        gib = 8 * d * d / 2**30
        print(
            f"\ndense at d = {d:,} would need {d:,} HVPs ≈ {fmt_time(d * fine['hvp16_compressed'])} even at the "
            f"compressed form's {fmt_time(fine['hvp16_compressed'])} per batched HVP, an O(d³) eigendecomposition, "
            f"and {gib:.1f} GiB per d×d float64 matrix (Hessian, eigenvectors, covariance and its Cholesky factor: "
            f"≈ {4 * gib:.0f} GiB; this machine has {_total_memory_gib():.0f} GiB)"
        )
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
