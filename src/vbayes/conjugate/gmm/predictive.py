"""What a fitted mixture says about new points: the posterior predictive density (a Student-t mixture) and the
expected log joint per component (scikit-learn's ``score_samples`` and ``predict_proba`` come from it)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

from vbayes.conjugate.gmm.core import (
    GMMLocal,
    GMMParams,
    GMMPrior,
    apply_factor,
    dim_of,
    mean_weights,
    scale_inverse,
    unit_factor,
)
from vbayes.conjugate.gmm.model import config
from vbayes.conjugate.model import ConjugateModel

Array = jax.Array


def predictive_log_density(model: ConjugateModel, params: GMMParams, x: Array) -> Array:
    """log p(x* | X) under q(β), shape (B,): Σ_k E[π_k] St(x* | m_k, L_k, ν_k + 1 − D),
    L_k = (ν_k + 1 − D) β_k / (1 + β_k) W_k (Bishop 10.81–10.82). With stick-breaking weights the mass
    beyond the truncation, 1 − Σ_k E[π_k], goes to the prior predictive (q of unused sticks is the prior)."""
    ctype, wtype = config(model)
    prior: GMMPrior = model.kl.args[0]
    dim = dim_of(params)
    log_w = jnp.log(mean_weights(params, wtype))
    unit, logdet_w = unit_factor(scale_inverse(params, ctype), ctype, dim)
    means = params.beta_mean / params.beta[:, None]
    dens = _student_t(x, means, unit, logdet_w, params.beta, params.nu, ctype) + log_w[:, None]
    if wtype == "dirichlet_process":
        rest = 1.0 - jnp.sum(jnp.exp(log_w))
        a0, b0, m0, nu0, w0inv, _ = prior
        w0inv_k = w0inv[None]
        u0, ld0 = unit_factor(w0inv_k, ctype, dim)
        d0 = _student_t(x, m0[None], u0, ld0, b0[None], nu0[None], ctype)
        dens = jnp.concatenate([dens, jnp.log(jnp.maximum(rest, 0.0)) + d0], 0)
    return jax.nn.logsumexp(dens, axis=0)


def _student_t(x, means, unit, logdet_w, beta, nu, ctype):
    """log St(x | m_k, L_k, ν_k + 1 − D) for x (B, D), per component: (K, B)."""
    k, dim = means.shape
    dof = nu + 1.0 - dim
    c = dof * beta / (1.0 + beta)
    if ctype == "full":
        y = jnp.einsum("kde,ne->knd", unit, x) - jnp.einsum("kde,ke->kd", unit, means)[:, None, :]
    else:
        u = unit.reshape(k, -1)[:, None, :]
        y = u * (x[None] - means[:, None, :])
    maha = c[:, None] * jnp.sum(y * y, -1)
    logdet_l = dim * jnp.log(c) + logdet_w
    return (gammaln(0.5 * (dof + dim)) - gammaln(0.5 * dof) + 0.5 * logdet_l - 0.5 * dim * jnp.log(dof * math.pi))[
        :, None
    ] - 0.5 * (dof + dim)[:, None] * jnp.log1p(maha / dof[:, None])


def log_joint_terms(model: ConjugateModel, local: GMMLocal, x: Array) -> Array:
    """ρ_nk = E log p(x_n, z_n=k | β) (or its point-mass value), shape (B, K): scikit-learn's
    ``_estimate_weighted_log_prob``; logsumexp over k is its ``score_samples``, softmax its ``predict_proba``."""
    ctype, _ = config(model)
    k, dim = local.mean.shape
    if ctype == "full":
        y = jnp.einsum("kde,ne->nkd", local.factor, x) - apply_factor(local.factor, local.mean, ctype)[None]
    else:
        f = local.factor.reshape(k, -1)[None]
        y = f * (x[:, None, :] - local.mean[None])
    return local.const[None] - 0.5 * jnp.sum(y * y, -1)
