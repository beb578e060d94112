"""q(β) of a conjugate fit as the approximation in a :class:`~vbayes.fit.Fit`, and the Fit a conjugate driver returns.

:class:`ConjugatePosterior` holds the model and the natural parameters λ of q(β) (or, for EM / MAP-EM, the
point mass at its mode). It draws the model's named parameters (``draws``); given a log-density
:class:`~vbayes.targets.Target` whose parameters carry the same names, it is also a distribution on the
target's unconstrained z (``sample``, ``log_prob``, ``mean``, ``marginal_sd``), so that every check of
:mod:`vbayes.checks` and every comparison of :mod:`vbayes.compare` applies to it as to any other q.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.checks import verify
from vbayes.conjugate.model import ConjugateModel, Mode
from vbayes.errors import VBayesError
from vbayes.fit import Fit, FitInfo

Array = jax.Array
PyTree = Any
MOMENT_DRAWS = 4000  # draws behind ``mean`` and ``marginal_sd`` when q is used on a target's z


@jax.tree_util.register_pytree_node_class
class ConjugatePosterior:
    """q(β) = the model's variational factor at natural parameters ``params`` (``mode`` VB), or the point mass at
    its mode (``mode`` EM / MAP). ``target``: a log-density target with the model's parameter names (optional)."""

    def __init__(self, model: ConjugateModel, params: PyTree, mode: Mode = Mode.VB, target: Any = None):
        self.model, self.params, self.mode, self.target = model, params, Mode(mode), target

    def tree_flatten(self):
        return (self.model, self.params, self.target), self.mode

    @classmethod
    def tree_unflatten(cls, mode, children):
        model, params, target = children
        return cls(model, params, mode, target)

    @property
    def point_mass(self) -> bool:
        return self.mode.point_mass

    def draws(self, n: int, key: Array) -> dict[str, Array]:
        """``n`` draws of the model's named parameters from q(β) (n copies of the mode for a point mass)."""
        if self.model.sample is None:
            raise VBayesError("this conjugate model does not say how to draw from q(β) (its `sample` is not given)")
        return _draws(self.model, self.params, key, n, self.point_mass)

    def _need_target(self) -> Any:
        if self.target is None:
            raise VBayesError("q(β) lives on the target's z only when the fit has a log-density target")
        return self.target

    def sample(self, key: Array, n: int) -> Array:
        """``n`` draws of z = the target's unconstrained coordinates of β ~ q, shape ``(n, d)``."""
        target = self._need_target()
        return jax.vmap(target.unconstrain)(self.draws(n, key))

    def log_prob(self, z: Array) -> Array:
        """log q(z) = log q(β(z)) + log|∂β/∂z| for rows ``z`` ``(n, d)``."""
        target = self._need_target()
        if self.model.log_q is None or self.point_mass:
            raise VBayesError("q(β) has no density here (a point mass, or the model gives no log_q)")
        beta = jax.vmap(target.constrain)(z)
        return self.model.log_q(self.params, beta) + jax.vmap(target.log_abs_det_jacobian)(z)

    @property
    def mean(self) -> Array:
        """E_q[z], by Monte Carlo over ``MOMENT_DRAWS`` draws (fixed seed)."""
        return jnp.mean(self.sample(jax.random.PRNGKey(0), MOMENT_DRAWS), 0)

    def marginal_sd(self) -> Array:
        """sd_q(z_i), by Monte Carlo over ``MOMENT_DRAWS`` draws (fixed seed)."""
        return jnp.std(self.sample(jax.random.PRNGKey(0), MOMENT_DRAWS), 0, ddof=1)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _draws(model: ConjugateModel, params: PyTree, key: Array, n: int, point_mass: bool) -> dict[str, Array]:
    return model.sample(params, key, n, point_mass)


def conjugate_fit(
    model: ConjugateModel,
    params: PyTree,
    mode: Mode,
    *,
    method: str,
    outcome: str,
    message: str,
    steps: int,
    seconds: float,
    trace: np.ndarray,
    trace_of: str,
    objective: float,
    n_samples: float,
    extra: dict | None = None,
    state: Any = None,
    target: Any = None,
    checks: Any = "default",
) -> Fit:
    """The :class:`Fit` of a conjugate run, with its verdict. ``objective``: the final ELBO (VB) or log-likelihood
    [+ log prior] (EM / MAP-EM), in total nats over ``n_samples`` points; ``info.extra`` keeps both, ``passes`` (the
    data read, in passes over all of it: ``info.grad_evals`` counts them, each as costly as one gradient of the log
    density) and ``monotone_objective`` (the ``monotone`` check applies) for full-data coordinate ascent."""
    extra = dict(extra or {})
    extra.update(objective=float(objective), n_samples=float(n_samples), mode=Mode(mode).value)
    if mode is Mode.VB:
        extra["elbo"] = float(objective)
    info = FitInfo(
        method=method,
        outcome=outcome,
        message=message,
        steps=int(steps),
        grad_evals=int(np.ceil(extra.get("passes", 0))),
        skipped_steps=0,
        wall_time=float(seconds),
        extra=extra,
        trace_of=trace_of,
    )
    q = ConjugatePosterior(model, params, mode, target)
    return verify(Fit(target=target, q=q, trace=np.asarray(trace), info=info, state=state), checks)
