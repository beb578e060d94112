"""Stored programs (vbayes.stored): loaded only for the computation they were stored for, never for another."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vbayes
from vbayes import compilation, stored
from vbayes.compilation import count_compilations


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A fresh store for this test (in place of the session's cache folder)."""
    monkeypatch.setattr(compilation, "active_folder", lambda: tmp_path)
    return tmp_path


def _value_and_sample(target, z, n):
    """A program of a target, an array and a static size: log p̃(z) and the mean of n copies of z."""
    return target.log_density(z), jnp.mean(jnp.broadcast_to(z, (n, z.shape[0])), 0)


def _program(parts=("v1",)):
    """A new wrapper (empty memo): as a new process would see the store."""
    return stored.stored(jax.jit(_value_and_sample, static_argnums=2), "test.value", parts, static_argnums=(2,))


def _run(target, z, n=3, parts=("v1",)):
    with count_compilations() as c:
        value, mean = _program(parts)(target, z, n)
    return float(value), np.asarray(mean), c.stored


def _gaussian(scale, shift=0.0, name="g"):
    return vbayes.from_logdensity(
        lambda p: -0.5 * jnp.sum(((p["x"] - shift) / scale) ** 2), {"x": jnp.zeros(2)}, name=name
    )


def test_a_stored_program_is_loaded_for_the_same_computation_and_exported_for_any_other(folder):
    z = jnp.array([0.3, -1.2])
    target = _gaussian(1.0)
    truth = float(target.log_density(z))
    _run(_gaussian(jnp.array([1.0, 2.0])), z)  # a constant array in the model: its values are in the key
    value, mean, events = _run(target, z)
    assert events == [("_value_and_sample", "exported")] and value == pytest.approx(truth, rel=1e-12)
    np.testing.assert_array_equal(mean, z)
    assert len(list((folder / stored.FOLDER).glob("*-cache"))) == 2
    # the same model, data and settings: loaded, the same numbers
    again, _, events = _run(_gaussian(1.0, name="renamed"), z)
    assert events == [("_value_and_sample", "loaded")] and again == value
    # another model of the same shapes, a changed constant, a static argument, a closure's part: never loaded
    for other, n, parts, expected in [
        (_gaussian(2.0), 3, ("v1",), float(_gaussian(2.0).log_density(z))),
        (_gaussian(1.0, shift=0.5), 3, ("v1",), float(_gaussian(1.0, shift=0.5).log_density(z))),
        (_gaussian(jnp.array([1.0, 3.0])), 3, ("v1",), float(_gaussian(jnp.array([1.0, 3.0])).log_density(z))),
        (_gaussian(1.0), 4, ("v1",), truth),
        (_gaussian(1.0), 3, ("v2",), truth),
    ]:
        got, _, events = _run(other, z, n, parts)
        assert events == [("_value_and_sample", "exported")]
        assert got == pytest.approx(expected, rel=1e-12)
    # new arguments of the same shapes run the stored program on themselves
    w = jnp.array([2.0, 0.5])
    got, mean, events = _run(_gaussian(1.0), w)
    assert events == [("_value_and_sample", "loaded")]
    assert got == pytest.approx(float(target.log_density(w)), rel=1e-12)
    np.testing.assert_array_equal(mean, w)


def test_data_are_arguments_and_new_shapes_are_a_new_program(folder):
    def loglik(p, data):
        return -0.5 * jnp.sum((data["y"] - p["m"]) ** 2)

    def target(y):
        return vbayes.from_logdensity(loglik, {"m": jnp.zeros(())}, data={"y": jnp.asarray(y)})

    z = jnp.array([0.7])
    _, _, events = _run(target([1.0, 2.0, 3.0]), z)
    assert events == [("_value_and_sample", "exported")]
    value, _, events = _run(target([0.0, -1.0, 5.0]), z)
    assert events == [("_value_and_sample", "loaded")]
    assert value == pytest.approx(-0.5 * ((0.0 - 0.7) ** 2 + (-1.0 - 0.7) ** 2 + (5.0 - 0.7) ** 2), rel=1e-12)
    _, _, events = _run(target([1.0, 2.0]), z)
    assert events == [("_value_and_sample", "exported")]


def test_a_change_to_vbayes_itself_or_to_jax_settings_is_a_new_key(folder, monkeypatch):
    z = jnp.array([0.3, -1.2])
    _run(_gaussian(1.0), z)
    monkeypatch.setattr(stored, "_environment", lambda: "another vbayes")
    assert _run(_gaussian(1.0), z)[2] == [("_value_and_sample", "exported")]
    with jax.default_matmul_precision("highest"):
        assert _run(_gaussian(1.0), z)[2] == [("_value_and_sample", "exported")]


