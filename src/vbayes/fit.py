"""The one result every method returns: the approximation q, its draws, summary and run record, and its verdict.

Every driver — ADVI, Laplace, NUTS, the conjugate drivers (CAVI, SVI, EM) — returns a :class:`Fit`. Its
:class:`FitInfo` says how the run ended (``outcome``, one of :data:`OUTCOMES`), what it cost (steps, gradient
evaluations, wall time), what ``trace`` traces, and carries the :class:`Verdict` of the fit's own checks
(:mod:`vbayes.checks`): whether to trust it, and why not.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.compilation import QUICK
from vbayes.errors import VBayesError
from vbayes.families import PointMass
from vbayes.keys import as_key
from vbayes.psis import ImportanceCheck
from vbayes.samples import Empirical, Weighted
from vbayes.stored import stored
from vbayes.targets import Target
from vbayes.targets.core import constrain_rows

if TYPE_CHECKING:
    import pandas as pd

Array = jax.Array

OUTCOMES: dict[str, str] = {
    "converged": "the method's own stopping rule was met",
    "completed": "a method with a fixed budget (NUTS's draws, a training schedule) ran all of it",
    "max_steps": "the step budget ran out before the stopping rule was met",
    "diverged": "non-finite values stopped the run",
    "interrupted": "stopped by the user (Ctrl-C): the result so far",
}
"""How a run can end, each with its one meaning."""

CHECK_STATUSES = ("pass", "note", "flag", "skip")
"""A check passed; noted something that its companion checks cleared; flagged the fit; or could not run."""


@dataclass(frozen=True)
class Check:
    """One check of a fit: ``name``, ``status`` (:data:`CHECK_STATUSES`), what it found (``message``), its main
    number (``value``: k̂, a shift in sds, ...), and its cost (``seconds``, ``evaluations`` of log p̃ or refits'
    gradient evaluations)."""

    name: str
    status: str
    message: str
    value: float | None = None
    seconds: float = 0.0
    evaluations: int = 0


@dataclass(frozen=True)
class Verdict:
    """The checks a fit ran on itself. ``status``: ``flagged`` (some check flagged it), ``trusted`` (some check
    ran and none flagged it) or ``unchecked`` (no check could run)."""

    checks: tuple[Check, ...] = ()

    @property
    def status(self) -> str:
        ran = [c for c in self.checks if c.status != "skip"]
        if any(c.status == "flag" for c in ran):
            return "flagged"
        return "trusted" if ran else "unchecked"

    @property
    def trusted(self) -> bool:
        return self.status == "trusted"

    @property
    def flags(self) -> tuple[str, ...]:
        """The messages of the checks that flagged the fit."""
        return tuple(c.message for c in self.checks if c.status == "flag")

    @property
    def seconds(self) -> float:
        return float(sum(c.seconds for c in self.checks))

    @property
    def evaluations(self) -> int:
        return int(sum(c.evaluations for c in self.checks))

    def check(self, name: str) -> Check | None:
        """The check called ``name``, if it ran."""
        return next((c for c in self.checks if c.name == name), None)

    def summary(self) -> str:
        """One line: the status, then each check that flagged or noted something (else the ones that passed)."""
        shown = [c for c in self.checks if c.status in ("flag", "note")] or [
            c for c in self.checks if c.status == "pass"
        ]
        skipped = [c.name for c in self.checks if c.status == "skip"]
        text = f"{self.status}: " + "; ".join(c.message for c in shown) if shown else self.status
        return text + (f" (not run: {', '.join(skipped)})" if skipped else "")


@dataclass(frozen=True)
class FitInfo:
    """How the run went. ``outcome``: one of :data:`OUTCOMES`; ``trace_of``: what ``Fit.trace`` holds;
    ``importance``: PSIS k̂, ESS, IS log evidence and ELBO ± se from draws of q (None if not computed);
    ``verdict``: the fit's own checks."""

    method: str
    outcome: str
    message: str
    steps: int
    grad_evals: int
    skipped_steps: int
    wall_time: float
    extra: dict[str, Any] = field(default_factory=dict)
    importance: ImportanceCheck | None = None
    verdict: Verdict = field(default_factory=Verdict)
    trace_of: str = "the objective at each step"

    @property
    def converged(self) -> bool:
        return self.outcome == "converged"


DRAW_BLOCK = 1024
"""Draws per compiled call of :meth:`Fit.draws` (one program per model and q, not one per number of draws)."""


