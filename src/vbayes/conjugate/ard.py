"""Variational Bayes linear regression with automatic relevance determination (ARD) as a conjugate model.

Longer than 400 lines because it is one model: the contract's nine functions (with draws and the density of q),
the coordinate ascent its global step runs and the constructor's checks, each with its formula in its docstring.

Model (Drugowitsch 2014, arXiv:1310.5438, §2 and its ARD variant; Bishop 2006 §7.2.1, §10.3), rows (x_n, y_n),
x_n ∈ R^d::

    y_n | x_n, w, τ ~ N(x_nᵀw, τ⁻¹),   w | τ, α ~ N(0, (τ diag(α))⁻¹),   τ ~ Gamma(a₀, b₀),   α_k ~ Gamma(c₀, d₀)

(Gamma(shape, rate)). Drugowitsch's scaling — the weights' prior precision is τα_k, α_k measuring it in units
of the noise precision — keeps (w, τ) jointly conjugate, so the mean-field family is q(w, τ) q(α) with q(w, τ)
Normal-Gamma: a tighter bound than Bishop's q(w) q(τ) q(α), and the exact posterior once α is known. With
``tied=True`` one α is shared by all weights (Bayesian ridge regression), with ``groups`` one per group of
weights. The closed-form updates (one α per weight; a group's α sums its weights' terms)::

    q(w, τ) = N(w | P⁻¹h, (τP)⁻¹) Gamma(τ | a, b):  P = E[diag α] + Σ x xᵀ,  h = Σ x y,
                                                    a = a₀ + N/2,  b = b₀ + ½(Σ y² − hᵀP⁻¹h)
    q(α_k)  = Gamma(c₀ + ½, d₀ + ½ E[τ w_k²]),      E[τ w_k²] = (P⁻¹)_kk + (a/b) m_k²

On the engine (:mod:`vbayes.conjugate.model`): the rows are ``[x_n, y_n]`` (width d + 1) as in
:mod:`~vbayes.conjugate.linreg`; there are no local latent variables, so the local step only sums Σ w x xᵀ,
Σ w x y, Σ w y², Σ w, and ``global_step(stats, scale)`` runs the coordinate ascent between q(w, τ) and q(α) on
those statistics (scaled by N/n) to its fixed point, starting from q(α) = prior. This is correct because the
ELBO depends on the data only through the statistics: given them, the ascent between the global factors needs
no pass over the data, and each of its sweeps is an exact coordinate update, so the bound rises at every sweep
and stops at a stationary point of the full ELBO — the point CAVI with one sweep per pass would reach, in one
pass instead of hundreds (what matters for data streamed from disk or held by Dask): the model is
``latent_free``, so ``cavi`` stops after its first iteration (a second would see the same statistics and return
the same q). ``expected_log_joint`` is E_q log p(y | X, w, τ)
and ``kl`` is KL(q(w, τ, α) ‖ p(w, τ, α)), so the engine's ELBO is the variational lower bound on log p(y | X),
with every constant. SVI (:func:`vbayes.conjugate.svi`) averages λ̂ = the fixed point on a minibatch's
statistics scaled by N/S (Hoffman et al. 2013's λ̂ for a minibatch replicated N/S times). The α step is not
linear in the statistics (N/S copies of a minibatch make weak features look relevant), so SVI's limit is biased
away from CAVI's fixed point, by a gap that does not shrink with ρ (measured in ``benchmarks/RESULTS.md``, ARD).

``fixed_alpha`` / ``fixed_noise_precision`` hold α / τ at given values (q(α), q(τ) then point masses with no KL
term): with α fixed, q(w, τ) is the exact Normal-Gamma posterior and the ELBO the exact log evidence; with both,
q(w) = N(P⁻¹h, (τP)⁻¹) is the exact Gaussian posterior for the prior precision τ diag(α). ``active`` holds
chosen weights at exactly 0 (pruned features: P's rows and columns of the identity there, h = 0, no terms in the
ELBO), which removes them from the model without changing any shape. The modes (EM,
MAP-EM) are defined as the contract asks (the mode of q(w, τ); log p at it and at E[α]) but are not an ARD
algorithm: use ``mode="vb"``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, gammaln

from vbayes.conjugate.model import ConjugateModel
from vbayes.errors import is_count, is_positive, is_real, require

Array = jax.Array
_LOG_2PI = math.log(2 * math.pi)


class ARDPrior(NamedTuple):
    """τ ~ Gamma(``noise_shape`` a₀, ``noise_rate`` b₀) (); α_g ~ Gamma(``alpha_shape`` c₀, ``alpha_rate`` d₀)
    (k,) for k groups of weights, ``groups`` (d, k) the one-hot membership (identity: ARD; a column of ones:
    tied); ``fixed_noise`` (0,) or (1,) τ held fixed; ``fixed_alpha`` (0,) or (k,) α held fixed; the global step's
    ascent stops when a sweep raises the ELBO by < ``tol`` nats per point, or after ``max_sweeps`` sweeps;
    ``active`` (d,) 1, or 0 for a weight held at exactly 0 (a pruned feature: out of the model, same shapes)."""

    groups: Array
    active: Array
    noise_shape: Array
    noise_rate: Array
    alpha_shape: Array
    alpha_rate: Array
    fixed_noise: Array
    fixed_alpha: Array
    tol: Array
    max_sweeps: Array


class ARDParams(NamedTuple):
    """q(w, τ) q(α) by natural parameters: q(w | τ) = N(P⁻¹h, (τP)⁻¹) with ``precision`` P (d, d) and ``shift``
    h (d,); q(τ) = Gamma(``noise_shape`` a, b) with ``noise_rate`` = b + ½hᵀP⁻¹h () (= b₀ + ½Σy², linear in the
    statistics); q(α_k) = Gamma(``alpha_shape`` c_k, ``alpha_rate`` d_k) (k,). Unused fields of a fixed
    hyperparameter keep the prior's values."""

    precision: Array
    shift: Array
    noise_shape: Array
    noise_rate: Array
    alpha_shape: Array
    alpha_rate: Array


