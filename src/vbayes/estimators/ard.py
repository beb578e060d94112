"""``VBARDRegression`` and ``VBBayesianRidge``: scikit-learn regressors over :mod:`vbayes.conjugate.ard` and the
conjugate engine's ``cavi``.

The interface is scikit-learn's ``ARDRegression`` / ``BayesianRidge`` (same parameter names and Gamma defaults,
same fitted attributes, ``predict(X, return_std=True)``), the inference variational Bayes (Drugowitsch 2014,
arXiv:1310.5438) instead of evidence maximisation: q(w, τ) q(α) with every update in closed form, and a true lower
bound on log p(y | X) in ``scores_``. They only validate, centre and run the engine's model: it has no local latent
variables, so CAVI is one pass for the statistics and the global step on them (the coordinate ascent between
q(w, τ) and q(α) to its fixed point; ``cavi`` on the model does the same); ARD's pruning repeats the global step
on the same statistics. The pass is BLAS's ``XᵀX`` on the centred rows held in memory (for data that do not fit,
or on Dask, fit the model with ``vbayes.conjugate.cavi`` or ``svi``).

Naming, as scikit-learn: ``alpha_`` is the noise precision E[τ] and ``lambda_`` the weights' precisions
E[τ α_k] = E[τ] E[α_k] (the model's weight prior is N(0, (τ diag α)⁻¹): Drugowitsch's scaling, so the Gamma
(``lambda_1``, ``lambda_2``) prior is on α_k = λ_k/τ, the weight precision in units of the noise precision).

Precision: every computation runs in float64 inside ``jax.enable_x64(True)`` (the process-wide flag is left alone).
"""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from vbayes.conjugate import ard
from vbayes.conjugate.engine.posterior import conjugate_fit
from vbayes.conjugate.model import ConjugateModel, Mode
from vbayes.errors import is_count, is_positive, is_real, require
from vbayes.fit import Fit

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def _validate_data(est, X, y="no_validation", *, reset=True, **kw):
        return est._validate_data(X, y, reset=reset, **kw)


