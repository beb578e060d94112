"""Losses and bounds. Convention: **sum over the data dimensions, mean over the batch**.

For a batch x_1..x_B of D-dimensional images the loss is

    L = (1/B) Σ_b [ −E_q log p(x_b | z) + β · KL(q(z | x_b) ‖ N(0, I)) ],

whose β = 1 value is the negative ELBO in nats per image. Averaging the reconstruction over the D pixels
instead, as much code does, while summing the KL gives (1/D) times the loss with β = D: a heavily
regularised model that is no longer a VAE of the data (:func:`negative_elbo_pixel_mean` shows it).
The KL is in closed form, per latent dimension, from :func:`vbayes.families.kl_to_standard_normal`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from vbayes.errors import VBayesError
from vbayes.families import kl_to_standard_normal
from vbayes.vae.model import VAE

KINDS = ("vae", "iwae", "ae")
IWAE_GRADIENTS = ("reparam", "dreg")
_LOG_2PI = math.log(2 * math.pi)


class LossInfo(NamedTuple):
    """Batch means: ``bound`` (the ELBO for β = 1 and no free bits, the IWAE bound, or for the autoencoder
    log p(x | z = loc)), ``reconstruction`` E_q log p(x | z), ``kl`` and ``kl_per_dim`` ``(latent,)``."""

    bound: Array
    reconstruction: Array
    kl: Array
    kl_per_dim: Array


# ----------------------------------------------------------------------------------------------
# KL to the unit Gaussian: two formulas, one value


def kl_per_dim(loc: Array, log_var: Array) -> Array:
    """KL(N(μ_j, σ_j²) ‖ N(0, 1)) per dimension = ½ (σ² + μ² − 1 − log σ²); ``(..., d) -> (..., d)``."""
    return kl_to_standard_normal(loc[..., None], log_var=log_var[..., None])


def kl_from_log_var(loc: Array, log_var: Array) -> Array:
    """The log-variance formula: −½ Σ_j (1 + log σ_j² − μ_j² − σ_j²); ``(..., d) -> (...)``."""
    return -0.5 * jnp.sum(1 + log_var - loc**2 - jnp.exp(log_var), -1)


def kl_from_scale(loc: Array, scale: Array) -> Array:
    """The standard-deviation formula: Σ_j (−log σ_j + (σ_j² + μ_j²)/2 − ½); ``(..., d) -> (...)``.

    Equal to :func:`kl_from_log_var` with σ = exp(½ log_var). The classic bug is feeding log σ (or σ)
    to the other formula; :func:`kl_from_log_var` must get log σ².
    """
    return jnp.sum(-jnp.log(scale) + 0.5 * (scale**2 + loc**2) - 0.5, -1)


# ----------------------------------------------------------------------------------------------
# per-image pieces


def _batch_encode(model: VAE, x: Array) -> tuple[Array, Array]:
    return jax.vmap(model.encode)(x)


def _log_joint(model: VAE, x: Array, z: Array) -> Array:
    """log p(x_b | z_bk) + log p(z_bk); ``x`` (B, *S), ``z`` (B, K, d) -> (B, K).

    The B·K latents go through the decoder as one flat batch (one matrix product per layer).
    """
    b, k, d = z.shape
    x_rep = jnp.broadcast_to(x[:, None], (b, k, *x.shape[1:])).reshape(b * k, *x.shape[1:])
    log_lik = jax.vmap(model.log_likelihood)(z.reshape(b * k, d), x_rep).reshape(b, k)
    return log_lik - 0.5 * jnp.sum(z**2 + _LOG_2PI, -1)


def _log_weights(model: VAE, x: Array, loc: Array, log_var: Array, eps: Array) -> Array:
    """log w = log p(x_b, z) − log q(z | x_b), z = μ_b + σ_b ε; ``eps`` (B, K, d) -> (B, K)."""
    z = loc[:, None] + jnp.exp(0.5 * log_var)[:, None] * eps
    log_q = -0.5 * jnp.sum(eps**2 + log_var[:, None] + _LOG_2PI, -1)
    return _log_joint(model, x, z) - log_q


def _log_weights_at(model: VAE, x: Array, z: Array, loc: Array, log_var: Array) -> Array:
    """log w = log p(x_b, z) − log N(z; μ_b, σ_b²) at given latents ``z`` (B, K, d) -> (B, K)."""
    r2 = (z - loc[:, None]) ** 2 * jnp.exp(-log_var)[:, None]
    return _log_joint(model, x, z) + 0.5 * jnp.sum(r2 + log_var[:, None] + _LOG_2PI, -1)


def _dreg_log_weights(model: VAE, x: Array, loc: Array, log_var: Array, eps: Array) -> Array:
    """log w ``(B, K)`` for z = μ + σ ε whose backward pass is the doubly reparameterised gradient of the
    IWAE bound (Tucker et al. 2019): given the cotangent g = ∂L/∂log w, the decoder gets Σ_k g_k ∂log w_k/∂θ
    as usual, while the latents get w̃_k g_k ∂log w_k/∂z_k, w̃ = softmax(log w), with q's μ, σ held fixed
    inside log q. For L = IWAE_K (g = w̃) the encoder's gradient is Σ_k w̃_k² ∂log w_k/∂z_k ∂z_k/∂φ, unbiased
    for ∇_φ IWAE_K and zero when q is the exact posterior. Only valid under a log-mean-exp of these weights.
    """
    params, static = eqx.partition(model, eqx.is_inexact_array)
    z = loc[:, None] + jnp.exp(0.5 * log_var)[:, None] * eps
    fixed = (x, jax.lax.stop_gradient(loc), jax.lax.stop_gradient(log_var))

    def log_w(params, z, x, loc_q, log_var_q):
        return _log_weights_at(eqx.combine(params, static), x, z, loc_q, log_var_q)

    def forward(params, z, *fixed):
        lw, pullback = jax.vjp(lambda p, zz: log_w(p, zz, *fixed), params, z)
        return lw, (lw, pullback, fixed)

    def backward(residuals, g):
        lw, pullback, fixed = residuals
        g_params, g_z = pullback(g)
        g_z = g_z * jax.nn.softmax(lw, -1)[..., None]
        return (g_params, g_z, *jax.tree_util.tree_map(jnp.zeros_like, fixed))

    dreg = jax.custom_vjp(log_w)
    dreg.defvjp(forward, backward)
    return dreg(params, z, *fixed)


def elbo(model: VAE, x: Array, key: Array, samples: int = 1) -> Array:
    """ELBO(x_b) = mean_s log p(x_b | z_s) − KL(q(z | x_b) ‖ p(z)) (closed-form KL); ``(B, *S) -> (B,)``."""
    loc, log_var = _batch_encode(model, x)
    eps = jax.random.normal(key, (x.shape[0], samples, loc.shape[-1]), loc.dtype)
    z = loc[:, None] + jnp.exp(0.5 * log_var)[:, None] * eps
    rec = jax.vmap(jax.vmap(model.log_likelihood, (0, None)))(z, x).mean(1)
    return rec - kl_per_dim(loc, log_var).sum(-1)


def iwae_bound(model: VAE, x: Array, key: Array, k: int, chunk: int | None = None) -> Array:
    """IWAE_K(x_b) = log (1/K) Σ_k w_k, w_k = p(x_b, z_k)/q(z_k | x_b), z_k ~ q; ``(B, *S) -> (B,)``.

    With ``chunk`` the K draws are taken ``chunk`` at a time (a running log-sum-exp), so K = 5,000
    needs memory for ``chunk`` decoder outputs per image only.
    """
    if int(k) < 1:
        raise VBayesError(f"the number of importance samples K must be at least 1, got {k}")
    return _iwae_bound(model, x, key, int(k), None if chunk is None else int(chunk))


@eqx.filter_jit
def _iwae_bound(model: VAE, x: Array, key: Array, k: int, chunk: int | None) -> Array:
    """:func:`iwae_bound` compiled once per (shapes, K, chunk): called eagerly, the chunked ``lax.scan`` would
    otherwise be traced again on every call."""
    loc, log_var = _batch_encode(model, x)
    return _iwae_from_encoding(model, x, loc, log_var, key, k, chunk)


def _iwae_from_encoding(model, x, loc, log_var, key, k, chunk=None) -> Array:
    if int(k) < 1:
        raise VBayesError(f"the number of importance samples K must be at least 1, got {k}")
    k = int(k)
    shape = (x.shape[0], k, loc.shape[-1])
    if chunk is None or chunk >= k:
        lw = _log_weights(model, x, loc, log_var, jax.random.normal(key, shape, loc.dtype))
        return jax.nn.logsumexp(lw, -1) - math.log(k)

    def body(carry, i):
        top, total = carry
        eps = jax.random.normal(jax.random.fold_in(key, i), (x.shape[0], chunk, loc.shape[-1]), loc.dtype)
        lw = _log_weights(model, x, loc, log_var, eps)
        lw = jnp.where(i * chunk + jnp.arange(chunk) < k, lw, -jnp.inf)
        new_top = jnp.maximum(top, jnp.max(lw, -1))
        total = total * jnp.exp(top - new_top) + jnp.sum(jnp.exp(lw - new_top[:, None]), -1)
        return (new_top, total), None

    init = (jnp.full(x.shape[0], -jnp.inf, loc.dtype), jnp.zeros(x.shape[0], loc.dtype))
    (top, total), _ = jax.lax.scan(body, init, jnp.arange(-(-k // chunk)))
    return top + jnp.log(total) - math.log(k)


# ----------------------------------------------------------------------------------------------
# training losses: (model, x, key) -> (scalar loss, LossInfo)


def negative_elbo(
    model: VAE, x: Array, key: Array, *, beta: float | Array = 1.0, free_bits: float = 0.0
) -> tuple[Array, LossInfo]:
    """(1/B) Σ_b −log p(x_b | z_b) + β Σ_j max(λ, (1/B) Σ_b KL_bj), z_b ~ q(z | x_b); ``(B, *S) -> ()``.

    λ = ``free_bits`` nats per latent dimension (Kingma et al. 2016): dimensions whose batch-mean KL is
    below λ get no pressure to shrink further. With λ = 0 and β = 1 the loss is the negative ELBO.
    """
    loc, log_var = _batch_encode(model, x)
    eps = jax.random.normal(key, loc.shape, loc.dtype)
    z = loc + jnp.exp(0.5 * log_var) * eps
    rec = jax.vmap(model.log_likelihood)(z, x)
    kl_dims = kl_per_dim(loc, log_var).mean(0)
    kl_term = jnp.sum(jnp.maximum(kl_dims, free_bits)) if free_bits > 0 else jnp.sum(kl_dims)
    loss = -jnp.mean(rec) + beta * kl_term
    kl = jnp.sum(kl_dims)
    return loss, LossInfo(jnp.mean(rec) - kl, jnp.mean(rec), kl, kl_dims)


def negative_elbo_pixel_mean(model: VAE, x: Array, key: Array) -> Array:
    """The common but different convention (1/B) Σ_b [ −(1/D) log p(x_b | z_b) + KL_b ]; ``(B, *S) -> ()``.

    Equals ``negative_elbo(model, x, key, beta=D)[0] / D`` (D = pixels per image): β = D, not 1.
    """
    loc, log_var = _batch_encode(model, x)
    eps = jax.random.normal(key, loc.shape, loc.dtype)
    z = loc + jnp.exp(0.5 * log_var) * eps
    d = math.prod(x.shape[1:])
    rec = jax.vmap(model.log_likelihood)(z, x)
    return jnp.mean(-rec / d + kl_per_dim(loc, log_var).sum(-1))


def iwae_loss(model: VAE, x: Array, key: Array, *, k: int = 50, gradient: str = "dreg") -> tuple[Array, LossInfo]:
    """−(1/B) Σ_b IWAE_K(x_b); ``(B, *S) -> ()``. ``gradient``: ``"dreg"``, the doubly reparameterised
    gradient (Tucker et al. 2019: the same value and decoder gradient, an encoder gradient with less variance
    whose signal does not fade as K grows), or ``"reparam"``, the reparameterised one of Burda et al. 2016."""
    if gradient not in IWAE_GRADIENTS:
        raise VBayesError(f"unknown IWAE gradient {gradient!r}; use one of {', '.join(IWAE_GRADIENTS)}")
    loc, log_var = _batch_encode(model, x)
    if gradient == "dreg":
        eps = jax.random.normal(key, (x.shape[0], int(k), loc.shape[-1]), loc.dtype)
        bound = jax.nn.logsumexp(_dreg_log_weights(model, x, loc, log_var, eps), -1) - math.log(k)
    else:
        bound = _iwae_from_encoding(model, x, loc, log_var, key, k)
    kl_dims = kl_per_dim(jax.lax.stop_gradient(loc), jax.lax.stop_gradient(log_var)).mean(0)
    nan = jnp.asarray(jnp.nan, bound.dtype)
    return -jnp.mean(bound), LossInfo(jnp.mean(bound), nan, jnp.sum(kl_dims), kl_dims)


def autoencoder_loss(model: VAE, x: Array, key: Array | None = None) -> tuple[Array, LossInfo]:
    """−(1/B) Σ_b log p(x_b | z = loc(x_b)): the deterministic autoencoder with the same networks."""
    loc, _ = _batch_encode(model, x)
    rec = jnp.mean(jax.vmap(model.log_likelihood)(loc, x))
    zero = jnp.zeros(loc.shape[-1], loc.dtype)
    return -rec, LossInfo(rec, rec, jnp.asarray(0.0, loc.dtype), zero)


def kl_weight(step: Array | int, beta: float, anneal_steps: int) -> Array:
    """KL annealing: β · min(1, step / anneal_steps) (β from the first step when ``anneal_steps`` = 0)."""
    if anneal_steps <= 0:
        return jnp.asarray(beta, jnp.float32)
    return beta * jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / anneal_steps)


def make_objective(
    kind: str, *, k: int = 50, free_bits: float = 0.0, iwae_gradient: str = "dreg"
) -> Callable[[VAE, Array, Array, Array], tuple[Array, LossInfo]]:
    """``loss(model, x, key, kl_weight) -> (loss, LossInfo)`` for ``kind`` in :data:`KINDS`
    (``iwae_gradient``: see :func:`iwae_loss`)."""
    if kind == "vae":
        return lambda model, x, key, w: negative_elbo(model, x, key, beta=w, free_bits=free_bits)
    if kind == "iwae":
        if int(k) < 1:
            raise VBayesError(f"IWAE needs K ≥ 1 importance samples, got {k}")
        return lambda model, x, key, w: iwae_loss(model, x, key, k=int(k), gradient=iwae_gradient)
    if kind == "ae":
        return lambda model, x, key, w: autoencoder_loss(model, x)
    raise VBayesError(f"unknown model kind {kind!r}; use one of {', '.join(KINDS)}")
