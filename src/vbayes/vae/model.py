"""The model: an encoder, a decoder and a likelihood in one Equinox pytree, built from a plain config.

A :class:`VAE` describes p(z) = N(0, I), p(x | z) = likelihood(decoder(z)) and q(z | x) = N(encoder(x)).
The deterministic autoencoder uses the very same module (``kind="ae"`` in training): it decodes the
encoder's ``loc`` and never uses ``log_var``, which is why its decoder cannot generate from p(z).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax import Array

from vbayes.errors import VBayesError
from vbayes.vae.likelihoods import LIKELIHOODS, SD_MODES, Likelihood, make_likelihood
from vbayes.vae.networks import ACTIVATIONS, NETWORKS, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's structure (saved as JSON next to its checkpoints).

    ``width`` is the hidden width (MLP) or the first layer's channels (conv); ``depth`` the number of
    hidden layers of the MLPs. ``sd``/``sd_mode`` only matter for the Gaussian likelihood, ``levels``
    only for the categorical one.
    """

    data_shape: tuple[int, ...]
    latent: int = 16
    network: str = "mlp"
    width: int = 200
    depth: int = 2
    activation: str = "tanh"
    likelihood: str = "bernoulli"
    sd: float = 0.1
    sd_mode: str = "fixed"
    levels: int = 256

    def __post_init__(self):
        object.__setattr__(self, "data_shape", tuple(int(n) for n in self.data_shape))
        if not self.data_shape or any(n < 1 for n in self.data_shape):
            raise VBayesError(f"data_shape must be a non-empty tuple of positive sizes, got {self.data_shape}")
        if int(self.latent) < 1:
            raise VBayesError(f"the latent dimension must be at least 1, got {self.latent}")
        if self.network not in NETWORKS:
            raise VBayesError(f"unknown network {self.network!r}; use one of {', '.join(NETWORKS)}")
        if self.network == "conv" and len(self.data_shape) != 2:
            raise VBayesError(
                f"the convolutional network takes grey images (H, W), not data of shape {self.data_shape}"
            )
        if self.activation not in ACTIVATIONS:
            raise VBayesError(f"unknown activation {self.activation!r}; use one of {', '.join(ACTIVATIONS)}")
        if self.likelihood not in LIKELIHOODS:
            raise VBayesError(f"unknown likelihood {self.likelihood!r}; use one of {', '.join(LIKELIHOODS)}")
        if self.sd_mode not in SD_MODES:
            raise VBayesError(f"unknown Gaussian sd mode {self.sd_mode!r}; use one of {', '.join(SD_MODES)}")
        if int(self.width) < 1 or int(self.depth) < 0:
            raise VBayesError(f"width must be ≥ 1 and depth ≥ 0, got {self.width} and {self.depth}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


class VAE(eqx.Module):
    """p(z) = N(0, I); p(x | z) = ``likelihood(decoder(z))``; q(z | x) = N(``encoder(x)``), log-variance form."""

    encoder: eqx.Module
    decoder: eqx.Module
    likelihood: Likelihood

    @property
    def latent(self) -> int:
        return self.encoder.latent

    def encode(self, x: Array) -> tuple[Array, Array]:
        """q(z | x) for one image: ``(loc, log_var)``, each ``(latent,)``."""
        return self.encoder(x)

    def decode(self, z: Array) -> Array:
        """The likelihood's parameters for one latent: ``(latent,) -> data_shape + (n_params,)``."""
        return self.decoder(z)

    def log_likelihood(self, z: Array, x: Array) -> Array:
        """log p(x | z) summed over the data dimensions: ``(latent,), data_shape -> ()``."""
        return self.likelihood.log_prob(self.decoder(z), x)

    def mean(self, z: Array) -> Array:
        """E[x | z] (what an image grid shows): ``(latent,) -> data_shape``."""
        return self.likelihood.mean(self.decoder(z))


def with_data_bias(model: VAE, x: np.ndarray) -> VAE:
    """``model`` with its decoder's output bias set to the likelihood's pixel-wise maximum-likelihood fit to
    ``x`` ``(N, *S)`` (Bernoulli: logit of each pixel's mean). Training starts from the best model that
    ignores z instead of from a random bias around logit 0 (Burda et al. 2016's code starts the same way)."""
    params = model.likelihood.marginal_params(np.asarray(x))
    return eqx.tree_at(lambda m: m.decoder, model, model.decoder.with_output_bias(params))


def build_model(config: ModelConfig, key: Array | int = 0) -> VAE:
    """A freshly initialised :class:`VAE` with the structure ``config`` describes."""
    key = jax.random.PRNGKey(key) if isinstance(key, int) else key
    k_enc, k_dec = jax.random.split(key)
    lik = make_likelihood(
        config.likelihood, config.data_shape, sd=config.sd, sd_mode=config.sd_mode, levels=config.levels
    )
    n_params = lik.n_params
    if config.network == "mlp":
        kw = dict(width=config.width, depth=config.depth, act=config.activation)
        enc = MLPEncoder(config.data_shape, config.latent, key=k_enc, **kw)
        dec = MLPDecoder(config.data_shape, config.latent, n_params, key=k_dec, **kw)
    else:
        kw = dict(width=config.width, act=config.activation)
        enc = ConvEncoder(config.data_shape, config.latent, key=k_enc, **kw)
        dec = ConvDecoder(config.data_shape, config.latent, n_params, key=k_dec, **kw)
    return VAE(enc, dec, lik)