class ARDStats(NamedTuple):
    """Σ w x xᵀ (d, d), Σ w x y (d,), Σ w y² (), Σ w ()."""

    xx: Array
    xy: Array
    yy: Array
    n: Array


class ARDLocal(NamedTuple):
    """What the likelihood needs from q: E log τ (), E τ (), E[τ w] (d,), E[τ w wᵀ] (d, d)."""

    log_tau: Array
    tau: Array
    tau_w: Array
    tau_ww: Array


class ARDMoments(NamedTuple):
    """Moments of q: ``mean`` m = P⁻¹h (d,), ``cov`` P⁻¹ (d, d) (Cov[w | τ] = P⁻¹/τ; 0 on held weights),
    ``logdet`` log|P| (), ``rate`` b (), E τ and E log τ (), E α and E log α (d,: each weight's α)."""

    mean: Array
    cov: Array
    logdet: Array
    rate: Array
    tau: Array
    log_tau: Array
    alpha: Array
    log_alpha: Array


# ----------------------------------------------------------------------------------------------------
# moments


def statistics(rows: Array, w: Array | None = None) -> ARDStats:
    """The weighted statistics of rows [x, y] (n, d + 1), weights ``w`` (n,) (default 1)."""
    x, y = rows[:, :-1], rows[:, -1]
    w = jnp.ones(rows.shape[0], rows.dtype) if w is None else w
    xw = x * w[:, None]
    return ARDStats(xw.T @ x, xw.T @ y, jnp.sum(w * y * y), jnp.sum(w))


