"""Q2: how is variational Bayes related to EM?

EM (Dempster, Laird & Rubin 1977) is variational Bayes with q(θ) restricted to a point mass (Neal & Hinton
1998; Beal 2003): the E-step is VB's update of q(z) with the parameters plugged in, and the M-step is VB's
update of q(θ) collapsed to its mode. In vbayes this is literally the same code: one
``ConjugateModel`` (``vbayes.conjugate.gmm.bayesian_gmm``) whose ``local_step`` and ``global_step`` serve
``vbayes.conjugate.cavi`` with ``mode="vb"`` (VB), ``mode="map"`` (MAP-EM, same prior) and ``mode="em"`` (EM,
flat prior); only what the local step reads from q(θ) differs (expectations or the mode).

As the data grow the posterior concentrates, so the VB answer approaches the MAP-EM answer: this example
fits one Gaussian mixture by all three from the same initial responsibilities for N = 100 … 300,000 and
prints the distance between them.

    python examples/q02_vb_and_em.py [--quick] [--out DIR]
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402

from vbayes.conjugate import cavi  # noqa: E402
from vbayes.conjugate.gmm import (  # noqa: E402
    GMMParams,
    bayesian_gmm,
    default_prior,
    flat_prior,
    init_params,
    point_estimates,
)
from vbayes.questions import example_args, new_figure, save_figure, say  # noqa: E402

K = 3
TRUE_MEANS = np.array([[0.0, 0.0], [3.0, 3.0], [-3.0, 3.0]])
TRUE_WEIGHTS = np.array([0.5, 0.3, 0.2])


def mixture_data(n: int, seed: int = 0) -> np.ndarray:
    """``n`` points (n, 2) from a 3-component mixture with unit covariances (nested: a prefix of one draw)."""
    rng = np.random.default_rng(seed)
    big = 300_000
    labels = rng.choice(K, size=big, p=TRUE_WEIGHTS)
    x = TRUE_MEANS[labels] + rng.standard_normal((big, 2))
    return x[:n]


def fit_three_ways(x: np.ndarray) -> dict:
    """CAVI, MAP-EM and EM on ``x`` from the same k-means responsibilities; the same model functions."""
    labels = KMeans(K, n_init=1, random_state=0).fit(x).labels_
    resp = np.eye(K)[labels]
    prior = default_prior(x, K, weight_concentration_prior=1.0, degrees_of_freedom_prior=x.shape[1] + 2.0)
    vb_model = bayesian_gmm(prior, "full", "dirichlet_distribution")
    ml_model = bayesian_gmm(flat_prior(x.shape[1], reg_covar=1e-6), "full", "dirichlet_distribution")
    runs = {
        "cavi": cavi(vb_model, init_params(vb_model, x, resp), x, tol=1e-9),
        "map-em": cavi(vb_model, init_params(vb_model, x, resp), x, mode="map", tol=1e-9),
        "em": cavi(ml_model, init_params(ml_model, x, resp), x, mode="em", tol=1e-9),
    }
    out = {
        "same_code": vb_model.local_step.func == ml_model.local_step.func
        and vb_model.global_step.func == ml_model.global_step.func
    }
    for name, fit in runs.items():
        model = ml_model if name == "em" else vb_model
        w, m, c = (np.asarray(a) for a in point_estimates(model, fit.q.params, point_mass=name != "cavi"))
        order = np.argsort(m[:, 0] + 10 * m[:, 1])  # components in a fixed order
        out[name] = {
            "weights": w[order],
            "means": m[order],
            "covs": c[order],
            "objective": fit.info.extra["objective"],
            "iterations": fit.info.steps,
            "params": GMMParams(*(np.asarray(a)[order] for a in fit.q.params)),
        }
    return out


def distances(r: dict, x: np.ndarray) -> dict:
    """How far VB is from MAP-EM (and MAP-EM from EM): means in data sds, posterior sd of the means, objectives."""
    n, sd = x.shape[0], x.std()
    vb, mp, ml = r["cavi"], r["map-em"], r["em"]
    p = vb["params"]
    mean_sd = np.sqrt(np.diagonal(vb["covs"], axis1=1, axis2=2) / p.beta[:, None])  # sd of μ_k under q
    return {
        "n": n,
        "vb_vs_map_means": float(np.max(np.abs(vb["means"] - mp["means"])) / sd),
        "vb_vs_map_weights": float(np.max(np.abs(vb["weights"] - mp["weights"]))),
        "map_vs_em_means": float(np.max(np.abs(mp["means"] - ml["means"])) / sd),
        "posterior_sd_of_means": float(np.max(mean_sd) / sd),
        "gap_per_point": (mp["objective"] - vb["objective"]) / n,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    args = example_args(__doc__.splitlines()[0], argv)
    sizes = [100, 1_000, 10_000] if args.quick else [100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000]
    rows, same = [], True
    print(
        f"{'N':>7}  {'|m_VB − m_MAP|':>14}  {'sd of μ under q':>15}  {'|m_MAP − m_EM|':>14}  "
        f"{'|π_VB − π_MAP|':>14}  {'(MAP obj − ELBO)/N':>18}"
    )
    for n in sizes:
        x = mixture_data(n)
        r = fit_three_ways(x)
        same &= r["same_code"]
        d = distances(r, x)
        rows.append(d)
        print(
            f"{n:7d}  {d['vb_vs_map_means']:14.2e}  {d['posterior_sd_of_means']:15.2e}  {d['map_vs_em_means']:14.2e}  "
            f"{d['vb_vs_map_weights']:14.2e}  {d['gap_per_point']:18.4f}"
        )
    say("EM, MAP-EM and CAVI ran the same local_step/global_step functions", str(same))
    slope = np.polyfit(np.log([d["n"] for d in rows]), np.log([d["vb_vs_map_means"] for d in rows]), 1)[0]
    say("log-log slope of |m_VB − m_MAP| against N", slope, ".2f")
    sd_slope = np.polyfit(np.log([d["n"] for d in rows]), np.log([d["posterior_sd_of_means"] for d in rows]), 1)[0]
    say("log-log slope of the posterior sd of the means against N", sd_slope, ".2f")

    fig = new_figure(10, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    ns = np.array([d["n"] for d in rows])
    for key, label, marker in (
        ("vb_vs_map_means", "|mean VB − mean MAP-EM| / sd(x)", "o"),
        ("map_vs_em_means", "|mean MAP-EM − mean EM| / sd(x)", "s"),
        ("posterior_sd_of_means", "posterior sd of the means / sd(x)", "^"),
        ("vb_vs_map_weights", "|weight VB − weight MAP-EM|", "v"),
    ):
        ax1.plot(ns, [d[key] for d in rows], marker=marker, label=label)
    ax1.plot(ns, rows[0]["vb_vs_map_means"] * ns[0] / ns, "k:", lw=1, label="∝ 1/N")
    ax1.plot(ns, rows[0]["posterior_sd_of_means"] * np.sqrt(ns[0] / ns), "k--", lw=1, label="∝ 1/√N")
    ax1.set(xscale="log", yscale="log", xlabel="N", title="VB → point mass at the MAP-EM estimate")
    ax1.legend(fontsize=7)
    ax2.plot(ns, [d["gap_per_point"] for d in rows], "o-")
    ax2.set(xscale="log", xlabel="N", ylabel="nats per point", title="(log p(X, θ̂_MAP) − ELBO) / N → 0")
    save_figure(fig, args.out, "q02_vb_and_em.png")
    return {"rows": rows, "same_code": same, "slope": slope, "sd_slope": sd_slope}


if __name__ == "__main__":
    main()
