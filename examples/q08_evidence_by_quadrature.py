"""Q8: why is numerical integration of the marginal likelihood expensive?

p(D) = ∫ p(D|θ) p(θ) dθ is a d-dimensional integral. A product (tensor) quadrature rule with G nodes per
axis needs G^d evaluations of the log joint: exponential in d, the curse of dimensionality (Bellman 1961).
Even the best-placed grid (adaptive Gauss–Hermite, centred and scaled by the Laplace approximation; Liu &
Pierce 1994) only lowers G, not the exponent. Laplace's approximation, importance sampling and the ELBO cost a
mode search, a Hessian or a few thousand draws instead, whatever d.

The model has an exact evidence and a non-Gaussian posterior: linear regression with unknown noise variance
and the conjugate normal-inverse-gamma prior, fitted in z = (β, log σ²) with N = 20 points, for d = 2 … 8.
For each d the example finds how many grid evaluations reach 0.01 nats, and compares ``vbayes.laplace``'s
log evidence, importance sampling from the Laplace q (``vbayes.psis.importance_check``), and full-rank
ADVI's ELBO (``vbayes.advi``).

    python examples/q08_evidence_by_quadrature.py [--quick] [--out DIR]
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.scipy.stats import norm  # noqa: E402
from scipy.special import gammaln, logsumexp  # noqa: E402

import vbayes  # noqa: E402
from vbayes import Target  # noqa: E402
from vbayes.psis import importance_check  # noqa: E402
from vbayes.questions import example_args, new_figure, save_figure, say  # noqa: E402

N = 20
A0, B0, G0 = 2.0, 2.0, 1.0  # σ² ~ InvGamma(a0, b0), β | σ² ~ N(0, σ² g0 I)
TOL = 0.01  # nats


def regression_data(p: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X (N, p) iid N(0, 1), y = X β + ε with β ~ N(0, 1), ε ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, p))
    return X, X @ rng.standard_normal(p) + rng.standard_normal(N)


def _log_joint(params: dict, data: dict) -> jax.Array:
    """log N(y | Xβ, σ²I) + log N(β | 0, σ² g0 I) + log InvGamma(σ² | a0, b0); β: (p,), σ²: ()."""
    beta, s2 = params["beta"], params["sigma2"]
    sd = jnp.sqrt(s2)
    log_ig = A0 * jnp.log(B0) - gammaln(A0) - (A0 + 1) * jnp.log(s2) - B0 / s2
    return jnp.sum(norm.logpdf(data["y"], data["X"] @ beta, sd)) + jnp.sum(norm.logpdf(beta, 0, sd * G0**0.5)) + log_ig


def nig_target(X: np.ndarray, y: np.ndarray) -> Target:
    """The regression as a Target on z = (β, log σ²) (the log-Jacobian is included, so ∫ p̃ dz = p(D))."""
    params = {"beta": np.zeros(X.shape[1]), "sigma2": 1.0}
    return vbayes.from_logdensity(_log_joint, params, constraints={"sigma2": "positive"}, data={"X": X, "y": y})


def exact_log_evidence(X: np.ndarray, y: np.ndarray) -> float:
    """log p(y) = −N/2 log 2π + ½ log(|V_N|/|V_0|) + a0 log b0 − a_N log b_N + log Γ(a_N) − log Γ(a0)."""
    n, p = X.shape
    precision = np.eye(p) / G0 + X.T @ X
    m = np.linalg.solve(precision, X.T @ y)
    a_n = A0 + n / 2
    b_n = B0 + 0.5 * (y @ y - m @ precision @ m)
    logdet_vn_over_v0 = -np.linalg.slogdet(precision)[1] - p * math.log(G0)
    return float(
        -n / 2 * math.log(2 * math.pi)
        + 0.5 * logdet_vn_over_v0
        + A0 * math.log(B0)
        - a_n * math.log(b_n)
        + gammaln(a_n)
        - gammaln(A0)
    )


def gauss_hermite_log_evidence(
    target: Target, center: np.ndarray, chol: np.ndarray, nodes: int, chunk: int = 1 << 16
) -> float:
    """log ∫ p̃ by the tensor Gauss–Hermite rule with ``nodes``^d points on z = center + L u (adaptive GH):
    ∫ p̃(z) dz = |L| ∫ p̃(center + L u) e^{‖u‖²/2} e^{−‖u‖²/2} du; evaluated in chunks of ``chunk`` points."""
    d = center.size
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    log_w1 = np.log(w) + x**2 / 2
    f = jax.jit(jax.vmap(lambda u: target.log_density(jnp.asarray(center) + jnp.asarray(chol) @ u)))
    total, parts = nodes**d, []
    for start in range(0, total, chunk):
        idx = np.arange(start, min(start + chunk, total))
        digits = np.stack(np.unravel_index(idx, (nodes,) * d), 1)  # (n, d) node indices
        u = x[digits]
        pad = chunk - len(idx)
        vals = np.asarray(f(jnp.asarray(np.pad(u, ((0, pad), (0, 0))))))[: len(idx)]
        parts.append(logsumexp(vals + log_w1[digits].sum(1)))
    return float(logsumexp(parts) + np.linalg.slogdet(chol)[1])


def quadrature_cost(target: Target, center, chol, exact: float, max_evals: int) -> list[tuple[int, int, float, float]]:
    """(nodes G, evaluations G^d, |error|, seconds) for G = 2, 3, 4, … until |error| < TOL/10 or G^d > max_evals."""
    rows, g = [], 2
    while g**target.dim <= max_evals:
        t0 = time.perf_counter()
        est = gauss_hermite_log_evidence(target, center, chol, g)
        rows.append((g, g**target.dim, abs(est - exact), time.perf_counter() - t0))
        if rows[-1][2] < TOL / 10:
            break
        g += 1
    return rows


def one_dimension(p: int, max_evals: int) -> dict:
    """Every method on the regression with ``p`` coefficients (d = p + 1)."""
    X, y = regression_data(p)
    target, exact = nig_target(X, y), exact_log_evidence(X, y)
    lap = vbayes.laplace(target)
    center, cov = np.asarray(lap.q.mean), np.asarray(lap.q.covariance())
    quad = quadrature_cost(target, center, np.linalg.cholesky(cov), exact, max_evals)
    ok = [r for r in quad if r[2] < TOL]
    imp = importance_check(target, lap.q, 4000, 0)
    advi = vbayes.advi(target, "fullrank", progress=False, key=0)
    return {
        "d": target.dim,
        "exact": exact,
        "quadrature": quad,
        "quad_evals_needed": ok[0][1] if ok else None,
        "quad_nodes_needed": ok[0][0] if ok else None,
        "laplace_error": lap.info.extra["log_evidence"] - exact,
        "laplace_cost": lap.info.grad_evals + lap.info.extra.get("products", 0),
        "is_error": imp.log_evidence - exact,
        "is_cost": imp.num_draws,
        "elbo_gap": exact - advi.elbo,
        "advi_cost": advi.info.grad_evals,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    args = example_args(__doc__.splitlines()[0], argv)
    ps, max_evals = (range(1, 4), 20_000) if args.quick else (range(1, 8), 3_000_000)
    rows = []
    print(f"normal-inverse-gamma regression, N = {N}; quadrature: adaptive Gauss–Hermite, target |error| < {TOL} nats")
    print(
        f"{'d':>2}  {'exact log p(D)':>14}  {'grid G^d to 0.01':>17}  {'Laplace err':>11}  {'IS (4000) err':>13}  "
        f"{'log p(D) − ELBO':>15}  {'ADVI evals':>10}"
    )
    for p in ps:
        r = one_dimension(p, max_evals)
        rows.append(r)
        need = f"{r['quad_nodes_needed']}^{r['d']} = {r['quad_evals_needed']}" if r["quad_evals_needed"] else "> budget"
        print(
            f"{r['d']:2d}  {r['exact']:14.4f}  {need:>17}  {r['laplace_error']:11.4f}  {r['is_error']:13.4f}  "
            f"{r['elbo_gap']:15.4f}  {r['advi_cost']:10d}"
        )
    found = [r for r in rows if r["quad_evals_needed"]]
    growth = np.polyfit([r["d"] for r in found], np.log10([r["quad_evals_needed"] for r in found]), 1)[0]
    say("grid evaluations needed grow by a factor per added dimension", 10**growth, ".2f")
    say(
        "extrapolated grid evaluations at d = 20",
        10 ** (np.log10(found[-1]["quad_evals_needed"]) + growth * (20 - found[-1]["d"])),
        ".2e",
    )
    say("largest |Laplace error| (nats)", max(abs(r["laplace_error"]) for r in rows), ".4f")
    say("largest |importance sampling error| (nats)", max(abs(r["is_error"]) for r in rows), ".4f")
    say("largest log p(D) − ELBO (nats)", max(r["elbo_gap"] for r in rows), ".4f")
    say("ELBO ≤ log p(D) at every d", str(all(r["elbo_gap"] > -0.01 for r in rows)))

    fig = new_figure(10, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    ds = [r["d"] for r in rows]
    ax1.semilogy([r["d"] for r in found], [r["quad_evals_needed"] for r in found], "o-", label="grid (adaptive GH)")
    ax1.semilogy(ds, [r["laplace_cost"] for r in rows], "s-", label="Laplace (mode + Hessian)")
    ax1.semilogy(ds, [r["is_cost"] for r in rows], "^-", label="importance sampling (4000 draws)")
    ax1.semilogy(ds, [r["advi_cost"] for r in rows], "v-", label="ADVI full-rank (ELBO)")
    ax1.set(xlabel="dimension d", ylabel="log-joint evaluations", title=f"cost to reach {TOL} nats (grid)")
    ax1.legend(fontsize=8)
    for r in rows:
        q = np.array(r["quadrature"])
        ax2.loglog(q[:, 1], np.maximum(q[:, 2], 1e-12), "o-", ms=3, label=f"grid, d = {r['d']}")
    ax2.axhline(TOL, color="k", lw=0.8, ls="--")
    ax2.set(xlabel="grid evaluations G^d", ylabel="|log evidence error| (nats)", title="grid error against cost")
    ax2.legend(fontsize=7, ncol=2)
    save_figure(fig, args.out, "q08_evidence_by_quadrature.png")
    return {"rows": rows, "growth": 10**growth}


if __name__ == "__main__":
    main()
