"""Q14: how do I apply stochastic VI to a Bayesian Gaussian mixture?

``VariationalGaussianMixture(method="svi")``. Stochastic variational inference (Hoffman, Blei, Wang & Paisley
2013) replaces CAVI's pass over all N points per update of the global factors q(π, μ, Λ) by a minibatch of S
points: the local step on the batch, its statistics scaled by N/S, and a step of size ρ_t = (t + τ)^−κ
towards the resulting global update, which is a natural-gradient step on the ELBO. Each step costs O(S), not
O(N), so on a million points SVI reaches CAVI's ELBO after a fraction of one pass.

This example fits the same mixture (K = 10 allowed, 6 used by the data, D = 3) by CAVI and by SVI on a
million points and plots the ELBO per point against time.

    python examples/q14_svi_gaussian_mixture.py [--quick] [--out DIR]

``--quick`` uses 20,000 points.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from vbayes import VariationalGaussianMixture
from vbayes.questions import example_args, new_figure, save_figure, say

K_TRUE, DIM = 6, 3


def mixture_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points (n, 3) from 6 Gaussian components with random means (sd 4), weights and correlated
    covariances; also the true means (6, 3)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 4, (K_TRUE, DIM))
    weights = rng.dirichlet(np.full(K_TRUE, 5.0))
    factors = rng.normal(0, 0.6, (K_TRUE, DIM, DIM)) + np.eye(DIM)
    labels = rng.choice(K_TRUE, size=n, p=weights)
    x = means[labels] + np.einsum("nij,nj->ni", factors[labels], rng.standard_normal((n, DIM)))
    return x, means


def elbo_against_time(model: VariationalGaussianMixture) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, ELBO per point) at each recorded iterate. CAVI records every pass, SVI the average of the
    iterates at checkpoints after 1, 2, 4, … blocks of steps; times are the run's wall time shared out in
    proportion to the work done (passes for CAVI, steps for SVI)."""
    info, trace = model.result_.info, np.asarray(model.lower_bounds_)
    if info.method == "svi":
        work = 2.0 ** np.arange(trace.size)
        return info.wall_time * work / work[-1], trace
    return info.wall_time * np.arange(1, trace.size + 1) / trace.size, trace


def mean_distance(a: VariationalGaussianMixture, b: VariationalGaussianMixture, min_weight: float = 0.01) -> float:
    """Largest distance from a used component of ``a`` (weight > 1%) to the nearest used component of ``b``."""
    ma, mb = a.means_[a.weights_ > min_weight], b.means_[b.weights_ > min_weight]
    return float(np.max(np.min(np.linalg.norm(ma[:, None] - mb[None], axis=-1), axis=1)))


def main(argv: Sequence[str] | None = None) -> dict:
    args = example_args(__doc__.splitlines()[0], argv)
    n = 20_000 if args.quick else 1_000_000
    x, _ = mixture_data(n)
    fits = {}
    for method in ("cavi", "svi"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits[method] = VariationalGaussianMixture(10, method=method, random_state=0).fit(x)
    cavi, svi = fits["cavi"], fits["svi"]
    print(f"Bayesian Gaussian mixture, N = {n:,}, D = {DIM}, K = 10 (data: {K_TRUE} components)")
    for name, m in fits.items():
        extra = m.result_.info.extra
        work = f"{extra['epochs']:.3f} passes" if name == "svi" else f"{m.n_iter_} passes"
        say(f"{name}: outcome", f"{m.result_.info.outcome}, {work}, {m.result_.info.wall_time:.1f} s")
        say(f"{name}: ELBO per point", m.lower_bound_, ".5f")
        say(f"{name}: components with weight > 1%", int(np.sum(m.weights_ > 0.01)))
    gap = cavi.lower_bound_ - svi.lower_bound_
    t_cavi, e_cavi = elbo_against_time(cavi)
    reach = t_cavi[np.argmax(e_cavi >= svi.lower_bound_)] if np.any(e_cavi >= svi.lower_bound_) else np.nan
    say("CAVI − SVI final ELBO per point", gap, ".2e")
    say("time CAVI needs to reach SVI's final ELBO (s)", reach, ".1f")
    say("SVI time / CAVI time", svi.result_.info.wall_time / cavi.result_.info.wall_time, ".3f")
    say("largest distance between SVI's and CAVI's component means", mean_distance(svi, cavi), ".3g")

    fig = new_figure(10, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    for name, m in fits.items():
        t, e = elbo_against_time(m)
        ax1.plot(t, e, "o-" if name == "svi" else "-", ms=3, label=f"{name.upper()} ({m.result_.info.wall_time:.0f} s)")
    finals = [m.lower_bound_ for m in fits.values()]
    ax1.set(
        xscale="log",
        xlabel="seconds (log scale)",
        ylabel="ELBO per point",
        title=f"N = {n:,}",
        ylim=(min(finals) - 0.5, max(finals) + 0.1),
    )
    ax1.legend(fontsize=8)
    sub = x[np.random.default_rng(1).choice(n, 5000, replace=False)]
    ax2.scatter(sub[:, 0], sub[:, 1], s=1, color="0.7")
    for name, m, marker in (("CAVI", cavi, "o"), ("SVI", svi, "x")):
        used = m.weights_ > 0.01
        ax2.scatter(m.means_[used, 0], m.means_[used, 1], marker=marker, s=60, label=f"{name} means (weight > 1%)")
    ax2.set(xlabel="x₁", ylabel="x₂", title="components found")
    ax2.legend(fontsize=8)
    save_figure(fig, args.out, "q14_svi_gaussian_mixture.png")
    return {"n": n, "cavi": cavi, "svi": svi, "gap": gap, "reach": reach, "distance": mean_distance(svi, cavi)}


if __name__ == "__main__":
    main()
