"""A vbayes Target whose log density is NaN outside the tiny box |x| < 0.001 (narrower than any q a fit
starts from) while its curvature asks for sd 10: ADVI diverges."""

import jax.numpy as jnp

import vbayes


def log_p(params):
    """-x²/200 summed inside the box |x_i| < 0.001, NaN outside it."""
    x = params["x"]
    return jnp.sum(jnp.where(jnp.abs(x) < 0.001, -(x**2) / 200.0, jnp.nan))


target = vbayes.from_logdensity(log_p, {"x": jnp.zeros(2)}, name="nan_outside")