def _kl_gamma(a: Array, b: Array, a0: Array, b0: Array) -> Array:
    """KL(Gamma(a, b) ‖ Gamma(a₀, b₀)) = (a − a₀)ψ(a) − lnΓ(a) + lnΓ(a₀) + a₀ log(b/b₀) + a(b₀ − b)/b."""
    return (a - a0) * digamma(a) - gammaln(a) + gammaln(a0) + a0 * (jnp.log(b) - jnp.log(b0)) + a * (b0 - b) / b


def _log_gamma_pdf(x: Array, a: Array, b: Array) -> Array:
    return a * jnp.log(b) - gammaln(a) + (a - 1.0) * jnp.log(x) - b * x


def _alpha_moments(prior: ARDPrior, shape: Array, rate: Array) -> tuple[Array, Array]:
    """(E α, E log α) per weight (d,): the fixed α, or those of Gamma(shape, rate), of each weight's group."""
    if prior.fixed_alpha.shape[0]:
        return prior.groups @ prior.fixed_alpha, prior.groups @ jnp.log(prior.fixed_alpha)
    return prior.groups @ (shape / rate), prior.groups @ (digamma(shape) - jnp.log(rate))


def moments(prior: ARDPrior, params: ARDParams) -> ARDMoments:
    """The moments of q(w, τ) q(α) at λ = ``params``."""
    chol = jnp.linalg.cholesky(params.precision)
    d = params.shift.shape[0]
    inv_chol = jax.scipy.linalg.solve_triangular(chol, jnp.eye(d, dtype=chol.dtype), lower=True)
    cov = inv_chol.T @ inv_chol * jnp.outer(prior.active, prior.active)
    mean = cov @ params.shift
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    rate = params.noise_rate - 0.5 * params.shift @ mean
    if prior.fixed_noise.shape[0]:
        tau, log_tau = prior.fixed_noise[0], jnp.log(prior.fixed_noise[0])
    else:
        tau, log_tau = params.noise_shape / rate, digamma(params.noise_shape) - jnp.log(rate)
    alpha, log_alpha = _alpha_moments(prior, params.alpha_shape, params.alpha_rate)
    return ARDMoments(mean, cov, logdet, rate, tau, log_tau, alpha, log_alpha)


def _expect(prior: ARDPrior, params: ARDParams) -> ARDLocal:
    """E log τ, E τ, E[τw] = E τ m, E[τwwᵀ] = P⁻¹ + E τ m mᵀ."""
    mo = moments(prior, params)
    return ARDLocal(mo.log_tau, mo.tau, mo.tau * mo.mean, mo.cov + mo.tau * jnp.outer(mo.mean, mo.mean))


def _mode_point(prior: ARDPrior, params: ARDParams) -> tuple[Array, Array]:
    """The mode of q(w, τ): (m, τ̂), τ̂ = (a − 1 + d/2)/b (or the fixed τ)."""
    mo = moments(prior, params)
    if prior.fixed_noise.shape[0]:
        return mo.mean, mo.tau
    return mo.mean, (params.noise_shape - 1.0 + 0.5 * jnp.sum(prior.active)) / mo.rate


def _mode(prior: ARDPrior, params: ARDParams) -> ARDLocal:
    m, tau = _mode_point(prior, params)
    return ARDLocal(jnp.log(tau), tau, tau * m, tau * jnp.outer(m, m))


# ----------------------------------------------------------------------------------------------------
# the ELBO's terms


def _expected_log_lik(prior: ARDPrior, local: ARDLocal, stats: ARDStats) -> Array:
    """Σ w E log N(y | xᵀw, τ⁻¹) = ½Σw (E log τ − log 2π) − ½(E τ Σwy² − 2 E[τw]ᵀΣwxy + tr(E[τwwᵀ] Σwxxᵀ))."""
    quad = local.tau * stats.yy - 2.0 * local.tau_w @ stats.xy + jnp.sum(local.tau_ww * stats.xx)
    return 0.5 * stats.n * (local.log_tau - _LOG_2PI) - 0.5 * quad


