"""Encoders and decoders as Equinox modules, one image at a time (``vmap`` for batches).

An encoder maps an image ``x`` of shape ``data_shape`` to the Gaussian q(z | x) = N(loc, diag(exp(log_var))):
``(loc, log_var)``, each ``(latent,)``. A decoder maps ``z`` ``(latent,)`` to the likelihood's parameters,
``data_shape + (n_params,)``. The MLP pair works for any ``data_shape``; the convolutional pair for
grey images ``(H, W)``. Layers start from Equinox's default initialisation; a decoder's output bias can be
set from data (:meth:`MLPDecoder.with_output_bias`), so that training starts from the likelihood's
pixel-wise fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from vbayes.errors import VBayesError

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "softplus": jax.nn.softplus,
    "gelu": jax.nn.gelu,
}


def activation(name: str) -> Callable[[Array], Array]:
    """The activation function called ``name`` (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise VBayesError(f"unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}") from None


class MLPEncoder(eqx.Module):
    """x -> flatten -> ``depth`` hidden layers of ``width`` -> (loc, log_var); (*S,) -> ((d,), (d,))."""

    mlp: eqx.nn.MLP
    latent: int = eqx.field(static=True)

    def __init__(self, data_shape, latent, *, width=200, depth=2, act="tanh", key):
        self.mlp = eqx.nn.MLP(math.prod(data_shape), 2 * latent, width, depth, activation(act), key=key)
        self.latent = latent

    def __call__(self, x: Array) -> tuple[Array, Array]:
        h = self.mlp(x.reshape(-1))
        return h[: self.latent], h[self.latent :]


class MLPDecoder(eqx.Module):
    """z -> ``depth`` hidden layers of ``width`` -> likelihood parameters; (d,) -> (*S, n_params)."""

    mlp: eqx.nn.MLP
    data_shape: tuple[int, ...] = eqx.field(static=True)
    n_params: int = eqx.field(static=True)

    def __init__(self, data_shape, latent, n_params, *, width=200, depth=2, act="tanh", key):
        self.data_shape = tuple(data_shape)
        self.n_params = n_params
        self.mlp = eqx.nn.MLP(latent, math.prod(data_shape) * n_params, width, depth, activation(act), key=key)

    def __call__(self, z: Array) -> Array:
        return self.mlp(z).reshape(*self.data_shape, self.n_params)

    def with_output_bias(self, params: Array) -> MLPDecoder:
        """This decoder with its last bias set to ``params`` ``(*S, n_params)``: at zero last-layer weights it
        outputs ``params`` for every z."""
        bias = jnp.asarray(params, self.mlp.layers[-1].bias.dtype).reshape(-1)
        return eqx.tree_at(lambda d: d.mlp.layers[-1].bias, self, bias)


def _halve(n: int) -> int:
    """Side length after a 3×3 convolution with stride 2 and padding 1: ⌈n/2⌉."""
    return (n + 1) // 2


class ConvEncoder(eqx.Module):
    """(H, W) -> two stride-2 3×3 convolutions (``channels``, 2·``channels``) -> linear -> (loc, log_var)."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    head: eqx.nn.Linear
    act: Callable[[Array], Array]
    latent: int = eqx.field(static=True)

    def __init__(self, data_shape, latent, *, width=32, act="relu", key):
        if len(data_shape) != 2:
            raise VBayesError(f"the convolutional networks take grey images (H, W); got data of shape {data_shape}")
        k1, k2, k3 = jax.random.split(key, 3)
        h, w = (_halve(_halve(n)) for n in data_shape)
        self.conv1 = eqx.nn.Conv2d(1, width, 3, stride=2, padding=1, key=k1)
        self.conv2 = eqx.nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, key=k2)
        self.head = eqx.nn.Linear(2 * width * h * w, 2 * latent, key=k3)
        self.act = activation(act)
        self.latent = latent

    def __call__(self, x: Array) -> tuple[Array, Array]:
        h = self.act(self.conv1(x[None].astype(self.conv1.weight.dtype)))
        h = self.act(self.conv2(h))
        out = self.head(h.reshape(-1))
        return out[: self.latent], out[self.latent :]


class ConvDecoder(eqx.Module):
    """z -> linear to (2·``channels``, ⌈H/4⌉, ⌈W/4⌉) -> two (nearest ×2 upsample, 3×3 conv) -> 1×1 conv."""

    linear: eqx.nn.Linear
    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    out: eqx.nn.Conv2d
    act: Callable[[Array], Array]
    data_shape: tuple[int, ...] = eqx.field(static=True)
    n_params: int = eqx.field(static=True)
    width: int = eqx.field(static=True)

    def __init__(self, data_shape, latent, n_params, *, width=32, act="relu", key):
        if len(data_shape) != 2:
            raise VBayesError(f"the convolutional networks take grey images (H, W); got data of shape {data_shape}")
        k = jax.random.split(key, 4)
        self.data_shape = tuple(data_shape)
        self.n_params = n_params
        self.width = width
        h, w = (_halve(_halve(n)) for n in data_shape)
        self.linear = eqx.nn.Linear(latent, 2 * width * h * w, key=k[0])
        self.conv1 = eqx.nn.Conv2d(2 * width, width, 3, padding=1, key=k[1])
        self.conv2 = eqx.nn.Conv2d(width, width, 3, padding=1, key=k[2])
        self.out = eqx.nn.Conv2d(width, n_params, 1, key=k[3])
        self.act = activation(act)

    def __call__(self, z: Array) -> Array:
        H, W = self.data_shape
        h = self.act(self.linear(z)).reshape(2 * self.width, _halve(_halve(H)), _halve(_halve(W)))
        h = jax.image.resize(h, (h.shape[0], _halve(H), _halve(W)), "nearest")
        h = self.act(self.conv1(h))
        h = jax.image.resize(h, (h.shape[0], H, W), "nearest")
        h = self.act(self.conv2(h))
        return jnp.moveaxis(self.out(h), 0, -1)

    def with_output_bias(self, params: Array) -> ConvDecoder:
        """This decoder with its 1×1 convolution's bias set to ``params`` ``(H, W, n_params)`` averaged over
        the pixels (a convolution has one bias per channel)."""
        bias = jnp.asarray(params, self.out.bias.dtype).reshape(-1, self.n_params).mean(0)
        return eqx.tree_at(lambda d: d.out.bias, self, bias.reshape(self.out.bias.shape))


NETWORKS = ("mlp", "conv")
