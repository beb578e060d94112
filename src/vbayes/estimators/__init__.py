"""Estimators with scikit-learn's interface over the conjugate engine: they validate, convert and call it."""

from vbayes.estimators.ard import VBARDRegression, VBBayesianRidge
from vbayes.estimators.lda import LatentDirichletAllocation
from vbayes.estimators.mixture import VariationalGaussianMixture

__all__ = ["LatentDirichletAllocation", "VBARDRegression", "VBBayesianRidge", "VariationalGaussianMixture"]
