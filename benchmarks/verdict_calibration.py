"""How well the verdict's reweighting check estimates posteriordb's accuracy metric, on every shared posterior.

    python benchmarks/verdict_calibration.py [--posteriors a,b] [--seeds 0,1]

For each posterior, each of advi-meanfield, advi-fullrank, advi-lowrank (one fit per seed) and Laplace (one fit),
with no checks run by the fit itself: the moments PSIS-reweighted from q widened 1.5× (or from q itself when that
proposal's k̂ ≥ 0.7), the check's estimate of mean W₁/sd and of the sd ratios, against the same metrics measured
with the 10,000 reference draws. Prints one row per fit, the verdict of the default checks, and the counts of
silent failures and false alarms. Raw rows go to ``benchmarks/.cache/verdict_calibration.json``.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from vbayes import checks, methods  # noqa: E402
from vbayes.diagnostics import compare_draws  # noqa: E402
from vbayes.examples.posteriordb import POSTERIORS, load_reference, posteriordb_target, to_unconstrained  # noqa: E402
from vbayes.psis import importance_from_ratios  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "verdict_calibration.json"


def estimate(fit, key: int = 5) -> dict:
    """The reweighting check's estimates for one fit (the same computation as ``vbayes.checks``)."""
    q = fit.q
    z_q, r_q, z_w, r_w, _, _ = jax.device_get(checks._ratio_draws(fit.target, q, jax.random.PRNGKey(key), 4000, 1.5))
    mean, sd = np.asarray(q.mean), np.asarray(q.marginal_sd())
    khat = importance_from_ratios(r_q).khat
    khat_w, shift, ratios = checks._reweighted_moments(z_w, r_w, mean, sd)
    proposal = "widened"
    if not khat_w < 0.7 and khat < 0.7:
        proposal = "q"
        _, shift, ratios = checks._reweighted_moments(z_q, r_q, mean, sd)
    ok = khat_w < 0.7 or khat < 0.7
    return {
        "khat": float(khat),
        "khat_widened": float(khat_w),
        "proposal": proposal if ok else "none",
        "w1_estimate": checks.gaussian_w1(shift, ratios) if ok else None,
        "sd_ratio_estimate": [float(1 / np.max(ratios)), float(1 / np.min(ratios))] if ok else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posteriors", default=None)
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args()
    names = args.posteriors.split(",") if args.posteriors else POSTERIORS
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name in names:
        target = posteriordb_target(name)
        ref = np.asarray(to_unconstrained(name, load_reference(name).pooled))
        for method in ("advi-meanfield", "advi-fullrank", "advi-lowrank", "laplace"):
            for seed in seeds if method != "laplace" else seeds[:1]:
                fit = methods.fit(target, method, key=seed, checks="none")
                acc = compare_draws(np.asarray(fit.draws_unconstrained(4000, 99)), ref)
                verdict = checks.verify(fit, "default").verdict
                row = {"posterior": name, "method": method, "seed": seed, "outcome": fit.info.outcome}
                row.update(estimate(fit))
                row.update(
                    accurate=bool(acc.accurate()),
                    w1=float(acc.w1.mean()),
                    sd_ratio=[float(acc.sd_ratio.min()), float(acc.sd_ratio.max())],
                    trusted=verdict.trusted,
                    flags="; ".join(verdict.flags),
                )
                rows.append(row)
                est = "–" if row["w1_estimate"] is None else f"{row['w1_estimate']:.3f}"
                print(
                    f"{name[:24]:24s} {method:15s} {seed} accurate={row['accurate']!s:5s} W1/sd {row['w1']:.3f} "
                    f"est {est} ({row['proposal']}) trusted={row['trusted']}",
                    flush=True,
                )
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    CACHE.write_text(json.dumps(rows, indent=1))
    silent = [r for r in rows if not r["accurate"] and r["trusted"]]
    false = [r for r in rows if r["accurate"] and not r["trusted"]]
    print(f"\n{len(rows)} fits: silent {len(silent)}, false alarms {len(false)}")
    for r in silent + false:
        print(f"  {'SILENT' if r in silent else 'false alarm'}: {r['posterior']} {r['method']} seed {r['seed']}")


if __name__ == "__main__":
    main()
