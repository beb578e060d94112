"""Conjugate VB on a Dask cluster (2 worker processes on loopback): the same CAVI as in memory, a worker
killed mid-fit changes nothing, the estimator and the CLI on Dask data, and the errors."""

import os
import sys

import cloudpickle
import dask.array as da
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dask import delayed
from distributed import Client, LocalCluster
from typer.testing import CliRunner

from vbayes import VariationalGaussianMixture
from vbayes import conjugate as cj
from vbayes.cli import app
from vbayes.conjugate import gmm
from vbayes.conjugate.engine.svi import SVIConfig
from vbayes.data import dask as vd
from vbayes.errors import VBayesError

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module


@pytest.fixture(scope="module")
def client():
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=vd.FREE_PORT
    )
    with Client(cluster) as c:
        yield c
    cluster.close()


def _data(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [-5.0, 4.0, 2.0]])
    X = means[rng.integers(0, 3, n)] + rng.normal(size=(n, 3)) * np.array([1.0, 0.6, 0.8])
    model = gmm.bayesian_gmm(gmm.default_prior(X, 5), "full", "dirichlet_process")
    params = gmm.init_params(model, X, rng.dirichlet(np.ones(5), n))
    return X, model, params


ITERATIONS = 12  # CAVI iterations compared (tol=0: exactly these many)


def _rel(a, b) -> float:
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(float(jnp.max(jnp.abs(u - v) / jnp.maximum(jnp.abs(u), 1e-300))) for u, v in pairs)


@pytest.fixture(scope="module")
def in_memory():
    X, model, params = _data()
    return X, model, params, cj.cavi(model, params, X, tol=0.0, max_iter=ITERATIONS)


@pytest.mark.slow
def test_cavi_on_dask_equals_in_memory(client, in_memory, tmp_path_factory):
    X, model, params, ref = in_memory
    path = tmp_path_factory.mktemp("npy") / "x.npy"
    np.save(path, X)
    source = vd.from_npy(path, rows_per_partition=1100)  # 6 partitions, read by the workers, the last short
    assert source.numblocks == (6, 1)
    fit = cj.cavi(model, params, vd.DaskData(source, client), tol=0.0, max_iter=ITERATIONS)
    assert fit.info.steps == ref.info.steps == ITERATIONS
    assert _rel(ref.q.params, fit.q.params) <= 1e-10
    assert abs(fit.info.extra["objective"] - ref.info.extra["objective"]) <= 1e-10 * abs(ref.info.extra["objective"])
    em_ref = cj.cavi(model, params, X, mode="em", max_iter=5, tol=0.0)
    em = cj.cavi(model, params, vd.DaskData(da.from_array(X, chunks=(2500, 3)), client), mode="em", max_iter=5, tol=0.0)
    assert _rel(em_ref.q.params, em.q.params) <= 1e-10


def _rows(X, start, stop, flags):
    """A partition's rows; the first time ``flags/arm`` exists, the worker reading it dies (os._exit)."""
    arm, fired = os.path.join(flags, "arm"), os.path.join(flags, "fired")
    if os.path.exists(arm) and not os.path.exists(fired):
        open(fired, "w").close()
        os._exit(1)
    return X[start:stop]


@pytest.mark.slow
def test_worker_killed_mid_fit_changes_nothing(client, in_memory, tmp_path):
    X, model, params, ref = in_memory
    parts = [
        da.from_delayed(delayed(_rows, pure=True)(X, a, a + 1000, str(tmp_path)), (1000, 3), X.dtype)
        for a in range(0, 6000, 1000)
    ]
    arm = lambda it, *_: (tmp_path / "arm").touch() if it == 3 else None  # the 4th pass loses a worker
    data = vd.DaskData(da.concatenate(parts), client)
    fit = cj.cavi(model, params, data, tol=0.0, max_iter=ITERATIONS, callback=arm)
    assert (tmp_path / "fired").exists()  # a worker did die during a pass
    assert fit.info.steps == ref.info.steps
    assert _rel(ref.q.params, fit.q.params) <= 1e-10