def test_a_damaged_entry_is_replaced_and_what_cannot_be_named_is_not_stored(folder):
    z = jnp.array([0.3, -1.2])
    truth = float(_gaussian(1.0).log_density(z))
    _run(_gaussian(1.0), z)
    (entry,) = (folder / stored.FOLDER).glob("*-cache")
    store = compilation.FileStore(folder / stored.FOLDER)
    store.put("x", b"not a program")  # a well-formed file (its checksum holds) whose content is not a program
    entry.write_bytes((folder / stored.FOLDER / "x-cache").read_bytes())
    value, _, events = _run(_gaussian(1.0), z)
    assert events == [("_value_and_sample", "exported")] and value == pytest.approx(truth, rel=1e-12)
    assert _run(_gaussian(1.0), z)[2] == [("_value_and_sample", "loaded")]  # and the entry was written again
    # parts=None (a user's optax transformation, a device mesh): the plain jitted function, nothing written
    before = sorted((folder / stored.FOLDER).iterdir())
    value, _, events = _run(_gaussian(3.0), z, parts=None)
    assert events == [] and sorted((folder / stored.FOLDER).iterdir()) == before
    assert value == pytest.approx(float(_gaussian(3.0).log_density(z)), rel=1e-12)


def test_with_the_cache_off_nothing_is_stored(tmp_path, monkeypatch):
    monkeypatch.setattr(compilation, "active_folder", lambda: None)
    value, _, events = _run(_gaussian(1.0), jnp.array([0.3, -1.2]))
    assert events == [] and np.isfinite(value)


def test_a_user_optimiser_fit_runs_unstored_and_a_default_fit_the_same_as_unstored(folder, monkeypatch):
    """A fit through its stored programs gives the numbers of the same fit with the cache off (one process)."""
    target = _gaussian(1.5, shift=0.25)
    with count_compilations() as c:
        on = vbayes.advi(target, "fullrank", key=2, progress=False)
    assert {name for name, _ in c.stored} == {"_start", "run", "_ratio_draws"}
    monkeypatch.setattr(compilation, "active_folder", lambda: None)
    off = vbayes.advi(target, "fullrank", key=2, progress=False)
    np.testing.assert_allclose(on.q.loc, off.q.loc, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(on.trace, off.trace, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(compilation, "active_folder", lambda: folder)
    import optax

    with count_compilations() as c:
        vbayes.advi(target, "fullrank", key=2, optimizer=optax.adam(1e-2), max_steps=200, progress=False)
    assert "run" not in {name for name, _ in c.stored}


_FLOW = """
import json
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import vbayes
from vbayes import flows
q = flows.build_flow("flow", jnp.array([0.5, -1.0, 2.0]), jnp.array([1.0, 2.0, 0.5]), jax.random.PRNGKey(1))
built = q.structure.value is not None
draws = jax.jit(lambda q, k: q.sample(k, 4) + q.log_prob(jnp.zeros(3)))(q, jax.random.PRNGKey(2))
print(json.dumps({"built": built, "draws": [float(v) for v in draws.ravel()]}))
"""


def test_a_flow_built_before_is_read_back_and_its_structure_built_when_a_trace_first_needs_it(tmp_path):
    """A new process reads a flow's initial layers instead of building them (flowjax's construction has a host
    callback, so no program can keep it), and builds the layout's structure only when a trace first needs it, on
    a thread of its own (inside a jitted function here): the same draws as the process that built it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VBAYES_CACHE", "JAX_"))}
    env["VBAYES_CACHE_DIR"] = str(tmp_path)
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-W", "error", "-c", _FLOW], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert runs[0]["built"] and not runs[1]["built"]
    assert runs[1]["draws"] == runs[0]["draws"]


def test_static_data_is_named_by_value_not_by_its_text():
    """Keys name a node's static data by value: NumPy's text of a long array elides its middle, two functions of
    one name in two modules print alike without their addresses, and an object known only by its address makes the
    program unstorable rather than matched to another."""
    import posixpath
    import shlex

    a = np.zeros(2000)
    b = a.copy()
    b[1000] = 1.0
    assert repr(a) == repr(b) and stored._describe_value(a) != stored._describe_value(b)
    assert posixpath.join.__name__ == shlex.join.__name__
    assert stored._describe_value(posixpath.join) != stored._describe_value(shlex.join)
    assert stored._describe_value(lambda x, c=a: x) != stored._describe_value(lambda x: x)

    class Opaque:
        __slots__ = ()

    with pytest.raises(stored._Unstorable):
        stored._describe_value(Opaque())


def test_a_store_that_cannot_be_created_stores_nothing(tmp_path, monkeypatch):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / stored.FOLDER).write_text("a file where the folder would be")
    monkeypatch.setattr(compilation, "active_folder", lambda: blocked)
    value, _, events = _run(_gaussian(1.0), jnp.array([0.3, -1.2]))
    assert events == [] and value == pytest.approx(float(_gaussian(1.0).log_density(jnp.array([0.3, -1.2]))))
