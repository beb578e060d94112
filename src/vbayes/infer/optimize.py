"""Mode search: L-BFGS (optax) to argmax_z log p̃(z), with its outcome and objective trace.

:func:`find_map` says whether the search converged, how many iterations and evaluations it took, the final
gradient norm, and records log p̃ at every iterate (ADVI's initialisation and Laplace's method use it). The whole
search is one compiled ``lax.while_loop`` whose compiled code is cached per target layout (the target is an
argument, not a constant).

Optionally the search runs in whitened coordinates u, z = z₀ + L⁻ᵀu for a Cholesky factor L of a
reference precision (the prior's, for least-squares targets): then the prior part of the Hessian is the
identity, which is L-BFGS's own starting guess.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vbayes.targets import Target

Array = jax.Array

STATUS = ("converged", "max_iter", "failed")
"""``ModeResult.status`` codes: the gradient test passed / ``max_iter`` reached / left the finite region."""


class ModeResult(NamedTuple):
    """``z`` ``(d,)``: the last finite iterate; ``value`` = log p̃(z); ``grad`` = ∇ log p̃(z) ``(d,)``;
    ``iterations``, ``evaluations`` (value-and-gradient calls, line search included); ``trace`` ``(max_iter,)``:
    log p̃ after each iteration (NaN after the last); ``status``: index into :data:`STATUS`."""

    z: Array
    value: Array
    grad: Array
    iterations: Array
    evaluations: Array
    trace: Array
    status: Array


def find_map(
    target: Target,
    z0: Array,
    *,
    max_iter: int = 1000,
    gtol: float = 1e-9,
    whiten: Any = None,
    memory_size: int = 100,
) -> ModeResult:
    """argmax_z log p̃(z) by L-BFGS from ``z0`` ``(d,)``, stopping when max|∇| ≤ gtol·(1 + min(|log p̃|, |log p̃(z0)|)).

    ``whiten``: a Cholesky factor L (``solve_lt``) of a reference precision; the search then runs in
    u with z = z0 + L⁻ᵀu and the gradient test is on ∇_u = L⁻¹∇_z. An update that makes log p̃ or its
    gradient non-finite is not taken and ends the search (status ``failed``), so ``z`` is always finite.
    """
    return _find_map(target, jnp.asarray(z0), whiten, max_iter, float(gtol), memory_size)


def find_map_program(
    target: Target, z0: Array, whiten: Any, max_iter: int, gtol: float, memory_size: int
) -> ModeResult:
    """:func:`find_map`'s search as a traceable function, for a compiled program that does more around it."""
    to_z = (lambda u: z0 + u) if whiten is None else (lambda u: z0 + whiten.solve_lt(u))
    loss = lambda u: -target.log_density(to_z(u))
    opt = optax.lbfgs(memory_size=memory_size)
    value_and_grad = optax.value_and_grad_from_state(loss)
    get = optax.tree_utils.tree_get

    u0 = jnp.zeros_like(z0)
    value0, grad0 = jax.value_and_grad(loss)(u0)
    start = jnp.where(jnp.isfinite(value0), jnp.abs(value0), 0.0)

    def small(value, grad):  # relative to the smaller of |log p̃| now and at the start: an unbounded density
        scale = 1.0 + jnp.minimum(jnp.abs(value), start)  # (a funnel's neck) must not pass the test by growing
        return jnp.max(jnp.abs(grad)) <= gtol * scale

    def body(carry):
        u, state, value, grad, n, evals, trace, failed = carry
        updates, new_state = opt.update(grad, state, u, value=value, grad=grad, value_fn=loss)
        new_u = optax.apply_updates(u, updates)
        new_value, new_grad = value_and_grad(new_u, state=new_state)
        evals = evals + get(new_state, "num_linesearch_steps").astype(evals.dtype)
        ok = jnp.isfinite(new_value) & jnp.all(jnp.isfinite(new_grad)) & jnp.all(jnp.isfinite(new_u))
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
        u, state, value, grad = keep((new_u, new_state, new_value, new_grad), (u, state, value, grad))
        trace = trace.at[n].set(jnp.where(ok, -new_value, jnp.nan))
        return u, state, value, grad, n + ok.astype(n.dtype), evals, trace, ~ok

    def cond(carry):
        _, _, value, grad, n, _, _, failed = carry
        return (n < max_iter) & ~failed & ~small(value, grad)

    trace0 = jnp.full((max_iter,), jnp.nan, dtype=z0.dtype)
    zero = jnp.zeros((), jnp.int32)
    carry = (u0, opt.init(u0), value0, grad0, zero, jnp.ones((), jnp.int32), trace0, jnp.zeros((), bool))
    u, _, value, grad, n, evals, trace, failed = jax.lax.while_loop(cond, body, carry)
    status = jnp.where(small(value, grad), 0, jnp.where(failed | ~jnp.isfinite(value0), 2, 1))
    z = to_z(u)
    grad_z = jax.grad(target.log_density)(z)  # reported in z's own coordinates
    return ModeResult(z, -value, grad_z, n, evals, trace, status)


_find_map = jax.jit(find_map_program, static_argnums=(3, 4, 5))