def _local_step(prior: ARDPrior, local: ARDLocal, rows: Array, w: Array) -> tuple[ARDStats, Array]:
    """The statistics of the rows [x, y] weighted by w, and their expected log-likelihood (no latents)."""
    stats = statistics(rows, w)
    return stats, _expected_log_lik(prior, local, stats)


def _kl(prior: ARDPrior, params: ARDParams) -> Array:
    """KL(q(w, τ) q(α) ‖ p(w | τ, α) p(τ) p(α)) = ½Σ_active[log|P| − 1 − E log α_k + E α_k E[τw_k²]]
    + KL(q(τ) ‖ p(τ)) + Σ KL(q(α_g) ‖ p(α_g)) (the last two absent for a fixed τ, α)."""
    mo = moments(prior, params)
    tau_w2 = jnp.diag(mo.cov) + mo.tau * mo.mean**2
    prior_term = jnp.sum(prior.active * (mo.alpha * tau_w2 - mo.log_alpha - 1.0))
    out = 0.5 * (mo.logdet + prior_term)
    if not prior.fixed_noise.shape[0]:
        out = out + _kl_gamma(params.noise_shape, mo.rate, prior.noise_shape, prior.noise_rate)
    if not prior.fixed_alpha.shape[0]:
        out = out + jnp.sum(_kl_gamma(params.alpha_shape, params.alpha_rate, prior.alpha_shape, prior.alpha_rate))
    return out


def elbo(prior: ARDPrior, params: ARDParams, stats: ARDStats, scale: float | Array = 1.0) -> Array:
    """The ELBO of λ = ``params`` on ``stats`` standing for ``scale`` times as many points: scale · E log p(y | w, τ)
    − KL(q ‖ p)."""
    return scale * _expected_log_lik(prior, _expect(prior, params), stats) - _kl(prior, params)


# ----------------------------------------------------------------------------------------------------
# the global step: coordinate ascent between q(w, τ) and q(α) given the statistics


def _weights_update(prior: ARDPrior, stats: ARDStats, scale, alpha: Array, old: ARDParams) -> ARDParams:
    """The optimal q(w, τ) for E α = ``alpha`` (d,): P = diag(E α) + s Σxxᵀ, h = s Σxy, a = a₀ + sN/2,
    b + ½hᵀP⁻¹h = b₀ + ½ s Σy² (P's rows and columns of held weights those of the identity, h's 0)."""
    on = prior.active
    return old._replace(
        precision=(jnp.diag(alpha) + scale * stats.xx) * jnp.outer(on, on) + jnp.diag(1.0 - on),
        shift=scale * stats.xy * on,
        noise_shape=prior.noise_shape + 0.5 * scale * stats.n,
        noise_rate=prior.noise_rate + 0.5 * scale * stats.yy,
    )


def _alpha_update(prior: ARDPrior, params: ARDParams) -> ARDParams:
    """The optimal q(α) for q(w, τ): c_g = c₀ + (active weights in group g)/2, d_g = d₀ + ½ Σ_{k in g} E[τ w_k²]."""
    if prior.fixed_alpha.shape[0]:
        return params
    mo = moments(prior, params)
    tau_w2 = jnp.diag(mo.cov) + mo.tau * mo.mean**2
    size = prior.active @ prior.groups
    return params._replace(
        alpha_shape=prior.alpha_shape + 0.5 * size, alpha_rate=prior.alpha_rate + 0.5 * tau_w2 @ prior.groups
    )


def _sweep(prior: ARDPrior, stats: ARDStats, scale, params: ARDParams) -> tuple[ARDParams, Array]:
    """q(w, τ) then q(α), from q(α) in ``params``; and the ELBO after them."""
    alpha, _ = _alpha_moments(prior, params.alpha_shape, params.alpha_rate)
    new = _alpha_update(prior, _weights_update(prior, stats, scale, alpha, params))
    return new, elbo(prior, new, stats, scale)


