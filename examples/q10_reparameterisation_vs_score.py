"""Q10: what is the difference between the VAE and stochastic backpropagation?

In the gradient, none. "Stochastic backpropagation" (Rezende, Mohamed & Wierstra 2014) and the VAE's
"reparameterisation trick" (Kingma & Welling 2014) are the same estimator, found independently: write
θ = μ + Lε with ε ~ N(0, I) and differentiate log p(D, θ) − log q(θ) through the draw, ∇_λ E_q[f] =
E_ε[∇_λ f(T_λ(ε))]. The real contrast is with the score-function (REINFORCE, Williams 1992; "black-box VI",
Ranganath, Gerrish & Blei 2014) estimator, E_q[f(θ) ∇_λ log q(θ)], which needs no gradient of the model but
has a far larger variance. This example measures the variance of both (and of sticking-the-landing, Roeder,
Wu & Duvenaud 2017) with ``vbayes.objectives`` on the conjugate linear regression, whose posterior is known.

    python examples/q10_reparameterisation_vs_score.py [--quick] [--out DIR]
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vbayes import FullRankGaussian, Target  # noqa: E402
from vbayes.examples import linear_regression, linear_regression_exact  # noqa: E402
from vbayes.objectives import elbo, elbo_score, elbo_stl  # noqa: E402
from vbayes.questions import example_args, new_figure, save_figure, say  # noqa: E402

ESTIMATORS = {
    "reparameterised (VAE / stochastic backprop)": elbo,
    "sticking the landing": elbo_stl,
    "score function (REINFORCE; LOO baseline if S > 1)": elbo_score,
}


@partial(jax.jit, static_argnums=(0, 4))
def gradients(objective, target: Target, q: FullRankGaussian, keys: jax.Array, num_samples: int) -> jax.Array:
    """One gradient of ``objective`` w.r.t. q's parameters per key, flattened: ``(R, n_params)``."""
    grad = jax.grad(lambda q_, k: objective(target, q_, k, num_samples))
    g = jax.vmap(grad, in_axes=(None, 0))(q, keys)
    return jnp.concatenate([g.loc, g.raw_tril.reshape(keys.shape[0], -1)], axis=1)


def variance_table(target: Target, q: FullRankGaussian, sizes: Sequence[int], repeats: int) -> dict:
    """Per estimator and number of draws S: total gradient variance tr Cov[ĝ] and the mean gradient ``(n,)``."""
    out = {}
    for name, objective in ESTIMATORS.items():
        for s in sizes:
            g = np.asarray(gradients(objective, target, q, jax.random.split(jax.random.PRNGKey(s), repeats), s))
            out[name, s] = {"variance": float(np.sum(np.var(g, axis=0, ddof=1))), "mean": g.mean(0), "draws": g}
    return out


def bias_z(a: dict, b: dict) -> float:
    """Largest |mean difference| of two estimators' gradients in standard errors of the difference."""
    se = np.sqrt(np.var(a["draws"], 0, ddof=1) / len(a["draws"]) + np.var(b["draws"], 0, ddof=1) / len(b["draws"]))
    return float(np.max(np.abs(a["mean"] - b["mean"]) / np.maximum(se, 1e-300)))


def main(argv: Sequence[str] | None = None) -> dict:
    args = example_args(__doc__.splitlines()[0], argv)
    repeats, sizes = (200, (1, 4)) if args.quick else (2000, (1, 8, 64))
    target = linear_regression()
    mean, cov, _ = linear_regression_exact()
    sd = np.sqrt(np.diag(cov))
    points = {
        "away from the optimum (mean + 1 sd, sds × 0.5, no correlation)": FullRankGaussian.from_covariance(
            jnp.asarray(mean + sd), jnp.diag(jnp.asarray((0.5 * sd) ** 2))
        ),
        "near the optimum (mean + 0.1 sd, covariance × 0.8)": FullRankGaussian.from_covariance(
            jnp.asarray(mean + 0.1 * sd), jnp.asarray(0.8 * cov)
        ),
    }
    exact = FullRankGaussian.from_covariance(jnp.asarray(mean), jnp.asarray(cov))
    print(
        f"linear regression, d = {target.dim}; q full-rank Gaussian ({target.dim + target.dim**2} parameters); "
        f"{repeats} gradients per cell"
    )
    results = {}
    for where, q in points.items():
        table = variance_table(target, q, sizes, repeats)
        results[where] = table
        print(f"\n{where}: total gradient variance tr Cov[ĝ]")
        print(f"{'estimator':>50}  " + "  ".join(f"{'S = ' + str(s):>11}" for s in sizes))
        for name in ESTIMATORS:
            print(f"{name:>50}  " + "  ".join(f"{table[name, s]['variance']:11.3e}" for s in sizes))
    away, near = results.values()
    rep, stl, sf = ESTIMATORS
    ratios = {
        (w, s): t[sf, s]["variance"] / t[rep, s]["variance"]
        for w, t in zip(("away", "near"), results.values(), strict=True)
        for s in sizes
    }
    at_exact = variance_table(target, exact, (1, sizes[-1]), repeats)
    print()
    for (w, s), r in ratios.items():
        say(f"score / reparameterised variance, {w}, S = {s}", r, ".3g")
    say(
        f"at q = exact posterior, S = {sizes[-1]}: reparameterised variance",
        at_exact[rep, sizes[-1]]["variance"],
        ".3g",
    )
    say(
        f"at q = exact posterior, S = {sizes[-1]}: sticking-the-landing variance",
        at_exact[stl, sizes[-1]]["variance"],
        ".3g",
    )
    say(
        f"at q = exact posterior, S = {sizes[-1]}: score-function (leave-one-out baseline) variance",
        at_exact[sf, sizes[-1]]["variance"],
        ".3g",
    )
    say(
        f"same mean gradient (score vs reparameterised, S = {sizes[-1]}), largest difference in se",
        bias_z(away[sf, sizes[-1]], away[rep, sizes[-1]]),
        ".2f",
    )

    fig = new_figure(10, 3.8)
    axes = fig.subplots(1, 2)
    for ax, (where, table) in zip(axes, results.items(), strict=True):
        for name, marker in zip(ESTIMATORS, "osv", strict=True):
            v = [max(table[name, s]["variance"], 1e-30) for s in sizes]
            ax.plot(sizes, v, marker=marker, label=name)
        ax.set(xscale="log", yscale="log", xlabel="draws per gradient S", ylabel="tr Cov[gradient]")
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
        ax.set_title(where.split(" (")[0] + f"\n({where.split(' (')[1]}", fontsize=9)
    axes[0].legend(fontsize=8)
    save_figure(fig, args.out, "q10_gradient_variance.png")
    return {
        "variance": {
            (w, n, s): t[n, s]["variance"]
            for w, t in zip(("away", "near"), results.values(), strict=True)
            for n in ESTIMATORS
            for s in sizes
        },
        "ratios": ratios,
        "at_exact": {(n, s): v["variance"] for (n, s), v in at_exact.items()},
        "bias_z": bias_z(away[sf, sizes[-1]], away[rep, sizes[-1]]),
        "sizes": tuple(sizes),
    }


if __name__ == "__main__":
    main()
