"""vbayes' ``compare`` and NumPyro's defaults on the shared posteriordb posteriors, in one process.

    python benchmarks/posteriordb_suite.py [--quick] [--posteriors a,b]

For every posterior (``vbayes.examples.posteriordb.POSTERIORS``; ``--quick``: 3 small ones):

1. ``compare(target, methods=METHODS, reference="posteriordb")`` (``neutra`` added by ``compare`` where NUTS's
   divergent transitions survive their rerun): per method accuracy against the 10,000 reference draws in the
   unconstrained space (mean W1/sd, sd ratio min/max, accurate = mean W1/sd ≤ 0.1 and all sd ratios in
   [0.8, 1.25]), PSIS k̂, gradient evaluations, wall time, and the recommendation. Each method's verdict is its own fit's
   (``vbayes.checks``): the *single-fit* verdict is that of the default checks (what ``vbayes.advi(target)``
   says by itself); ``compare`` adds restarts. Each fit is classed **accurate** (trusted and accurate),
   **caught** (inaccurate and flagged), **silent** (inaccurate and trusted: the failure the verdict exists to
   prevent) or **false alarm** (accurate but flagged), at the single-fit level and with restarts; with the cost
   of its checks as a fraction of the fit's own wall time and gradient evaluations.
2. The anchors' defaults on the same log density in the same unconstrained space, each scored by 4,000 draws
   compared with ``compare_draws`` against the reference mapped by ``to_unconstrained``:
   NumPyro (a model with one ``ImproperUniform`` site ``z`` of dimension d and
   ``numpyro.factor("lp", target.log_density(z))``, ``Trace_ELBO``, ``svi.run(key, 10000, progress_bar=False)``):
   ``AutoNormal`` with ``Adam(0.01)``; ``AutoIAFNormal`` and ``AutoBNAFNormal`` with their default sizes and
   ``Adam(0.003)`` (the learning rate of NumPyro's NeuTra example; 0.01 diverges on flows more often);
   BlackJAX's ``multipathfinder`` with its defaults (4 paths from uniform draws in [−2, 2]^d, as vbayes starts
   them; ``maxiter`` 30, 200 draws per path), its draws resampled by its PSIS weights.

Raw results go to ``benchmarks/.cache/posteriordb_suite.json`` (rewritten after every posterior). Each posterior
runs in a fresh process (a single process ran out of memory maps after about five posteriors' compiled programs).
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

METHODS = (
    "advi-meanfield",
    "advi-fullrank",
    "advi-is",
    "advi-lowrank",
    "laplace",
    "pathfinder",
    "advi-flow",
    "advi-maf",
    "nuts",
)
GUIDES = ("normal", "iaf", "bnaf")
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
    for rec, res in zip(cmp.records(), cmp.results, strict=True):
        verdict = res.fit.verdict
        single_flags = [c.message for c in verdict.checks if c.status == "flag" and c.name != "restarts"]
        restart = verdict.check("restarts")
        checks_s = sum(c.seconds for c in verdict.checks if c.name != "restarts")
        checks_evals = sum(c.evaluations for c in verdict.checks if c.name != "restarts")
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
                "single_trusted": not single_flags and verdict.status != "unchecked",
                "single_flags": "; ".join(single_flags),
                "restart_flag": restart is not None and restart.status == "flag",
                "grad_evals": int(rec["grad_evals"]),
                "fit_grad_evals": int(res.fit.info.grad_evals),
                "fit_wall_s": float(res.fit.info.wall_time),
                "checks_wall_s": float(checks_s),
                "checks_evals": int(checks_evals),
                "wall_s": float(rec["wall_s"]),
            }
        )
    return {"methods": rows, "recommended": cmp.recommended, "reason": cmp.reason, "compare_wall_s": total}


def run_numpyro(target, ref_z: np.ndarray, key: int = 0, guide_name: str = "normal") -> dict[str, Any]:
    from numpyro.infer.autoguide import AutoBNAFNormal, AutoIAFNormal

    d = target.dim

    def model():
        z = numpyro.sample("z", dist.ImproperUniform(constraints.real, (), (d,)))
        numpyro.factor("lp", target.log_density(z))

    guide = {"normal": AutoNormal, "iaf": AutoIAFNormal, "bnaf": AutoBNAFNormal}[guide_name](model)
    lr = 0.01 if guide_name == "normal" else 0.003
    svi = SVI(model, guide, numpyro.optim.Adam(lr), Trace_ELBO())
    t0 = time.perf_counter()
    result = svi.run(jax.random.PRNGKey(key), NUMPYRO_STEPS, progress_bar=False)
    draws = guide.sample_posterior(jax.random.PRNGKey(key + 1), result.params, sample_shape=(NUM_DRAWS,))["z"]
    draws = np.asarray(jax.block_until_ready(draws))
    wall = time.perf_counter() - t0
    row: dict[str, Any] = {
        "method": f"numpyro-auto{guide_name}",
        "grad_evals": NUMPYRO_STEPS,
        "wall_s": wall,
        "final_loss": _float(result.losses[-1]),
    }
    return _score(row, draws, ref_z, target)


def run_blackjax_pathfinder(target, ref_z: np.ndarray, key: int = 0, num_paths: int = 4) -> dict[str, Any]:
    import blackjax

    algo = blackjax.multipathfinder(target.log_density)
    k_init, k_run, k_draw = jax.random.split(jax.random.PRNGKey(key), 3)
    t0 = time.perf_counter()
    inits = jax.random.uniform(k_init, (num_paths, target.dim), minval=-2.0, maxval=2.0)
    state, _ = algo.init(k_run, inits)
    draws = np.asarray(jax.block_until_ready(algo.sample(k_draw, state, NUM_DRAWS)))
    wall = time.perf_counter() - t0
    # BlackJAX's default maxiter is 30: at most 30 L-BFGS iterations (≥ 2 gradients each) and 31 × 200 ELBO draws
    # per path, plus 200 draws per path for the weights
    evals = num_paths * (30 * 2 + 31 * 200 + 200)
    return _score({"method": "blackjax-pathfinder", "grad_evals": evals, "wall_s": wall}, draws, ref_z, target)


def _score(row: dict[str, Any], draws: np.ndarray, ref_z: np.ndarray, target) -> dict[str, Any]:
    """An anchor's row: no verdict of its own (trusted None), accuracy of its draws against the reference."""
    row.update(khat=None, trusted=None, flags="")
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