def initial_params(prior: ARDPrior) -> ARDParams:
    """q = the prior: P = diag(E_p α) (1 for held weights), h = 0, (a, b) = (a₀, b₀), (c, d) = (c₀, d₀)."""
    alpha, _ = _alpha_moments(prior, prior.alpha_shape, prior.alpha_rate)
    zero = jnp.zeros(alpha.shape[0], prior.noise_rate.dtype)
    precision = jnp.diag(alpha * prior.active + 1.0 - prior.active)
    return ARDParams(precision, zero, prior.noise_shape, prior.noise_rate, prior.alpha_shape, prior.alpha_rate)


def ascent(prior: ARDPrior, stats: ARDStats, scale, trace_len: int = 0) -> tuple[ARDParams, Array, Array]:
    """Sweeps from q(α) = prior until one raises the ELBO by < ``prior.tol`` nats per point (of scale · Σw), or
    ``prior.max_sweeps``. Returns (λ, the ELBO after each of the first ``trace_len`` sweeps (NaN after the last),
    sweeps done). Stops early, keeping the last finite λ, if the ELBO becomes non-finite."""
    tol_total = prior.tol * scale * stats.n
    start = initial_params(prior)
    dtype = stats.yy.dtype
    trace = jnp.full((trace_len,), jnp.nan, dtype)

    def cond(carry):
        _, value, prev, i, _ = carry
        return (i < prior.max_sweeps) & jnp.isfinite(value) & ~(jnp.abs(value - prev) < tol_total)

    def body(carry):
        params, value, _, i, trace = carry
        new, new_value = _sweep(prior, stats, scale, params)
        ok = jnp.isfinite(new_value)
        params = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, params)
        trace = trace.at[i].set(new_value, mode="drop") if trace_len else trace
        return params, new_value, value, i + 1, trace

    init = (start, jnp.asarray(-jnp.inf, dtype), jnp.asarray(jnp.nan, dtype), jnp.asarray(0, jnp.int32), trace)
    params, _, _, sweeps, trace = jax.lax.while_loop(cond, body, body(init))
    return params, trace, sweeps


def _global_step(prior: ARDPrior, stats: ARDStats, scale) -> ARDParams:
    return ascent(prior, stats, scale)[0]


# ----------------------------------------------------------------------------------------------------
# the point of the modes, draws and the density of q


def _log_prior(prior: ARDPrior, params: ARDParams) -> Array:
    """log p(w, τ, α) at w = m, τ = τ̂ (the mode of q(w, τ)) and α = E α: the free factors' densities."""
    m, tau = _mode_point(prior, params)
    alpha, _ = _alpha_moments(prior, params.alpha_shape, params.alpha_rate)
    prec = tau * alpha
    out = 0.5 * jnp.sum(prior.active * (jnp.log(prec) - _LOG_2PI - prec * m**2))
    if not prior.fixed_noise.shape[0]:
        out = out + _log_gamma_pdf(tau, prior.noise_shape, prior.noise_rate)
    if not prior.fixed_alpha.shape[0]:
        log_pdf = _log_gamma_pdf(params.alpha_shape / params.alpha_rate, prior.alpha_shape, prior.alpha_rate)
        out = out + jnp.sum(jnp.where(_used_groups(prior), log_pdf, 0.0))
    return out


def _used_groups(prior: ARDPrior) -> Array:
    """(k,) whether each α has an active weight (the others are out of the model with their weights)."""
    return (prior.active @ prior.groups) > 0


