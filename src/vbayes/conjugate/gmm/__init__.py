"""Bayesian Gaussian mixture as a conjugate-exponential model (Bishop PRML §10.2; Blei & Jordan 2006).

Model, for components k = 1..K and points n = 1..N::

    π ~ Dirichlet(α₀, …, α₀)  or  π_k = v_k ∏_{j<k} (1 − v_j), v_k ~ Beta(1, α₀)   (truncated sticks)
    Λ_k ~ Wishart(ν₀, W₀),  μ_k | Λ_k ~ N(m₀, (β₀ Λ_k)⁻¹),  z_n ~ Cat(π),  x_n | z_n=k ~ N(μ_k, Λ_k⁻¹)

with q(z) q(π) ∏_k q(μ_k, Λ_k) mean field. ``W₀⁻¹`` is scikit-learn's ``covariance_prior``. The sticks
are truncated as scikit-learn does (Blei & Jordan 2006 with K sticks, none forced to 1): the mass
∏_k (1 − v_k) belongs to components beyond K, which q(z) never uses; the ELBO is that of this model.

Covariance types follow scikit-learn's ``BayesianGaussianMixture`` exactly. ``full``: q(μ_k, Λ_k) is
Normal-Wishart. ``diag`` / ``spherical``: the same Normal-Wishart model with W₀ diagonal / isotropic and
q(Λ_k) = Wishart(ν_k, W_k) restricted to a diagonal / isotropic scale W_k — the optimum in that family is
W_k⁻¹ = diag(M_k) (resp. tr(M_k)/D · I), M_k the full-covariance update, with ν_k = ν₀ + N_k unchanged.
This is what scikit-learn computes (its E-step uses the Wishart E[log|Λ|] = Σ_d ψ((ν−d)/2) + D log 2 +
log|W| for every type), so it is a proper ELBO: CAVI on it never decreases. It is *not* a product of
independent Normal-Gamma factors per dimension, whose E[log λ_d] would be ψ(ν/2) − log b_d.

q(β) is held in natural / sufficient-statistic form (:class:`GMMParams`), so that every update is
``prior + scale · stats`` and SVI's natural-gradient step is a convex combination of two such tuples.
The local factors q(z_n) appear only through the expected log joint
``E_q[log p(x_n, z_n=k | β)] = c_k − ½‖F_k (x_n − m_k)‖²`` (:class:`GMMLocal`): F_kᵀF_k = E[Λ_k] = ν_k W_k
for VB, and the same form at the mode of q(β) for EM / MAP-EM (:func:`bayesian_gmm` explains the limit).
"""

from vbayes.conjugate.gmm.core import (
    COVARIANCE_TYPES,
    WEIGHT_PRIORS,
    GMMLocal,
    GMMParams,
    GMMPrior,
    GMMStats,
    mean_weights,
)
from vbayes.conjugate.gmm.model import bayesian_gmm, chunk_rows, config, point_estimates, suff_stats
from vbayes.conjugate.gmm.predictive import log_joint_terms, predictive_log_density
from vbayes.conjugate.gmm.priors import column_mean, default_prior, flat_prior, init_params, make_prior

__all__ = [
    "COVARIANCE_TYPES",
    "WEIGHT_PRIORS",
    "GMMLocal",
    "GMMParams",
    "GMMPrior",
    "GMMStats",
    "bayesian_gmm",
    "chunk_rows",
    "column_mean",
    "config",
    "default_prior",
    "flat_prior",
    "init_params",
    "log_joint_terms",
    "make_prior",
    "mean_weights",
    "point_estimates",
    "predictive_log_density",
    "suff_stats",
]
