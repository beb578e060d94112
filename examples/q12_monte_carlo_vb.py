"""Q12: can variational Bayes be combined with Monte Carlo?

Yes, and for non-conjugate models it usually must be. VB's updates need expectations under q, such as
E_q[log p(D, θ)], that have no closed form once the model is not conjugate-exponential. Estimate them from
draws of q: Monte Carlo VB. With score-function gradients (Paisley, Blei & Jordan 2012; Ranganath, Gerrish
& Blei 2014, "black-box VI") this needs only log p(D, θ) itself; with reparameterised gradients (Kingma &
Welling 2014; Titsias & Lázaro-Gredilla 2014) also its gradient.

This example takes a non-conjugate model small enough to answer exactly (Bayesian logistic regression with
an intercept and a slope, 2-D): the posterior and log p(D) by quadrature on a fine grid, and the *optimal*
full-rank Gaussian q* by maximising an ELBO computed by Gauss–Hermite quadrature. Then it checks the Monte
Carlo versions against them: the error of a Monte Carlo estimate of E_q[log p(D, θ)] against the number of
draws S, and ``vbayes.advi`` with score-function (``objective="score"``) and reparameterised
(``objective="stl"``, the default) gradients, started from q = N(0, 0.1² I), against q*.

    python examples/q12_monte_carlo_vb.py [--quick] [--out DIR]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.flatten_util

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import scipy.optimize  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

import vbayes  # noqa: E402
from vbayes import FullRankGaussian, Target  # noqa: E402
from vbayes.questions import example_args, new_figure, save_figure, say  # noqa: E402


def logistic_model(x, y=None) -> None:
    """a, b ~ N(0, 2²); y_n ~ Bernoulli(logit⁻¹(a + b x_n)): non-conjugate, 2-D."""
    a = numpyro.sample("a", dist.Normal(0.0, 2.0))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=a + b * x), obs=y)


def data(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x ~ N(0, 1), y ~ Bernoulli(logit⁻¹(−0.5 + 1.5 x)): small, so the posterior is visibly skewed."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(-0.5 + 1.5 * x)))).astype(np.float64)
    return x, y


def grid_posterior(target: Target, center: np.ndarray, sd: np.ndarray, points: int) -> dict:
    """Exact answer by a tensor grid of ``points``² over center ± 9 sd: log Z, posterior mean and sds."""
    axes = [c + s * np.linspace(-9, 9, points) for c, s in zip(center, sd, strict=True)]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    logp = np.asarray(jax.vmap(target.log_density)(jnp.asarray(g)))
    cell = np.prod([a[1] - a[0] for a in axes])
    log_z = float(logsumexp(logp) + math.log(cell))
    w = np.exp(logp - logsumexp(logp))
    mean = w @ g
    return {
        "log_z": log_z,
        "mean": mean,
        "sd": np.sqrt(w @ (g - mean) ** 2),
        "grid": axes,
        "density": np.exp(logp - logp.max()).reshape(points, points),
    }


def gauss_hermite_elbo(target: Target, nodes: int):
    """ELBO(q) = E_q[log p̃] + H[q] by a ``nodes``² Gauss–Hermite rule: deterministic, exact for smooth p̃."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)  # ∫ f(x) e^{−x²/2} dx
    eps = jnp.asarray(np.stack(np.meshgrid(x, x, indexing="ij"), -1).reshape(-1, 2))
    weights = jnp.asarray(np.outer(w, w).ravel() / (2 * math.pi))

    def elbo(q: FullRankGaussian) -> jax.Array:
        z = q.loc + eps @ q.scale_tril.T
        return jnp.sum(weights * jax.vmap(target.log_density)(z)) + q.entropy()

    return elbo


def optimal_gaussian(target: Target, start: FullRankGaussian, nodes: int = 40) -> tuple[FullRankGaussian, float]:
    """q* = argmax ELBO over full-rank Gaussians, the ELBO by Gauss–Hermite quadrature, BFGS (scipy)."""
    elbo = gauss_hermite_elbo(target, nodes)
    flat0, unravel = jax.flatten_util.ravel_pytree(start)
    value_and_grad = jax.jit(jax.value_and_grad(lambda v: -elbo(unravel(v))))
    res = scipy.optimize.minimize(
        lambda v: [np.asarray(a) for a in value_and_grad(v)],
        np.asarray(flat0),
        jac=True,
        method="BFGS",
        options={"gtol": 1e-10, "maxiter": 1000},
    )
    q = unravel(jnp.asarray(res.x))
    return q, float(elbo(q))


