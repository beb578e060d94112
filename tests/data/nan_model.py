"""A model whose data hold a NaN: the CLI must say which argument and where."""

import numpy as np
import numpyro
import numpyro.distributions as dist


def model(y):
    """mu ~ N(0, 1), y_i ~ N(mu, 1)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("obs", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


data = {"y": np.array([0.5, np.nan, 1.0])}
