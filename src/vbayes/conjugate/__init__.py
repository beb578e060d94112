"""Conjugate-exponential models, each a :class:`~vbayes.infer.conjugate.ConjugateModel` of pure functions."""

from vbayes.conjugate.gmm import (
    GMMLocal,
    GMMParams,
    GMMPrior,
    GMMStats,
    bayesian_gmm,
    default_prior,
    flat_prior,
    init_params,
    make_prior,
    point_estimates,
    predictive_log_density,
)

__all__ = [
    "GMMLocal",
    "GMMParams",
    "GMMPrior",
    "GMMStats",
    "bayesian_gmm",
    "default_prior",
    "flat_prior",
    "init_params",
    "make_prior",
    "point_estimates",
    "predictive_log_density",
]
