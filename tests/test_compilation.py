"""The persistent compilation cache, the compile counter and what `import vbayes` loads, in fresh processes."""

import json
import os
import subprocess
import sys
import time

import pytest

from vbayes.compilation import FileStore, cache_dir

# a small fit whose every program is this file's own: a correlated Gaussian through from_logdensity
_FIT = """
import json, sys
import jax.numpy as jnp
import vbayes
from vbayes.compilation import count_compilations

def log_density(p):
    x = p["x"]
    return -0.5 * (x[0] ** 2 + (x[1] - 0.5 * x[0]) ** 2 / 0.3 + (x[2] + x[1]) ** 2 / 2.0 + jnp.sum(x[3:] ** 2))

target = vbayes.from_logdensity(log_density, {"x": jnp.zeros(3)}, name="three")
with count_compilations() as c:
    fit = vbayes.advi(target, "fullrank", progress=False)
print(json.dumps({"compiled": c.compiled, "hits": c.cache_hits, "programs": c.programs,
                  "names": [n for n, _, _ in c.events], "stored": c.stored, "loc": [float(v) for v in fit.q.loc],
                  "raw": [float(v) for v in fit.q.raw_tril.ravel()], "trusted": fit.trusted}))
"""


def _run(code: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VBAYES_CACHE", "JAX_"))}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**clean, **env})
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _fit(env: dict) -> dict:
    return json.loads(_run(_FIT, env).stdout.strip().splitlines()[-1])


# a second fit, of a model of a new layout, in the same process
_LATER = (
    "t2 = vbayes.from_logdensity(log_density, {'x': jnp.zeros(4)}, name='four')\n"
    "with count_compilations() as c:\n"
    "    vbayes.advi(t2, 'fullrank', key=3, progress=False)\n"
    "print(json.dumps([n for n, _, _ in c.events]))\n"
)


def test_a_first_fit_compiles_a_handful_of_programs_and_a_second_process_loads_them(tmp_path):
    """Everything a fit does runs in a few compiled programs (the start, the steps, the checks), not in dozens of
    eagerly compiled operations: in a fresh process, those and the one that stages a key (a seed's key is made on the
    host, without a program of its own: ``keys.as_key``); for a model of
    a new layout later, the four that depend on it. A second process on the same cache folder loads every program
    instead of compiling it, finds the three largest programs stored (:mod:`vbayes.stored`) so that it does not
    trace them again, and gets the same fit to the last bit."""
    env = {"VBAYES_CACHE_DIR": str(tmp_path), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    lines = _run(_FIT + _LATER, env).stdout.strip().splitlines()
    first, later = json.loads(lines[-2]), json.loads(lines[-1])
    per_layout = ["jit(_start)", "jit(_init_state)", "jit(run)", "jit(_ratio_draws)"]
    assert sorted(first["names"]) == sorted(["jit(stage)", "jit(_keys)", *per_layout])
    assert sorted(later) == sorted(per_layout)
    assert first["compiled"] == first["programs"] > 0 and first["hits"] == 0 and first["trusted"]
    stored = list(tmp_path.glob("*-cache"))
    assert len(stored) >= first["compiled"] + len(later) - 1  # every program, save one too small for JAX to keep
    stored = list((tmp_path / "programs").glob("*-cache"))
    assert len(stored) == 2 * 3  # the start, the steps and the checks' draws (vbayes.stored), for each layout
    second = _fit(env)
    assert second["hits"] >= first["compiled"] - 1 and second["compiled"] <= 1
    assert second["loc"] == first["loc"] and second["raw"] == first["raw"]  # the same programs, the same numbers
    stored_programs = ["_start", "run", "_ratio_draws"]
    assert sorted(first["stored"]) == sorted([name, "exported"] for name in stored_programs)
    assert sorted(second["stored"]) == sorted([name, "loaded"] for name in stored_programs)  # not traced again


def test_off_writes_nothing_and_a_users_jax_cache_is_left_alone(tmp_path):
    mine = tmp_path / "mine"
    code = (
        "import jax, vbayes; from jax._src import compilation_cache as cc; "
        "print(jax.config.jax_compilation_cache_dir, type(cc._cache).__name__)"
    )
    assert _run(code, {"VBAYES_CACHE_DIR": "off"}).stdout.split() == ["None", "NoneType"]
    out = _run(code, {"JAX_COMPILATION_CACHE_DIR": str(mine)}).stdout.split()
    assert out == [str(mine), "NoneType"]  # JAX's own cache, as the user set it up, created by JAX on first use
    moved = tmp_path / "moved" / "deeper"
    out = _run(code, {"VBAYES_CACHE_DIR": str(moved)}).stdout.split()
    assert out == [str(moved), "FileStore"] and moved.is_dir()
    assert moved.stat().st_mode & 0o077 == 0  # readable by its owner only: JAX runs what it loads from there


def test_default_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("VBAYES_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "vbayes" / "jax"
    for off in ("off", "0", "false", "none", ""):
        monkeypatch.setenv("VBAYES_CACHE_DIR", off)
        assert cache_dir() is None


@pytest.mark.slow
def test_concurrent_processes_share_one_folder_without_warnings(tmp_path):
    env = {"VBAYES_CACHE_DIR": str(tmp_path), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VBAYES_CACHE", "JAX_"))}
    procs = [
        subprocess.Popen(
            [sys.executable, "-W", "error", "-c", _FIT],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**clean, **env},
        )
        for _ in range(3)
    ]
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-1000:] for _, err in outs]
    assert all("Warning" not in err for _, err in outs), [err[-1000:] for _, err in outs]
    fits = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert all(f["loc"] == fits[0]["loc"] for f in fits)
    assert not list(tmp_path.glob("*.tmp"))  # every write was completed and renamed


@pytest.mark.slow
def test_a_damaged_or_truncated_entry_is_recompiled_not_loaded(tmp_path):
    env = {"VBAYES_CACHE_DIR": str(tmp_path), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    first = _fit(env)
    stored = sorted(tmp_path.glob("*-cache"), key=lambda p: p.stat().st_size)
    biggest = stored[-1]
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])  # a copy cut short
    flipped = stored[-2]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    proc = _run(_FIT.replace("import json, sys", "import json, sys, warnings; warnings.simplefilter('error')"), env)
    again = json.loads(proc.stdout.strip().splitlines()[-1])
    assert again["compiled"] == 2 and again["loc"] == first["loc"], again
    assert "Error reading persistent compilation cache" not in proc.stderr


