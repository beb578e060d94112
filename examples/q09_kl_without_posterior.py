"""Q9: doesn't KL(q‖p) need the true posterior p?

No. The ELBO, E_q[log p(D|θ)p(θ)] − E_q[log q(θ)], needs only the *unnormalised* log joint, and

    log p(D) − ELBO(q) = KL(q(θ) ‖ p(θ|D))        for every q,

so maximising the ELBO minimises the KL without ever computing p(D). This example checks the identity
numerically on the built-in conjugate linear regression (diabetes data), whose posterior and evidence are
known in closed form: for a range of Gaussians q (ADVI's, Laplace's, and deliberately wrong ones) it
estimates the ELBO from draws of q using the target's log density alone, and compares log p(D) − ELBO with
the closed-form KL(q‖p) (``vbayes.kl``).

    python examples/q09_kl_without_posterior.py [--quick] [--out DIR]
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import vbayes  # noqa: E402
from vbayes.examples import linear_regression, linear_regression_exact  # noqa: E402
from vbayes.families import FullRankGaussian, Gaussian  # noqa: E402
from vbayes.psis import importance_check  # noqa: E402
from vbayes.questions import example_args, new_figure, save_figure, say  # noqa: E402


def candidates(mean: np.ndarray, cov: np.ndarray, fits: dict[str, Gaussian]) -> dict[str, Gaussian]:
    """Gaussians q to test: the fits, the exact posterior, and wrong ones (scaled covariance, shifted mean)."""
    sd = np.sqrt(np.diag(cov))
    qs: dict[str, Gaussian] = dict(fits)
    qs["exact posterior"] = FullRankGaussian.from_covariance(jnp.asarray(mean), jnp.asarray(cov))
    for c in (0.25, 0.5, 2.0, 4.0):
        qs[f"covariance × {c:g}"] = FullRankGaussian.from_covariance(jnp.asarray(mean), jnp.asarray(c * cov))
    for shift in (0.5, 1.0, 2.0):
        qs[f"mean + {shift:g} sd"] = FullRankGaussian.from_covariance(jnp.asarray(mean + shift * sd), jnp.asarray(cov))
    qs["prior N(0, I)"] = FullRankGaussian.from_covariance(jnp.zeros_like(mean), jnp.eye(mean.size))
    return qs


def gap_and_kl(target: vbayes.Target, q: Gaussian, exact: Gaussian, log_z: float, draws: int, key: int) -> dict:
    """ELBO of q from ``draws`` draws and log p̃ only (with its standard error), log Z − ELBO, and KL(q‖p)."""
    check = importance_check(target, q, draws, key)  # mean and se of log p̃(θ) − log q(θ), θ ~ q
    return {
        "elbo": check.elbo,
        "se": check.elbo_se,
        "gap": log_z - check.elbo,
        "kl": float(vbayes.kl(q, exact)),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    args = example_args(__doc__.splitlines()[0], argv)
    draws = 4_000 if args.quick else 100_000
    target = linear_regression()
    mean, cov, log_z = linear_regression_exact()
    exact = FullRankGaussian.from_covariance(jnp.asarray(mean), jnp.asarray(cov))
    fits = {
        "ADVI mean-field": vbayes.advi(target, "meanfield", progress=False).q,
        "ADVI full-rank": vbayes.advi(target, "fullrank", progress=False).q,
        "Laplace": vbayes.laplace(target).q,
    }
    if args.quick:  # fewer, cheaper q's
        fits.pop("ADVI mean-field")
    print(f"linear regression (diabetes), d = {target.dim}; exact log p(D) = {log_z:.4f}; {draws} draws of each q")
    print(f"{'q':>18}  {'ELBO':>11}  {'log p(D) − ELBO':>16}  {'KL(q‖p)':>9}  {'difference / se':>15}")
    rows = {}
    for i, (name, q) in enumerate(candidates(mean, cov, fits).items()):
        r = gap_and_kl(target, q, exact, log_z, draws, i)
        z = abs(r["gap"] - r["kl"]) / max(r["se"], 1e-9)  # se is ~0 when q = p: the ratio p̃/q is constant
        print(f"{name:>18}  {r['elbo']:11.4f}  {r['gap']:16.4f}  {r['kl']:9.4f}  {z:15.2f}")
        rows[name] = r | {"z": z}
    worst = max(r["z"] for r in rows.values())
    say("largest |gap − KL| in standard errors", worst, ".2f")
    say("ELBO ≤ log p(D) for every q", str(all(r["elbo"] <= log_z + 4 * r["se"] + 1e-9 for r in rows.values())))
    shift = 1000.0  # drop (or add) a constant in log p̃: the ELBO moves by it, the KL and the optimum do not
    shifted = vbayes.from_logdensity(
        lambda p, d: target.log_density(p["z"]) - shift, {"z": np.zeros(target.dim)}, data={}
    )
    base = importance_check(target, fits["ADVI full-rank"], draws, 0).elbo  # same draws for both
    moved = importance_check(shifted, fits["ADVI full-rank"], draws, 0).elbo
    say("ELBO of ADVI full-rank with log p̃ − 1000", moved, ".4f")
    say("its change (same draws)", moved - base, ".6f")

    fig = new_figure(10, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    names = list(rows)
    ax1.barh(names, [rows[n]["elbo"] for n in names], color="tab:blue")
    ax1.axvline(log_z, color="k", lw=1.5, label=f"log p(D) = {log_z:.1f} (exact)")
    lo = min(r["elbo"] for r in rows.values())
    ax1.set(xlim=(max(lo, log_z - 60), log_z + 5), xlabel="ELBO (from log p̃ and draws of q only)")
    ax1.invert_yaxis()
    ax1.legend(fontsize=8, loc="lower left")
    kls = np.array([rows[n]["kl"] for n in names])
    gaps = np.array([rows[n]["gap"] for n in names])
    ses = np.array([rows[n]["se"] for n in names])
    ax2.errorbar(kls + 1e-3, gaps + 1e-3, yerr=3 * ses, fmt="o", ms=4, color="tab:red", label="each q (± 3 se)")
    top = max(kls.max(), gaps.max()) * 2
    ax2.plot([1e-3, top], [1e-3, top], "k--", lw=1, label="log p(D) − ELBO = KL(q‖p)")
    ax2.set(xscale="log", yscale="log", xlabel="KL(q‖p), closed form (+0.001)", ylabel="log p(D) − ELBO (+0.001)")
    ax2.legend(fontsize=8)
    save_figure(fig, args.out, "q09_kl_without_posterior.png")
    return {"log_z": log_z, "rows": rows, "worst_z": worst, "shifted_change": moved - base}


if __name__ == "__main__":
    main()
