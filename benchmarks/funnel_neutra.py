"""Neal's funnel over seeds: vbayes' Gaussian and flow fits, NUTS and NeuTra against NumPyro's NUTS and NeuTra.

    python benchmarks/funnel_neutra.py [--seeds 0,1,2,3,4] [--dim 10]

The target is ``vbayes.examples.funnel(dim)``: v ~ N(0, 3²), x_i | v ~ N(0, e^v), i = 1..dim−1, whose exact
draws are known. Accuracy is posteriordb's rule (mean W₁/sd ≤ 0.1, every sd ratio in [0.8, 1.25]) against 20,000
exact draws, measured in the non-centred coordinates (v, x·e^(−v/2)), a bijection in which every coordinate is a
plain normal: in x itself the reference's own sd is not measurable (Var x_i = E e^v, whose sample estimate from
20,000 draws varies by ±64%). Per seed, in one process:

* vbayes with its defaults: ``advi`` (the automatic family), ``advi-flow``, ``advi-maf``, ``nuts`` and ``neutra``
  at ``compare``'s settings (target_accept 0.95), each with its own verdict;
* NumPyro on the same funnel written as a NumPyro model (centred, as a user writes it): NUTS (4 vectorised chains,
  1,000 + 1,000, target_accept 0.95), and NeuTra as its example does it (``AutoBNAFNormal(hidden_factors=[8, 8])``
  fitted by ``Trace_ELBO`` with ``Adam(0.003)`` for 10,000 steps, then ``NeuTraReparam`` and the same NUTS).
  NumPyro has no verdict: its rows say right or wrong, and its divergent transitions and R-hat are in the raw rows.

Each row: the class (accurate = trusted and accurate; caught; SILENT = trusted and wrong; false alarm), v's sd
(truth 3), the smallest sd ratio, gradient evaluations and wall time. Raw rows go to
``benchmarks/.cache/funnel_neutra.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info  # noqa: E402

from vbayes.compare import NUTS_OPTIONS  # noqa: E402
from vbayes.diagnostics import compare_draws  # noqa: E402
from vbayes.examples import funnel  # noqa: E402
from vbayes.infer.nuts import max_rhat_min_ess  # noqa: E402
from vbayes.methods import fit as registry_fit  # noqa: E402
from vbayes.targets import Target  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "funnel_neutra.json"
CLASSES = {(True, True): "accurate", (False, False): "caught", (False, True): "SILENT", (True, False): "false alarm"}
NUM_DRAWS = 20_000
BNAF_STEPS = 10_000


def noncentred(z: np.ndarray) -> np.ndarray:
    """(v, x) ↦ (v, x·e^(−v/2)) for draws ``(n, d)``."""
    return np.column_stack([z[:, 0], z[:, 1:] * np.exp(-z[:, :1] / 2.0)])


def exact(dim: int, n: int = NUM_DRAWS, seed: int = 12_345) -> np.ndarray:
    """Exact draws in the non-centred coordinates: v ~ N(0, 3²), the rest N(0, 1)."""
    rng = np.random.default_rng(seed)
    return np.column_stack([3.0 * rng.normal(size=n), rng.normal(size=(n, dim - 1))])


def _score(row: dict[str, Any], z: np.ndarray, truth: np.ndarray, trusted: bool | None) -> dict[str, Any]:
    acc = compare_draws(noncentred(np.asarray(z)), truth, [f"c{i}" for i in range(truth.shape[1])])
    row |= {
        "accurate": bool(acc.accurate()),
        "v_sd": float(np.std(np.asarray(z)[:, 0])),
        "sd_ratio_min": float(acc.sd_ratio.min()),
        "w1_mean": float(acc.w1.mean()),
        "class": CLASSES[(bool(acc.accurate()), bool(trusted))]
        if trusted is not None
        else ("right" if acc.accurate() else "wrong") + " (no verdict)",
    }
    return row


def run_vbayes(target: Target, method: str, seed: int, truth: np.ndarray) -> dict[str, Any]:
    options = NUTS_OPTIONS if method in ("nuts", "neutra") else {}
    t0 = time.perf_counter()
    fit = registry_fit(target, method, key=seed, **options)
    wall = time.perf_counter() - t0
    z = np.asarray(fit.q.flat) if hasattr(fit.q, "flat") else np.asarray(fit.draws_unconstrained(NUM_DRAWS, seed))
    kept = fit.info.method if method == "advi" else fit.info.extra.get("flow", "").split(" ")[0]
    row = {"method": f"{method} ({kept})" if method in ("advi", "neutra") else method, "seed": seed}
    row |= {"grad_evals": int(fit.info.grad_evals), "wall_s": wall, "verdict": fit.verdict.summary()}
    return _score(row, z, truth, fit.trusted)


def _numpyro_model(dim: int):
    import numpyro
    import numpyro.distributions as dist

    def model():
        v = numpyro.sample("v", dist.Normal(0.0, 3.0))
        numpyro.sample("x", dist.Normal(jnp.zeros(dim - 1), jnp.exp(v / 2.0)).to_event(1))

    return model


def _numpyro_nuts(model, seed: int):
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(
        NUTS(model, target_accept_prob=NUTS_OPTIONS["target_accept"]),
        num_warmup=1000,
        num_samples=1000,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(seed), extra_fields=("num_steps", "diverging"))
    extra = mcmc.get_extra_fields(group_by_chain=True)
    # num_steps covers the sampling phase only; warm-up steps are not returned: counted as the same mean per draw
    steps = int(np.asarray(extra["num_steps"]).sum()) * 2
    return mcmc.get_samples(group_by_chain=True), steps, int(np.asarray(extra["diverging"]).sum())


def run_numpyro(dim: int, seed: int, truth: np.ndarray, neutra: bool) -> dict[str, Any]:
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoBNAFNormal
    from numpyro.infer.reparam import NeuTraReparam

    model = _numpyro_model(dim)
    t0 = time.perf_counter()
    evals = 0
    if neutra:
        guide = AutoBNAFNormal(model, hidden_factors=[8, 8])
        svi = SVI(model, guide, numpyro.optim.Adam(0.003), Trace_ELBO())
        result = svi.run(jax.random.PRNGKey(seed + 1000), BNAF_STEPS, progress_bar=False)
        reparam = NeuTraReparam(guide, result.params)
        samples, steps, divergent = _numpyro_nuts(reparam.reparam(model), seed)
        chains = reparam.transform_sample(samples["auto_shared_latent"])
        evals += BNAF_STEPS
    else:
        chains, steps, divergent = _numpyro_nuts(model, seed)
    z = np.concatenate([np.asarray(chains["v"])[..., None], np.asarray(chains["x"])], -1)
    wall = time.perf_counter() - t0
    rhat, _ = max_rhat_min_ess(z)
    row = {"method": "numpyro-neutra-bnaf" if neutra else "numpyro-nuts", "seed": seed}
    row |= {"grad_evals": evals + steps, "wall_s": wall, "verdict": f"{divergent} divergent, R-hat {rhat:.3f}"}
    return _score(row, z.reshape(-1, dim), truth, None)


def table(rows: list[dict[str, Any]]) -> str:
    methods = list(dict.fromkeys(r["method"].split(" (")[0] for r in rows))
    out = [
        "| method | classes by seed | v's sd (truth 3) | smallest sd ratio | median grad evals | median wall s |",
        "|---|---|---|---|---|---|",
    ]
    for m in methods:
        rs = [r for r in rows if r["method"].split(" (")[0] == m]
        classes = ", ".join(r["class"] for r in rs)
        vsd = f"{min(r['v_sd'] for r in rs):.2f}–{max(r['v_sd'] for r in rs):.2f}"
        grads = int(np.median([r["grad_evals"] for r in rs]))
        wall = float(np.median([r["wall_s"] for r in rs]))
        sdr = min(r["sd_ratio_min"] for r in rs)
        out.append(f"| {m} | {classes} | {vsd} | {sdr:.2f} | {grads:,} | {wall:.1f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument("--dim", type=int, default=10, help="the funnel's dimension")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    target, truth = funnel(args.dim), exact(args.dim)
    rows: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for seed in seeds:
        for method in ("advi", "advi-flow", "advi-maf", "nuts", "neutra"):
            rows.append(run_vbayes(target, method, seed, truth))
        for neutra in (False, True):
            rows.append(run_numpyro(args.dim, seed, truth, neutra))
        print(
            f"[{time.perf_counter() - t_all:7.1f} s] seed {seed}: "
            + ", ".join(f"{r['method']} {r['class']}" for r in rows[-7:]),
            flush=True,
        )
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        CACHE.write_text(json.dumps(rows, indent=1))
    print()
    print(table(rows))
    vb = {r["method"]: r for r in rows if r["seed"] == seeds[0]}
    ratio = vb["numpyro-neutra-bnaf"]["wall_s"] / vb["neutra"]["wall_s"]
    print(f"\nseed {seeds[0]}: NumPyro NeuTra wall / vbayes neutra wall = {ratio:.2f}×")
    print(f"total wall {time.perf_counter() - t_all:.0f} s; machine {machine_info()}; raw rows in {CACHE}")


if __name__ == "__main__":
    main()
