"""Q13: how do I get uncertainties for thousands of parameters without sampling?

The plasma tomography example (``vbayes.examples.plasma_tomography``): three fields on the vertices of a
triangular mesh (d = 2,055 at full size), seen by four cameras of 500 × 500 pixels (N = 10⁶). Laplace's method
gives q = N(ẑ, Λ⁻¹) with Λ the curvature at the mode; this example computes it four ways and compares the
marginal sds with the exact (dense) ones:

* ``dense``: Λ from d Hessian-vector products, one d × d eigendecomposition;
* ``lowrank``: prior precision + the data-informed eigenpairs of the prior-preconditioned Hessian (Krylov);
* ``ggn``: the same with the Gauss-Newton Hessian JᵀΣ⁻¹J (positive semi-definite);
* ``lowrank`` at a fixed rank of 25 (truncation) and ``diag`` (diagonal only), to show what they miss.

The observations are linear in the emission, y = G E(θ) + ε, so the target is built with ``operator=G``: the
10⁶ pixels enter once, as GᵀΣ⁻¹y and the V × V matrix GᵀΣ⁻¹G, and every later evaluation costs O(V²).

    python examples/q13_uncertainty_without_sampling.py [--quick] [--out DIR]
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from vbayes import laplace  # noqa: E402
from vbayes.examples.tomography import FIELDS, plasma_tomography_problem  # noqa: E402
from vbayes.questions import example_args, new_figure, save_figure, say  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> dict:
    args = example_args(__doc__.splitlines()[0], argv)
    size = "small" if args.quick else "full"
    problem, t_gen = timed(lambda: plasma_tomography_problem(size, seed=0))
    target = problem.target
    print(f"plasma tomography ({size}): d = {target.dim}, N = {4 * problem.pixels**2:,} pixels")
    say("generated and compressed in (s)", t_gen, ".1f")

    dense, t_dense = timed(lambda: laplace(target, "dense"))
    mode = dense.state.z  # every other method starts from the same mode
    ref = np.asarray(dense.q.marginal_sd())
    say("dense: mode search + curvature (s)", t_dense, ".1f")
    say("dense: Hessian-vector products", dense.info.extra["products"], "d")
    say("dense: log evidence", dense.info.extra["log_evidence"], ".1f")

    runs = {
        "lowrank (adaptive)": dict(curvature="lowrank"),
        "ggn (adaptive)": dict(curvature="ggn"),
        "lowrank rank 25": dict(curvature="lowrank", rank=25),
        "diag": dict(curvature="diag"),
    }
    results = {"dense": {"seconds": t_dense, "error_mean": 0.0, "error_max": 0.0, "rank": target.dim}}
    sds = {}
    for name, kw in runs.items():
        fit, seconds = timed(lambda kw=kw: laplace(target, init=mode, **kw))
        sds[name] = np.asarray(fit.q.marginal_sd())
        err = np.abs(sds[name] / ref - 1)
        per_field = {f: float(e.mean()) for f, e in zip(FIELDS, np.split(err, 3), strict=True)}
        results[name] = {
            "seconds": seconds,
            "error_mean": float(err.mean()),
            "error_max": float(err.max()),
            "per_field": per_field,
            "rank": fit.info.extra.get("rank"),
            "products": fit.info.extra["products"],
            "log_evidence": fit.info.extra["log_evidence"],
        }
        say(f"{name}: seconds", seconds, ".1f")
        say(f"{name}: rank", str(fit.info.extra.get("rank")))
        say(f"{name}: mean / max sd error vs dense (%)", f"{100 * err.mean():.2f} / {100 * err.max():.1f}")
        say(f"{name}: log evidence", fit.info.extra["log_evidence"], ".1f")

    # how honest are the dense sds: the true fields within ±2 posterior sds
    truth = problem.true_z
    z_scores = np.abs(np.asarray(dense.q.mean) - truth) / ref
    coverage = float(np.mean(z_scores < 2))
    say("dense: fraction of true values within 2 posterior sds", coverage, ".3f")
    prior_sd = np.sqrt(np.asarray(target_prior_variance(target)))
    shrink = {f: float(np.median(s)) for f, s in zip(FIELDS, np.split(ref / prior_sd, 3), strict=True)}
    for f, v in shrink.items():
        say(f"median posterior sd / prior sd, {f}", v, ".3f")

    points, triangles = problem.mesh.points, problem.mesh.triangles
    ratio = sds["lowrank (adaptive)"] / ref
    fig = new_figure(11.0, 3.6)
    for i, field in enumerate(FIELDS):
        ax = fig.add_subplot(1, 4, i + 1)
        tpc = ax.tripcolor(points[:, 0], points[:, 1], triangles, np.split(ref, 3)[i], shading="flat")
        fig.colorbar(tpc, ax=ax, shrink=0.8)
        ax.set(title=f"posterior sd: {field}", aspect="equal", xticks=[], yticks=[])
    ax = fig.add_subplot(1, 4, 4)
    tpc = ax.tripcolor(points[:, 0], points[:, 1], triangles, np.split(ratio, 3)[0], shading="flat", cmap="RdBu_r")
    fig.colorbar(tpc, ax=ax, shrink=0.8)
    ax.set(title="lowrank / dense sd: log_ne", aspect="equal", xticks=[], yticks=[])
    save_figure(fig, args.out, "q13_uncertainty_without_sampling.png")
    return {"results": results, "coverage": coverage, "shrink": shrink, "d": target.dim}


def target_prior_variance(target) -> np.ndarray:
    """diag(P⁻¹) of the least-squares target's prior precision P (sparse Cholesky, no d × d inverse)."""
    from vbayes.targets import least_squares_parts

    return np.asarray(least_squares_parts(target).prior_precision.cholesky().inverse_diag())


if __name__ == "__main__":
    main()
