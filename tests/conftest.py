"""Test configuration: float64 everywhere (closed-form comparisons need it), one persistent compilation cache
for the test runs, unoptimised compilation in the default run, and compiled code freed after every test module."""

import os
from pathlib import Path

# One compilation cache for every test, every pytest-xdist worker and every `vbayes` command the tests start: a
# program compiled once (the same model at the same shapes, in another module, another process or an earlier run) is
# loaded, not compiled again. Compilation is most of a cold run's time, so a second run is several times faster. The
# folder is $VBAYES_CACHE_DIR when set (point it at a new empty folder for a cold run), else the test cache next to
# vbayes's own (~/.cache/vbayes/test-jax), kept apart so that the tests' thousands of programs never evict a user's.
# JAX keys each entry by the program, the compile options and the JAX/XLA versions, and vbayes checksums it, so an
# entry is either the same executable or not used (tests/test_compilation.py checks a cached fit is identical).
# Set before vbayes is imported.
if "VBAYES_CACHE_DIR" not in os.environ:
    _base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    os.environ["VBAYES_CACHE_DIR"] = str(Path(_base) / "vbayes" / "test-jax")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # small programs too

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


QUICK_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"

SHIPPED_POSTERIORDB = Path(__file__).resolve().parent / "data" / "posteriordb"
"""The copy of the 11 posteriordb posteriors that ships with the tests (posteriordb's layout, full draws)."""


def pytest_configure(config: pytest.Config) -> None:
    """The default run (slow checks deselected) compiles every program without LLVM's optimisations and with XLA's
    older CPU fusion emitters (both quicker to compile; :data:`vbayes.compilation.QUICK`): it compiles thousands of
    small programs and runs each briefly, so optimising them costs more time than it saves. The slow run, whose
    fits run each program for minutes, keeps the options users get.
    Set before JAX starts its backend; inherited by the worker processes and the commands the tests start; a
    user's own XLA_FLAGS optimisation level is kept (and then none of these flags is added)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if (config.getoption("markexpr") or "").strip() == "not slow" and "optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {QUICK_COMPILE}".strip()
    _find_posteriordb()


def _find_posteriordb() -> None:
    """The posteriordb reference posteriors: $VBAYES_POSTERIORDB or ../shared/posteriordb when there is one (the
    loader's own search), else the copy shipped in tests/data/posteriordb, through $VBAYES_POSTERIORDB so that every
    test, worker process and `vbayes` command the tests start reads the same files. After the XLA flags: this
    imports vbayes."""
    from vbayes.errors import VBayesError
    from vbayes.examples.posteriordb.loader import ENV_VAR, posteriordb_root

    if os.environ.get(ENV_VAR):
        return  # the user's choice, even a wrong one: the tests then say what is wrong with it
    try:
        posteriordb_root()
    except VBayesError:
        if SHIPPED_POSTERIORDB.is_dir():
            os.environ[ENV_VAR] = str(SHIPPED_POSTERIORDB)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_code():
    """Drop JAX's compiled executables after each module. XLA CPU maps ~8 memory regions per executable and
    the suite compiles thousands (every data shape of every fit); in one process they passed the kernel's
    65,530-mapping limit (vm.max_map_count) and the next compilation segfaulted."""
    yield
    jax.clear_caches()
