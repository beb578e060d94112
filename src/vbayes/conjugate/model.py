"""The contract of a conjugate-exponential model, and the pure steps every algorithm is built from.

A model with global parameters β (q(β) held by its natural parameters λ) and local latent variables z_n is a
:class:`ConjugateModel`: a NamedTuple of pure functions (``jax.tree_util.Partial``, so the model is a pytree
and one compiled pass serves every prior of the same shapes)::

    local  = model.expect(λ)                   # what the local step needs from q(β): E_q[η(β)]
    local  = model.mode(λ)                     # ... or the same at the mode of q(β) (a point mass: EM)
    stats, local_elbo = model.local_step(local, x, w)   # optimal q(z_n), returned as Σ_n w_n E[t(x_n, z_n)]
                                                         # and Σ_n w_n log Σ_z exp E log p(x_n, z | β)
    λ̂      = model.global_step(stats, scale)  # η_prior + scale · stats (natural parameters)
    model.expected_log_joint(local, stats)     # Σ_n E_q[log p(x_n, z_n | β)], linear in the stats
    model.kl(λ)                                # KL(q(β) ‖ p(β))
    model.log_prior(λ)                         # log p(β̂) at the mode of q(β)

and, optionally, what the engine's extras need: ``counts(stats) -> (K,)`` and ``distance(λ) -> (K, K)`` for
models with components (delete / merge moves), ``sample(λ, key, n) -> {name: (n, ...)}`` and
``log_q(λ, draws) -> (n,)`` for draws from q(β) in the model's named parameters.

The algorithms (:mod:`vbayes.conjugate.engine.cavi`, :mod:`vbayes.conjugate.engine.svi`) never look inside a model
(Hoffman, Blei, Wang & Paisley 2013, §2–3). VB, EM and MAP-EM are one :class:`Mode`: EM and MAP-EM make the
same two calls with ``mode`` in place of ``expect`` — q(β) collapsed to a point mass at the mode of
``global_step``'s output, i.e. the M-step (flat prior: EM; proper prior: MAP-EM).

The ELBO reported after a CAVI update is at (q(z) of this pass, new q(β)) — Bishop's 10.70 and
scikit-learn's convention — computed from the statistics, with no second pass::

    ELBO = local_elbo − expected_log_joint(local_old, stats) + expected_log_joint(local_new, stats) − kl(λ_new)

(the first two terms are the entropy of q(z)).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vbayes.data.sources import Chunks, working_dtype
from vbayes.errors import VBayesError

Array = jax.Array
PyTree = Any


class Mode(enum.StrEnum):
    """What q(β) is: ``vb`` (the full factor: variational Bayes), ``em`` (a point mass at its mode under a flat
    prior: maximum likelihood) or ``map`` (a point mass at its mode under the prior: MAP-EM)."""

    VB = "vb"
    EM = "em"
    MAP = "map"

    @property
    def point_mass(self) -> bool:
        return self is not Mode.VB


def as_mode(mode: Mode | str) -> Mode:
    """``mode`` as a :class:`Mode`; a :class:`VBayesError` naming the choices otherwise."""
    try:
        return Mode(mode)
    except ValueError:
        raise VBayesError(f"mode must be one of {[m.value for m in Mode]}, got {mode!r}") from None


class ConjugateModel(NamedTuple):
    """A conjugate-exponential model as pure functions (see the module docstring for each signature)."""

    expect: Callable
    mode: Callable
    local_step: Callable
    global_step: Callable
    expected_log_joint: Callable
    kl: Callable
    log_prior: Callable
    counts: Callable | None = None
    distance: Callable | None = None
    sample: Callable | None = None
    log_q: Callable | None = None
    latent_free: bool = False
    """True when the local step has no latent variables (its statistics do not depend on q(β)) and the global
    step returns the fixed point given them: CAVI then stops after one pass (a second would repeat it)."""


class ConjugateForm(NamedTuple):
    """A log-density target's model written as a conjugate model: ``model``, the data ``rows`` (N, D) its local step
    reads, and ``init``, the λ to start from. A :class:`~vbayes.targets.Target` carries a function returning one
    (``target.conjugate``), called when a conjugate algorithm fits the target, in the caller's precision."""

    model: ConjugateModel
    rows: Any
    init: PyTree


class IterState(NamedTuple):
    """CAVI / EM state: ``params`` λ (natural parameters of q(β)); ``local`` = expect(λ) or mode(λ), the
    E-step's input; ``objective`` the last ELBO (or log-likelihood); ``step`` iterations done."""

    params: PyTree
    local: PyTree
    objective: Array
    step: Array


class SVIState(NamedTuple):
    """SVI / online-EM state: ``params`` λ and ``step`` t (the step size is ρ_t = (t + τ)^−κ)."""

    params: PyTree
    step: Array


