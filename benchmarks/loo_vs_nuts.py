"""Time to elpd_loo: vbayes (VI fit + q-corrected PSIS-LOO) against NUTS + ``az.loo``, in one process.

    python benchmarks/loo_vs_nuts.py [--quick] [--json FILE]

Model: Bayesian logistic regression, y_i ~ Bernoulli(logit⁻¹(x_iᵀβ)), β ~ N(0, 2.5² I), D = 10 covariates and an
intercept (d = 11), x_i ~ N(0, I), synthetic data with N = 10⁴ and 10⁵ (``--quick``: 10⁴ only).

* vbayes: the target built with ``vbayes.from_loglik`` (row by row), ``vbayes.advi(target)`` with its defaults
  (the automatic family and its checks), then ``vbayes.loo(fit)`` from 4,000 draws of q, q-corrected; at N = 10⁵
  subsampled on m = 2,000 observations (Magnusson et al. 2019's difference estimator).
* the anchor: NumPyro's NUTS on the same model (2 chains, 1,000 warm-up and 1,000 draws each, run one after the
  other on this 2-core machine), ``az.from_numpyro`` (which computes the pointwise log-likelihood) and ``az.loo``.

Each side is timed from the model's data to elpd_loo, compilation included (a fresh process each: vbayes's
persistent cache off). Reported: wall time, elpd_loo ± se, the difference in NUTS's standard errors, and the
ratio of times. Target (issue 25): ≥ 20× faster at agreement within 1 se.
"""

from __future__ import annotations

import os

os.environ.setdefault("VBAYES_CACHE_DIR", "off")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

D = 10
PRIOR_SD = 2.5
SUBSAMPLE = 2000
NUTS_SETTINGS = {"num_warmup": 1000, "num_samples": 1000, "num_chains": 2}


def data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, D))])
    beta = rng.normal(scale=0.5, size=D + 1)
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-X @ beta))).astype(np.float64)
    return X, y


def run_vbayes(n: int) -> dict:
    import jax.numpy as jnp

    import vbayes

    X, y = data(n)
    t0 = time.perf_counter()

    def log_lik(p, rows):
        logits = rows[0] @ p["beta"]
        return jnp.sum(rows[1] * logits - jnp.logaddexp(0.0, logits))

    def log_prior(p):
        return jnp.sum(jax.scipy.stats.norm.logpdf(p["beta"], 0.0, PRIOR_SD))

    target = vbayes.from_loglik(log_lik, {"beta": np.zeros(D + 1)}, data=(X, y), log_prior=log_prior, name="logit")
    fit = vbayes.advi(target, progress=False, key=0)
    t1 = time.perf_counter()
    result = vbayes.loo(fit, subsample=SUBSAMPLE if n > 20_000 else None)
    t2 = time.perf_counter()
    return {
        "seconds": t2 - t0,
        "fit_seconds": t1 - t0,
        "loo_seconds": t2 - t1,
        "elpd": result.elpd,
        "se": result.se,
        "subsample_se": result.subsample_se,
        "method": fit.info.method,
        "verdict": fit.verdict.status,
        "loo_reliable": result.reliable,
        "summary": result.summary(),
    }


def run_nuts(n: int) -> dict:
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    from vbayes.diagnostics import import_arviz

    az = import_arviz()
    X, y = data(n)

    def model(X, y=None):
        beta = numpyro.sample("beta", dist.Normal(0.0, PRIOR_SD).expand([X.shape[1]]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)

    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(model), **NUTS_SETTINGS, chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), X, y=y)
    t1 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = az.from_numpyro(mcmc)
        result = az.loo(idata)
    t2 = time.perf_counter()
    return {
        "seconds": t2 - t0,
        "fit_seconds": t1 - t0,
        "loo_seconds": t2 - t1,
        "elpd": float(result.elpd_loo),
        "se": float(result.se),
        "max_khat": float(np.max(result.pareto_k)),
    }


def child(which: str, n: int) -> dict:
    """Run one side in a fresh process (its compilations and imports counted)."""
    code = f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import loo_vs_nuts as b; "
    code += f"print(json.dumps(b.run_{which}({n})))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    from _common import machine_info, markdown_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 10⁴ only")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    sizes = [10_000] if args.quick else [10_000, 100_000]
    print("machine:", machine_info())
    out, rows = {}, []
    for n in sizes:
        vb = child("vbayes", n)
        print(f"N={n}: vbayes", json.dumps(vb), flush=True)
        nuts = child("nuts", n)
        print(f"N={n}: NUTS", json.dumps(nuts), flush=True)
        out[n] = {"vbayes": vb, "nuts": nuts}
        ratio = nuts["seconds"] / vb["seconds"]
        diff = (vb["elpd"] - nuts["elpd"]) / nuts["se"]
        elpds = f"elpd {vb['elpd']:.1f} ± {vb['se']:.1f} vs {nuts['elpd']:.1f} ± {nuts['se']:.1f} ({diff:+.2f} se)"
        print(f"N={n}: vbayes {vb['seconds']:.1f} s, NUTS + az.loo {nuts['seconds']:.1f} s: {ratio:.1f}×; {elpds}")
        print("   vbayes:", vb["summary"], f"({vb['method']}, {vb['verdict']})")
        rows.append(
            [
                f"{n:,}",
                f"{vb['seconds']:.1f} ({vb['fit_seconds']:.1f} + {vb['loo_seconds']:.1f})",
                f"{nuts['seconds']:.1f} ({nuts['fit_seconds']:.1f} + {nuts['loo_seconds']:.1f})",
                f"{ratio:.1f}×",
                f"{vb['elpd']:.1f} ± {vb['se']:.1f}" + (f" (m ± {vb['subsample_se']:.2f})" if n > 20_000 else ""),
                f"{nuts['elpd']:.1f} ± {nuts['se']:.1f}",
                f"{diff:+.2f}",
                f"{vb['method']}, {vb['verdict']}, LOO {'reliable' if vb['loo_reliable'] else 'UNRELIABLE'}",
            ]
        )  # fmt: skip
    header = ["N", "vbayes s (fit + LOO)", "NUTS + az.loo s (fit + LOO)", "speed-up", "vbayes elpd_loo",
              "NUTS elpd_loo", "difference (NUTS se)", "vbayes fit"]  # fmt: skip
    print()
    print(markdown_table(header, rows))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
