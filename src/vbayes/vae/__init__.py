"""Variational autoencoders (layer 6): VAE, beta-VAE, IWAE and plain autoencoders with diagnostics.

Loss convention: the negative ELBO **summed over data dimensions and averaged over the batch** (nats per
image); see :mod:`vbayes.vae.losses`. Networks are Equinox modules, training is optax in compiled chunks.
"""

from vbayes.vae.checkpoint import Run, load_run
from vbayes.vae.config import TrainConfig, TrainState
from vbayes.vae.data import Dataset, binarize, load_digits, load_mnist, read_idx
from vbayes.vae.diagnostics import (
    Evaluation,
    PosteriorCollapseWarning,
    active_units,
    activity,
    evaluate,
    kl_per_dimension,
    posterior_means,
)
from vbayes.vae.likelihoods import Bernoulli, Categorical, ContinuousBernoulli, Gaussian, make_likelihood
from vbayes.vae.losses import (
    LossInfo,
    autoencoder_loss,
    elbo,
    iwae_bound,
    iwae_loss,
    kl_from_log_var,
    kl_from_scale,
    kl_per_dim,
    kl_weight,
    negative_elbo,
    negative_elbo_pixel_mean,
)
from vbayes.vae.model import VAE, ModelConfig, build_model, with_data_bias
from vbayes.vae.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from vbayes.vae.trainer import TrainResult, build_step, init, train

__all__ = [
    "VAE",
    "Bernoulli",
    "Categorical",
    "ContinuousBernoulli",
    "ConvDecoder",
    "ConvEncoder",
    "Dataset",
    "Evaluation",
    "Gaussian",
    "LossInfo",
    "MLPDecoder",
    "MLPEncoder",
    "ModelConfig",
    "PosteriorCollapseWarning",
    "Run",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "active_units",
    "activity",
    "autoencoder_loss",
    "binarize",
    "build_model",
    "with_data_bias",
    "build_step",
    "elbo",
    "evaluate",
    "init",
    "iwae_bound",
    "iwae_loss",
    "kl_from_log_var",
    "kl_from_scale",
    "kl_per_dim",
    "kl_per_dimension",
    "kl_weight",
    "load_digits",
    "load_mnist",
    "load_run",
    "make_likelihood",
    "negative_elbo",
    "negative_elbo_pixel_mean",
    "posterior_means",
    "read_idx",
    "train",
]