@functools.partial(stored, name="fit._draw_block", options=QUICK)
@functools.partial(jax.jit, compiler_options=QUICK)
def _draw_block(target: Target | None, q: Any, key: Array, i: int) -> dict[str, Array]:
    """Block ``i`` of :data:`DRAW_BLOCK` constrained draws from q (a few runs per summary: compiled without LLVM's
    optimisations, which cost more to compile than they save here)."""
    k = jax.random.fold_in(key, i)
    if target is None:
        return q.draws(DRAW_BLOCK, k)
    return jax.vmap(target.constrain)(q.sample(k, DRAW_BLOCK))


@dataclass
class Fit:
    """An approximation ``q`` of ``target``'s posterior, with its record.

    ``q`` is a distribution on the target's unconstrained space (a family, or MCMC draws), or for a conjugate
    model fitted without a log-density target (``target`` None) q(β) itself, which draws its named parameters.
    ``trace``: what ``info.trace_of`` says, one value per step; ``state``: the algorithm's last state, enough to
    resume (pass the Fit as ``init=`` to the same method).
    """

    target: Target | None
    q: Any
    trace: np.ndarray
    info: FitInfo
    state: Any = None

    @property
    def verdict(self) -> Verdict:
        return self.info.verdict

    @property
    def trusted(self) -> bool:
        """Whether the fit's own checks vouch for it (``verdict.status == "trusted"``)."""
        return self.info.verdict.trusted

    @property
    def name(self) -> str:
        return self.target.name if self.target is not None else self.info.extra.get("model", "model")

    def draws_unconstrained(self, n: int = 1000, key: Array | int = 0) -> Array:
        """``n`` draws z ~ q, shape ``(n, d)``."""
        return self.q.sample(as_key(key), n)

    def draws(self, n: int = 1000, key: Array | int = 0) -> dict[str, np.ndarray]:
        """``n`` draws θ(z), z ~ q, as ``{name: (n, *shape)}`` in the constrained space (deterministic sites too).

        Drawn in blocks of :data:`DRAW_BLOCK` by one compiled program per model, whatever ``n``: the first ``n``
        draws are the same for every larger ``n`` with the same key. MCMC draws (an :class:`Empirical` q) are
        resampled without replacement while ``n`` allows."""
        key = as_key(key)
        if isinstance(self.q, Empirical):
            return {k: np.asarray(v) for k, v in constrain_rows(self.target, self.q.sample(key, n)).items()}
        blocks = [jax.device_get(_draw_block(self.target, self.q, key, i)) for i in range(-(-n // DRAW_BLOCK))]
        return {k: np.concatenate([b[k] for b in blocks])[:n] for k in blocks[0]}

    def corrected_draws(self, n: int = 1000, key: Array | int = 0) -> dict[str, np.ndarray]:
        """``n`` draws θ(z) as :meth:`draws`, but with z resampled from draws of q by their PSIS-smoothed importance
        weights p̃/q (:func:`vbayes.psis.psis_resample`): closer to the posterior than q's own draws when q is
        slightly off (importance-weighted draws, a :class:`~vbayes.samples.Weighted` q: :meth:`draws`). A
        :class:`VBayesError` when k̂ says the weights cannot correct q, or q has no density."""
        from vbayes.psis import psis_resample

        if isinstance(self.q, Weighted):  # importance sampling's answer: already weighted by p̃/q
            return self.draws(n, key)
        if self.target is None or isinstance(self.q, Empirical | PointMass):
            raise VBayesError("corrected draws need a q with a density (not MCMC draws or a point mass) and a target")
        z, _ = psis_resample(self.target, self.q, int(n), as_key(key))
        return {k: np.asarray(v) for k, v in constrain_rows(self.target, jnp.asarray(z)).items()}

    @property
    def elbo(self) -> float:
        """The ELBO of q: from the importance check's draws when computed (NaN if log p̃ − log q was not
        finite at all of them), else the run's own last value of it (``info.extra["elbo"]``), else the mean
        objective over the last tenth of the run; NaN for MCMC and importance-weighted draws."""
        if isinstance(self.q, Empirical | Weighted):
            return float("nan")  # draws have no density: no ELBO (importance sampling's log Z: info.importance)
        if self.info.importance is not None:
            return self.info.importance.elbo
        if "elbo" in self.info.extra:
            return float(self.info.extra["elbo"])
        if self.trace.size == 0:
            return float("nan")
        tail = self.trace[-max(1, self.trace.size // 10) :]
        tail = tail[np.isfinite(tail)]
        return float(np.mean(tail)) if tail.size else float("nan")

    def summary(self, n: int = 4000, key: Array | int = 0) -> pd.DataFrame:
        """Per scalar parameter: mean, sd, 5/50/95% quantiles of ``n`` constrained draws; for MCMC draws
        (an :class:`Empirical` q) all draws, with R-hat and bulk ESS per parameter (ArviZ)."""
        if not isinstance(self.q, Empirical):
            return summarize(self.draws(n, key))
        chains = self.draws_by_chain()
        table = summarize({k: v.reshape((-1,) + v.shape[2:]) for k, v in chains.items()})
        from vbayes.diagnostics import rhat_ess

        rhat, ess = rhat_ess(chains)
        table["r_hat"] = _flatten_stat(rhat, chains)
        table["ess_bulk"] = _flatten_stat(ess, chains)
        return table

    def draws_by_chain(self) -> dict[str, np.ndarray]:
        """MCMC draws in constrained form, ``{name: (chains, draws, *shape)}`` (Empirical q only)."""
        c, s, d = self.q.samples.shape
        flat = constrain_rows(self.target, self.q.samples.reshape(c * s, d))
        return {k: np.asarray(v).reshape((c, s) + v.shape[1:]) for k, v in flat.items()}

    def predict(
        self, *args: Any, n: int = 1000, key: Array | int = 0, simulator: Any = None, **kwargs: Any
    ) -> dict[str, np.ndarray]:
        """Posterior predictive draws ``{site: (n, *shape)}`` (:func:`vbayes.predictive.posterior_predictive`): a
        NumPyro model's observed sites replicated at the fit's data, or at the model arguments given (new
        covariates, the observation ``None``); any other target through ``simulator(params, key)``."""
        from vbayes.predictive import posterior_predictive

        return posterior_predictive(self, *args, n=n, key=key, simulator=simulator, **kwargs)

    def log_likelihood(self, n: int = 1000, key: Array | int = 0) -> dict[str, np.ndarray]:
        """log p(y_i | θ) per observation at ``n`` draws of q: ``{site: (n, *site_shape)}``
        (:func:`vbayes.predictive.pointwise_log_likelihood`)."""
        from vbayes.predictive import pointwise_log_likelihood

        return pointwise_log_likelihood(self.target, self.draws_unconstrained(n, key))

    def to_arviz(self, n: int = 1000, key: Array | int = 0, **groups: Any):
        """An ``arviz.InferenceData``: posterior, posterior predictive, pointwise log-likelihood, observed data and
        sample stats from ``n`` draws of q (MCMC draws keep their chains, all of them); its attributes name the
        method, the outcome and the verdict. ``groups``: see :func:`vbayes.inference_data.inference_data`."""
        from vbayes.inference_data import inference_data

        return inference_data(self, n, key, **groups)

    def __repr__(self) -> str:
        i = self.info
        khat = "" if i.importance is None else f", khat={i.importance.khat:.2f}"
        return (
            f"Fit({i.method} on {self.name!r}, {type(self.q).__name__}, outcome={i.outcome}, "
            f"verdict={i.verdict.status}, steps={i.steps}, elbo={self.elbo:.4g}{khat}, wall={i.wall_time:.2f}s)"
        )


def _flatten_stat(stat, draws: dict[str, np.ndarray]) -> np.ndarray:
    """An ArviZ per-variable statistic flattened in :func:`summarize`'s row order."""
    return np.concatenate([np.asarray(stat[k]).reshape(-1) for k in draws])


def summarize(draws: dict[str, np.ndarray]) -> pd.DataFrame:
    """Table of mean, sd, 5%, 50%, 95% per scalar entry of ``{name: (n, *shape)}`` draws."""
    rows, index = [], []
    for name, x in draws.items():
        x = np.asarray(x).reshape(x.shape[0], -1)
        shape = draws[name].shape[1:]
        labels = [name] if not shape else [f"{name}[{','.join(map(str, ix))}]" for ix in np.ndindex(*shape)]
        q = np.quantile(x, [0.05, 0.5, 0.95], axis=0)
        for j, label in enumerate(labels):
            index.append(label)
            rows.append((x[:, j].mean(), x[:, j].std(ddof=1), q[0, j], q[1, j], q[2, j]))
    import pandas as pd

    return pd.DataFrame(rows, index=index, columns=["mean", "sd", "5%", "50%", "95%"])
