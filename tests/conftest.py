"""Test configuration: float64 everywhere (closed-form comparisons need it), one persistent compilation cache
for the whole run, and compiled code freed after every test module."""

import os
import shutil
import tempfile

# One compilation cache for the run, shared by every test, every pytest-xdist worker and every `vbayes` command
# the tests start: a program compiled once (the same model at the same shapes, in another module or another
# process) is loaded, not compiled again. A fresh folder per run, so that each run starts cold and no run depends on
# an earlier one; set VBAYES_CACHE_DIR yourself to keep one between runs. Set before vbayes is imported.
_RUN_CACHE = None
if "VBAYES_CACHE_DIR" not in os.environ:
    _RUN_CACHE = os.environ.get("VBAYES_TEST_RUN_CACHE") or tempfile.mkdtemp(prefix="vbayes-test-cache-")
    os.environ["VBAYES_TEST_RUN_CACHE"] = _RUN_CACHE  # xdist workers inherit it from the controller
    os.environ["VBAYES_CACHE_DIR"] = _RUN_CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # small programs too

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


def pytest_sessionfinish(session, exitstatus):
    """The controller (or a run without workers) removes the run's cache folder."""
    if _RUN_CACHE is not None and not hasattr(session.config, "workerinput"):
        shutil.rmtree(_RUN_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_code():
    """Drop JAX's compiled executables after each module. XLA CPU maps ~8 memory regions per executable and
    the suite compiles thousands (every data shape of every fit); in one process they passed the kernel's
    65,530-mapping limit (vm.max_map_count) and the next compilation segfaulted."""
    yield
    jax.clear_caches()
