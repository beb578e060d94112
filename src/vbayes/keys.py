"""PRNG keys from the seeds users pass: every ``key=`` argument of vbayes takes an int seed, a key or None."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.errors import VBayesError

Array = jax.Array


def _seed_key(seed: int) -> Array:
    """``jax.random.PRNGKey(seed)`` without its compiled seeding program (a first fit's first 0.07 s): for the
    default threefry key the key is the seed's high and low 32 bits, as JAX forms it (a test checks it)."""
    threefry = jax.config.jax_default_prng_impl == "threefry2x32" and not jax.config.jax_enable_custom_prng
    low, high = (-(2**63), 2**63) if jax.config.jax_enable_x64 else (0, 2**31)
    if not threefry or not low <= seed < high:
        return jax.random.PRNGKey(seed)
    return jnp.asarray(np.array([(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF], dtype=np.uint32))


def as_key(key: Array | int | None) -> Array:
    """A PRNG key from an int seed, a key, or None (seed 0)."""
    if key is None:
        return _seed_key(0)
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        if not -(2**63) <= int(key) < 2**63:
            raise VBayesError(
                f"key must be an integer seed that fits in a signed 64-bit integer or a JAX PRNG key, got {key}"
            )
        return _seed_key(int(key))
    if isinstance(key, jax.Array | np.ndarray) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if isinstance(key, jax.Array | np.ndarray) and key.shape[-1:] == (2,) and key.dtype == np.uint32:
        return jnp.asarray(key)
    raise VBayesError(f"key must be an integer seed or a JAX PRNG key, got {type(key).__name__} {key!r}")


def numpy_rng(key: Array) -> np.random.Generator:
    """A NumPy generator seeded by a JAX key's bits: host-side randomness (a permutation of N rows, a subsample)
    that is a fixed function of the key, without compiling a program for it."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
