"""Test configuration: float64 everywhere (closed-form comparisons need it)."""

import jax

jax.config.update("jax_enable_x64", True)