def _class(accurate: bool, trusted: bool) -> str:
    return {(True, True): "accurate", (False, False): "caught", (False, True): "SILENT", (True, False): "false alarm"}[
        (accurate, trusted)
    ]


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| posterior | method | accurate | mean W1/sd | sd ratio min–max | k̂ | single fit | with restarts | "
        "checks / fit (wall, evals) | grad evals | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for row in [*res["vbayes"]["methods"], *_anchors(res)]:
            name = row["method"] + (" **(rec.)**" if row["method"] == res["vbayes"]["recommended"] else "")
            sd = f"{_fmt(row['sd_ratio_min'], '.2f')}–{_fmt(row['sd_ratio_max'], '.2f')}"
            if row["trusted"] is None:
                single = both = cost = "–"
            else:
                single = _class(row["accurate"], row["single_trusted"])
                if row["single_flags"]:
                    single += f" ({row['single_flags'].split(';')[0][:38]})"
                both = _class(row["accurate"], row["trusted"])
                wall = row["checks_wall_s"] / max(row["fit_wall_s"], 1e-9)
                evals = row["checks_evals"] / max(row["fit_grad_evals"], 1)
                cost = f"{wall:.0%}, {evals:.2f}×"
            lines.append(
                f"| {_short(res['posterior'])} | {name} | {_fmt(row['accurate'])} | {_fmt(row['w1_mean'])} | {sd} | "
                f"{_fmt(row['khat'], '.2f')} | {single} | {both} | {cost} | {row['grad_evals']:,} | "
                f"{row['wall_s']:.1f} |"
            )
    return "\n".join(lines)


def _anchors(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The anchors' rows of one posterior (runs saved before the flows and Pathfinder had only NumPyro's)."""
    return res.get("anchors", [res["numpyro"]] if "numpyro" in res else [])


def verdict_summary(results: list[dict[str, Any]]) -> str:
    """Per level (single fit, with restarts): accurate / caught / silent / false alarm counts over every method
    on every posterior, and the checks' cost."""
    out = []
    for level, key in (("single fit (default checks)", "single_trusted"), ("with restarts (compare)", "trusted")):
        counts = {"accurate": [], "caught": [], "SILENT": [], "false alarm": []}
        for res in results:
            for row in res["vbayes"]["methods"]:
                counts[_class(row["accurate"], row[key])].append(f"{_short(res['posterior'])}/{row['method']}")
        n = sum(len(v) for v in counts.values())
        text = ", ".join(f"{k} {len(v)}" for k, v in counts.items())
        detail = "".join(f"; {k}: {', '.join(v)}" for k, v in counts.items() if k in ("SILENT", "false alarm") and v)
        out.append(f"{level}, {n} fits: {text}{detail}.")
    walls = [r["checks_wall_s"] / max(r["fit_wall_s"], 1e-9) for res in results for r in res["vbayes"]["methods"]]
    evals = [r["checks_evals"] / max(r["fit_grad_evals"], 1) for res in results for r in res["vbayes"]["methods"]]
    out.append(
        f"cost of the default checks per fit: median {np.median(walls):.0%} of the fit's wall time (max "
        f"{np.max(walls):.0%}), median {np.median(evals):.2f}× its gradient evaluations in log-density evaluations "
        f"(max {np.max(evals):.2f}×)."
    )
    return "\n\n".join(out)


MCMC = ("nuts", "neutra")
"""The MCMC methods (``neutra`` runs when NUTS's divergent transitions survive their rerun): not VI in (c), (d)."""