def _sample(prior: ARDPrior, params: ARDParams, key: Array, n: int, point_mass: bool) -> dict[str, Array]:
    """``{"w": (n, d), "tau": (n,), "alpha": (n, k)}`` from q (fixed hyperparameters left out); for a point mass,
    n copies of (m, τ̂, E α)."""
    mo = moments(prior, params)
    d, dtype = mo.mean.shape[0], mo.mean.dtype
    k_tau, k_w, k_alpha = jax.random.split(key, 3)
    free_tau, free_alpha = not prior.fixed_noise.shape[0], not prior.fixed_alpha.shape[0]
    if point_mass:
        m, tau = _mode_point(prior, params)
        out = {"w": jnp.broadcast_to(m, (n, d))}
        if free_tau:
            out["tau"] = jnp.full((n,), tau)
        if free_alpha:
            out["alpha"] = jnp.broadcast_to(params.alpha_shape / params.alpha_rate, (n,) + params.alpha_rate.shape)
        return out
    tau = jax.random.gamma(k_tau, params.noise_shape, (n,), dtype) / mo.rate if free_tau else jnp.full((n,), mo.tau)
    eps = jax.random.normal(k_w, (n, d), dtype)
    chol = jnp.linalg.cholesky(params.precision)  # w − m = L⁻ᵀε/√τ has covariance (τLLᵀ)⁻¹ = (τP)⁻¹
    noise = jax.scipy.linalg.solve_triangular(chol, eps.T, lower=True, trans="T").T * prior.active
    out = {"w": mo.mean + noise / jnp.sqrt(tau)[:, None]}
    out |= {"tau": tau} if free_tau else {}
    if free_alpha:
        shape = (n,) + params.alpha_rate.shape
        out["alpha"] = jax.random.gamma(k_alpha, params.alpha_shape, shape, dtype) / params.alpha_rate
    return out


def _log_q(prior: ARDPrior, params: ARDParams, draws: dict[str, Array]) -> Array:
    """log q at ``draws`` (n rows): log N(w | m, (τP)⁻¹) + log Gamma(τ | a, b) + Σ log Gamma(α | c, d)."""
    mo = moments(prior, params)
    d = jnp.sum(prior.active)
    tau = draws["tau"] if "tau" in draws else jnp.full(draws["w"].shape[:1], mo.tau)
    diff = (draws["w"] - mo.mean) * prior.active
    quad = jnp.sum((diff @ params.precision) * diff, -1)
    out = 0.5 * (d * (jnp.log(tau) - _LOG_2PI) + mo.logdet - tau * quad)
    if "tau" in draws:
        out = out + _log_gamma_pdf(tau, params.noise_shape, mo.rate)
    if "alpha" in draws:  # the α of groups with no active weight (their prior) left out
        log_pdf = _log_gamma_pdf(draws["alpha"], params.alpha_shape, params.alpha_rate)
        out = out + jnp.sum(jnp.where(_used_groups(prior), log_pdf, 0.0), -1)
    return out


@functools.cache
def _functions() -> tuple:
    return (_expect, _mode, _local_step, _global_step, _expected_log_lik, _kl, _log_prior, None, None, _sample, _log_q)


# ----------------------------------------------------------------------------------------------------
# public constructors


