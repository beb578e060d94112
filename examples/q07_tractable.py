"""Q7: what does "tractable" mean?

A quantity is tractable when it can be computed at a cost that grows polynomially with the size of the
problem; intractable when every known exact method grows exponentially (or the integral has no closed form
at all). The model of Blei, Kucukelbir & McAuliffe (2017, §2.1) shows it plainly: a mixture of K
unit-variance Gaussians, μ_k ~ N(0, σ²), z_n ~ Uniform{1..K}, x_n | z_n, μ ~ N(μ_{z_n}, 1). Given the
assignments z, everything is Gaussian and closed-form; but the evidence

    p(x) = Σ_z p(z) ∫ ∏_k p(μ_k) ∏_n p(x_n | μ_{z_n}) dμ

sums over all K^N assignments. This example computes it exactly that way (K = 2) and times it against N,
checks it by quadrature over μ, and compares what VB costs: the ELBO of ``vbayes.advi`` and the Laplace
evidence of ``vbayes.laplace`` on the same model with z summed out, each O(N K) per evaluation.

    python examples/q07_tractable.py [--quick] [--out DIR]
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.scipy.special import logsumexp as jlogsumexp  # noqa: E402
from jax.scipy.stats import norm  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

import vbayes  # noqa: E402
from vbayes import Target  # noqa: E402
from vbayes.questions import example_args, new_figure, save_figure, say  # noqa: E402

K = 2
PRIOR_VAR = 10.0  # σ²


def mixture_data(n: int, seed: int = 0) -> np.ndarray:
    """``n`` points from the model with μ = (−2, 2)."""
    rng = np.random.default_rng(seed)
    return np.array([-2.0, 2.0])[rng.integers(0, K, n)] + rng.standard_normal(n)


def log_evidence_by_enumeration(x: np.ndarray) -> float:
    """log Σ_z p(z) p(x | z) over all 2^N assignments, with μ integrated out per component in closed form:
    ∫ ∏_{n∈k} N(x_n | μ, 1) N(μ | 0, σ²) dμ = (2π)^{−n_k/2} (1 + n_k σ²)^{−½} exp(−½[Σx² − σ²(Σx)²/(1 + n_k σ²)])."""
    n = x.size
    z = (np.arange(2**n)[:, None] >> np.arange(n)) & 1  # every assignment, (2^N, N)
    terms = np.zeros(2**n)
    for k in range(K):
        member = z == k
        nk, s1, s2 = member.sum(1), member @ x, member @ x**2
        terms += (
            -0.5 * nk * math.log(2 * math.pi)
            - 0.5 * np.log1p(nk * PRIOR_VAR)
            - 0.5 * (s2 - PRIOR_VAR * s1**2 / (1 + nk * PRIOR_VAR))
        )
    return float(logsumexp(terms) - n * math.log(K))


def _log_joint(params: dict, data: dict) -> jax.Array:
    """log p(x, μ) = Σ_n log Σ_k (1/K) N(x_n | μ_k, 1) + Σ_k log N(μ_k | 0, σ²): z summed out, O(N K)."""
    mu, x = params["mu"], data["x"]
    per_point = jlogsumexp(norm.logpdf(x[:, None], mu[None, :], 1.0), axis=1) - math.log(K)
    return jnp.sum(per_point) + jnp.sum(norm.logpdf(mu, 0.0, math.sqrt(PRIOR_VAR)))


def mixture_target(x: np.ndarray) -> Target:
    return vbayes.from_logdensity(_log_joint, {"mu": np.array([-1.0, 1.0])}, data={"x": x})


def log_evidence_by_grid(target: Target, points: int = 801, half_width: float = 8.0) -> float:
    """log ∫ p(x, μ) dμ on a ``points``² grid over [−w, w]²: a 2-D integral is cheap (K = 2)."""
    axis = np.linspace(-half_width, half_width, points)
    grid = jnp.asarray(np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2))
    logp = np.asarray(jax.vmap(target.log_density)(grid))
    return float(logsumexp(logp) + 2 * math.log(axis[1] - axis[0]))


def time_enumeration(sizes: Sequence[int], x: np.ndarray) -> list[float]:
    """Seconds for the exact sum at each N (best of two runs)."""
    out = []
    for n in sizes:
        best = math.inf
        for _ in range(2):
            t0 = time.perf_counter()
            log_evidence_by_enumeration(x[:n])
            best = min(best, time.perf_counter() - t0)
        out.append(best)
    return out


def time_gradient(sizes: Sequence[int], repeats: int = 100) -> list[float]:
    """Seconds per gradient of log p(x, μ) (what ADVI and Laplace evaluate) at each N, after compiling."""
    out = []
    for n in sizes:
        target = mixture_target(mixture_data(n, seed=1))
        grad = jax.jit(jax.grad(target.log_density))
        z = jnp.array([-1.0, 1.0])
        grad(z).block_until_ready()
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(repeats):
                z = z + 1e-9 * grad(z)
            z.block_until_ready()
            best = min(best, (time.perf_counter() - t0) / repeats)
        out.append(best)
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    args = example_args(__doc__.splitlines()[0], argv)
    n_small, enum_sizes = (12, list(range(4, 15, 2))) if args.quick else (20, list(range(4, 23, 2)))
    grad_sizes = [10, 1_000] if args.quick else [10, 100, 1_000, 10_000, 100_000, 1_000_000]
    x = mixture_data(max(enum_sizes + [n_small]))
    xs = x[:n_small]
    target = mixture_target(xs)
    exact = log_evidence_by_enumeration(xs)
    grid = log_evidence_by_grid(target, 401 if args.quick else 801)
    fit = vbayes.advi(target, "fullrank", progress=False)
    lap = vbayes.laplace(target, init=jnp.array([-1.0, 1.0]))  # not μ1 = μ2: a saddle by symmetry
    print(f"mixture of K = {K} unit-variance Gaussians, N = {n_small}: {K**n_small} assignments")
    say("log p(x) by enumerating every assignment", exact, ".6f")
    say("log p(x) by a grid over μ (z summed out)", grid, ".6f")
    say("ELBO, full-rank ADVI (one of the K! = 2 symmetric modes)", fit.elbo, ".4f")
    say("ELBO + log K! (both modes)", fit.elbo + math.log(math.factorial(K)), ".4f")
    say("Laplace log evidence (one mode) + log K!", lap.info.extra["log_evidence"] + math.log(math.factorial(K)), ".4f")
    say("ADVI log-density evaluations", fit.info.grad_evals)

    enum_time = time_enumeration(enum_sizes, x)
    grad_time = time_gradient(grad_sizes)
    rate = np.polyfit(enum_sizes[-4:], np.log2(enum_time[-4:]), 1)[0]
    per_term = enum_time[-1] / 2 ** enum_sizes[-1]
    print("exact sum, seconds by N: " + ", ".join(f"{n}: {t:.2g}" for n, t in zip(enum_sizes, enum_time, strict=True)))
    print(
        "one gradient of log p(x, μ), seconds by N: "
        + ", ".join(f"{n}: {t:.2g}" for n, t in zip(grad_sizes, grad_time, strict=True))
    )
    say("exact sum: time doubles every", 1 / rate, ".2f")
    say("exact sum at N = 100 would take (years)", per_term * 2.0**100 / 3.15e7, ".1e")
    say("one gradient at N = 1,000,000 takes (s)", grad_time[-1], ".3g")

    fig = new_figure(10, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.semilogy(enum_sizes, enum_time, "o-", label=f"exact sum over {K}^N assignments")
    ax1.semilogy(enum_sizes, per_term * 2.0 ** np.array(enum_sizes), "k:", lw=1, label="∝ 2^N")
    ax1.set(xlabel="N", ylabel="seconds", title="exact evidence: exponential in N")
    ax1.legend(fontsize=8)
    ax2.loglog(grad_sizes, grad_time, "s-", color="tab:green", label="one gradient of log p(x, μ) (ADVI, Laplace)")
    ax2.loglog(grad_sizes, grad_time[-1] * np.array(grad_sizes) / grad_sizes[-1], "k:", lw=1, label="∝ N")
    ax2.set(xlabel="N", ylabel="seconds", title="VB's cost per step: linear in N")
    ax2.legend(fontsize=8)
    save_figure(fig, args.out, "q07_tractable.png")
    return {
        "exact": exact,
        "grid": grid,
        "elbo": fit.elbo,
        "laplace": lap.info.extra["log_evidence"],
        "enum_sizes": enum_sizes,
        "enum_time": enum_time,
        "grad_sizes": grad_sizes,
        "grad_time": grad_time,
        "doubling": 1 / rate,
    }


if __name__ == "__main__":
    main()
