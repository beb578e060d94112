"""Observation models p(x | z) for a decoder: what its outputs mean and how x is scored.

A decoder maps one latent ``z`` to ``out`` of shape ``data_shape + (n_params,)``; a likelihood turns
``out`` and one image ``x`` (shape ``data_shape``, grey levels in [0, 1] unless said otherwise) into
log p(x | z) **summed over every data dimension** (a scalar per image). Learned noise scales are array
leaves of the likelihood module, so they train with the networks.
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from vbayes.errors import VBayesError

LIKELIHOODS = ("bernoulli", "gaussian", "categorical", "continuous_bernoulli")
SD_MODES = ("fixed", "global", "pixel")


def _describe(x: np.ndarray) -> str:
    return f"min {float(np.min(x)):g}, max {float(np.max(x)):g}"


def _check_finite(x: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        raise VBayesError(f"{name} likelihood: the data have {int(bad.sum())} non-finite values")


class Bernoulli(eqx.Module):
    """x_i ~ Bernoulli(σ(η_i)): log p = Σ_i x_i η_i − softplus(η_i); ``out[..., 0]`` = η (logits).

    Values must lie in [0, 1]. Non-binary values give the cross-entropy, which is not a log-likelihood:
    binarise them (the trainer does so dynamically by default).
    """

    n_params: ClassVar[int] = 1
    name: ClassVar[str] = "bernoulli"

    def log_prob(self, out: Array, x: Array) -> Array:
        """Σ_i x_i η_i − log(1 + e^{η_i}); ``out`` (*S, 1), ``x`` (*S,) -> ()."""
        eta = out[..., 0]
        # softplus written out: cheaper than jax.nn.softplus (logaddexp) in the hot loop, same values
        softplus = jnp.maximum(eta, 0) + jnp.log1p(jnp.exp(-jnp.abs(eta)))
        return jnp.sum(x * eta - softplus)

    def mean(self, out: Array) -> Array:
        """E[x] = σ(η); (*S, 1) -> (*S,)."""
        return jax.nn.sigmoid(out[..., 0])

    def marginal_params(self, x: np.ndarray) -> np.ndarray:
        """The pixel-wise maximum-likelihood fit η_i = logit(x̄_i), x̄ clipped to [10⁻³, 1 − 10⁻³];
        ``(N, *S) -> (*S, 1)``. For grey levels x̄_i is the probability of a 1 after binarisation."""
        p = np.clip(_pixel_mean(x), 1e-3, 1 - 1e-3)
        return np.log(p / (1 - p))[..., None]

    def check(self, x: np.ndarray) -> None:
        """Raise unless every value is in [0, 1] (e.g. 0–255 images must be scaled by 1/255 first)."""
        _check_finite(x, "Bernoulli")
        if x.size and (np.min(x) < 0 or np.max(x) > 1):
            hint = "; scale 0-255 images by 1/255" if np.max(x) > 1 else ""
            raise VBayesError(f"Bernoulli likelihood needs values in [0, 1]; the data have {_describe(x)}{hint}")


class Gaussian(eqx.Module):
    """x_i ~ N(μ_i, s_i²), μ = ``out[..., 0]``; s fixed, one learned scalar, or learned per pixel.

    ``log_sd`` is an array leaf: shape () for ``"global"``, ``data_shape`` for ``"pixel"``; for ``"fixed"``
    it is wrapped in ``stop_gradient`` so it never moves.
    """

    log_sd: Array
    mode: str = eqx.field(static=True)
    n_params: ClassVar[int] = 1
    name: ClassVar[str] = "gaussian"

    def __init__(self, data_shape: tuple[int, ...], sd: float = 0.1, mode: str = "fixed"):
        if mode not in SD_MODES:
            raise VBayesError(f"unknown Gaussian sd mode {mode!r}; use one of {', '.join(SD_MODES)}")
        if not (sd > 0 and math.isfinite(sd)):
            raise VBayesError(f"the Gaussian likelihood's sd must be positive and finite, got {sd}")
        shape = tuple(data_shape) if mode == "pixel" else ()
        self.log_sd = jnp.full(shape, math.log(sd))
        self.mode = mode

    def _log_sd(self) -> Array:
        return jax.lax.stop_gradient(self.log_sd) if self.mode == "fixed" else self.log_sd

    def log_prob(self, out: Array, x: Array) -> Array:
        """Σ_i −½ ((x_i − μ_i)/s_i)² − log s_i − ½ log 2π; ``out`` (*S, 1), ``x`` (*S,) -> ()."""
        log_sd = jnp.broadcast_to(self._log_sd(), x.shape)
        r = (x - out[..., 0]) * jnp.exp(-log_sd)
        return jnp.sum(-0.5 * r**2 - log_sd - 0.5 * math.log(2 * math.pi))

    def mean(self, out: Array) -> Array:
        """E[x] = μ; (*S, 1) -> (*S,)."""
        return out[..., 0]

    def marginal_params(self, x: np.ndarray) -> np.ndarray:
        """The pixel-wise maximum-likelihood mean μ_i = x̄_i; ``(N, *S) -> (*S, 1)``."""
        return _pixel_mean(x)[..., None]

    def check(self, x: np.ndarray) -> None:
        """Any finite real value is in the support."""
        _check_finite(x, "Gaussian")


class Categorical(eqx.Module):
    """Each pixel is one of ``levels`` grey levels j/(levels−1): log p = Σ_i log softmax(out_i)[j_i].

    ``out`` has ``levels`` logits per pixel. Data are grey levels in [0, 1] that are multiples of
    1/(levels−1) (MNIST: 256 levels, the digits: 17).
    """

    levels: int = eqx.field(static=True)
    name: ClassVar[str] = "categorical"

    def __init__(self, levels: int = 256):
        if int(levels) < 2:
            raise VBayesError(f"a categorical likelihood needs at least 2 levels, got {levels}")
        self.levels = int(levels)

    @property
    def n_params(self) -> int:
        return self.levels

    def log_prob(self, out: Array, x: Array) -> Array:
        """Σ_i log softmax(out_i)[round(x_i (L−1))]; ``out`` (*S, L), ``x`` (*S,) -> ()."""
        j = jnp.clip(jnp.round(x * (self.levels - 1)), 0, self.levels - 1).astype(jnp.int32)
        logp = jax.nn.log_softmax(out, axis=-1)
        return jnp.sum(jnp.take_along_axis(logp, j[..., None], axis=-1))

    def mean(self, out: Array) -> Array:
        """E[x] = Σ_j softmax(out)_j · j/(L−1); (*S, L) -> (*S,)."""
        grid = jnp.arange(self.levels, dtype=out.dtype) / (self.levels - 1)
        return jax.nn.softmax(out, axis=-1) @ grid

    def marginal_params(self, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Logits log((n_ij + 1) / (N + L)) from each pixel's counts n_ij of level j (add-one smoothed, so
        unseen levels keep a finite logit); ``(N, *S) -> (*S, L)``."""
        n_pixels = math.prod(x.shape[1:])
        counts = np.zeros(n_pixels * self.levels, np.int64)
        offsets = np.arange(n_pixels) * self.levels
        for start in range(0, len(x), chunk):
            part = np.asarray(x[start : start + chunk], np.float64).reshape(-1, n_pixels)
            j = np.clip(np.round(part * (self.levels - 1)), 0, self.levels - 1).astype(np.int64)
            counts += np.bincount((j + offsets).reshape(-1), minlength=counts.size)
        freq = (counts.reshape(*x.shape[1:], self.levels) + 1.0) / (len(x) + self.levels)
        return np.log(freq)

    def check(self, x: np.ndarray) -> None:
        """Raise unless every value is j/(levels−1) for an integer 0 ≤ j < levels."""
        _check_finite(x, "categorical")
        if not x.size:
            return
        scaled = np.asarray(x, np.float64) * (self.levels - 1)
        if np.min(x) < 0 or np.max(x) > 1 or np.max(np.abs(scaled - np.round(scaled))) > 1e-3:
            raise VBayesError(
                f"categorical likelihood with {self.levels} levels needs grey levels j/{self.levels - 1} in [0, 1]; "
                f"the data have {_describe(x)}"
                + (f"; scale 0-{self.levels - 1} images by 1/{self.levels - 1}" if np.max(x) > 1 else "")
            )


