"""Test configuration: float64 everywhere (closed-form comparisons need it), and compiled code freed after
every test module."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_code():
    """Drop JAX's compiled executables after each module. XLA CPU maps ~8 memory regions per executable and
    the suite compiles thousands (every data shape of every fit); in one process they passed the kernel's
    65,530-mapping limit (vm.max_map_count) and the next compilation segfaulted."""
    yield
    jax.clear_caches()