class SVIInfo(NamedTuple):
    """Per SVI step: ``local_elbo``, the minibatch's local ELBO scaled by N/S (the data term of the ELBO
    estimate of λ_t: ELBO ≈ local_elbo − KL(q(β) ‖ p(β))), and the step size ρ_t."""

    local_elbo: Array
    rho: Array


# ----------------------------------------------------------------------------------------------------
# pure steps


def local_of(model: ConjugateModel, params: PyTree, mode: Mode) -> PyTree:
    """The local step's input: E_q[η(β)] (VB) or its value at the mode of q(β) (EM, MAP-EM)."""
    return model.mode(params) if mode.point_mass else model.expect(params)


def cast(tree: PyTree, dtype) -> PyTree:
    """The floating-point leaves of ``tree`` in ``dtype``."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def batch_pass(
    model: ConjugateModel, local: PyTree, chunks: Chunks, axis_name: str | None = None, with_elbo: bool = True
) -> tuple[PyTree, Array]:
    """Σ over chunks of ``model.local_step``: (stats, local ELBO) of one block, chunks in a ``lax.scan``.
    The E-step and the sum over the block's chunks run in the block's precision (``local`` cast to it: float32
    blocks halve the E-step's cost on CPU), the block's total is returned in the working precision (float64 under
    ``jax.enable_x64``), in which the sums over blocks are taken. (A float64 sum of float32 statistics costs a
    conversion of the whole statistic per chunk: for LDA's (K, V) topic-word counts, more than the E-step saved.)
    Inside ``shard_map`` over ``axis_name`` the sums are also taken across devices (a ``psum``).
    ``with_elbo=False``: the statistics alone, the local ELBO returned as 0 and not computed (what an SVI update
    needs; for LDA a third less to compile and a seventh less to run)."""
    local = cast(local, chunks.x.dtype)

    def step(x, w):
        stats, elbo = model.local_step(local, x, w)
        return stats, elbo if with_elbo else jnp.zeros((), elbo.dtype)

    def body(acc, xw):
        return jax.tree.map(jnp.add, acc, step(*xw)), None

    shapes = jax.eval_shape(step, chunks.x[0], chunks.w[0])
    total, _ = jax.lax.scan(body, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), (chunks.x, chunks.w))
    total = jax.tree.map(lambda t: t.astype(working_dtype()) if jnp.issubdtype(t.dtype, jnp.floating) else t, total)
    return total if axis_name is None else jax.lax.psum(total, axis_name)


_pass = jax.jit(batch_pass, static_argnames=("axis_name", "with_elbo"))


@jax.tree_util.register_pytree_node_class
class BlockPass:
    """``block ↦ (Σ stats, Σ local ELBO)``: :func:`batch_pass` of ``model`` at ``local``, compiled. A pytree (the
    model and ``local`` are its leaves) and picklable, so a data source can run it anywhere: on threads, under
    ``shard_map`` over devices, or on Dask workers. ``with_elbo=False``: the statistics alone (the ELBO 0)."""

    def __init__(self, model: ConjugateModel, local: PyTree, with_elbo: bool = True):
        self.model, self.local, self.with_elbo = model, local, with_elbo

    def tree_flatten(self):
        return (self.model, self.local), self.with_elbo

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, with_elbo=aux)

    def __call__(self, block: Chunks) -> tuple[PyTree, Array]:
        return _pass(self.model, self.local, block, with_elbo=self.with_elbo)


def vb_update(
    model: ConjugateModel, state: IterState, stats: PyTree, local_elbo: Array, scale: float | Array = 1.0
) -> IterState:
    """CAVI's global step λ' = global_step(stats, scale) and the ELBO at (this pass's q(z), λ'):
    scale · (entropy of q(z) + E log p(x, z | β)) − KL(q(β) ‖ p(β)); ``scale`` = N / n for statistics of a
    subset of n of the N points (an unbiased estimate), 1 for all data."""
    params = model.global_step(stats, scale)
    local = model.expect(params)
    entropy = local_elbo - model.expected_log_joint(state.local, stats)
    elbo = scale * (entropy + model.expected_log_joint(local, stats)) - model.kl(params)
    return IterState(params, local, elbo, state.step + 1)


def em_update(model: ConjugateModel, state: IterState, stats: PyTree, loglik: Array, with_prior: bool) -> IterState:
    """The M-step (mode of ``global_step``'s output) and the objective of the parameters that produced
    ``stats``: log p(X | β̂) [+ log p(β̂) ``with_prior`` (MAP-EM)], exact since the E-step is exact for a point
    mass."""
    objective = loglik + model.log_prior(state.params) if with_prior else loglik
    params = model.global_step(stats, 1.0)
    return IterState(params, model.mode(params), objective, state.step + 1)


def update(
    model: ConjugateModel, state: IterState, stats: PyTree, local_elbo: Array, mode: Mode, scale: float | Array = 1.0
) -> IterState:
    """One global update from the statistics of a pass: :func:`vb_update` or, for a point mass, :func:`em_update`."""
    if mode.point_mass:
        return em_update(model, state, stats, local_elbo, mode is Mode.MAP)
    return vb_update(model, state, stats, local_elbo, scale)


def init_state(model: ConjugateModel, params: PyTree, mode: Mode = Mode.VB) -> IterState:
    """CAVI (or EM) state at λ = ``params``."""
    return IterState(
        params, local_of(model, params, mode), jnp.asarray(-jnp.inf, working_dtype()), jnp.asarray(0, jnp.int32)
    )


def step(model: ConjugateModel, state: IterState, chunks: Chunks, mode: Mode = Mode.VB) -> IterState:
    """One CAVI (or EM) iteration on data held in one block (pure; the drivers split it over threads)."""
    stats, local_elbo = batch_pass(model, state.local, chunks)
    return update(model, state, stats, local_elbo, mode)


def svi_update(
    model: ConjugateModel, state: SVIState, stats: PyTree, scale, learning_offset, learning_decay
) -> tuple[SVIState, Array]:
    """λ ← (1 − ρ_t) λ + ρ_t global_step(stats, scale), ρ_t = (t + τ)^−κ; ``scale`` = N / (points in the
    statistics). Returns the new state and ρ_t."""
    target = model.global_step(stats, scale)
    rho = (state.step + learning_offset) ** (-learning_decay)
    params = jax.tree.map(lambda a, b: (1.0 - rho) * a + rho * b, state.params, target)
    return SVIState(params, state.step + 1), rho


def svi_step(
    model: ConjugateModel,
    state: SVIState,
    x: Array,
    w: Array,
    n_total,
    learning_offset,
    learning_decay,
    mode: Mode = Mode.VB,
    chunk_size: int = 1024,
    axis_name: str | None = None,
) -> tuple[SVIState, SVIInfo]:
    """λ ← (1 − ρ_t) λ + ρ_t λ̂, λ̂ = global_step(stats_B, N/Σw), ρ_t = (t + τ)^−κ (Hoffman et al. 2013, Fig. 6).

    ``x`` (S, D), ``w`` (S,): the minibatch and its weights; ``n_total``: N. With a point-mass ``mode`` the
    E-step uses the mode of q(β): online EM (Cappé & Moulines 2009), the same update on the same statistics.
    The E-step runs in ``x``'s precision (float32 minibatches under float64 λ: statistics of S points whose
    noise, ~1/√S, dwarfs float32 rounding), the statistics are summed over chunks and the update made in λ's.
    Data-parallel inside ``shard_map`` over ``axis_name``: each device holds a slice of the minibatch, the
    statistics and Σw are ``psum``-ed, and every device makes the same update."""
    local = local_of(model, state.params, mode)
    size, dim = x.shape
    chunk = min(size, chunk_size) if size % min(size, chunk_size) == 0 else size  # cache-sized chunks
    chunks = Chunks(x.reshape(size // chunk, chunk, dim), w.reshape(size // chunk, chunk))
    stats, local_elbo = batch_pass(model, local, chunks, axis_name)  # the E-step in x's precision
    dtype = jax.tree.leaves(state.params)[0].dtype  # the update in λ's
    stats, local_elbo = cast(stats, dtype), local_elbo.astype(dtype)
    weight = jnp.sum(w) if axis_name is None else jax.lax.psum(jnp.sum(w), axis_name)
    new, rho = svi_update(model, state, stats, n_total / weight, learning_offset, learning_decay)
    return new, SVIInfo(n_total / weight * local_elbo, rho)


@partial(jax.jit, static_argnums=1)
def call(model: ConjugateModel, name: str, *args):
    """``getattr(model, name)(*args)`` compiled once per model layout (the model is an argument, not a
    closure, so a new model with the same shapes reuses the executable)."""
    return getattr(model, name)(*args)


def check_model_fits(model: ConjugateModel, local: PyTree, dim: int) -> None:
    """A :class:`VBayesError` now, not a shape error from a compiled pass (or a worker), when rows of width
    ``dim`` do not fit the model."""
    row = jax.ShapeDtypeStruct((1, dim), working_dtype())
    try:
        jax.eval_shape(model.local_step, local, row, jax.ShapeDtypeStruct((1,), working_dtype()))
    except (TypeError, ValueError) as e:
        expected = next((a.shape[-1] for a in jax.tree.leaves(local) if jnp.ndim(a) >= 2), "other")
        raise VBayesError(f"the model expects {expected} columns, the data have {dim} ({type(e).__name__}: {e})") from e