class _VBLinearRegression(RegressorMixin, BaseEstimator):
    """What the two estimators share: validation, centring, the engine call and prediction."""

    _tied = False

    # ------------------------------------------------------------------------------------------------
    # scikit-learn's methods

    def fit(self, X, y):
        """Fit q(w, τ) q(α) to ``X`` (N, d) and ``y`` (N,): one pass for the statistics, then the engine's CAVI
        global step on them (ARD: hold the weights whose λ reaches ``threshold_lambda`` at 0 and take the step
        again, until no other λ reaches it)."""
        self._check_params()
        t0 = time.perf_counter()
        X, y = _validate_data(self, X, y, dtype=np.float64, y_numeric=True, ensure_min_samples=2)
        d = X.shape[1]
        self.X_offset_ = X.mean(0) if self.fit_intercept else np.zeros(d)
        self.X_scale_ = np.ones(d)
        y_offset = float(y.mean()) if self.fit_intercept else 0.0
        xc, yc = X - self.X_offset_, y - y_offset
        # the pass: Σ x xᵀ by BLAS's symmetric rank-k update (a fifth of the time of XLA's product on a CPU), Σ x y,
        # Σ y², N: the model's statistics (ard.statistics), in the float64 of the data
        sums = (xc.T @ xc, xc.T @ yc, yc @ yc, float(len(y)))
        keep, lam = np.ones(d, bool), np.zeros(d)
        with jax.enable_x64(True):
            stats = ard.ARDStats(*(jnp.asarray(a) for a in sums))
            while True:  # the same shapes each time, hence the same compiled programs
                model = self._model(keep)
                params, trace, sweeps = _ascent(ard.model_prior(model), stats, 1.0, int(self.max_iter))
                mo = jax.tree.map(np.asarray, _moments(ard.model_prior(model), params))
                lam[keep] = (mo.tau * mo.alpha)[keep]
                drop = self._pruned(lam) & keep
                if not drop.any():
                    break
                keep &= ~drop
            trace, sweeps = np.asarray(trace)[: int(sweeps)], int(sweeps)
            fit = conjugate_fit(
                model,
                params,
                Mode.VB,
                method="cavi",
                outcome="converged" if sweeps < self.max_iter else "max_steps",
                message=f"one pass over the data, then {sweeps} sweeps of the global step on its statistics",
                steps=1,
                seconds=time.perf_counter() - t0,
                trace=trace,
                trace_of="the ELBO (total nats) after each sweep of the global step's coordinate ascent",
                objective=float(trace[-1]),
                n_samples=len(y),
                extra={"passes": 1, "sweeps": sweeps, "monotone_objective": True},
            )
        self._set_fitted(fit, mo, keep, lam, trace, sweeps, y_offset)
        return self

    def predict(self, X, return_std: bool = False):
        """The predictive mean xᵀ coef_ + intercept_ (N,); with ``return_std`` also √(1/alpha_ + x̃ᵀ sigma_ x̃), x̃
        the centred kept features (scikit-learn's formula: the scale of q's Student-t predictive, whose sd is
        that times √(a/(a − 1)), a = a₀ + N/2)."""
        check_is_fitted(self)
        X = _validate_data(self, X, dtype=np.float64, reset=False)
        mean = X @ self.coef_ + self.intercept_
        if not return_std:
            return mean
        xk = (X - self.X_offset_)[:, self._keep]
        return mean, np.sqrt(1.0 / self.alpha_ + np.sum((xk @ self.sigma_) * xk, 1))

    # ------------------------------------------------------------------------------------------------
    # internals

    def _pruned(self, lam: np.ndarray) -> np.ndarray:
        return np.zeros(lam.shape, bool)

    def _check_params(self) -> None:
        priors = ("alpha_1", "alpha_2", "lambda_1", "lambda_2")
        require(
            [
                ("max_iter", self.max_iter, is_count(self.max_iter), "an integer ≥ 1"),
                ("tol", self.tol, is_real(self.tol) and self.tol >= 0, "≥ 0 and finite (nats per point)"),
                *((p, getattr(self, p), is_positive(getattr(self, p)), "positive and finite") for p in priors),
                ("fit_intercept", self.fit_intercept, isinstance(self.fit_intercept, bool | np.bool_), "a bool"),
            ],
            type(self).__name__,
        )

    def _model(self, keep: np.ndarray) -> ConjugateModel:
        """The engine's model with the weights not in ``keep`` held at 0."""
        return ard.ard_regression_model(
            keep.size,
            float(self.alpha_1),
            float(self.alpha_2),
            float(self.lambda_1),
            float(self.lambda_2),
            tied=self._tied,
            active=keep,
            tol=float(self.tol),
            max_sweeps=int(self.max_iter),
        )

    def _set_fitted(self, fit: Fit, mo: ard.ARDMoments, keep, lam, trace, sweeps: int, y_offset: float) -> None:
        """scikit-learn's attributes from q: coef_ = E[w] (0 where pruned), sigma_ = P⁻¹/E[τ] over the kept
        features, alpha_ = E[τ], lambda_ = E[τ] E[α]."""
        self._keep = keep
        self.coef_ = np.where(keep, mo.mean, 0.0)
        self.alpha_ = float(mo.tau)
        self.sigma_ = mo.cov[np.ix_(keep, keep)] / self.alpha_
        self.lambda_ = float(lam[0]) if self._tied else lam.copy()
        self.intercept_ = float(y_offset - self.X_offset_ @ self.coef_) if self.fit_intercept else 0.0
        self.scores_ = trace
        self.n_iter_ = sweeps
        self.elbo_ = float(fit.info.extra["objective"])
        self.result_ = fit
        self.converged_ = sweeps < self.max_iter
        if not self.converged_:
            warnings.warn(
                f"{type(self).__name__} did not converge: max_iter={self.max_iter} sweeps reached with the ELBO "
                f"still rising by ≥ tol={self.tol:g} nats per point. Increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=3,
            )


_ascent = jax.jit(ard.ascent, static_argnums=3)
_moments = jax.jit(ard.moments)


