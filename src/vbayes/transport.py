"""A flow as a transport map: a target pulled back through a flow's bijection T to its base space,

    log p̃_T(u) = log p̃(T(u)) + log |det ∂T/∂u|,   u ∈ R^d,

a standard normal up to a constant when q = T_# N(0, I) is the posterior, and draws pushed forward through T.
:func:`vbayes.neutra` samples the first with NUTS and maps its draws back with the second.
"""

from __future__ import annotations

import dataclasses

import jax

from vbayes.flows import Flow
from vbayes.targets import ParamSpec, Target

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class PulledBack:
    """The log density of a target pulled back through a flow's bijection T, on u ``(d,)``:
    ``u ↦ log p̃(T(u)) + log |det ∂T/∂u|``; equal (and hashed) by ``dim`` alone, the pytree data being
    ``(target, flow)``, so that flows of one layout and targets of one model share the compiled sampler."""

    dim: int

    @property
    def specs(self) -> tuple[ParamSpec, ...]:
        return (ParamSpec("u", (self.dim,), (self.dim,)),)

    def unconstrained(self, u: Array) -> dict[str, Array]:
        return {"u": u}

    def constrain(self, u: Array, data: tuple) -> dict[str, Array]:
        return {"u": u}

    def __call__(self, u: Array, data: tuple) -> Array:
        target, flow = data
        z, log_det = flow._dist().bijection.transform_and_log_det(u)
        return target.log_density(z) + log_det


def pulled_back(target: Target, flow: Flow) -> Target:
    """``target`` on the base space of ``flow``: log p̃(T(u)) + log |det ∂T/∂u| (a standard normal when p̃ is q)."""
    return Target(PulledBack(target.dim), (target, flow), f"{target.name} in a flow's space")


@jax.jit
def push_forward(flow: Flow, u: Array) -> Array:
    """z = T(u) for draws ``u`` ``(..., d)``."""
    bijection = flow._dist().bijection
    flat = u.reshape(-1, u.shape[-1])
    return jax.vmap(bijection.transform)(flat).reshape(u.shape)