def ard_regression_model(
    n_features: int,
    a0: float = 1e-6,
    b0: float = 1e-6,
    c0: float = 1e-6,
    d0: float = 1e-6,
    *,
    tied: bool = False,
    groups=None,
    fixed_alpha=None,
    fixed_noise_precision: float | None = None,
    active=None,
    tol: float | None = None,
    max_sweeps: int = 10_000,
) -> ConjugateModel:
    """The model for rows [x, y], x ∈ R^``n_features``: y ~ N(xᵀw, τ⁻¹), w ~ N(0, (τ diag α)⁻¹), τ ~ Gamma(a0, b0),
    α ~ Gamma(c0, d0) (shape, rate), one α per weight (ARD); ``tied``: one α for all (Bayesian ridge); ``groups``:
    (n_features,) integer labels 0..k−1, one α per group. ``fixed_alpha`` (a scalar or one value per α) and
    ``fixed_noise_precision`` hold α and τ at those values. ``active``: (n_features,) bools, False for a weight held
    at 0 (a pruned feature, left out of the model while the shapes, hence the compiled programs, stay). The global
    step's ascent stops when a sweep raises the ELBO by < ``tol`` nats per point (None: 1e-10 in float64, 1e-6 in
    float32, above its rounding), or after ``max_sweeps`` sweeps."""
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    tol = (1e-10 if dtype == jnp.float64 else 1e-6) if tol is None else tol
    require(
        [
            ("n_features", n_features, is_count(n_features), "an integer ≥ 1"),
            *((name, v, is_positive(v), "positive and finite") for name, v in (("a0", a0), ("b0", b0))),
            *((name, v, is_positive(v), "positive and finite") for name, v in (("c0", c0), ("d0", d0))),
            ("tol", tol, is_real(tol) and tol >= 0, "≥ 0 and finite"),
            ("max_sweeps", max_sweeps, is_count(max_sweeps), "an integer ≥ 1"),
        ],
        "ard_regression_model",
    )
    membership = _membership(n_features, tied, groups)
    k = membership.shape[1]
    alpha = np.zeros(0) if fixed_alpha is None else np.asarray(fixed_alpha, dtype=np.float64)
    if fixed_alpha is not None:
        alpha = np.full(k, float(alpha)) if alpha.ndim == 0 else alpha
        ok = alpha.shape == (k,) and bool(np.all(np.isfinite(alpha)) and np.all(alpha > 0))
        require([("fixed_alpha", fixed_alpha, ok, f"positive and finite, a scalar or of shape ({k},)")], "ard")
    noise = np.zeros(0) if fixed_noise_precision is None else np.asarray([fixed_noise_precision], dtype=np.float64)
    ok = fixed_noise_precision is None or is_positive(fixed_noise_precision)
    require([("fixed_noise_precision", fixed_noise_precision, ok, "None or positive and finite")], "ard")
    on = np.ones(n_features) if active is None else np.asarray(active)
    ok = on.shape == (n_features,) and np.isin(on, (0, 1)).all()
    require([("active", active, ok, f"None or ({n_features},) booleans")], "ard")
    prior = ARDPrior(
        jnp.asarray(membership, dtype),
        jnp.asarray(on, dtype),
        jnp.asarray(a0, dtype),
        jnp.asarray(b0, dtype),
        jnp.full((k,), c0, dtype),
        jnp.full((k,), d0, dtype),
        jnp.asarray(noise, dtype),
        jnp.asarray(alpha, dtype),
        jnp.asarray(tol, dtype),
        jnp.asarray(max_sweeps, jnp.int32),
    )
    return ConjugateModel(
        *(None if f is None else jax.tree_util.Partial(f, prior) for f in _functions()), latent_free=True
    )


def _membership(d: int, tied: bool, groups) -> np.ndarray:
    """The (d, k) one-hot matrix of each weight's α."""
    if groups is None:
        return np.ones((d, 1)) if tied else np.eye(d)
    labels = np.asarray(groups)
    integers = np.issubdtype(labels.dtype, np.integer) and labels.shape == (d,)
    k = int(labels.max()) + 1 if integers else 0
    ok = integers and not tied and labels.min() >= 0 and np.array_equal(np.unique(labels), np.arange(k))
    require([("groups", groups, ok, f"integer labels 0..k-1 (each used), shape ({d},), and not with tied=True")], "ard")
    return np.eye(k)[labels]


def model_prior(model: ConjugateModel) -> ARDPrior:
    """The prior (and settings) of a model made by :func:`ard_regression_model`."""
    return model.kl.args[0]


def prior_params(model: ConjugateModel) -> ARDParams:
    """The starting point of CAVI and SVI: q = the prior, except q(τ) = Gamma(max(a₀, 1), b₀ max(a₀, 1)/a₀), of the
    same mean a₀/b₀. (CAVI's result does not depend on it; a₀ ≪ 1 would give E log τ = ψ(a₀) − log b₀ ≈ −1/a₀,
    whose N/2 multiple in the first E-step costs float32 its precision.)"""
    prior = model_prior(model)
    shape = jnp.maximum(prior.noise_shape, 1.0)
    return initial_params(prior)._replace(noise_shape=shape, noise_rate=prior.noise_rate * shape / prior.noise_shape)
