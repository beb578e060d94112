"""A flow as a transport map: a target pulled back through a flow's bijection T to its base space, draws pushed
forward through T, and the check that a flow's q is the posterior there (``stationarity``).

If q = T_# N(0, I) is the posterior p, the target pulled back through T,

    log p̃_T(u) = log p̃(T(u)) + log |det ∂T/∂u|,   u ∈ R^d,

is a standard normal up to a constant, and HMC started at q's own draws u ~ N(0, I) stays at N(0, I): smooth,
well-scaled, no divergent transitions. Where q misses a region the posterior has, such as a funnel's neck, T squeezes
that region into q's far tail, and the pulled-back density is sharply curved there: HMC's trajectories that reach it
diverge. The check runs :data:`CHAINS` chains of :data:`TRANSITIONS` HMC transitions (:data:`LEAPFROG_STEPS` steps
of :data:`STEP_SIZE`, no adaptation: the scale is 1 where q fits) and flags any divergent transition. It sees what
importance weights from q, however widened, cannot: draws of q never reach the neck, HMC's dynamics do.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.compilation import QUICK, sized_jit
from vbayes.fit import Check, Fit
from vbayes.flows import Flow
from vbayes.stored import stored
from vbayes.targets import ParamSpec, Target

Array = jax.Array

CHAINS = 32
"""HMC chains of the ``stationarity`` check, each started at a draw of q's base distribution."""
TRANSITIONS = 100
"""HMC transitions per chain (the second half's draws give u's sds for the message)."""
LEAPFROG_STEPS = 8
"""Leapfrog steps per transition."""
STEP_SIZE = 0.3
"""The leapfrog step in the base space, where the pulled-back density is a standard normal if q is the posterior."""


@dataclasses.dataclass(frozen=True, eq=False)
class PulledBack:
    """The log density of a target pulled back through a flow's bijection T, on u ``(d,)``:
    ``u ↦ log p̃(T(u)) + log |det ∂T/∂u|``; the pytree data is ``(target, flow)``, so that flows of one layout and
    targets of one model share the compiled sampler."""

    dim: int

    @property
    def specs(self) -> tuple[ParamSpec, ...]:
        return (ParamSpec("u", (self.dim,), (self.dim,)),)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PulledBack) and other.dim == self.dim

    def __hash__(self) -> int:
        return hash(("PulledBack", self.dim))

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


@functools.partial(stored, name="transport._hmc_from_base")
@sized_jit(0, QUICK)  # run once per fit: a small model's compiles quickly
def _hmc_from_base(target: Target, flow: Flow, key: Array) -> tuple[Array, Array, Array]:
    """HMC on ``target`` pulled back through ``flow``, :data:`CHAINS` chains started at N(0, I) draws: the second
    half of the positions ``(TRANSITIONS // 2, CHAINS, d)``, the mean acceptance and the number of divergent
    transitions (energy error above BlackJAX's threshold, 1000)."""
    import blackjax

    dtype = flow._moment_dtype()
    pulled = pulled_back(target, flow)
    kernel = blackjax.hmc(pulled.log_density, STEP_SIZE, jnp.ones(target.dim, dtype), LEAPFROG_STEPS)
    k_start, k_run = jax.random.split(key)
    states = jax.vmap(kernel.init)(jax.random.normal(k_start, (CHAINS, target.dim), dtype))

    def transition(state, k):
        state, info = jax.vmap(kernel.step)(jax.random.split(k, CHAINS), state)
        return state, (state.position, info.acceptance_rate, info.is_divergent)

    _, (u, accept, divergent) = jax.lax.scan(transition, states, jax.random.split(k_run, TRANSITIONS))
    return u[TRANSITIONS // 2 :], jnp.mean(accept), jnp.sum(divergent)


def stationarity_args(target: Target, flow: Flow, key: Array) -> tuple:
    """The program and arguments of the ``stationarity`` check, for :func:`vbayes.compilation.compile_ahead`."""
    return _hmc_from_base, target, flow, key


def stationarity_check(fit: Fit, key: Array) -> Check:
    """The ``stationarity`` check of a flow's fit: HMC from q's base draws in its base space has no divergent
    transition (see the module's docstring)."""
    t0 = time.perf_counter()
    u, accept, divergent = jax.device_get(_hmc_from_base(fit.target, fit.q, key))
    n, evaluations = int(divergent), CHAINS * TRANSITIONS * LEAPFROG_STEPS
    found = f"HMC from q's draws in its base space ({CHAINS} chains × {TRANSITIONS} transitions)"
    u = np.asarray(u, np.float64).reshape(-1, u.shape[-1])
    if n or not np.all(np.isfinite(u)):
        message = (
            f"{found}: {n} divergent transitions: the posterior has a region of extreme curvature that q's map "
            "squeezes into its tails and q misses (a funnel's neck)"
        )
        return Check("stationarity", "flag", message, float(n), time.perf_counter() - t0, evaluations)
    sds = u.std(0)
    message = (
        f"{found}: no divergent transitions (acceptance {float(accept):.2f}; u's sds {sds.min():.2f}–{sds.max():.2f}, "
        "1 if q were the posterior)"
    )
    return Check("stationarity", "pass", message, 0.0, time.perf_counter() - t0, evaluations)
