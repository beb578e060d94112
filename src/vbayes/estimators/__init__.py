"""Estimators with scikit-learn's interface over the conjugate engine: they validate, convert and call it."""

from vbayes.estimators.mixture import VariationalGaussianMixture

__all__ = ["VariationalGaussianMixture"]