@pytest.mark.slow  # like test_cli_gmm_on_a_cluster; the default run keeps test_cavi_on_dask_equals_in_memory
def test_estimator_on_dask(client):
    X, _, _ = _data(8000, seed=1)
    dx = da.from_array(X, chunks=(3000, 3))
    ours = VariationalGaussianMixture(5, random_state=0).fit(dx, client=client)
    ref = VariationalGaussianMixture(5, random_state=0).fit(X)
    assert ours.converged_ and ours.n_features_in_ == 3
    # the same clusters (the initialisation comes from a 20000-row sample: not the same iterates)
    assert ours.lower_bound_ == pytest.approx(ref.lower_bound_, abs=5e-3)
    assert np.allclose(np.sort(ours.weights_)[-3:], np.sort(ref.weights_)[-3:], atol=5e-3)


@pytest.mark.slow
def test_estimator_svi_on_dask(client):
    X, _, _ = _data(8000, seed=1)
    ref = VariationalGaussianMixture(5, random_state=0).fit(X)
    svi = VariationalGaussianMixture(5, method="svi", random_state=0).fit(
        da.from_array(X, chunks=(1000, 3)), client=client
    )
    assert svi.lower_bound_ == pytest.approx(ref.lower_bound_, abs=5e-3)


@pytest.mark.slow
def test_svi_over_partitions(client, in_memory):
    X, model, params, _ = in_memory
    ref = cj.cavi(model, params, X, tol=1e-8)  # converged, in memory
    data = vd.DaskData(da.from_array(X, chunks=(500, 3)), client)
    fit = cj.svi(model, ref.q.params, data, key=0, config=SVIConfig(max_epochs=2))
    assert fit.info.extra["partitions_per_step"] == 2  # one per worker
    per_point = lambda f: f.info.extra["objective"] / f.info.extra["n_samples"]
    assert per_point(fit) == pytest.approx(per_point(ref), abs=2e-3)  # started at the optimum, stays there


def test_bad_data_is_named(client, in_memory):
    X, model, params, _ = in_memory
    bad = X.copy()
    bad[[2501, 2999]] = np.nan
    with pytest.raises(
        VBayesError, match=r"partition 2 \(rows 2000 to 2999\) has 2 row\(s\) with NaN .*rows 2501, 2999"
    ):
        cj.cavi(model, params, vd.DaskData(da.from_array(bad, chunks=(1000, 3)), client))
    with pytest.raises(VBayesError, match="Expected 2D array, got 1D"):
        vd.DaskData(da.zeros(10, chunks=5), client)
    with pytest.raises(VBayesError, match="the model expects 3 columns, the data have 4"):
        cj.cavi(model, params, vd.DaskData(da.zeros((100, 4), chunks=(50, 4)), client))


def _thread_affinities() -> list[list[int]]:
    out = []
    for tid in os.listdir("/proc/self/task"):
        try:
            out.append(sorted(os.sched_getaffinity(int(tid))))
        except OSError:
            pass
    return out


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="thread affinity is Linux-only")
def test_pin_workers_gives_each_worker_a_core(client):
    """W ≤ cores workers: every thread of worker i on core i only (what made 1 → 2 workers scale 1.84×)."""
    cores = sorted(os.sched_getaffinity(0))
    pinned = vd.pin_workers(client)
    if len(cores) < 2:
        assert pinned == {}
        return
    assert sorted(pinned) == sorted(client.scheduler_info()["workers"])
    assert sorted(c for v in pinned.values() for c in v) == cores[:2]
    for address, threads in client.run(_thread_affinities).items():
        assert threads and all(t == pinned[address] for t in threads)


def test_unreachable_scheduler():
    with pytest.raises(VBayesError, match="cannot reach a Dask scheduler at 'tcp://127.0.0.1:9'"):
        vd.connect("tcp://127.0.0.1:9", timeout=1)
    with pytest.raises(VBayesError, match="positive worker count"):
        vd.connect("local:zero")


@pytest.mark.slow
def test_cli_gmm_on_a_cluster(client, tmp_path):
    X, _, _ = _data(3000, seed=2)
    np.save(tmp_path / "x.npy", X)
    runner = CliRunner()
    address = client.scheduler.address
    result = runner.invoke(
        app, ["gmm", str(tmp_path / "x.npy"), "--components", "5", "--dask", address, "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "dask 2 workers" in result.stdout and "converged" in result.stdout
    assert (tmp_path / "components.csv").exists()
    result = runner.invoke(app, ["gmm", str(tmp_path / "x.npy"), "--dask", "tcp://127.0.0.1:9"])
    assert (
        result.exit_code == 1 and "cannot reach a Dask scheduler" in result.stderr and "Traceback" not in result.output
    )
