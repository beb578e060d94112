"""vbayes: variational Bayesian inference on JAX."""

from vbayes.errors import VBayesError
from vbayes.families import FullRankGaussian, LowRankGaussian, MeanFieldGaussian, PointMass, kl
from vbayes.fit import Fit, FitInfo
from vbayes.infer import advi, nuts
from vbayes.targets import Target, from_logdensity, from_numpyro

__all__ = [
    "Fit",
    "FitInfo",
    "FullRankGaussian",
    "LowRankGaussian",
    "MeanFieldGaussian",
    "PointMass",
    "Target",
    "VBayesError",
    "advi",
    "nuts",
    "from_logdensity",
    "from_numpyro",
    "kl",
]
__version__ = "0.1.0"
