"""What a fitted :class:`~vbayes.estimators.mixture.VariationalGaussianMixture` says about points: scikit-learn's
``predict``, ``predict_proba``, ``score_samples``, ``score`` and ``sample``, and the posterior predictive density,
as a mixin over the estimator's fitted state."""

from __future__ import annotations

import jax
import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from vbayes.conjugate import gmm
from vbayes.conjugate.model import call
from vbayes.data.sources import map_rows
from vbayes.errors import VBayesError


class MixturePredictions:
    """Prediction from q(β) (``self._params``) for the estimator that fitted it."""

    def predict(self, X) -> np.ndarray:
        """Most probable component per point: argmax_k E log p(x, z=k | β) (scikit-learn's rule)."""
        return np.argmax(self._log_joint(self._checked(X)), axis=1)

    def predict_proba(self, X) -> np.ndarray:
        """q(z = k | x): softmax over k of E log p(x, z=k | β), shape (N, K)."""
        rho = self._log_joint(self._checked(X))
        return np.exp(rho - logsumexp_rows(rho))

    def score_samples(self, X, predictive: bool = False) -> np.ndarray:
        """Per point: scikit-learn's ``logsumexp_k E log p(x, z=k | β)`` (a lower bound on the log
        predictive density, by Jensen); with ``predictive=True`` the log posterior predictive density
        itself (:meth:`predictive_log_density`). For em/map both are the plug-in log-likelihood."""
        X = self._checked(X)
        if predictive:
            return self._predictive(X)
        return logsumexp_rows(self._log_joint(X))[:, 0]

    def score(self, X, y=None) -> float:
        """Mean of ``score_samples(X)`` (scikit-learn's ``score``)."""
        return float(np.mean(self.score_samples(X)))

    def predictive_log_density(self, X) -> np.ndarray:
        """log p(x | training data) under q: Σ_k E[π_k] St(x | m_k, L_k, ν_k + 1 − D) (Bishop 10.81), the
        density scikit-learn does not offer (its issue #10148). For em/map: the plug-in mixture density."""
        return self._predictive(self._checked(X))

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``n_samples`` points from the mixture at the point estimates (``weights_``, ``means_``,
        ``covariances_``) and their components, as scikit-learn (same random stream for ``random_state``)."""
        check_is_fitted(self)
        if n_samples < 1:
            raise VBayesError(f"n_samples must be >= 1, got {n_samples}")
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        dim = self.means_.shape[1]
        parts = []
        for mean, cov, count in zip(self.means_, self.covariances_, counts, strict=True):
            if self.covariance_type == "full":
                parts.append(rng.multivariate_normal(mean, cov, int(count)))
            else:
                parts.append(mean + rng.standard_normal(size=(count, dim)) * np.sqrt(cov))
        labels = np.repeat(np.arange(self.n_components), counts)
        return np.vstack(parts), labels

    def _local(self, model):
        params = jax.tree.map(jax.numpy.asarray, self._params)
        return call(model, "mode" if self.method in ("em", "map") else "expect", params)

    def _log_joint(self, X) -> np.ndarray:
        """ρ_nk = E log p(x_n, z_n=k | β) (its point-mass value for em/map), shape (N, K)."""
        with jax.enable_x64(True):
            model = self._model()
            fn = jax.tree_util.Partial(_rows_log_joint, model, self._local(model))
            return map_rows(fn, X - self._shift)

    def _predictive(self, X) -> np.ndarray:
        if self.method in ("em", "map"):
            return logsumexp_rows(self._log_joint(X))[:, 0]
        with jax.enable_x64(True):
            model = self._model()
            params = jax.tree.map(jax.numpy.asarray, self._params)
            fn = jax.tree_util.Partial(gmm.predictive_log_density, model, params)
            return map_rows(fn, X - self._shift)


def _rows_log_joint(model, local, x):
    return gmm.log_joint_terms(model, local, x)


def logsumexp_rows(a: np.ndarray) -> np.ndarray:
    top = np.max(a, axis=1, keepdims=True)
    return top + np.log(np.sum(np.exp(a - top), axis=1, keepdims=True))
