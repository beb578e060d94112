"""vbayes: variational Bayesian inference on JAX.

``import vbayes`` loads JAX, NumPyro's distributions and the inference core, and turns on the persistent
compilation cache (:mod:`vbayes.compilation`); the scikit-learn estimator, ArviZ, matplotlib, Equinox and Dask
load when a feature first needs them.
"""

from typing import Any

from vbayes.compilation import enable_cache
from vbayes.cross_validation import loo
from vbayes.errors import VBayesError
from vbayes.families import (
    FullRankGaussian,
    LowRankGaussian,
    LowRankPrecisionGaussian,
    MeanFieldGaussian,
    PointMass,
    QuasiNewtonGaussian,
    kl,
)
from vbayes.fit import Fit, FitInfo
from vbayes.infer.advi import advi
from vbayes.infer.importance import importance_sampling
from vbayes.infer.laplace import laplace
from vbayes.infer.neutra import neutra
from vbayes.infer.nuts import nuts
from vbayes.infer.pathfinder import pathfinder
from vbayes.mixtures import Mixture
from vbayes.targets import Target, from_least_squares, from_logdensity, from_loglik, from_numpyro

__all__ = [
    "Fit",
    "FitInfo",
    "FullRankGaussian",
    "LowRankGaussian",
    "LowRankPrecisionGaussian",
    "MeanFieldGaussian",
    "Mixture",
    "PointMass",
    "QuasiNewtonGaussian",
    "Target",
    "VBayesError",
    "VariationalGaussianMixture",
    "advi",
    "importance_sampling",
    "laplace",
    "loo",
    "neutra",
    "nuts",
    "pathfinder",
    "from_least_squares",
    "from_logdensity",
    "from_loglik",
    "from_numpyro",
    "kl",
]
__version__ = "0.1.0"

enable_cache()


def __getattr__(name: str) -> Any:
    """The scikit-learn estimator, imported on first use (scikit-learn takes longer to import than JAX)."""
    if name == "VariationalGaussianMixture":
        from vbayes.estimators.mixture import VariationalGaussianMixture

        return VariationalGaussianMixture
    raise AttributeError(f"module 'vbayes' has no attribute {name!r}")
