"""Bayesian Gaussian mixture: vbayes ``VariationalGaussianMixture`` (CAVI, SVI, streaming CAVI) against
scikit-learn's ``BayesianGaussianMixture`` (issue 3).

Data: 5 overlapping Gaussian components (seeded), fitted with K = 10, full covariances, scikit-learn's default
priors on both sides, k-means initialisation with the same ``random_state`` (so CAVI and scikit-learn start from
the same responsibilities). Surplus components make this the hard case for VB: plain CAVI drains them over
hundreds to thousands of iterations, which vbayes' delete/merge moves short-cut.
Every configuration runs in fresh subprocesses (one for scikit-learn, one for
vbayes) so that ``ru_maxrss`` is the peak RSS of that configuration alone; scikit-learn runs under
``threadpool_limits(1)``; vbayes under the same limit for BLAS/OpenMP (its k-means init) but with its own
block-thread pool (one thread per usable core).

Timing, explicitly:

* per iteration: scikit-learn ``(t(max_iter=M) - t(max_iter=1)) / (M - 1)`` with ``tol=0`` (the init and the
  final E-step cancel); vbayes plain CAVI (``delete_merge=False``: scikit-learn's iterates) the same, after a
  compile warm-up on the same shapes.
* the target: within 1e-3 nats/sample of the best ELBO found (``ref``: the higher of plain CAVI run to
  |ΔELBO|/N < 1e-8 or its cap, and the default CAVI with delete/merge moves).
* scikit-learn to the target: run again with ``warm_start=True, max_iter=1`` (one iteration per call, identical
  iterates) and OUR full ELBO evaluated at its fitted parameters after every call (not timed); the first
  iteration i that reaches the target gives ``t(max_iter=1) + (i - 1) * per_iter``. When its time budget ends
  first, its iterates having matched plain CAVI's, the time is estimated from plain CAVI's iteration count
  ("est."), or bounded below by the whole plain CAVI run if that never reached the target ("≥").
* vbayes CAVI and SVI (their defaults, delete/merge moves included): wall time of the second of two identical
  ``fit`` calls (the first compiles; its time is reported as ``*_first_fit``): init, iterations, moves and,
  for SVI, the final full pass that computes ``lower_bound_``.

Run: ``python benchmarks/gmm_vs_sklearn.py [--quick] [--sizes 10000,100000] [--dims 2,10] [--stream-n N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
K, TRUE_K, SEED, TARGET = 10, 5, 0, 1e-3


def make_data(n: int, dim: int, seed: int = SEED, chunk: int = 1 << 18):
    """Yield (rows, dim) chunks of the 5-component mixture; chunk i uses its own seed (reproducible)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 3.0, (TRUE_K, dim))
    a = rng.normal(size=(TRUE_K, dim, dim)) / np.sqrt(dim)
    chols = np.linalg.cholesky(0.5 * np.eye(dim) + a @ np.swapaxes(a, 1, 2))
    weights = rng.dirichlet(5.0 * np.ones(TRUE_K))
    for i, start in enumerate(range(0, n, chunk)):
        m = min(chunk, n - start)
        r = np.random.default_rng([seed, dim, i])
        z = r.choice(TRUE_K, size=m, p=weights)
        yield means[z] + np.einsum("nij,nj->ni", chols[z], r.standard_normal((m, dim)))


def data(n: int, dim: int) -> np.ndarray:
    return np.concatenate(list(make_data(n, dim)))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------------------------
# workers (each in its own subprocess)


