"""Normal mean with known noise sd and a normal prior: the posterior of mu is normal, in closed form.

mu ~ N(m0, s0²), y_i ~ N(mu, sigma²)  ⇒  mu | y ~ N(m, v), 1/v = 1/s0² + n/sigma², m = v (m0/s0² + Σy/sigma²).
Fit with ``vbayes fit tests/data/normal_model.py:model``.
"""

import numpy as np
import numpyro
import numpyro.distributions as dist

PRIOR_MEAN, PRIOR_SD = 0.0, 10.0


def model(y, sigma):
    """mu ~ N(PRIOR_MEAN, PRIOR_SD²), y_i ~ N(mu, sigma²); y: (n,)."""
    mu = numpyro.sample("mu", dist.Normal(PRIOR_MEAN, PRIOR_SD))
    with numpyro.plate("obs", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


data = {"y": np.array([3.1, 2.4, 4.0, 3.6, 2.9, 3.3, 4.4, 2.2]), "sigma": 1.5}


def exact_posterior() -> tuple[float, float]:
    """Posterior mean and sd of mu given ``data``."""
    y, sigma = data["y"], data["sigma"]
    precision = 1.0 / PRIOR_SD**2 + y.size / sigma**2
    mean = (PRIOR_MEAN / PRIOR_SD**2 + y.sum() / sigma**2) / precision
    return float(mean), float(precision**-0.5)
