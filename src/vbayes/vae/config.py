"""Training configuration and state: :class:`TrainConfig` (how to train, saved in a run's ``config.json``),
:class:`TrainState` (what a step updates and a checkpoint holds), and Adam with its learning-rate schedules
(:func:`optimizer`); :func:`split_model` separates a model's trainable arrays from the rest."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import optax
from jax import Array

from vbayes.errors import VBayesError
from vbayes.vae.losses import IWAE_GRADIENTS, KINDS
from vbayes.vae.model import VAE


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train. ``kind``: ``"vae"`` (negative ELBO), ``"iwae"`` (IWAE bound with ``k`` samples) or
    ``"ae"`` (deterministic autoencoder). ``beta`` weights the KL, reached linearly over ``anneal_steps``;
    ``free_bits`` nats per latent dimension; ``patience`` epochs without a better validation bound end
    the run (0: never). ``binarize`` (default: for the Bernoulli likelihood) draws x ~ Bernoulli(grey)
    afresh at every step. ``chunk`` steps run per compiled call. ``lr_schedule``: ``"constant"`` or
    ``"burda"`` (Burda et al. 2016: learning_rate · 10^(−i/7) during the 3^i epochs of stage i = 0, 1, ...).
    ``adam_b1`` and ``adam_eps``: Adam's β1 and ε (β2 = 0.999). ``iwae_gradient`` (IWAE only, like ``k``):
    ``"dreg"`` (default) or ``"reparam"``, see :func:`~vbayes.vae.losses.iwae_loss`. A new run starts from
    :func:`~vbayes.vae.model.with_data_bias` (the decoder's output bias fitted to the training pixels)."""

    kind: str = "vae"
    k: int = 50
    iwae_gradient: str = "dreg"
    beta: float = 1.0
    anneal_steps: int = 0
    free_bits: float = 0.0
    batch_size: int = 100
    learning_rate: float = 1e-3
    adam_b1: float = 0.9
    adam_eps: float = 1e-8
    lr_schedule: str = "constant"
    epochs: int = 100
    patience: int = 20
    seed: int = 0
    binarize: bool | None = None
    chunk: int = 50

    def __post_init__(self):
        if self.kind not in KINDS:
            raise VBayesError(f"unknown model kind {self.kind!r}; use one of {', '.join(KINDS)}")
        checks = [
            (self.k >= 1, f"k must be ≥ 1, got {self.k}"),
            (self.beta >= 0 and math.isfinite(self.beta), f"beta must be ≥ 0 and finite, got {self.beta}"),
            (self.anneal_steps >= 0, f"anneal_steps must be ≥ 0, got {self.anneal_steps}"),
            (self.free_bits >= 0, f"free_bits must be ≥ 0, got {self.free_bits}"),
            (self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (0 <= self.adam_b1 < 1, f"adam_b1 must be in [0, 1), got {self.adam_b1}"),
            (self.adam_eps > 0, f"adam_eps must be > 0, got {self.adam_eps}"),
            (self.epochs >= 0, f"epochs must be ≥ 0, got {self.epochs}"),
            (self.patience >= 0, f"patience must be ≥ 0, got {self.patience}"),
            (self.chunk >= 1, f"chunk must be ≥ 1, got {self.chunk}"),
        ]
        checks.append(
            (
                self.iwae_gradient in IWAE_GRADIENTS,
                f"unknown iwae_gradient {self.iwae_gradient!r}; use one of {', '.join(IWAE_GRADIENTS)}",
            )
        )
        checks.append(
            (self.lr_schedule in LR_SCHEDULES, f"unknown lr_schedule {self.lr_schedule!r}; use constant or burda")
        )
        for ok, message in checks:
            if not ok:
                raise VBayesError(message)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = {"iwae_gradient": "reparam", **d}  # runs saved before the option existed used the reparameterised one
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


class TrainState(NamedTuple):
    """The model's trainable arrays, the optimiser's state and the number of steps taken."""

    params: Any
    opt_state: optax.OptState
    step: Array


LR_SCHEDULES = ("constant", "burda")


def burda_schedule(learning_rate: float, steps_per_epoch: int) -> Callable[[Array], Array]:
    """lr(step) = learning_rate · 10^(−i/7) in stage i: 3^i ≤ 2e + 1 < 3^(i+1), epoch e = step // steps_per_epoch."""
    powers = jnp.asarray([3**j for j in range(1, 19)], jnp.int32)

    def schedule(step):
        epoch = step // steps_per_epoch
        stage = jnp.sum(2 * epoch + 1 >= powers)
        return learning_rate * 10.0 ** (-stage / 7.0)

    return schedule


def optimizer(config: TrainConfig, steps_per_epoch: int = 1) -> optax.GradientTransformation:
    """Adam with the config's learning rate (constant or Burda et al.'s schedule), β1 and ε (β2 = 0.999)."""
    rate = config.learning_rate
    if config.lr_schedule == "burda":
        rate = burda_schedule(config.learning_rate, steps_per_epoch)
    return optax.adam(rate, b1=config.adam_b1, eps=config.adam_eps)


def split_model(model: VAE) -> tuple[Any, Any]:
    """``(params, static)``: the floating-point arrays, and everything else (recombine with ``eqx.combine``)."""
    return eqx.partition(model, eqx.is_inexact_array)