def summary(results: list[dict[str, Any]]) -> str:
    out = []
    # (a)
    rec_ok, nuts_rec, neutra_rec, misses, none = 0, 0, 0, [], []
    for res in results:
        rows = {r["method"]: r for r in res["vbayes"]["methods"]}
        rec = res["vbayes"]["recommended"]
        nuts_rec += rec == "nuts"
        neutra_rec += rec == "neutra"
        if rec == "none":  # every method flagged, NUTS too: an honest non-answer, not a wrong one
            none.append(_short(res["posterior"]))
        elif rows[rec]["accurate"]:
            rec_ok += 1
        else:
            misses.append(f"{res['posterior']} ({rec}, mean W1/sd {_fmt(rows[rec]['w1_mean'])})")
    n = len(results)
    lost = [
        _short(res["posterior"])
        for res in results
        if res["vbayes"]["recommended"] in MCMC
        and any(r["accurate"] for r in res["vbayes"]["methods"] if r["method"] not in MCMC)
    ]
    out.append(
        f"(a) recommended method accurate on {rec_ok} / {n} posteriors; NUTS recommended on {nuts_rec} / {n}, "
        f"NUTS in a flow's space (neutra) on {neutra_rec} / {n}; "
        f"none recommended (every method flagged, NUTS too) on {len(none)} / {n}"
        + (f" ({', '.join(none)})" if none else "")
        + "."
        + (f" Misses: {'; '.join(misses)}." if misses else "")
        + (
            f" MCMC was recommended although a cheaper (flagged) method was accurate on: {', '.join(lost)}."
            if lost
            else ""
        )
    )
    # (b)
    wins, detail = 0, []
    for res in results:
        mf = next(r for r in res["vbayes"]["methods"] if r["method"] == "advi-meanfield")["w1_mean"]
        npy = next(r for r in _anchors(res) if r["method"] == "numpyro-autonormal")["w1_mean"]
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
        ok = [r for r in rows if r["method"] not in MCMC and r["accurate"]]
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
    # (d) issue 24's targets
    vi_ok, cheap, parts = 0, 0, []
    for res in results:
        rows = res["vbayes"]["methods"]
        nuts = next(r for r in rows if r["method"] == "nuts")
        good = [r for r in rows if r["method"] not in MCMC and r["accurate"] and r["single_trusted"]]
        if good:
            vi_ok += 1
            best = min(good, key=lambda r: r["grad_evals"])
            cheap += best["grad_evals"] <= nuts["grad_evals"] / 10
            ratio = nuts["grad_evals"] / best["grad_evals"]
            parts.append(f"{_short(res['posterior'])}: {best['method']} 1/{ratio:.0f}")
        else:
            parts.append(f"{_short(res['posterior'])}: none")
    silent = sum(
        _class(r["accurate"], r["single_trusted"]) == "SILENT" for res in results for r in res["vbayes"]["methods"]
    )
    out.append(
        f"(d) a VI method (not NUTS) trusted and accurate on {vi_ok} / {n} posteriors, at ≤ 1/10 of NUTS's gradient "
        f"evaluations on {cheap} ({'; '.join(parts)}); silent failures over all methods: {silent}."
    )
    return "\n\n".join(out)


def run_posterior(name: str) -> dict[str, Any]:
    """Every vbayes method (through ``compare``) and every anchor on one posterior."""
    target = posteriordb_target(name)
    ref_z = np.asarray(to_unconstrained(name, load_reference(name).pooled))
    res: dict[str, Any] = {"posterior": name, "dim": target.dim}
    res["vbayes"] = run_vbayes(target)
    res["anchors"] = [run_numpyro(target, ref_z, guide_name=g) for g in GUIDES]
    res["anchors"].append(run_blackjax_pathfinder(target, ref_z))
    return res


def _in_subprocess(name: str, out: Path) -> dict[str, Any]:
    """:func:`run_posterior` in a fresh Python process (this script with ``--posteriors NAME``)."""
    import subprocess

    part = out.with_name(f"{out.stem}.{name}.json")
    command = [sys.executable, __file__, "--posteriors", name, "--out", str(part)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(part.read_text())["results"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 small posteriors only")
    parser.add_argument("--posteriors", default=None, help="comma-separated posterior names")
    parser.add_argument("--out", default=str(CACHE), help="JSON file for the raw results")
    parser.add_argument("--from-json", default=None, help="print table and summary of saved runs (comma-separated)")
    args = parser.parse_args()
    if args.from_json:
        saved = [r for f in args.from_json.split(",") for r in json.loads(Path(f).read_text())["results"]]
        print(table(saved) + "\n\n" + verdict_summary(saved) + "\n\n" + summary(saved))
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
        if len(names) > 1:  # a fresh process per posterior: one process ran out of memory maps after ~5 posteriors'
            res = _in_subprocess(name, out)  # hundreds of compiled programs ("LLVM ERROR: Unable to allocate")
        else:
            res = run_posterior(name)
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
    print(verdict_summary(results))
    print()
    print(summary(results))
    print(f"\ntotal wall {time.perf_counter() - t_all:.0f} s; raw results in {out}")


if __name__ == "__main__":
    main()
