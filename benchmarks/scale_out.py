"""Scale-out benchmark (issue 7): one CAVI pass of a Bayesian Gaussian mixture (D = 10, K = 10, full
covariances) over N points on disk, by Dask with 1 and 2 worker processes, and by the streaming path
without Dask (1 and 2 threads).

    python benchmarks/scale_out.py --n 1e7 1e8 [--dir /tmp/vbayes-scale] [--passes 1] [--out results.json]

The data are generated chunk by chunk into an ``.npy`` file (never whole in memory) and read back by the
workers partition by partition (:func:`vbayes.data.dask.from_npy`, 2^19 rows = 40 MB per partition).
Reported per configuration: the time of one pass (statistics of every point, reduced, and the global
step), throughput in points per second and per core, and the peak resident memory of each worker (or of
the streaming process). Each worker runs one thread with XLA's intra-op threading off and is pinned
(every thread of it) to its own core (``vbayes.data.dask.pin_workers``), so that workers = cores; the CPU
seconds each worker used per second of the pass are reported (``worker_cpu_per_wall``: 1.0 = one core
kept busy). The compiled pass is warmed up on a small file first. Timings need an idle machine: the load
average is recorded before and after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import cpu_seconds, peak_rss_mb

D, K = 10, 10
PARTITION_ROWS = 1 << 19
SINGLE_THREAD = {
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "OMP_NUM_THREADS": "1",
}


def generate(path: Path, n: int, seed: int = 0, rows: int = 1 << 20) -> Path:
    """N points of a 10-component mixture in 10-D written to ``path`` in chunks of ``rows``."""
    if path.exists() and np.load(path, mmap_mode="r").shape == (n, D):
        return path
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=6.0, size=(K, D))
    scales = rng.uniform(0.5, 1.5, size=(K, D))
    out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float64, shape=(n, D))
    for start in range(0, n, rows):
        m = min(rows, n - start)
        z = rng.integers(0, K, m)
        out[start : start + m] = means[z] + rng.normal(size=(m, D)) * scales[z]
        out.flush()
    del out
    path.with_suffix(".tmp.npy").rename(path)
    return path


def _model_and_params():
    """The model and a fixed λ (from the first 20000 rows of the small file), the same for every run."""
    import jax

    from vbayes.conjugate import gmm

    with jax.enable_x64(True):
        x = np.load(SMALL, mmap_mode="r")[:20000]
        model = gmm.bayesian_gmm(gmm.default_prior(np.asarray(x), K), "full", "dirichlet_process")
        resp = np.eye(K)[np.random.default_rng(1).integers(0, K, x.shape[0])]
        return model, gmm.init_params(model, np.asarray(x), resp, scale=1.0)


def _one_pass(model, params, data) -> float:
    """Seconds for one CAVI iteration on ``data`` (``cj.update``: Σ statistics over all points, global step)."""
    from vbayes import conjugate as cj

    t0 = time.perf_counter()
    cj.update(model, params, data)
    return time.perf_counter() - t0


def run_dask(path: Path, workers: int, passes: int) -> dict:
    import jax
    from distributed import Client, LocalCluster

    from vbayes.data import dask as vd

    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=vd.FREE_PORT, env=SINGLE_THREAD
    )
    client = Client(cluster)
    try:
        vd.pin_workers(client)  # each worker (all its threads) on a core of its own: workers = cores
        with jax.enable_x64(True):
            model, params = _model_and_params()
            _one_pass(model, params, vd.DaskData(vd.from_npy(SMALL, PARTITION_ROWS), client))  # compile per worker
            base = client.run(peak_rss_mb)
            data = vd.DaskData(vd.from_npy(path, PARTITION_ROWS), client)
            cpu0 = client.run(cpu_seconds)
            times = [_one_pass(model, params, data) for _ in range(passes)]
            cpu1 = client.run(cpu_seconds)
            peaks = client.run(peak_rss_mb)
        n = data.n_samples
        best = min(times)
        return {
            "path": f"dask {workers} worker(s)",
            "cores": workers,
            "n": n,
            "partitions": data.n_partitions,
            "pass_s": best,
            "points_per_s": n / best,
            "points_per_s_per_core": n / best / workers,
            "peak_rss_mb_per_worker": sorted(peaks.values()),
            "worker_cpu_per_wall": sorted(round((cpu1[a] - cpu0[a]) / sum(times), 3) for a in cpu0),
            "rss_after_warmup_mb": sorted(base.values()),
        }
    finally:
        client.close()
        cluster.close()


def run_stream(path: Path, threads: int, passes: int) -> dict:
    """In a fresh process (so that its peak memory is its own), XLA single-threaded per pass thread."""
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); import scale_out as s; "
        f"print('RESULT' + json.dumps(s._stream_child({str(path)!r}, {threads}, {passes})))"
    )
    env = dict(os.environ, **SINGLE_THREAD)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads([x for x in done.stdout.splitlines() if x.startswith("RESULT")][-1][6:])


def _stream_child(path: str, threads: int, passes: int) -> dict:
    from vbayes.data.dask import pin_process

    pin_process(set(range(threads)))  # before JAX starts its threads: the process uses `threads` cores in all
    import jax

    from vbayes.data import Stream

    with jax.enable_x64(True):
        model, params = _model_and_params()
        _one_pass(model, params, Stream(SMALL, n_threads=threads))
        data = Stream(path, n_threads=threads)  # one validation pass (N, D, finiteness), not timed
        cpu0 = cpu_seconds()
        times = [_one_pass(model, params, data) for _ in range(passes)]
        cpu = (cpu_seconds() - cpu0) / sum(times)
    best = min(times)
    return {
        "path": f"stream, no Dask, {threads} thread(s)",
        "cores": threads,
        "n": data.n_samples,
        "pass_s": best,
        "points_per_s": data.n_samples / best,
        "points_per_s_per_core": data.n_samples / best / threads,
        "peak_rss_mb": peak_rss_mb(),
        "cpu_per_wall": round(cpu, 3),
    }


SMALL = Path(os.environ.get("VBAYES_SCALE_DIR", "/tmp/vbayes-scale")) / "warmup.npy"


def main() -> None:
    global SMALL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", nargs="+", type=float, default=[1e7, 1e8])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/vbayes-scale"))
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/.cache/scale_out.json"))
    parser.add_argument("--skip", nargs="*", default=[], help="configurations to skip: dask1 dask2 stream1 stream2")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    SMALL = args.dir / "warmup.npy"
    os.environ["VBAYES_SCALE_DIR"] = str(args.dir)
    generate(SMALL, 3 * PARTITION_ROWS // 2, seed=1)
    results = []
    for n in (int(v) for v in args.n):
        t0 = time.perf_counter()
        path = generate(args.dir / f"gmm_{n:.0e}.npy".replace("+", ""), n)
        print(f"data N={n:.0e}: {path} ({path.stat().st_size / 1e9:.1f} GB, {time.perf_counter() - t0:.0f} s)")
        for name, fn in (
            ("dask1", lambda p: run_dask(p, 1, args.passes)),
            ("dask2", lambda p: run_dask(p, 2, args.passes)),
            ("stream1", lambda p: run_stream(p, 1, args.passes)),
            ("stream2", lambda p: run_stream(p, 2, args.passes)),
        ):
            if name in args.skip:
                continue
            load = os.getloadavg()
            r = fn(path)
            r.update(load_before=load, load_after=os.getloadavg())
            results.append(r)
            print(json.dumps(r), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
