"""First-fit latency: vbayes against NumPyro in fresh processes, cold and with a warm compilation cache.

    python benchmarks/latency.py [--quick] [--repeats N]

Every figure is the best of ``--repeats`` fresh Python processes (3; 1 with ``--quick``), measured inside the
child from just before the statement to just after its result is ready:

1. ``import vbayes`` (and ``from vbayes import advi``: what a fit needs);
2. the first and the second ``vbayes.advi(target, "meanfield")`` (the family of NumPyro's ``AutoNormal``, and
   the default until issue 24 made the default choose a family; otherwise defaults: STL, mode start, the stopping
   rule, the verdict's checks) on the non-centred eight schools and on a logistic regression (N = 10,000, d = 50),
   both NumPyro models through ``vbayes.from_numpyro`` (building the target is part of the first fit), against
   NumPyro's ``SVI.run`` (``AutoNormal``, ``Trace_ELBO``, Adam 0.01, 10,000 steps) on the same models, first and
   second call. NumPyro runs with ``progress_bar=False`` (its fast path: one compiled ``lax.scan``); its default,
   ``progress_bar=True``, is timed once as well (``--quick`` skips it). Cold: no persistent cache
   (``VBAYES_CACHE_DIR=off``); warm: a second process on the cache the first one filled (vbayes's own cache;
   NumPyro with JAX's cache turned on in the same folder layout, ``JAX_COMPILATION_CACHE_DIR``);
3. ``vbayes fit eight_schools_noncentered --method advi-meanfield`` (issue 23's command, with the family it ran
   then), the same with the default family (chosen to pass the checks: here a flow after a flagged full-rank fit)
   and ``vbayes compare`` from the shell (wall time of the command), cold (an empty cache folder) and warm (the
   same folder again).

Also reported: the XLA programs each first fit compiled (``vbayes.compilation.count_compilations``). Prints
ratios and a markdown table; ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SVI_STEPS = 10_000

# ----------------------------------------------------------------------------------------------------
# children: each prints one JSON line

_CHILD_IMPORT = """
import time, json
t0 = time.perf_counter()
import vbayes
t1 = time.perf_counter()
from vbayes import advi, from_numpyro
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "import_advi": t2 - t0}))
"""

_MODELS = """
import numpy as np
from vbayes.examples import (eight_schools_data, eight_schools_noncentered_model, logistic_regression_model,
                             synthetic_logistic_data)

def model_and_data(name):
    if name == "eight_schools":
        J, sigma, y = eight_schools_data()
        return eight_schools_noncentered_model, (J, sigma), {"y": y}
    X, y = synthetic_logistic_data(10_000, 50, seed=0)
    return logistic_regression_model, (X.astype(np.float32),), {"y": y.astype(np.float32)}
"""

_CHILD_VBAYES = (
    _MODELS
    + """
import sys, time, json
import jax
from vbayes import advi, from_numpyro
from vbayes.compilation import count_compilations

model, args, kwargs = model_and_data(sys.argv[1])
out = {}
for which in ("first", "second"):
    with count_compilations() as c:
        t0 = time.perf_counter()
        fit = advi(from_numpyro(model, *args, **kwargs), "meanfield", key=0 if which == "first" else 1, progress=False)
        jax.block_until_ready(fit.q)
        out[which] = time.perf_counter() - t0
    out[which + "_programs"], out[which + "_compiled"] = c.programs, c.compiled
    out[which + "_cache_hits"] = c.cache_hits
    out[which + "_compile_s"] = c.seconds
out["outcome"], out["verdict"] = fit.info.outcome, fit.verdict.status
print(json.dumps(out))
"""
)

_CHILD_NUMPYRO = (
    _MODELS
    + """
import sys, time, json
import jax
import numpyro
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

model, args, kwargs = model_and_data(sys.argv[1])
progress = sys.argv[2] == "progress"
out = {}
for which, seed in (("first", 0), ("second", 1)):
    t0 = time.perf_counter()
    svi = SVI(model, AutoNormal(model), numpyro.optim.Adam(0.01), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(seed), STEPS, *args, progress_bar=progress, **kwargs)
    jax.block_until_ready(result.params)
    out[which] = time.perf_counter() - t0