def test_file_store_evicts_the_least_recently_used(tmp_path):
    store = FileStore(tmp_path, max_bytes=3_000)
    for i in range(3):
        store.put(f"k{i}", bytes(900))
        os.utime(tmp_path / f"k{i}-cache", (time.time() - 100 + i, time.time() - 100 + i))
    assert store.get("k0") == bytes(900)  # k0 is now the most recently used
    store.evict()
    assert store.get("k1") is not None  # within the bound: nothing evicted; k1 read, so k2 is now the oldest
    store.put("k3", bytes(900))
    store.evict()
    assert sorted(p.name for p in tmp_path.glob("*-cache")) == ["k0-cache", "k1-cache", "k3-cache"]
    store.put("k0", b"other")  # an existing entry is never rewritten
    assert store.get("k0") == bytes(900)
    assert store.get("absent") is None


def test_import_loads_only_the_core_and_prints_nothing(tmp_path):
    code = (
        "import sys, vbayes\n"
        "heavy = ('arviz', 'matplotlib', 'sklearn', 'equinox', 'dask', 'pandas', 'scipy.stats', 'blackjax')\n"
        "print(','.join(m for m in (*heavy, 'numpyro') if m in sys.modules))\n"
        "import vbayes.cli\n"  # the command line's start (`vbayes --help`, before any command runs)
        "print(','.join(m for m in heavy if m in sys.modules))\n"
        "vbayes.VariationalGaussianMixture\n"
        "print('sklearn' in sys.modules)\n"
        # ArviZ's once-a-day notice about its 1.x rewrite (a fresh cache folder: it is due) stays out of our output
        "from vbayes.diagnostics import rhat_ess\n"
        "import numpy as np\n"
        "rhat, _ = rhat_ess({'z': np.random.default_rng(0).normal(size=(2, 50, 1))})\n"
        "print(float(rhat['z'].max()) < 1.2)\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:4] == ["", "", "True", "True"] and proc.stderr == ""


def test_the_models_python_runs_once_per_layout():
    """`Target.log_density` is one compiled function: building the target, a fit's start, its steps, its checks and
    a Laplace fit all reuse its one trace (with gradients and batches derived from it), so the model's Python runs
    once, not once per program (for a NumPyro model each run costs ~0.1 s)."""
    import jax.numpy as jnp

    import vbayes

    calls = []

    def log_density(p):
        calls.append(1)
        return -0.5 * jnp.sum((p["x"] - 1.0) ** 2)

    target = vbayes.from_logdensity(log_density, {"x": jnp.zeros(3)}, name="once")
    fit = vbayes.advi(target, "fullrank", max_steps=300, progress=False)
    laplace = vbayes.laplace(target)
    assert len(calls) == 1
    assert abs(float(laplace.q.loc[0]) - 1.0) < 1e-6 and abs(float(fit.q.loc[0]) - 1.0) < 0.1
