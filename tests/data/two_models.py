"""Two models of the same 30 observations (mean ≈ 3, sd 1.5): ``right`` (unknown mean, the noise sd known) and
``wrong`` (mean fixed at 0, unknown scale). ``vbayes compare-models two_models.py:right two_models.py:wrong``."""

import numpy as np
import numpyro
import numpyro.distributions as dist

SIGMA = 1.5


def right(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("obs", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, SIGMA), obs=y)


def wrong(y):
    scale = numpyro.sample("scale", dist.HalfNormal(10.0))
    with numpyro.plate("obs", y.shape[0]):
        numpyro.sample("y", dist.Normal(0.0, scale), obs=y)


data = {"y": 3.0 + SIGMA * np.random.default_rng(0).normal(size=30)}
