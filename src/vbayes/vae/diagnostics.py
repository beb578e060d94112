"""Is the VAE any good? KL per latent dimension, active units, posterior collapse, reconstruction, bounds.

Active units (Burda et al. 2016): dimension j is active when A_j = Cov_x(E_q[z_j | x]) > 0.01, i.e. the
encoder's mean moves with the input. A dimension with A_j ≈ 0 and KL_j ≈ 0 has collapsed to the prior:
the decoder ignores it. When no dimension is active the whole posterior has collapsed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from vbayes.errors import is_count, is_seed, require
from vbayes.vae.config import check_names
from vbayes.vae.data import binarize as binarize_images
from vbayes.vae.data import check_images
from vbayes.vae.losses import KINDS, elbo, iwae_bound, kl_per_dim
from vbayes.vae.model import VAE

ACTIVE_THRESHOLD = 0.01


class PosteriorCollapseWarning(UserWarning):
    """No latent dimension carries information about x: q(z | x) ≈ p(z) for every x."""


class Evaluation(NamedTuple):
    """Test-set diagnostics, means over ``n`` images in nats per image (sums over pixels).

    ``elbo`` and ``iwae`` (the IWAE_k bound, an estimate of log p(x) from below) are NaN for the
    autoencoder; ``iwae_se`` is the standard error of ``iwae`` over the images (sd / √n: how far another
    test set of n images from the same distribution could move it); ``reconstruction`` is E_q log p(x | z)
    (autoencoder: log p(x | z = loc)); ``reconstruction_error`` Σ_pixels (x − E[x | z = loc])²;
    ``activity`` Cov_x(E_q[z]) per dimension.
    """

    n: int
    k: int
    elbo: float
    iwae: float
    reconstruction: float
    reconstruction_error: float
    kl: float
    kl_per_dim: np.ndarray
    activity: np.ndarray
    active_units: int
    warnings: tuple[str, ...]
    iwae_se: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        d = self._asdict()
        d["kl_per_dim"] = [float(v) for v in self.kl_per_dim]
        d["activity"] = [float(v) for v in self.activity]
        d["warnings"] = list(self.warnings)
        return d


def _batched(fn: Callable[[Array, Array], Array], x: Array, key: Array, batch_size: int) -> np.ndarray:
    """``fn(x_batch, key_i)`` over ``x`` in batches, concatenated along the first axis."""
    parts = [
        np.asarray(fn(x[s : s + batch_size], jax.random.fold_in(key, i)))
        for i, s in enumerate(range(0, x.shape[0], batch_size))
    ]
    return np.concatenate(parts, 0)


@eqx.filter_jit
def _encode(model: VAE, x: Array) -> tuple[Array, Array]:
    return jax.vmap(model.encode)(x)


def posterior_means(model: VAE, x: Array, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """E_q[z | x] and log Var_q[z | x] for every image: ``(N, *S) -> ((N, d), (N, d))``."""
    locs, log_vars = [], []
    for s in range(0, x.shape[0], batch_size):
        m, lv = _encode(model, jnp.asarray(x[s : s + batch_size]))
        locs.append(np.asarray(m))
        log_vars.append(np.asarray(lv))
    return np.concatenate(locs), np.concatenate(log_vars)


def kl_per_dimension(model: VAE, x: Array, batch_size: int = 500) -> np.ndarray:
    """(1/N) Σ_n KL(q(z_j | x_n) ‖ N(0, 1)) for each latent dimension j: ``(N, *S) -> (d,)``."""
    loc, log_var = posterior_means(model, x, batch_size)
    return np.asarray(kl_per_dim(jnp.asarray(loc), jnp.asarray(log_var))).mean(0)


def activity(model: VAE, x: Array, batch_size: int = 500) -> np.ndarray:
    """A_j = Cov_x(E_q[z_j | x]) (the variance over the data of the encoder's mean): ``(N, *S) -> (d,)``."""
    loc, _ = posterior_means(model, x, batch_size)
    return loc.var(0, ddof=1) if loc.shape[0] > 1 else np.zeros(loc.shape[1])


def active_units(model: VAE, x: Array, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Number of dimensions with A_j = Cov_x(E_q[z_j]) > ``threshold`` (Burda et al. 2016: 0.01)."""
    return int(np.sum(activity(model, x) > threshold))


def collapse_messages(kl_dims: np.ndarray, act: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> tuple[str, ...]:
    """Plain-words warnings about inactive dimensions and posterior collapse (empty when all is well)."""
    d = len(act)
    n_active = int(np.sum(act > threshold))
    if n_active == 0:
        return (
            f"posterior collapse: none of the {d} latent dimensions is active (Cov_x(E_q[z]) ≤ {threshold}; "
            f"total KL {float(np.sum(kl_dims)):.3g} nats): the decoder ignores z. Try a smaller beta, KL annealing, "
            "free bits or a weaker decoder",
        )
    if n_active < d:
        inactive = [j for j in range(d) if act[j] <= threshold]
        shown = ", ".join(map(str, inactive[:10])) + (" ..." if len(inactive) > 10 else "")
        return (f"{d - n_active} of {d} latent dimensions are inactive (collapsed to the prior): {shown}",)
    return ()


ONE_IMAGE = "one image: activity Cov_x(E_q[z]) needs two or more, so active units and collapse are not measured"


def check_evaluate_arguments(key: Any, **options: Any) -> None:
    """A :class:`VBayesError` naming the first bad argument of :func:`evaluate`."""
    check_names([("model kind", options["kind"], KINDS)])
    counts = ("k", "chunk", "batch_size")
    require((name, options[name], is_count(options[name], 1), "an integer ≥ 1") for name in counts)
    binarize = options["binarize"]
    require([("binarize", binarize, binarize is None or isinstance(binarize, bool), "None, True or False")])
    if not isinstance(key, jax.Array | np.ndarray):
        require([("key", key, is_seed(key), "a JAX key or an integer in [0, 2**32)")])


def evaluate(
    model: VAE,
    x: Array,
    key: Array | int = 0,
    *,
    k: int = 5000,
    kind: str = "vae",
    chunk: int = 500,
    batch_size: int = 50,
    binarize: bool | None = None,
) -> Evaluation:
    """All diagnostics on images ``x`` ``(N, *S)``: ELBO (10 draws per image, closed-form KL), IWAE_k
    (k = 5,000: the usual log p(x) estimate),
    reconstruction, KL per dimension, active units and collapse warnings (also raised as
    :class:`PosteriorCollapseWarning`). ``binarize`` (default: Bernoulli likelihood on non-binary data)
    draws one fixed binarisation from ``key``. ``kind="ae"`` skips the bounds (NaN). ``k``, ``chunk`` and
    ``batch_size`` must be integers ≥ 1, an integer ``key`` a seed in [0, 2**32) (a :class:`VBayesError` names the
    argument). Activity needs two images or more: with one, no unit counts as active and no collapse is claimed."""
    check_evaluate_arguments(key, k=k, kind=kind, chunk=chunk, batch_size=batch_size, binarize=binarize)
    x = check_images(x, model.decoder.data_shape, "evaluation data")
    model.likelihood.check(x)
    key = key if isinstance(key, jax.Array | np.ndarray) else jax.random.PRNGKey(int(key))
    k_bin, k_elbo, k_iwae = jax.random.split(key, 3)
    xj = jnp.asarray(x)
    is_binary = bool(np.all((x == 0) | (x == 1)))
    if binarize or (binarize is None and model.likelihood.name == "bernoulli" and not is_binary):
        xj = binarize_images(k_bin, xj)
    loc, log_var = posterior_means(model, xj)
    kl_dims = np.asarray(kl_per_dim(jnp.asarray(loc), jnp.asarray(log_var))).mean(0)
    act = loc.var(0, ddof=1) if loc.shape[0] > 1 else np.zeros(loc.shape[1])
    recon_mean = np.concatenate(
        [np.asarray(_decode_mean(model, jnp.asarray(loc[s : s + 500]))) for s in range(0, len(loc), 500)]
    )
    err = float(np.mean(np.sum((np.asarray(xj) - recon_mean).reshape(len(x), -1) ** 2, -1)))
    nan = math.nan
    if kind == "ae":
        rec = float(np.mean(_batched(lambda xb, kb: _ae_rec(model, xb), xj, k_elbo, batch_size * 10)))
        elbo_v, iwae_v, iwae_se = nan, nan, nan
        messages: tuple[str, ...] = ()
    else:
        elbos = _batched(lambda xb, kb: _elbo(model, xb, kb), xj, k_elbo, batch_size * 10)
        elbo_v = float(np.mean(elbos))
        rec = elbo_v + float(np.sum(kl_dims))
        iwaes = np.asarray(_batched(lambda xb, kb: _iwae(model, xb, kb, k, chunk), xj, k_iwae, batch_size))
        iwae_v = float(np.mean(iwaes))
        iwae_se = float(np.std(iwaes, ddof=1) / np.sqrt(iwaes.size)) if iwaes.size > 1 else nan
        messages = collapse_messages(kl_dims, act) if len(x) > 1 else (ONE_IMAGE,)
        if messages and messages[0].startswith("posterior collapse"):
            warnings.warn(messages[0], PosteriorCollapseWarning, stacklevel=2)
    return Evaluation(
        len(x),
        int(k),
        elbo_v,
        iwae_v,
        rec,
        err,
        float(np.sum(kl_dims)),
        kl_dims,
        act,
        int(np.sum(act > ACTIVE_THRESHOLD)),
        messages,
        iwae_se,
    )


@eqx.filter_jit
def _decode_mean(model: VAE, z: Array) -> Array:
    return jax.vmap(model.mean)(z)


@eqx.filter_jit
def _ae_rec(model: VAE, x: Array) -> Array:
    return jax.vmap(lambda xb: model.log_likelihood(model.encode(xb)[0], xb))(x)


@eqx.filter_jit
def _elbo(model: VAE, x: Array, key: Array) -> Array:
    return elbo(model, x, key, samples=10)


@eqx.filter_jit
def _iwae(model: VAE, x: Array, key: Array, k: int, chunk: int) -> Array:
    return iwae_bound(model, x, key, k, chunk=chunk)
