"""vbayes' ``compare`` and NumPyro's defaults on the shared posteriordb posteriors, in one process.

    python benchmarks/posteriordb_suite.py [--quick] [--posteriors a,b]

For every posterior (``vbayes.examples.posteriordb.POSTERIORS``; ``--quick``: 3 small ones):

1. ``compare(target, methods=(advi-meanfield, advi-fullrank, advi-lowrank, laplace, nuts),
   reference="posteriordb")``: per method accuracy against the 10,000 reference draws in the unconstrained
   space (mean W1/sd, sd ratio min/max, accurate = mean W1/sd ≤ 0.1 and all sd ratios in [0.8, 1.25]),
   PSIS k̂, trusted/flags, gradient evaluations, wall time, and the recommendation.
2. NumPyro's defaults on the same log density in the same unconstrained space: a model with one
   ``ImproperUniform`` site ``z`` of dimension d and ``numpyro.factor("lp", target.log_density(z))``,
   ``AutoNormal`` + ``Trace_ELBO`` + ``Adam(0.01)``, ``svi.run(key, 10000, progress_bar=False)``, then 4,000
   draws of the guide compared with ``compare_draws`` against the reference mapped by ``to_unconstrained``.

Raw results go to ``benchmarks/.cache/posteriordb_suite.json`` (rewritten after every posterior).
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402
from numpyro.infer import SVI, Trace_ELBO  # noqa: E402
from numpyro.infer.autoguide import AutoNormal  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info  # noqa: E402

from vbayes.compare import compare  # noqa: E402
from vbayes.diagnostics import compare_draws  # noqa: E402
from vbayes.examples.posteriordb import POSTERIORS, load_reference, posteriordb_target, to_unconstrained  # noqa: E402

METHODS = ("advi-meanfield", "advi-fullrank", "advi-lowrank", "laplace", "nuts")
QUICK = ("eight_schools-eight_schools_noncentered", "kidiq-kidscore_momiq", "sblri-blr")
NUMPYRO_STEPS = 10_000
NUM_DRAWS = 4000
CACHE = Path(__file__).resolve().parent / ".cache" / "posteriordb_suite.json"


def _float(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def run_vbayes(target, key: int = 0) -> dict[str, Any]:
    t0 = time.perf_counter()
    cmp = compare(target, methods=METHODS, reference="posteriordb", key=key)
    total = time.perf_counter() - t0
    rows = []
    for rec in cmp.records():
        rows.append(
            {
                "method": rec["method"],
                "accurate": bool(rec.get("accurate", False)),
                "w1_mean": _float(rec.get("w1_mean")),
                "w1_max": _float(rec.get("w1_max")),
                "mean_error_max": _float(rec.get("mean_error_max")),
                "sd_ratio_min": _float(rec.get("sd_ratio_min")),
                "sd_ratio_max": _float(rec.get("sd_ratio_max")),
                "khat": _float(rec.get("khat")),
                "trusted": bool(rec["trusted"]),
                "flags": rec["flags"],
                "grad_evals": int(rec["grad_evals"]),
                "wall_s": float(rec["wall_s"]),
            }
        )
    return {"methods": rows, "recommended": cmp.recommended, "reason": cmp.reason, "compare_wall_s": total}


def run_numpyro(target, ref_z: np.ndarray, key: int = 0) -> dict[str, Any]:
    d = target.dim

    def model():
        z = numpyro.sample("z", dist.ImproperUniform(constraints.real, (), (d,)))
        numpyro.factor("lp", target.log_density(z))

    guide = AutoNormal(model)
    svi = SVI(model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
    t0 = time.perf_counter()
    result = svi.run(jax.random.PRNGKey(key), NUMPYRO_STEPS, progress_bar=False)
    draws = guide.sample_posterior(jax.random.PRNGKey(key + 1), result.params, sample_shape=(NUM_DRAWS,))["z"]
    draws = np.asarray(jax.block_until_ready(draws))
    wall = time.perf_counter() - t0
    row: dict[str, Any] = {
        "method": "numpyro-autonormal",
        "grad_evals": NUMPYRO_STEPS,
        "wall_s": wall,
        "khat": None,
        "trusted": None,
        "flags": "",
        "final_loss": _float(result.losses[-1]),
    }
    if not np.all(np.isfinite(draws)):
        row.update(accurate=False, w1_mean=None, w1_max=None, mean_error_max=None, sd_ratio_min=None)
        row.update(sd_ratio_max=None, flags="non-finite draws")
        return row
    acc = compare_draws(draws, ref_z, target.coordinate_names())
    row.update(
        accurate=acc.accurate(),
        w1_mean=float(acc.w1.mean()),
        w1_max=float(acc.w1.max()),
        mean_error_max=float(np.max(acc.mean_error)),
        sd_ratio_min=float(acc.sd_ratio.min()),
        sd_ratio_max=float(acc.sd_ratio.max()),
    )
    return row


def _fmt(v: Any, spec: str = ".3g") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _short(name: str) -> str:
    first, _, second = name.partition("-")
    return second if first == "eight_schools" else first


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| posterior | method | accurate | mean W1/sd | sd ratio min–max | k̂ | trusted | grad evals | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for row in [*res["vbayes"]["methods"], res["numpyro"]]:
            name = row["method"] + (" **(rec.)**" if row["method"] == res["vbayes"]["recommended"] else "")
            sd = f"{_fmt(row['sd_ratio_min'], '.2f')}–{_fmt(row['sd_ratio_max'], '.2f')}"
            trusted = _fmt(row["trusted"]) if row["trusted"] is not None else "–"
            if row["flags"] and row["trusted"] is False:
                trusted += f" ({row['flags'].split(';')[0][:40]})"
            lines.append(
                f"| {res['posterior']} | {name} | {_fmt(row['accurate'])} | {_fmt(row['w1_mean'])} | {sd} | "
                f"{_fmt(row['khat'], '.2f')} | {trusted} | {row['grad_evals']:,} | {row['wall_s']:.1f} |"
            )
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> str:
    out = []
    # (a)
    rec_ok, nuts_rec, misses = 0, 0, []
    for res in results:
        rows = {r["method"]: r for r in res["vbayes"]["methods"]}
        rec = res["vbayes"]["recommended"]
        nuts_rec += rec == "nuts"
        if rows[rec]["accurate"]:
            rec_ok += 1
        else:
            misses.append(f"{res['posterior']} ({rec}, mean W1/sd {_fmt(rows[rec]['w1_mean'])})")
    n = len(results)
    lost = [
        _short(res["posterior"])
        for res in results
        if res["vbayes"]["recommended"] == "nuts"
        and any(r["accurate"] for r in res["vbayes"]["methods"] if r["method"] != "nuts")
    ]
    out.append(
        f"(a) recommended method accurate on {rec_ok} / {n} posteriors; NUTS recommended on {nuts_rec} / {n}."
        + (f" Misses: {'; '.join(misses)}." if misses else "")
        + (
            f" NUTS was recommended although a cheaper (flagged) method was accurate on: {', '.join(lost)}."
            if lost
            else ""
        )
    )
    # (b)
    wins, detail = 0, []
    for res in results:
        mf = next(r for r in res["vbayes"]["methods"] if r["method"] == "advi-meanfield")["w1_mean"]
        npy = res["numpyro"]["w1_mean"]
        win = mf is not None and (npy is None or mf < npy)
        wins += win
        detail.append(f"{_short(res['posterior'])} {_fmt(mf)} vs {_fmt(npy)}")
    out.append(
        f"(b) vbayes mean-field ADVI (defaults) has lower mean W1/sd than NumPyro AutoNormal (defaults) on "
        f"{wins} / {n} posteriors ({'; '.join(detail)})."
    )
    # (c)
    parts, met, counted = [], 0, 0
    for res in results:
        rows = res["vbayes"]["methods"]
        nuts = next(r for r in rows if r["method"] == "nuts")
        ok = [r for r in rows if r["method"] != "nuts" and r["accurate"]]
        if not ok:
            parts.append(f"{_short(res['posterior'])}: no VI/Laplace method accurate")
            continue
        best = min(ok, key=lambda r: r["grad_evals"])
        ratio = best["grad_evals"] / nuts["grad_evals"]
        counted += 1
        met += ratio <= 1 / 20
        text = f"{_short(res['posterior'])}: {best['method']} 1/{1 / ratio:.0f}"
        advi_ok = [r for r in ok if r["method"].startswith("advi-")]
        if best["method"] == "laplace" and advi_ok:
            b = min(advi_ok, key=lambda r: r["grad_evals"])
            text += f" (cheapest accurate ADVI: {b['method']} 1/{nuts['grad_evals'] / b['grad_evals']:.0f})"
        parts.append(text)
    out.append(
        f"(c) cheapest accurate non-NUTS method / NUTS gradient evaluations ≤ 1/20 on {met} / {counted} posteriors "
        f"where one is accurate: {'; '.join(parts)}."
    )
    return "\n\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 small posteriors only")
    parser.add_argument("--posteriors", default=None, help="comma-separated posterior names")
    parser.add_argument("--out", default=str(CACHE), help="JSON file for the raw results")
    parser.add_argument("--from-json", default=None, help="print table and summary of a saved run; run nothing")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        print(table(saved["results"]) + "\n\n" + summary(saved["results"]))
        return
    names = args.posteriors.split(",") if args.posteriors else (QUICK if args.quick else POSTERIORS)
    info = machine_info()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores; jax {info['jax']}, numpyro {info['numpyro']}, "
        f"blackjax {info['blackjax']}, vbayes {info['vbayes']}",
        flush=True,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        target = posteriordb_target(name)
        ref_z = np.asarray(to_unconstrained(name, load_reference(name).pooled))
        res: dict[str, Any] = {"posterior": name, "dim": target.dim}
        res["vbayes"] = run_vbayes(target)
        res["numpyro"] = run_numpyro(target, ref_z)
        results.append(res)
        print(
            f"[{time.perf_counter() - t_all:7.1f} s] {name}: recommended {res['vbayes']['recommended']} "
            f"({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
        out.write_text(json.dumps({"machine": info, "argv": sys.argv, "results": results}, indent=1))
    print()
    print(table(results))
    print()
    print(summary(results))
    print(f"\ntotal wall {time.perf_counter() - t_all:.0f} s; raw results in {out}")


if __name__ == "__main__":
    main()
