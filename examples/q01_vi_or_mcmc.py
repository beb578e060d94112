"""Q1: variational inference or MCMC: which should I choose?

It depends on the posterior, and vbayes can tell which case you are in from the fit's own diagnostics
(PSIS k̂, restarts, reweighting from a widened q), without a reference. ``vbayes.compare.compare`` (the
``vbayes compare`` command) runs mean-field and full-rank ADVI and NUTS on three models where the answer
differs:

1. logistic regression with independent features: mean-field ADVI is accurate at a small fraction of NUTS's cost;
2. linear regression on the correlated diabetes features: mean-field underestimates posterior sds
   (Turner & Sahani 2011; Blei, Kucukelbir & McAuliffe 2017), its k̂ flags it, full-rank ADVI is right;
3. 20 groups of 5 observations with unknown means and scales: the posterior's tails (those of few-point
   scale estimates) are heavier than any Gaussian's, every Gaussian q is flagged by k̂ (Yao, Vehtari,
   Simpson & Gelman 2018), and NUTS is the answer.

    python examples/q01_vi_or_mcmc.py [--quick] [--out DIR]

``--quick`` runs only model 2 against its exact posterior (no NUTS).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

import vbayes  # noqa: E402
from vbayes.compare import Comparison, compare  # noqa: E402
from vbayes.examples import (  # noqa: E402
    linear_regression,
    linear_regression_exact,
    logistic_regression_model,
    synthetic_logistic_data,  # noqa: E402
)
from vbayes.questions import example_args, new_figure, save_figure, say  # noqa: E402

METHODS = ("advi-meanfield", "advi-fullrank", "nuts")


def groups_model(y=None) -> None:
    """mu_j ~ N(0, 10²), sigma_j ~ HalfCauchy(5), y_jn ~ N(mu_j, sigma_j²); y: (J, n). Few points per group:
    heavy-tailed posteriors for every (mu_j, log sigma_j)."""
    with numpyro.plate("J", y.shape[0]):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        sigma = numpyro.sample("sigma", dist.HalfCauchy(5.0))
    numpyro.sample("y", dist.Normal(mu[:, None], sigma[:, None]).to_event(2), obs=y)


def groups_data(groups: int = 20, per_group: int = 5, seed: int = 0) -> np.ndarray:
    """y (groups, per_group): group means ~ N(0, 3²), within-group sd 2."""
    rng = np.random.default_rng(seed)
    return rng.normal(rng.normal(0.0, 3.0, size=(groups, 1)), 2.0, size=(groups, per_group))


def models() -> dict[str, vbayes.Target]:
    """The three targets: independent-feature logistic regression, diabetes regression, small-sample normal."""
    X, y = synthetic_logistic_data(n=2000, d=20, seed=1)
    return {
        "logistic regression, 20 independent features": vbayes.from_numpyro(logistic_regression_model, X, y=y),
        "linear regression, correlated features (diabetes)": linear_regression(),
        "20 groups of 5 points, unknown means and scales": vbayes.from_numpyro(groups_model, y=groups_data()),
    }


def exact_draws(n: int = 20_000) -> np.ndarray:
    """Draws of the linear regression's exact posterior ``(n, 11)`` (z = beta: no transform)."""
    mean, cov, _ = linear_regression_exact()
    return np.random.default_rng(0).multivariate_normal(mean, cov, size=n)


def describe(name: str, c: Comparison) -> dict:
    """Print the comparison's table and verdict; return its key numbers."""
    table = c.table()
    print(f"\n== {name} (dim {c.target.dim}, reference {c.reference})")
    cols = ["grad_evals", "wall_s", "khat", "sd_ratio_min", "sd_ratio_max", "w1_mean", "trusted", "accurate"]
    print(table[[col for col in cols if col in table]].to_string(float_format=lambda v: f"{v:.3g}"))
    for r in c.results:
        if r.flags:
            print(f"  {r.method} flagged: {'; '.join(r.flags)}")
    say("recommended", c.recommended)
    print(f"  because {c.reason}")
    out = {"recommended": c.recommended, "table": table}
    single = {r.method: r.fit.info.grad_evals for r in c.results}
    if "nuts" in single:
        ratio = single["nuts"] / single["advi-meanfield"]
        say("NUTS / one mean-field ADVI fit, gradient evaluations", ratio, ".0f")
        out["cost_ratio"] = ratio
    return out


def plot(results: dict[str, dict], out) -> None:
    """Per model: each method's sd ratio range against the reference (bars) and whether it was trusted."""
    fig = new_figure(11, 3.4)
    axes = fig.subplots(1, len(results), sharey=True)
    for ax, (name, r) in zip(np.atleast_1d(axes), results.items(), strict=True):
        t = r["table"].drop(index="nuts", errors="ignore")
        y = np.arange(len(t))
        lo, hi = t["sd_ratio_min"].to_numpy(), t["sd_ratio_max"].to_numpy()
        colors = ["tab:green" if ok else "tab:red" for ok in t["trusted"]]
        ax.barh(y, hi - lo, left=lo, height=0.5, color=colors)
        ax.axvline(1.0, color="k", lw=1)
        ax.axvspan(0.8, 1.25, color="0.9", zorder=0)
        for yi, k in zip(y, t["khat"], strict=True):
            ax.text(1.28, yi, f"k-hat {k:.2f}", va="center", fontsize=8)
        ax.set_yticks(y, t.index)
        ax.set(xlim=(0, 1.75), xlabel="sd(q) / sd(reference), over coordinates")
        title = name.replace(", ", ",\n", 1)
        ax.set_title(f"{title}\nrecommended: {r['recommended']}", fontsize=8)
    save_figure(fig, out, "q01_vi_or_mcmc.png")


def main(argv: Sequence[str] | None = None) -> dict:
    args = example_args(__doc__.splitlines()[0], argv)
    results = {}
    if args.quick:
        name = "linear regression, correlated features (diabetes)"
        c = compare(linear_regression(), METHODS[:2], reference=exact_draws(), log=None)
        results[name] = describe(name, c)
    else:
        for name, target in models().items():
            results[name] = describe(name, compare(target, METHODS))
    plot(results, args.out)
    return results


if __name__ == "__main__":
    main()
