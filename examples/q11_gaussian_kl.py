"""Q11: which KL formula for Gaussian units is right?

Two formulas circulate for KL(N(μ, σ²) ‖ N(0, 1)) summed over units:

    with log σ² (Kingma & Welling 2014, appendix B):  ½ Σ (σ² + μ² − 1 − log σ²)
    with log σ:                                       ½ Σ (σ² + μ² − 1) − Σ log σ

Both are right, each for its own parameterisation; the bug is feeding one the other's variable. This example
evaluates both with ``vbayes.families.kl_to_standard_normal``, the general closed form ``vbayes.kl`` and a
Monte Carlo estimate E_q[log q − log p], and the mix-up, on random "encoder outputs".

    python examples/q11_gaussian_kl.py [--quick] [--out DIR]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.scipy.stats import norm  # noqa: E402

from vbayes import MeanFieldGaussian, kl  # noqa: E402
from vbayes.families import kl_to_standard_normal  # noqa: E402
from vbayes.questions import example_args, new_figure, save_figure, say  # noqa: E402


def monte_carlo_kl(loc: jax.Array, log_scale: jax.Array, key: jax.Array, n: int) -> tuple[float, float]:
    """KL(q‖N(0, I)) ≈ mean_s [log q(z_s) − log p(z_s)], z_s ~ q, and its standard error; loc, log_scale: (d,)."""
    q = MeanFieldGaussian(loc, log_scale)
    z = q.sample(key, n)
    r = q.log_prob(z) - jnp.sum(norm.logpdf(z), -1)
    return float(jnp.mean(r)), float(jnp.std(r) / math.sqrt(n))


def encoder_outputs(key: jax.Array, units: int) -> tuple[jax.Array, jax.Array]:
    """Made-up encoder outputs for one data point: means μ ~ N(0, 1) and log σ ~ U(−1.5, 0.5), shapes (units,)."""
    k1, k2 = jax.random.split(key)
    return jax.random.normal(k1, (units,)), jax.random.uniform(k2, (units,), minval=-1.5, maxval=0.5)


def kl_curves(sigmas: np.ndarray) -> dict[str, np.ndarray]:
    """Per-unit KL at μ = 0 against σ: the right value and the two mix-ups (log σ² read as log σ and back)."""
    log_s = jnp.log(jnp.asarray(sigmas))[:, None]
    zero = jnp.zeros_like(log_s)
    return {
        "right (either formula, its own variable)": np.asarray(kl_to_standard_normal(zero, log_scale=log_s)),
        "log σ² fed to the log σ formula": np.asarray(kl_to_standard_normal(zero, log_scale=2 * log_s)),
        "log σ fed to the log σ² formula": np.asarray(kl_to_standard_normal(zero, log_var=log_s)),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    args = example_args(__doc__.splitlines()[0], argv)
    units, n = (8, 20_000) if args.quick else (32, 1_000_000)
    loc, log_scale = encoder_outputs(jax.random.PRNGKey(0), units)
    log_var = 2 * log_scale

    with_log_var = float(kl_to_standard_normal(loc, log_var=log_var))
    with_log_scale = float(kl_to_standard_normal(loc, log_scale=log_scale))
    general = float(kl(MeanFieldGaussian(loc, log_scale), MeanFieldGaussian(jnp.zeros(units), jnp.zeros(units))))
    mc, se = monte_carlo_kl(loc, log_scale, jax.random.PRNGKey(1), n)
    mixed_up = float(kl_to_standard_normal(loc, log_scale=log_var))  # a log-variance head read as log σ
    print(f"{units} Gaussian units, Monte Carlo with {n} draws")
    say("KL with log σ² (½Σ(σ²+μ²−1−log σ²))", with_log_var, ".6f")
    say("KL with log σ (½Σ(σ²+μ²−1)−Σlog σ)", with_log_scale, ".6f")
    say("KL by vbayes.kl (general closed form)", general, ".6f")
    say("KL by Monte Carlo", f"{mc:.4f} ± {se:.4f}")
    say("Monte Carlo error in standard errors", abs(mc - with_log_var) / se, ".2f")
    say("KL with log σ² fed to the log σ formula (the bug)", mixed_up, ".4f")
    say("the bug's error in standard errors", abs(mc - mixed_up) / se, ".0f")

    sigmas = np.geomspace(0.05, 4.0, 200)
    curves = kl_curves(sigmas)
    check_s = np.array([0.1, 0.3, 1.0, 2.0, 3.0])
    check = [monte_carlo_kl(jnp.zeros(1), jnp.log(jnp.array([s])), jax.random.PRNGKey(2), n // 10) for s in check_s]
    fig = new_figure(6.5, 3.8)
    ax = fig.add_subplot()
    for (label, values), style in zip(curves.items(), ("-", "--", ":"), strict=True):
        ax.plot(sigmas, values, style, lw=2, label=label)
    ax.errorbar(check_s, [m for m, _ in check], yerr=[3 * s for _, s in check], fmt="ko", ms=4, label="Monte Carlo")
    ax.set(xscale="log", xlabel="σ (μ = 0)", ylabel="KL(N(0, σ²) ‖ N(0, 1)) per unit", ylim=(-0.5, 3.5))
    ax.axhline(0, color="0.6", lw=0.8)
    ax.legend(fontsize=8)
    save_figure(fig, args.out, "q11_gaussian_kl.png")
    return {
        "with_log_var": with_log_var,
        "with_log_scale": with_log_scale,
        "general": general,
        "monte_carlo": mc,
        "monte_carlo_se": se,
        "mixed_up": mixed_up,
        "curve_mc": [(float(s), m, e) for s, (m, e) in zip(check_s, check, strict=True)],
        "curve_right": [
            float(np.interp(s, sigmas, curves["right (either formula, its own variable)"])) for s in check_s
        ],
    }


if __name__ == "__main__":
    main()