print(json.dumps(out))
""".replace("STEPS", str(SVI_STEPS))
)


def _child(code: str, argv: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env={**os.environ, **env}, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _best(runs: list[dict], key: str) -> float:
    return min(r[key] for r in runs)


def _shell(args: list[str], env: dict[str, str], cwd: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **env}, cwd=cwd, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 3):  # 3: the fit is flagged by its checks, which is an answer
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


# ----------------------------------------------------------------------------------------------------
# the measurements


def measure_import(repeats: int) -> dict:
    runs = [_child(_CHILD_IMPORT, [], {"VBAYES_CACHE_DIR": "off"}) for _ in range(repeats)]
    return {"import": _best(runs, "import"), "import_advi": _best(runs, "import_advi")}


def measure_fits(model: str, repeats: int, with_progress_bar: bool) -> dict:
    res: dict = {}
    off = {"VBAYES_CACHE_DIR": "off"}
    cold = [_child(_CHILD_VBAYES, [model], off) for _ in range(repeats)]
    res["vbayes_cold"] = min(cold, key=lambda r: r["first"])
    res["vbayes_cold"]["second"] = _best(cold, "second")
    warm = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            _child(_CHILD_VBAYES, [model], {"VBAYES_CACHE_DIR": cache})  # fills it
            warm.append(_child(_CHILD_VBAYES, [model], {"VBAYES_CACHE_DIR": cache}))
    res["vbayes_warm"] = min(warm, key=lambda r: r["first"])
    np_cold = [_child(_CHILD_NUMPYRO, [model, "fast"], off) for _ in range(repeats)]
    res["numpyro_cold"] = {"first": _best(np_cold, "first"), "second": _best(np_cold, "second")}
    np_warm = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            env = {"JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
            _child(_CHILD_NUMPYRO, [model, "fast"], env)
            np_warm.append(_child(_CHILD_NUMPYRO, [model, "fast"], env))
    res["numpyro_warm"] = {"first": _best(np_warm, "first"), "second": _best(np_warm, "second")}
    if with_progress_bar:
        res["numpyro_default"] = _child(_CHILD_NUMPYRO, [model, "progress"], off)
    return res


def measure_cli(repeats: int) -> dict:
    vbayes = str(Path(sys.executable).with_name("vbayes"))
    commands = {
        "fit": [vbayes, "fit", "eight_schools_noncentered", "--method", "advi-meanfield"],
        "fit-auto": [vbayes, "fit", "eight_schools_noncentered"],
        "compare": [vbayes, "compare"],
    }
    res: dict = {}
    for name, args in commands.items():
        cold, warm = [], []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as cwd:
                env = {"VBAYES_CACHE_DIR": cache}
                cold.append(_shell(args, env, cwd))
                warm.append(_shell(args, env, cwd))
        res[name] = {"cold": min(cold), "warm": min(warm)}
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run of each, no NumPyro progress-bar run")
    parser.add_argument("--repeats", type=int, default=None, help="fresh processes per figure (default 3)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)

    sys.path.insert(0, str(HERE))
    from _common import machine_info

    info = machine_info()
    print(f"machine: {info}", flush=True)
    results: dict = {"machine": info, "repeats": repeats}
    results["import"] = measure_import(repeats)
    print(f"import vbayes {results['import']['import']:.2f} s", flush=True)
    for model in ("eight_schools", "logistic"):
        results[model] = measure_fits(model, repeats, not args.quick)
        print(f"{model}: {json.dumps(results[model])}", flush=True)
    results["cli"] = measure_cli(repeats)
    print(f"cli: {json.dumps(results['cli'])}", flush=True)
    print()
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(r: dict) -> str:
    """The markdown table of :func:`main`'s figures, with the ratios against NumPyro."""
    lines = [
        f"best of {r['repeats']} fresh processes; seconds",
        "",
        "| what | vbayes | NumPyro | ratio |",
        "|---|---|---|---|",
        f"| `import vbayes` | {r['import']['import']:.2f} | | |",
        f"| `from vbayes import advi` | {r['import']['import_advi']:.2f} | | |",
    ]
    for model, label in (("eight_schools", "eight schools"), ("logistic", "logistic regression N=10⁴, d=50")):
        m = r[model]
        vc, vw, nc, nw = m["vbayes_cold"], m["vbayes_warm"], m["numpyro_cold"], m["numpyro_warm"]
        lines += [
            f"| {label}: first fit, cold ({vc['first_compiled']} programs compiled, {vc['first_compile_s']:.1f} s) "
            f"| {vc['first']:.2f} | {nc['first']:.2f} | {vc['first'] / nc['first']:.2f}× |",
            f"| {label}: second fit | {vc['second']:.2f} | {nc['second']:.2f} | {vc['second'] / nc['second']:.2f}× |",
            f"| {label}: first fit, warm cache ({vw['first_cache_hits']} loaded, {vw['first_compiled']} compiled) "
            f"| {vw['first']:.2f} | {nw['first']:.2f} | {vw['first'] / nw['first']:.2f}× |",
        ]
        if "numpyro_default" in m:
            d = m["numpyro_default"]
            lines.append(
                f"| {label}: NumPyro's default `SVI.run` (progress bar), first / second | | "
                f"{d['first']:.2f} / {d['second']:.2f} | |"
            )
        lines.append(f"| {label}: vbayes outcome, verdict | {vc['outcome']}, {vc['verdict']} | | |")
    for name, command in (
        ("fit", "vbayes fit eight_schools_noncentered --method advi-meanfield"),
        ("fit-auto", "vbayes fit eight_schools_noncentered"),
        ("compare", "vbayes compare"),
    ):
        c = r["cli"][name]
        lines += [f"| `{command}`, cold | {c['cold']:.2f} | | |", f"| `{command}`, warm cache | {c['warm']:.2f} | | |"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