def expectation_errors(target: Target, q: FullRankGaussian, exact: float, sizes: Sequence[int], repeats: int):
    """RMS error of the Monte Carlo estimate mean_s log p̃(θ_s), θ_s ~ q, of E_q[log p̃] for each S."""
    out = []
    for s in sizes:
        keys = jax.random.split(jax.random.PRNGKey(s), repeats)
        est = jax.vmap(lambda k, s=s: jnp.mean(jax.vmap(target.log_density)(q.sample(k, s))))(keys)
        out.append(float(np.sqrt(np.mean((np.asarray(est) - exact) ** 2))))
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    args = example_args(__doc__.splitlines()[0], argv)
    points, repeats = (201, 100) if args.quick else (801, 1000)
    x, y = data()
    target = vbayes.from_numpyro(logistic_model, x, y=y)
    lap = vbayes.laplace(target)
    exact = grid_posterior(target, np.asarray(lap.q.mean), np.asarray(lap.q.marginal_sd()), points)
    q_star, elbo_star = optimal_gaussian(target, lap.q)
    print(f"logistic regression, N = {x.size}, 2 parameters (a, b); grid {points}² for the exact posterior")
    say("exact log p(D) (grid)", exact["log_z"], ".5f")
    say("exact posterior mean (a, b)", np.array2string(exact["mean"], precision=4))
    say("exact posterior sd (a, b)", np.array2string(exact["sd"], precision=4))
    say("optimal Gaussian q*: ELBO (Gauss–Hermite)", elbo_star, ".5f")
    say("KL(q*‖p) = log p(D) − ELBO(q*)", exact["log_z"] - elbo_star, ".5f")

    e_star = float(gauss_hermite_elbo(target, 40)(q_star) - q_star.entropy())  # E_q*[log p̃], exactly
    sizes = [1, 4, 16, 64, 256, 1024]
    errors = expectation_errors(target, q_star, e_star, sizes, repeats)
    slope = np.polyfit(np.log(sizes), np.log(errors), 1)[0]
    print(
        "Monte Carlo estimate of E_q*[log p(D, θ)]: RMS error by S: "
        + ", ".join(f"S={s}: {e:.3g}" for s, e in zip(sizes, errors, strict=True))
    )
    say("log-log slope of the RMS error against S", slope, ".3f")

    fits = {}
    for objective in ("score", "stl"):
        fit = vbayes.advi(target, "fullrank", objective=objective, init="zero", key=1, progress=False)
        q = fit.q
        fits[objective] = {
            "q": q,
            "kl_to_qstar": float(vbayes.kl(q, q_star)),
            "elbo": float(gauss_hermite_elbo(target, 40)(q)),
            "grad_evals": fit.info.grad_evals,
            "outcome": fit.info.outcome,
            "mean_error": np.max(np.abs(np.asarray(q.mean) - np.asarray(q_star.mean)) / exact["sd"]),
            "sd_ratio": np.asarray(q.marginal_sd()) / np.asarray(q_star.marginal_sd()),
        }
        label = {"score": "score-function VI", "stl": "reparameterised VI"}[objective]
        f = fits[objective]
        say(f"{label}: outcome", f"{f['outcome']} after {f['grad_evals']} log-density evaluations")
        say(f"{label}: KL(q‖q*)", f["kl_to_qstar"], ".2e")
        say(f"{label}: ELBO(q*) − ELBO(q)", elbo_star - f["elbo"], ".2e")
        say(f"{label}: largest mean error in posterior sds", f["mean_error"], ".3f")
        say(f"{label}: sd(q)/sd(q*)", np.array2string(f["sd_ratio"], precision=3))

    fig = new_figure(10, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.contour(*exact["grid"], exact["density"].T, levels=np.exp(-np.array([4.5, 2, 0.5])), colors="k", linewidths=1)
    t = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(t), np.sin(t)], 1) * 2.0
    for q, style, label in (
        (q_star, "-", "optimal Gaussian q*"),
        (fits["score"]["q"], "--", "score-function VI"),
        (fits["stl"]["q"], ":", "reparameterised VI"),
    ):
        e = np.asarray(q.mean) + circle @ np.asarray(q.scale_tril).T
        ax1.plot(e[:, 0], e[:, 1], style, lw=2, label=label)
    ax1.plot([], [], "k-", lw=1, label="exact posterior (grid)")
    ax1.set(xlabel="a (intercept)", ylabel="b (slope)", title="2-sd ellipses of q and the exact posterior")
    ax1.legend(fontsize=7)
    ax2.loglog(sizes, errors, "o-", label="RMS error of the Monte Carlo E_q[log p(D, θ)]")
    ax2.loglog(sizes, errors[0] / np.sqrt(sizes), "k--", lw=1, label="∝ 1/√S")
    ax2.set(xlabel="draws S", ylabel="nats")
    ax2.legend(fontsize=8)
    save_figure(fig, args.out, "q12_monte_carlo_vb.png")
    return {
        "log_z": exact["log_z"],
        "elbo_star": elbo_star,
        "errors": errors,
        "slope": slope,
        "fits": fits,
        "exact": exact,
    }


if __name__ == "__main__":
    main()
