"""Which model predicts best? Fit each model, estimate its expected log predictive density by q-corrected PSIS-LOO
(:func:`vbayes.cross_validation.loo`), and compare: elpd_loo ± se, the differences to the best model with the
standard error of each paired difference, stacking weights (ArviZ's ``az.compare``), and the evidence estimates
each fit has (importance-sampling log Z from q's draws, Laplace's log Z, the ELBO), side by side.

Each model is fitted by ``method`` when named, else by the method :func:`vbayes.compare.compare` recommends for it
(the cheapest whose own checks pass; NUTS when none does; a model whose answer cannot be trusted is kept and marked).
Two models are told apart when the best one's lead is at least :data:`CLEAR_DIFFERENCE` and at least
:data:`CLEAR_SES` standard errors of the paired difference (Sivula, Magnusson, Matamoros & Vehtari 2022: smaller
differences are not reliably signed); otherwise the comparison reports a tie.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
import pandas as pd

from vbayes import methods as registry
from vbayes.cross_validation import LOO, loo
from vbayes.errors import VBayesError
from vbayes.fit import Fit
from vbayes.keys import as_key
from vbayes.predictive import n_observations, require_observations
from vbayes.targets import Target

CLEAR_DIFFERENCE = 4.0
"""The least elpd difference read as a real one."""
CLEAR_SES = 2.0
"""... and the least number of standard errors of the paired difference."""


class ModelResult(NamedTuple):
    """One model: its fit (by ``method``, chosen for ``why``) and the fit's LOO."""

    name: str
    method: str
    why: str
    fit: Fit
    loo: LOO

    @property
    def trusted(self) -> bool:
        """The fit's own checks vouch for it and its LOO is reliable (every k̂ below the threshold)."""
        return self.fit.trusted and self.loo.reliable


class ModelComparison(NamedTuple):
    """The models best first; ``best`` and the ``verdict`` in words (a clear winner or a tie)."""

    results: tuple[ModelResult, ...]
    best: str
    verdict: str
    weights: dict[str, float]

    def table(self) -> pd.DataFrame:
        """One row per model, best first: method, verdict, elpd_loo, se, p_loo, elpd_diff, se_diff, the stacking
        weight, the LOO's unreliable observations, log Z (importance sampling, Laplace) and the ELBO."""
        best = self.results[0]
        rows = []
        for r in self.results:
            diff, se_diff = _difference(best.loo, r.loo)
            imp = r.fit.info.importance
            rows.append(
                {
                    "model": r.name,
                    "method": r.method,
                    "verdict": r.fit.verdict.status,
                    "elpd_loo": r.loo.elpd,
                    "se": r.loo.se,
                    "p_loo": r.loo.p_loo,
                    "elpd_diff": diff,
                    "se_diff": se_diff,
                    "weight": self.weights.get(r.name, math.nan),
                    "bad_k": int(r.loo.bad_observations.size),
                    "log_z_is": imp.log_evidence if imp is not None else math.nan,
                    "log_z_laplace": float(r.fit.info.extra.get("log_evidence", math.nan)),
                    "elbo": r.fit.elbo,
                }
            )
        return pd.DataFrame(rows).set_index("model")


def _difference(a: LOO, b: LOO) -> tuple[float, float]:
    """(elpd_a − elpd_b, √(N · var_i(elpd_a,i − elpd_b,i))): the paired difference and its standard error."""
    if a is b:
        return 0.0, 0.0
    if a.pointwise.shape != b.pointwise.shape:
        raise VBayesError(
            f"the models have different observations ({a.n_obs} and {b.n_obs}): LOO compares models of the same data"
        )
    d = a.pointwise - b.pointwise
    d = d[np.isfinite(d)]
    return a.elpd - b.elpd, float(math.sqrt(a.n_obs * np.var(d))) if d.size else math.nan


def compare_models(
    models: Mapping[str, Target],
    method: str | None = None,
    *,
    num_draws: int | None = None,
    key: Any = 0,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> ModelComparison:
    """Fit every model of ``models`` (name → target of the same data, with per-observation log-likelihoods: a
    NumPyro model or a :func:`~vbayes.from_loglik` target), compute each one's q-corrected PSIS-LOO (from the draws
    of its importance check, or ``num_draws`` fresh ones: :func:`vbayes.loo`), and compare them. ``method``: a
    registry name used for every model (``options`` passed to it); None: each model's recommended method
    (:func:`vbayes.compare.compare`, which runs several)."""
    if len(models) < 2:
        raise VBayesError("compare at least two models")
    for name, target in models.items():
        if not isinstance(target, Target):
            raise VBayesError(f"model {name!r} is not a vbayes Target")
        require_observations(target)
    counts = {name: n_observations(target) for name, target in models.items()}
    if len(set(counts.values())) > 1:
        each = ", ".join(f"{name!r}: {n}" for name, n in counts.items())
        raise VBayesError(
            f"the models have different numbers of observations ({each}): LOO compares models of the same data"
        )
    key = as_key(key)
    results = []
    for i, (name, target) in enumerate(models.items()):
        k_fit, k_loo = jax.random.split(jax.random.fold_in(key, i))
        if log:
            log(f"fitting {name}")
        fit, chosen, why = _fit(target, method, k_fit, options)
        cv = loo(fit, num_draws=num_draws, key=None if num_draws is None else k_loo)
        results.append(ModelResult(name, chosen, why, fit, cv))
    results.sort(key=lambda r: -r.loo.elpd)
    weights = _stacking_weights(results)
    return ModelComparison(tuple(results), results[0].name, _verdict(results), weights)


def _fit(target: Target, method: str | None, key: Any, options: dict) -> tuple[Fit, str, str]:
    if method is not None:
        return registry.fit(target, method, key=key, **options), method, "named"
    from vbayes.compare import compare

    comparison = compare(target, key=key)
    by_name = {r.method: r.fit for r in comparison.results}
    if comparison.recommended in by_name:
        return by_name[comparison.recommended], comparison.recommended, comparison.reason
    fallback = "nuts" if "nuts" in by_name else comparison.results[0].method
    return by_name[fallback], fallback, f"no method can be trusted on this model ({comparison.reason})"


def _stacking_weights(results: list[ModelResult]) -> dict[str, float]:
    """Stacking weights of the models' pointwise elpd (Yao, Vehtari, Simpson & Gelman 2018; ArviZ's ``compare``)."""
    from vbayes.diagnostics import import_arviz

    az = import_arviz()
    with warnings.catch_warnings():  # ArviZ 0.x's own use of a pandas keyword deprecated upstream
        warnings.filterwarnings("ignore", message="The inplace keyword")
        table = az.compare({r.name: r.loo.to_arviz() for r in results}, method="stacking")
    return {str(k): float(v) for k, v in table["weight"].items()}


def _verdict(results: list[ModelResult]) -> str:
    best, second = results[0], results[1]
    diff, se = _difference(best.loo, second.loo)
    lead = f"elpd_loo difference {diff:.1f} ± {se:.1f}"
    untrusted = [r.name for r in results if not r.trusted]
    caveat = f" (not vouched for: {', '.join(untrusted)})" if untrusted else ""
    if diff >= CLEAR_DIFFERENCE and diff >= CLEAR_SES * se:
        return f"{best.name} predicts best: {lead} over {second.name}{caveat}"
    return f"tie: {best.name} and {second.name} cannot be told apart ({lead}){caveat}"