def full_elbo_at_sklearn(est, model, xc, shift) -> float:
    """Our full ELBO (per sample) at scikit-learn's q(β): natural parameters rebuilt from its attributes."""
    import jax

    from vbayes import conjugate as cj
    from vbayes.conjugate import gmm
    from vbayes.data import InMemory

    beta, nu = est.mean_precision_, est.degrees_of_freedom_
    m = est.means_ - shift
    winv = est.covariances_ * nu[:, None, None]  # scikit-learn's covariances_ = W⁻¹ / ν
    a, b = est.weight_concentration_
    params = gmm.GMMParams(
        a, b, beta, beta[:, None] * m, winv + beta[:, None, None] * np.einsum("ki,kj->kij", m, m), nu
    )
    with jax.enable_x64(True):
        params = jax.tree.map(jax.numpy.asarray, params)
        return cj.objective(model, params, InMemory(xc)) / xc.shape[0]


def worker_sklearn(n: int, dim: int, iters: int, ref: float, cap: int, budget: float) -> dict:
    from sklearn.mixture import BayesianGaussianMixture
    from threadpoolctl import threadpool_limits

    from vbayes import VariationalGaussianMixture

    x = data(n, dim)
    out = {}
    warnings.simplefilter("ignore")
    with threadpool_limits(1):
        times = {}
        for m in (1, iters):
            est = BayesianGaussianMixture(n_components=K, max_iter=m, tol=0.0, random_state=SEED)
            t0 = time.perf_counter()
            est.fit(x)
            times[m] = time.perf_counter() - t0
        per_iter = (times[iters] - times[1]) / (iters - 1)
        out.update(sk_per_iter=per_iter, sk_t1=times[1])
        # ELBO trajectory (ours, full) along scikit-learn's iterates
        vb = VariationalGaussianMixture(n_components=K, max_iter=1, random_state=SEED)
        shift = x.mean(0)
        vb._check_params()
        vb._shift = shift
        xc = x - shift
        import jax

        with jax.enable_x64(True):
            model = vb._build_model(xc)
        est = BayesianGaussianMixture(n_components=K, max_iter=1, tol=0.0, random_state=SEED, warm_start=True)
        traj = []
        reached = None
        start = time.perf_counter()
        for i in range(1, cap + 1):
            if time.perf_counter() - start > budget:
                break
            est.fit(x)
            traj.append(full_elbo_at_sklearn(est, model, xc, shift))
            if reached is None and np.isfinite(ref) and traj[-1] >= ref - TARGET:
                reached = i
                break
        out.update(
            sk_traj=traj,
            sk_iters_to_target=reached,
            sk_time_to_target=None if reached is None else times[1] + (reached - 1) * per_iter,
            sk_final_elbo=traj[-1],
            sk_traj_len=len(traj),
        )
    out["sk_rss_mb"] = peak_rss_mb()
    return out


