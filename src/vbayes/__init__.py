"""vbayes: variational Bayesian inference on JAX."""

from vbayes.errors import VBayesError
from vbayes.estimators.mixture import VariationalGaussianMixture
from vbayes.families import (
    FullRankGaussian,
    LowRankGaussian,
    LowRankPrecisionGaussian,
    MeanFieldGaussian,
    PointMass,
    kl,
)
from vbayes.fit import Fit, FitInfo
from vbayes.infer.advi import advi
from vbayes.infer.laplace import laplace
from vbayes.infer.nuts import nuts
from vbayes.targets import Target, from_least_squares, from_logdensity, from_loglik, from_numpyro

__all__ = [
    "Fit",
    "FitInfo",
    "FullRankGaussian",
    "LowRankGaussian",
    "LowRankPrecisionGaussian",
    "MeanFieldGaussian",
    "PointMass",
    "Target",
    "VBayesError",
    "VariationalGaussianMixture",
    "advi",
    "laplace",
    "nuts",
    "from_least_squares",
    "from_logdensity",
    "from_loglik",
    "from_numpyro",
    "kl",
]
__version__ = "0.1.0"
