"""Training configuration and state: :class:`TrainConfig` (how to train, saved in a run's ``config.json``),
:class:`TrainState` (what a step updates and a checkpoint holds), and Adam with its learning-rate schedules
(:func:`optimizer`); :func:`split_model` separates a model's trainable arrays from the rest."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import optax
from jax import Array

from vbayes.errors import VBayesError, is_count, is_positive, is_real, is_seed, require
from vbayes.vae.losses import IWAE_GRADIENTS, KINDS
from vbayes.vae.model import VAE, ModelConfig

LR_SCHEDULES = ("constant", "burda")


def check_names(rules: Iterable[tuple[str, Any, Sequence[str]]]) -> None:
    """A :class:`VBayesError` for the first ``(name, value, allowed)`` whose ``value`` is not one of ``allowed``."""
    for name, value, allowed in rules:
        if not isinstance(value, str) or value not in allowed:
            raise VBayesError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")


def _normalise(config: Any, ints: Iterable[str], floats: Iterable[str]) -> None:
    """Checked fields of a frozen dataclass as plain ``int`` / ``float`` (NumPy scalars would not go to JSON)."""
    for name in ints:
        object.__setattr__(config, name, int(getattr(config, name)))
    for name in floats:
        object.__setattr__(config, name, float(getattr(config, name)))


def check_model_config(config: ModelConfig) -> ModelConfig:
    """``config`` with integer counts and a positive finite ``sd``, as plain Python numbers; a :class:`VBayesError`
    naming the field otherwise (the rules :class:`ModelConfig`'s own checks leave out)."""
    counts = {"latent": 1, "width": 1, "depth": 0, "levels": 2}
    require(
        (name, getattr(config, name), is_count(getattr(config, name), low), f"an integer ≥ {low}")
        for name, low in counts.items()
    )
    require([("sd", config.sd, is_positive(config.sd), "a finite number > 0")])
    return dataclasses.replace(config, **{name: int(getattr(config, name)) for name in counts}, sd=float(config.sd))


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
    :func:`~vbayes.vae.model.with_data_bias` (the decoder's output bias fitted to the training pixels).

    Checked on construction (a :class:`VBayesError` naming the field): ``k``, ``batch_size``, ``epochs`` and
    ``chunk`` integers ≥ 1; ``anneal_steps`` and ``patience`` integers ≥ 0; ``seed`` an integer in [0, 2**32);
    ``learning_rate`` and ``adam_eps`` finite and > 0; ``beta`` and ``free_bits`` finite and ≥ 0; ``adam_b1`` in
    [0, 1); names from their sets."""

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
        check_names(
            [
                ("model kind", self.kind, KINDS),
                ("iwae_gradient", self.iwae_gradient, IWAE_GRADIENTS),
                ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
            ]
        )
        counts = {"k": 1, "anneal_steps": 0, "batch_size": 1, "epochs": 1, "patience": 0, "chunk": 1, "seed": 0}
        require(
            (name, getattr(self, name), is_count(getattr(self, name), low), f"an integer ≥ {low}")
            for name, low in counts.items()
        )
        require([("seed", self.seed, is_seed(self.seed), "an integer in [0, 2**32)")])
        require(
            [
                ("beta", self.beta, is_real(self.beta) and self.beta >= 0, "a finite number ≥ 0"),
                ("free_bits", self.free_bits, is_real(self.free_bits) and self.free_bits >= 0, "a finite number ≥ 0"),
                ("learning_rate", self.learning_rate, is_positive(self.learning_rate), "a finite number > 0"),
                ("adam_b1", self.adam_b1, is_real(self.adam_b1) and 0 <= self.adam_b1 < 1, "in [0, 1)"),
                ("adam_eps", self.adam_eps, is_positive(self.adam_eps), "a finite number > 0"),
                (
                    "binarize",
                    self.binarize,
                    self.binarize is None or isinstance(self.binarize, bool),
                    "None, True or False",
                ),
            ]
        )
        _normalise(self, counts, ("beta", "free_bits", "learning_rate", "adam_b1", "adam_eps"))

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