def continuous_bernoulli_log_normaliser(eta: Array) -> Array:
    """log ∫₀¹ e^{ηx} dx = log((e^η − 1)/η), stable at η = 0 (series η/2 + η²/24); shapes elementwise."""
    small = jnp.abs(eta) < 1e-2
    safe = jnp.where(small, 1.0, eta)
    big = jnp.maximum(safe, 0) + jnp.log(-jnp.expm1(-jnp.abs(safe))) - jnp.log(jnp.abs(safe))
    return jnp.where(small, eta / 2 + eta**2 / 24, big)


class ContinuousBernoulli(eqx.Module):
    """A normalised density on [0, 1] for grey levels (Loaiza-Ganem & Cunningham 2019).

    p(x | η) = e^{ηx} / ∫₀¹ e^{ηt} dt; ``out[..., 0]`` = η. It is the Bernoulli cross-entropy made a proper
    density, so it can be compared across models, unlike the cross-entropy on grey levels.
    """

    n_params: ClassVar[int] = 1
    name: ClassVar[str] = "continuous_bernoulli"

    def log_prob(self, out: Array, x: Array) -> Array:
        """Σ_i η_i x_i − log((e^{η_i} − 1)/η_i); ``out`` (*S, 1), ``x`` (*S,) -> ()."""
        eta = out[..., 0]
        return jnp.sum(eta * x - continuous_bernoulli_log_normaliser(eta))

    def mean(self, out: Array) -> Array:
        """E[x] = 1/(1 − e^{−η}) − 1/η (½ + η/12 near 0); (*S, 1) -> (*S,)."""
        eta = out[..., 0]
        small = jnp.abs(eta) < 1e-2
        safe = jnp.where(small, 1.0, eta)
        return jnp.where(small, 0.5 + eta / 12, -1 / jnp.expm1(-safe) - 1 / safe)

    def marginal_params(self, x: np.ndarray) -> np.ndarray:
        """The pixel-wise maximum-likelihood η_i, which solves E_η[x] = x̄_i (x̄ clipped to [0.01, 0.99]),
        by bisection on the increasing mean; ``(N, *S) -> (*S, 1)``."""
        target = np.clip(_pixel_mean(x), 0.01, 0.99)
        lo, hi = np.full_like(target, -200.0), np.full_like(target, 200.0)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            below = np.asarray(self.mean(jnp.asarray(mid)[..., None])) < target
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return (0.5 * (lo + hi))[..., None]

    def check(self, x: np.ndarray) -> None:
        """Raise unless every value is in [0, 1]."""
        _check_finite(x, "continuous Bernoulli")
        if x.size and (np.min(x) < 0 or np.max(x) > 1):
            raise VBayesError(f"continuous Bernoulli likelihood needs values in [0, 1]; the data have {_describe(x)}")


Likelihood = Bernoulli | Gaussian | Categorical | ContinuousBernoulli


def _pixel_mean(x: np.ndarray) -> np.ndarray:
    """x̄ over the images, in float64; ``(N, *S) -> (*S,)``."""
    return np.mean(np.asarray(x, np.float64), axis=0)


def make_likelihood(
    name: str, data_shape: tuple[int, ...], *, sd: float = 0.1, sd_mode: str = "fixed", levels: int = 256
) -> Likelihood:
    """The likelihood called ``name`` (one of :data:`LIKELIHOODS`) for images of ``data_shape``."""
    if name == "bernoulli":
        return Bernoulli()
    if name == "gaussian":
        return Gaussian(data_shape, sd=sd, mode=sd_mode)
    if name == "categorical":
        return Categorical(levels)
    if name == "continuous_bernoulli":
        return ContinuousBernoulli()
    raise VBayesError(f"unknown likelihood {name!r}; use one of {', '.join(LIKELIHOODS)}")
