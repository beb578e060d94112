"""A fit as an ArviZ ``InferenceData``: posterior, posterior predictive, pointwise log-likelihood, observed data,
sample stats and the fit's record, so that ``az.summary``, ``az.loo``, ``az.compare`` and ``az.plot_ppc`` work on
it unchanged.

Every group comes from the same draws z_s: θ(z_s) in ``posterior``, log p(y_i | θ(z_s)) in ``log_likelihood``,
ỹ ~ p(ỹ | θ(z_s)) in ``posterior_predictive``, and in ``sample_stats`` ``lp`` = log p̃(z_s) and (for a q with a
density) ``log_weight`` = log p̃(z_s) − log q(z_s), the importance ratio that corrects q towards the posterior.
MCMC draws keep their chains; a q's draws are one chain. Note that ``az.loo`` treats the draws as posterior
draws: for a VI fit, :func:`vbayes.cross_validation.loo` applies the q-correction (or pass ``corrected=True``
here, which resamples q's draws by their PSIS weights first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.diagnostics import import_arviz
from vbayes.errors import VBayesError
from vbayes.families import PointMass
from vbayes.keys import as_key
from vbayes.predictive import has_observations, observed_data, pointwise_log_likelihood, predict_at
from vbayes.samples import Empirical, Weighted
from vbayes.targets.core import constrain_rows

Array = jax.Array


@jax.jit
def _lp(target: Any, z: Array) -> Array:
    return target.log_density_rows(z)


@jax.jit
def _log_q(q: Any, z: Array) -> Array:
    return q.log_prob(z)


def _sample_stats(fit: Any, z: Array, resampled: bool) -> dict[str, np.ndarray]:
    """``lp`` = log p̃(z), and ``log_weight`` = log p̃(z) − log q(z) where q has a density and drew z itself."""
    lp = np.asarray(_lp(fit.target, z))
    if resampled or isinstance(fit.q, Empirical | PointMass):
        return {"lp": lp}
    try:
        return {"lp": lp, "log_weight": lp - np.asarray(_log_q(fit.q, z))}
    except (VBayesError, NotImplementedError):  # a q without a density (EM's point estimate)
        return {"lp": lp}


def inference_data(
    fit: Any,
    n: int = 1000,
    key: Any = 0,
    *,
    corrected: bool = False,
    predictive: bool = True,
    log_likelihood: bool = True,
    simulator: Callable | None = None,
    observed: dict[str, Any] | None = None,
):
    """``arviz.InferenceData`` of ``fit`` from ``n`` draws of q (all MCMC draws, by chain). ``corrected``: q's
    draws resampled by their PSIS weights p̃/q (:meth:`Fit.corrected_draws`); ``predictive`` / ``log_likelihood``:
    include those groups when the target allows (a NumPyro model, a :func:`~vbayes.from_loglik` target, or a
    ``simulator``); ``observed``: observed data to show (a NumPyro model's own observed sites otherwise)."""
    az = import_arviz()
    target = fit.target
    attrs = _attrs(fit)
    if target is None:  # a conjugate model's own q: its named draws only
        return az.from_dict(posterior={k: v[None] for k, v in fit.draws(n, key).items()}, attrs=attrs)
    key = as_key(key)
    k_draw, k_pred = jax.random.split(key)
    if isinstance(fit.q, Empirical):
        z = np.asarray(fit.q.samples)
    elif corrected and not isinstance(fit.q, Weighted):  # importance sampling's draws are weighted already
        from vbayes.psis import psis_resample

        z = np.asarray(psis_resample(target, fit.q, int(n), k_draw)[0])[None]
    else:
        z = np.asarray(fit.draws_unconstrained(int(n), k_draw))[None]
    chains, draws = z.shape[:2]
    flat = jnp.asarray(z.reshape(chains * draws, -1))
    by_chain = lambda tree: {k: np.asarray(v).reshape((chains, draws) + v.shape[1:]) for k, v in tree.items()}  # noqa: E731
    groups: dict[str, Any] = {"posterior": by_chain(jax.device_get(constrain_rows(target, flat)))}
    groups["sample_stats"] = by_chain(_sample_stats(fit, flat, corrected))
    if log_likelihood and has_observations(target):
        groups["log_likelihood"] = by_chain(pointwise_log_likelihood(target, flat))
    own = observed_data(target)  # a NumPyro model's observed sites (traced once), else {}
    if predictive and (simulator is not None or own):
        groups["posterior_predictive"] = by_chain(predict_at(target, flat, k_pred, simulator=simulator))
    seen = observed if observed is not None else own
    if seen:
        groups["observed_data"] = {k: np.asarray(v) for k, v in seen.items()}
    return az.from_dict(**groups, attrs=attrs)


def _attrs(fit: Any) -> dict[str, Any]:
    info = fit.info
    attrs = {
        "inference_library": "vbayes",
        "method": info.method,
        "outcome": info.outcome,
        "verdict": info.verdict.status,
        "flags": "; ".join(info.verdict.flags),
    }
    if not np.isnan(fit.elbo):
        attrs["elbo"] = float(fit.elbo)
    if info.importance is not None:
        attrs["khat"] = float(info.importance.khat)
    return attrs