def worker_vbayes(n: int, dim: int, iters: int, max_cavi: int, svi_seeds: int) -> dict:
    from threadpoolctl import threadpool_limits

    from vbayes import VariationalGaussianMixture

    x = data(n, dim)
    out = {}
    warnings.simplefilter("ignore")
    plain = dict(n_components=K, random_state=SEED, delete_merge=False)
    with threadpool_limits(1):
        VariationalGaussianMixture(max_iter=2, tol=0.0, **plain).fit(x)  # compile
        times = {}
        for m in (1, iters):
            est = VariationalGaussianMixture(max_iter=m, tol=0.0, **plain)
            t0 = time.perf_counter()
            est.fit(x)
            times[m] = time.perf_counter() - t0
        per_iter = (times[iters] - times[1]) / (iters - 1)
        # plain CAVI (scikit-learn's iterates) run long: its ELBO trajectory
        est = VariationalGaussianMixture(max_iter=max_cavi, tol=1e-8, **plain)
        t0 = time.perf_counter()
        est.fit(x)
        plain_lbs = np.asarray(est.lower_bounds_)
        out.update(
            vb_per_iter=per_iter,
            vb_t1=times[1],
            plain_lbs=plain_lbs.tolist(),
            plain_converged=bool(est.converged_),
            plain_n_iter=est.n_iter_,
            plain_fit_time=time.perf_counter() - t0,
        )
        # the defaults: CAVI with delete/merge moves, and SVI (warm-up fits on the same shapes first)
        for method in ("cavi", "svi"):
            est = VariationalGaussianMixture(n_components=K, method=method, random_state=SEED)
            t0 = time.perf_counter()
            est.fit(x)  # the first fit compiles (reported), the second is timed
            out[f"{method}_first_fit"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            est.fit(x)
            out[method] = dict(
                time=time.perf_counter() - t0,
                elbo=float(est.lower_bound_),
                n_iter=est.n_iter_,
                passes=est.result_.info.extra.get("passes"),
                epochs=est.result_.info.extra.get("epochs"),
                removed=est.result_.info.extra.get("removed_components"),
                components=int(np.sum(est.weights_ > 1e-3)),
            )
        ref = max(float(np.max(plain_lbs)), out["cavi"]["elbo"])
        hit = np.flatnonzero(plain_lbs >= ref - TARGET)
        out.update(ref=ref, plain_iters_to_target=int(hit[0]) + 1 if hit.size else None)
        # SVI from other initialisations (random_state 1..S-1; compiled already): its spread around the target
        runs = [(out["svi"]["time"], out["svi"]["elbo"])]
        for seed in range(1, svi_seeds):
            est = VariationalGaussianMixture(n_components=K, method="svi", random_state=seed)
            t0 = time.perf_counter()
            est.fit(x)
            runs.append((time.perf_counter() - t0, float(est.lower_bound_)))
        gaps = [ref - e for _, e in runs]
        out["svi_seeds"] = dict(
            gaps=gaps, times=[t for t, _ in runs], reached=int(sum(g <= TARGET for g in gaps)), count=len(runs)
        )
    out["vb_rss_mb"] = peak_rss_mb()
    return out


def worker_stream(path: str, iters: int) -> dict:
    from threadpoolctl import threadpool_limits

    from vbayes import VariationalGaussianMixture

    warnings.simplefilter("ignore")
    with threadpool_limits(1):
        times = {}
        for m in (1, 1, iters):  # the first fit compiles; the second is t(1)
            est = VariationalGaussianMixture(n_components=K, max_iter=m, tol=0.0, random_state=SEED)
            t0 = time.perf_counter()
            est.fit_stream(path)
            times[m] = time.perf_counter() - t0
    return dict(
        stream_t1=times[1],
        stream_tm=times[iters],
        stream_iters=iters,
        stream_per_iter=(times[iters] - times[1]) / (iters - 1),
        stream_elbo=float(est.lower_bound_),
        stream_rss_mb=peak_rss_mb(),
    )


def write_npy(n: int, dim: int) -> Path:
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"gmm_{n}_{dim}.npy"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp.npy")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64, shape=(n, dim))
    start = 0
    for part in make_data(n, dim):
        arr[start : start + part.shape[0]] = part
        start += part.shape[0]
        arr.flush()
    del arr
    tmp.rename(path)
    return path


# ------------------------------------------------------------------------------------------------
# driver


def sub(*args: str, timeout: float) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    import jax
    import sklearn

    model = "unknown"
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        if line.lower().startswith("model name"):
            model = line.split(":", 1)[1].strip()
    cores = len(os.sched_getaffinity(0))
    return (
        f"{model}, {cores} usable cores; Python {platform.python_version()}, JAX {jax.__version__}, "
        f"scikit-learn {sklearn.__version__}, NumPy {np.__version__}"
    )


def fmt(v, spec=".3g"):
    return "—" if v is None else format(v, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N ≤ 1e5, few iterations (about 2 minutes)")
    p.add_argument("--sizes", default=None, help="comma-separated N (default 10000,100000,1000000)")
    p.add_argument("--dims", default="2,10")
    p.add_argument("--iters", type=int, default=None, help="M for the per-iteration timing and sklearn's budget")
    p.add_argument("--stream-n", type=int, default=None, help="N of the streaming run (0: skip; default 1e7)")
    p.add_argument("--stream-iters", type=int, default=3)
    p.add_argument("--sk-budget", type=float, default=None, help="seconds for sklearn's ELBO trajectory per config")
    p.add_argument("--max-cavi", type=int, default=None, help="plain CAVI cap (1000; 300 at N ≥ 1e6)")
    p.add_argument("--svi-seeds", type=int, default=8, help="SVI initialisations (random_state 0..S-1) per config")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        kind, *rest = a.worker
        if kind == "sk":
            res = worker_sklearn(int(rest[0]), int(rest[1]), int(rest[2]), float(rest[3]), int(rest[4]), float(rest[5]))
        elif kind == "vb":
            res = worker_vbayes(int(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]), int(rest[4]))
        else:
            res = worker_stream(rest[0], int(rest[1]))
        print(json.dumps(res))
        return
    sizes = [int(float(s)) for s in (a.sizes or ("10000,100000" if a.quick else "10000,100000,1000000")).split(",")]
    dims = [int(d) for d in a.dims.split(",")]
    iters = a.iters or (10 if a.quick else 30)
    a.sk_budget = a.sk_budget or (20.0 if a.quick else 120.0)
    stream_n = a.stream_n if a.stream_n is not None else (0 if a.quick else 10_000_000)
    print("machine:", machine(), flush=True)
    rows = []
    for n in sizes:
        for dim in dims:
            t0 = time.perf_counter()
            max_cavi = a.max_cavi or (1000 if n < 1_000_000 else 300)
            m_iters = str(iters if n >= 100_000 else 10 * iters)
            vb = sub("vb", str(n), str(dim), m_iters, str(max_cavi), str(a.svi_seeds), timeout=3000)
            cap = (vb["plain_iters_to_target"] or vb["plain_n_iter"]) + 5
            sk = sub("sk", str(n), str(dim), str(iters), repr(vb["ref"]), str(cap), str(a.sk_budget), timeout=3000)
            r = dict(n=n, dim=dim, **vb, **sk)
            # scikit-learn starts from the same k-means responsibilities and runs the same updates as plain CAVI
            # (the same parameters to ~1e-12 at every iteration: tests/test_gmm_parity.py). When the time budget
            # stops it first, its time to the target is estimated from plain CAVI's iteration count ("est."), or
            # bounded below by plain CAVI's whole run when that never reached the target ("≥"). (Its ELBO
            # trajectory is evaluated at the optimal q(z) of each iterate, plain CAVI's at the q(z) of the pass
            # that produced it, so the two differ early on by up to one E-step's gain.)
            traj, lbs = np.asarray(r.pop("sk_traj")), np.asarray(r.pop("plain_lbs"))
            m = min(len(traj), len(lbs))
            r["sk_vs_cavi_maxdiff_tail"] = float(np.max(np.abs(traj[m // 2 : m] - lbs[m // 2 : m])))
            r["sk_final_elbo"], r["sk_traj_len"] = float(traj[-1]), len(traj)
            r["sk_est"] = ""
            if r["sk_time_to_target"] is None:
                its = r["plain_iters_to_target"]
                r["sk_est"] = "est." if its else "≥"
                its = its or r["plain_n_iter"]
                r.update(sk_iters_to_target=its, sk_time_to_target=r["sk_t1"] + (its - 1) * r["sk_per_iter"])
            for method in ("cavi", "svi"):
                r[f"{method}_gap"] = vb["ref"] - vb[method]["elbo"]
                r[f"{method}_reached"] = r[f"{method}_gap"] <= TARGET
            rows.append(r)
            print(json.dumps(r), f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    print(
        "\n| N | D | sklearn s/iter | CAVI s/iter | speed-up/iter | sklearn to target (iters) "
        "| vbayes CAVI to target (passes) | vbayes SVI to target (epochs) | sklearn / CAVI | sklearn / SVI "
        "| peak RSS sklearn / vbayes MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sk_t = r["sk_time_to_target"]
        sk_cell = (
            f"{'≥ ' if r['sk_est'] == '≥' else ''}{sk_t:.3g} s ({r['sk_iters_to_target']}"
            f"{', est.' if r['sk_est'] == 'est.' else ''})"
            if sk_t is not None
            else f"not in {r['sk_traj_len']} (gap {r['ref'] - r['sk_final_elbo']:.2g})"
        )
        bound = "≥ " if r["sk_est"] == "≥" else ""
        cells = {}
        for method, unit in (("cavi", "passes"), ("svi", "epochs")):
            v = r[method]
            count = v[unit] if unit == "passes" else f"{v['epochs']:.2g}"
            gap = "" if r[f"{method}_reached"] else f", gap {r[f'{method}_gap']:.1e}"
            cells[method] = f"{v['time']:.3g} s ({count}{gap})"
            ok = sk_t is not None and r[f"{method}_reached"]
            cells[method + "_ratio"] = f"{bound}{sk_t / v['time']:.1f}×" if ok else "—"
        print(
            f"| {r['n']:.0e} | {r['dim']} | {r['sk_per_iter']:.3g} | {r['vb_per_iter']:.3g} "
            f"| {r['sk_per_iter'] / r['vb_per_iter']:.1f}× | {sk_cell} | {cells['cavi']} | {cells['svi']} "
            f"| {cells['cavi_ratio']} | {cells['svi_ratio']} | {r['sk_rss_mb']:.0f} / {r['vb_rss_mb']:.0f} |"
        )
    print(
        "\nSVI from random_state 0..S-1 (the table's column is random_state 0): runs within the target, gaps in "
        "1e-3 nats/point, median and slowest time, and scikit-learn's time to the target over those (of the runs "
        "that reach it)\n\n"
        "| N | D | SVI runs within 1e-3 | gaps (1e-3) | median time | slowest | sklearn / SVI, median (slowest) |"
        "\n|---|---|---|---|---|---|---|"
    )
    for r in rows:
        sv = r["svi_seeds"]
        gaps = " ".join(f"{g * 1e3:.2f}" for g in sv["gaps"])
        median, slowest = np.median(sv["times"]), np.max(sv["times"])
        hit = [t for t, g in zip(sv["times"], sv["gaps"], strict=True) if g <= TARGET]
        sk_t, bound = r["sk_time_to_target"], "≥ " if r["sk_est"] == "≥" else ""
        ratio = "—"
        if sk_t is not None and hit:
            of = "" if len(hit) == len(sv["times"]) else f" of {len(hit)}"
            ratio = f"{bound}{sk_t / np.median(hit):.1f}× ({bound}{sk_t / max(hit):.1f}×){of}"
        print(
            f"| {r['n']:.0e} | {r['dim']} | {sv['reached']} / {sv['count']} | {gaps} | {median:.3g} s "
            f"| {slowest:.3g} s | {ratio} |"
        )
    if stream_n:
        t0 = time.perf_counter()
        path = write_npy(stream_n, 10)
        print(f"\nwrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s", flush=True)
        s = sub("stream", str(path), str(a.stream_iters), timeout=3000)
        print(
            f"streaming CAVI N={stream_n:.0e} D=10: {s['stream_per_iter']:.3g} s/iter "
            f"((t(max_iter={a.stream_iters}) - t(max_iter=1)) / {a.stream_iters - 1}; t(1) = {s['stream_t1']:.3g} s "
            f"incl. the moment scan, k-means on 20000 rows and compilation), peak RSS {s['stream_rss_mb']:.0f} MB, "
            f"ELBO {s['stream_elbo']:.4f}/pt after {a.stream_iters} iterations",
            flush=True,
        )


if __name__ == "__main__":
    main()
