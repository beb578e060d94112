"""How often importance sampling around the full-rank fit (``advi-is``), or another method, is trusted and wrong,
over seeds.

    python benchmarks/importance_seeds.py [--posteriors a,b] [--seeds 0,1,2,3,4] [--method advi-is]

For each shared posteriordb posterior and each seed: ``vbayes.importance_sampling(target, key=seed)`` with its
defaults (a full-rank ADVI fit, then 32,000 draws of the defensive mixture), its verdict (default checks, no
restarts; float64, as the posteriordb suite runs), and its accuracy against the 10,000 reference draws by
posteriordb's rule in the unconstrained space (mean W₁/sd ≤ 0.1, every sd ratio in [0.8, 1.25]), measured on 4,000
draws resampled by the weights. Prints one row per posterior (the class of each seed, the smallest sd ratio, k̂)
and the counts of each class; no competitor library (the posteriordb suite runs the anchors). Raw rows go to
``benchmarks/.cache/importance_seeds.json``. ``--method``: another registry name, run as ``compare`` runs it
(NUTS and ``neutra`` at ``compare``'s ``NUTS_OPTIONS``; accuracy on all their draws); raw rows then go to
``benchmarks/.cache/{method}_seeds.json``.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)  # as the posteriordb suite runs them

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from vbayes.compare import NUTS_OPTIONS  # noqa: E402
from vbayes.diagnostics import compare_draws  # noqa: E402
from vbayes.examples.posteriordb import POSTERIORS, load_reference, posteriordb_target, to_unconstrained  # noqa: E402
from vbayes.methods import METHODS  # noqa: E402
from vbayes.methods import fit as registry_fit  # noqa: E402
from vbayes.samples import Empirical  # noqa: E402

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
CLASSES = {(True, True): "accurate", (False, False): "caught", (False, True): "SILENT", (True, False): "false alarm"}


def run(name: str, seeds: list[int], method: str = "advi-is") -> list[dict]:
    target = posteriordb_target(name)
    ref = np.asarray(to_unconstrained(name, load_reference(name).pooled))
    options = NUTS_OPTIONS if METHODS[method].kind == "mcmc" else {}
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        fit = registry_fit(target, method, key=seed, **options)
        wall = time.perf_counter() - t0
        draws = fit.q.flat if isinstance(fit.q, Empirical) else fit.draws_unconstrained(4000, key=seed)
        acc = compare_draws(np.asarray(draws), ref, target.coordinate_names())
        rows.append(
            {
                "posterior": name,
                "seed": seed,
                "class": CLASSES[(bool(acc.accurate()), bool(fit.trusted))],
                "w1_mean": float(acc.w1.mean()),
                "sd_ratio_min": float(acc.sd_ratio.min()),
                "sd_ratio_max": float(acc.sd_ratio.max()),
                "khat": float(fit.info.importance.khat) if fit.info.importance is not None else float("nan"),
                "flags": "; ".join(fit.verdict.flags),
                "grad_evals": int(fit.info.grad_evals),
                "wall_s": wall,
            }
        )
    return rows


def _khat(k: float) -> str:
    return "–" if np.isnan(k) else f"{k:.2f}"  # MCMC: no k̂


def table(rows: list[dict]) -> str:
    names = list(dict.fromkeys(r["posterior"] for r in rows))
    out = ["| posterior | classes by seed | smallest sd ratio (min over seeds) | k̂ (max) | median grad evals |"]
    out.append("|---|---|---|---|---|")
    for name in names:
        mine = [r for r in rows if r["posterior"] == name]
        classes = ", ".join(r["class"] for r in mine)
        out.append(
            f"| {name} | {classes} | {min(r['sd_ratio_min'] for r in mine):.2f} | "
            f"{_khat(max(r['khat'] for r in mine))} | {np.median([r['grad_evals'] for r in mine]):,.0f} |"
        )
    counts = {c: sum(r["class"] == c for r in rows) for c in CLASSES.values()}
    out.append("")
    out.append(f"{len(rows)} fits: " + ", ".join(f"{c} {n}" for c, n in counts.items()) + ".")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posteriors", default=None, help="comma-separated posterior names")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument("--method", default="advi-is", choices=sorted(METHODS), help="the method (registry name)")
    args = parser.parse_args()
    cache = CACHE_DIR / ("importance_seeds.json" if args.method == "advi-is" else f"{args.method}_seeds.json")
    names = args.posteriors.split(",") if args.posteriors else POSTERIORS
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[dict] = []
    t_all = time.perf_counter()
    for name in names:
        rows += run(name, seeds, args.method)
        print(f"[{time.perf_counter() - t_all:7.1f} s] {name}: {', '.join(r['class'] for r in rows[-len(seeds) :])}")
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(rows, indent=1))
    print()
    print(table(rows))
    print(f"\ntotal wall {time.perf_counter() - t_all:.0f} s; raw rows in {cache}")


if __name__ == "__main__":
    main()