class VBARDRegression(_VBLinearRegression):
    """Variational Bayes ARD regression (scikit-learn's ``ARDRegression`` interface): y ~ N(xᵀw + b, τ⁻¹),
    w_k ~ N(0, (τα_k)⁻¹), τ ~ Gamma(``alpha_1``, ``alpha_2``), α_k ~ Gamma(``lambda_1``, ``lambda_2``)
    (shape, rate), fitted by mean-field VB q(w, τ) q(α) (:mod:`vbayes.conjugate.ard`).

    max_iter : int, default 1000
        Sweeps of the coordinate ascent (q(w, τ), then q(α)) at most, per fit.
    tol : float, default 1e-8
        Stop when a sweep raises the ELBO by less than ``tol`` nats per point (scikit-learn's ``tol`` is a change
        of the coefficients; this one bounds what is left of the objective).
    alpha_1, alpha_2, lambda_1, lambda_2 : float, default 1e-6
        The Gamma priors' shapes and rates (scikit-learn's names and defaults).
    threshold_lambda : float, default 1e4
        Features whose λ_k = E[τ] E[α_k] reaches it are pruned (coefficient 0, left out of ``sigma_``) and the
        model is fitted again on the others, until no λ reaches it.
    fit_intercept : bool, default True
        Centre X and y (as scikit-learn); ``intercept_`` = ȳ − x̄ᵀ coef_.

    Fitted attributes (scikit-learn's): ``coef_`` (d,), ``intercept_``, ``alpha_`` = E[τ], ``lambda_`` (d,),
    ``sigma_`` (kept, kept) = P⁻¹/E[τ] (the covariance of q(w | τ = E τ); q's marginal covariance is
    a/(a − 1) times it), ``scores_`` (the ELBO after each sweep of the last fit, total nats, never decreasing),
    ``n_iter_`` (its sweeps), ``X_offset_``, ``X_scale_``; and ``elbo_`` (the final lower bound on
    log p(y | X), total nats), ``converged_``, ``result_`` (the engine's :class:`vbayes.Fit`). Not supported:
    ``compute_score`` (scores are always kept), ``copy_X``, ``verbose``, sample weights, sparse input.
    """

    def __init__(
        self,
        *,
        max_iter=1000,
        tol=1e-8,
        alpha_1=1e-6,
        alpha_2=1e-6,
        lambda_1=1e-6,
        lambda_2=1e-6,
        threshold_lambda=1e4,
        fit_intercept=True,
    ):
        self.max_iter = max_iter
        self.tol = tol
        self.alpha_1 = alpha_1
        self.alpha_2 = alpha_2
        self.lambda_1 = lambda_1
        self.lambda_2 = lambda_2
        self.threshold_lambda = threshold_lambda
        self.fit_intercept = fit_intercept

    def _check_params(self) -> None:
        super()._check_params()
        threshold = self.threshold_lambda
        ok = is_positive(threshold) or threshold == np.inf
        require([("threshold_lambda", threshold, ok, "positive")], type(self).__name__)

    def _pruned(self, lam: np.ndarray) -> np.ndarray:
        return lam >= self.threshold_lambda


class VBBayesianRidge(_VBLinearRegression):
    """Variational Bayes ridge regression (scikit-learn's ``BayesianRidge`` interface): the model of
    :class:`VBARDRegression` with one α shared by all weights (``lambda_`` a float, no pruning). Same parameters
    and attributes otherwise; not supported beyond those: ``alpha_init``, ``lambda_init``."""

    _tied = True

    def __init__(
        self,
        *,
        max_iter=1000,
        tol=1e-8,
        alpha_1=1e-6,
        alpha_2=1e-6,
        lambda_1=1e-6,
        lambda_2=1e-6,
        fit_intercept=True,
    ):
        self.max_iter = max_iter
        self.tol = tol
        self.alpha_1 = alpha_1
        self.alpha_2 = alpha_2
        self.lambda_1 = lambda_1
        self.lambda_2 = lambda_2
        self.fit_intercept = fit_intercept
