"""``LatentDirichletAllocation``: scikit-learn's LDA estimator over :mod:`vbayes.conjugate.lda` and the engine.

A drop-in replacement for ``sklearn.decomposition.LatentDirichletAllocation``: the same parameters and defaults,
the same fitted attributes and methods, and, from the same ``random_state``, the same iterates (the same initial
topics λ⁰ ~ Gamma(100, 1/100), the same Gamma(100, 1/100) start of every document in every training E-step, the same
per-document stopping rule, the same (τ₀ + t)^−κ steps). The estimator only validates, draws the starts and calls
the engine's pure passes and updates (:func:`vbayes.conjugate.model.batch_pass`, :func:`~vbayes.conjugate.model.update`,
:func:`~vbayes.conjugate.model.svi_step`): each pass over a block of documents is one compiled program, its
documents' fixed points run side by side.

Differences: digamma is exact to ~1e-14 (:func:`vbayes.conjugate.lda.digamma_positive`; scikit-learn's truncated
series is off by up to ~2e-9, which after a few iterations moves ``components_`` by ~1e-7 relative; with an exact
digamma in scikit-learn both agree to ~1e-10, tested); ``n_jobs`` is the number of threads that run the blocks of
documents of a pass at once (None: every core, where scikit-learn's None means one job; negative: as joblib, −1
every core). Precision: float64 counts are computed in float64 throughout, inside ``jax.enable_x64(True)`` (a
context manager: the process-wide flag is left alone); float32 counts, as in scikit-learn, give float32
``components_``, ``exp_dirichlet_component_`` and ``transform``, with the E-steps and each block's sum in float32
(about twice as fast) and the sums over blocks and the topic updates in float64.
"""

from __future__ import annotations

import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils.validation import check_is_fitted, check_non_negative

from vbayes.conjugate import lda
from vbayes.conjugate.engine.posterior import conjugate_fit
from vbayes.conjugate.model import ConjugateModel, IterState, Mode, SVIState, call, svi_update, update
from vbayes.data.sources import default_threads
from vbayes.errors import is_count, is_positive, is_real, require
from vbayes.estimators.lda_documents import DocumentBlocks, doc_topic_shares
from vbayes.fit import Fit

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def _validate_data(est, X, *, reset, **kw):
        return est._validate_data(X, reset=reset, **kw)


class LatentDirichletAllocation(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Latent Dirichlet allocation by batch or online variational Bayes (scikit-learn API).

    Parameters are scikit-learn's, with its defaults and meaning: ``n_components`` K = 10; ``doc_topic_prior``
    α and ``topic_word_prior`` η (None: 1/K); ``learning_method`` "batch" (every pass over all documents, then the
    update λ = η + S: CAVI) or "online" (λ ← (1 − ρ_t)λ + ρ_t(η + (N/S)·S_B) per minibatch of ``batch_size``,
    ρ_t = (``learning_offset`` + t)^−``learning_decay``: Hoffman, Blei & Bach 2010); ``max_iter`` passes;
    ``evaluate_every`` (perplexity every that many passes, stopping when it changes by less than ``perp_tol``);
    ``total_samples`` (N for ``partial_fit``); ``mean_change_tol`` and ``max_doc_update_iter`` (the per-document
    fixed point); ``random_state``; ``verbose``; ``n_jobs`` (threads for a pass's blocks; None: every core).

    Attributes: ``components_`` λ ``(K, V)``, ``exp_dirichlet_component_`` exp(E log β), ``n_batch_iter_``,
    ``n_iter_``, ``bound_`` (the final perplexity on the training data, as scikit-learn), ``doc_topic_prior_``,
    ``topic_word_prior_``, ``random_state_``, ``n_features_in_``, and ``result_``: the last ``fit`` as a
    :class:`vbayes.Fit` (q(β) in ``result_.q.params``, the perplexity trace, the outcome, the verdict). Methods:
    ``fit``, ``partial_fit``, ``transform`` (normalised doc-topic proportions), ``fit_transform``, ``perplexity``,
    ``score`` (the ELBO).
    """

    def __init__(
        self,
        n_components=10,
        *,
        doc_topic_prior=None,
        topic_word_prior=None,
        learning_method="batch",
        learning_decay=0.7,
        learning_offset=10.0,
        max_iter=10,
        batch_size=128,
        evaluate_every=-1,
        total_samples=1e6,
        perp_tol=1e-1,
        mean_change_tol=1e-3,
        max_doc_update_iter=100,
        n_jobs=None,
        verbose=0,
        random_state=None,
    ):
        self.n_components = n_components
        self.doc_topic_prior = doc_topic_prior
        self.topic_word_prior = topic_word_prior
        self.learning_method = learning_method
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.evaluate_every = evaluate_every
        self.total_samples = total_samples
        self.perp_tol = perp_tol
        self.mean_change_tol = mean_change_tol
        self.max_doc_update_iter = max_doc_update_iter
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # ------------------------------------------------------------------------------------------------
    # scikit-learn's methods

    def fit(self, X, y=None):
        """Fit the topics to the document-term counts ``X`` ``(D, V)`` (dense or sparse) by ``max_iter`` passes;
        ``result_`` holds the run as a :class:`vbayes.Fit` with its verdict (:meth:`_result`)."""
        self._check_params()
        X = self._validate(X, reset=True, whom="fit")
        self._init_latent_vars(X.shape[1], X.dtype)
        t0 = time.perf_counter()
        with jax.enable_x64(True):
            docs = DocumentBlocks(X, self.n_components, self._threads())
            curve: dict[int, float] = {}  # passes done -> training perplexity, where a pass measured it
            last_bound, stopped = None, False
            for i in range(self.max_iter):
                if self.learning_method == "online":
                    for rows in gen_batches(X.shape[0], self.batch_size):
                        self._online_step(docs.subset(rows), total_samples=X.shape[0])
                else:
                    curve[i] = float(np.exp(-self._batch_step(docs) / docs.n_words))
                if self.evaluate_every > 0 and (i + 1) % self.evaluate_every == 0:
                    bound = curve[i + 1] = self._perplexity(docs, sub_sampling=False)
                    if self.verbose:
                        print(f"iteration: {i + 1} of max_iter: {self.max_iter}, perplexity: {bound:.4f}")
                    if last_bound and abs(last_bound - bound) < self.perp_tol:
                        stopped = True
                        break
                    last_bound = bound
                elif self.verbose:
                    print(f"iteration: {i + 1} of max_iter: {self.max_iter}")
                self.n_iter_ += 1
            passes = self.n_iter_ + stopped
            if not (self.evaluate_every > 0 and passes % self.evaluate_every == 0 and passes in curve):
                curve[passes] = self._perplexity(docs, sub_sampling=False)  # else the last pass measured it already
            self.bound_ = curve[passes]
            self.result_ = self._result(curve, stopped, docs, time.perf_counter() - t0)
        return self

    def _result(self, curve: dict[int, float], stopped: bool, docs: DocumentBlocks, seconds: float) -> Fit:
        """The run as a :class:`vbayes.Fit`: ``converged`` when the training perplexity changed by less than
        ``perp_tol`` between its last two measurements (scikit-learn's stopping rule, which a batch run measures at
        every pass for free: each pass's E-step gives the bound of the topics it starts from), ``max_steps`` when it
        still changed by more, ``completed`` when no two passes were measured (online with ``evaluate_every`` ≤ 0:
        the fixed budget asked for), a run no check can vouch for: its verdict is ``unchecked``, and the message says
        why. ``trace``: the perplexities."""
        passes = sorted(curve)
        trace = np.array([curve[p] for p in passes])
        last = abs(trace[-1] - trace[-2]) if len(trace) > 1 else float("nan")
        change = f"changed by {last:.3g} between passes {passes[-2]} and {passes[-1]}" if len(trace) > 1 else ""
        if stopped or last < self.perp_tol:
            outcome, message = "converged", f"the training perplexity {change} (< perp_tol={self.perp_tol:g})"
        elif len(trace) > 1:
            outcome = "max_steps"
            message = f"max_iter={self.max_iter} passes run; the training perplexity still {change} (≥ perp_tol="
            message += f"{self.perp_tol:g}: raise max_iter)"
        else:
            outcome = "completed"
            message = f"max_iter={self.max_iter} passes, as asked; convergence not checked (evaluate_every ≥ 1 does)"
        params = self._params()
        objective = -np.log(self.bound_) * docs.n_words
        return conjugate_fit(
            self._model(),
            params,
            Mode.VB,
            method="cavi" if self.learning_method == "batch" else "svi",
            outcome=outcome,
            message=message,
            steps=self.n_iter_,
            seconds=seconds,
            trace=trace,
            trace_of="training perplexity",
            objective=float(objective),
            n_samples=docs.n_docs,
            extra={"passes": self.n_iter_, "perplexity": float(self.bound_)},
            checks="none" if outcome == "completed" else "default",
        )

    def partial_fit(self, X, y=None):
        """One online pass over the minibatches of ``X`` (``batch_size`` documents each), continuing the fit."""
        self._check_params()
        first = not hasattr(self, "components_")
        X = self._validate(X, reset=first, whom="partial_fit")
        if first:
            self._init_latent_vars(X.shape[1], X.dtype)
        with jax.enable_x64(True):
            docs = DocumentBlocks(X, self.n_components, self._threads())
            for rows in gen_batches(X.shape[0], self.batch_size):
                self._online_step(docs.subset(rows), total_samples=self.total_samples)
        self.__dict__.pop("result_", None)  # it described the last fit, not these topics
        return self

    def transform(self, X):
        """Doc-topic proportions ``(D, K)``: each document's E-step from γ⁰ = 1, normalised to sum to 1."""
        check_is_fitted(self)
        X = self._validate(X, reset=False, whom="transform")
        with jax.enable_x64(True):
            shares = doc_topic_shares(self._model(), self._params(), X, self.n_components, self._threads())
        return shares.astype(X.dtype, copy=False)

    def fit_transform(self, X, y=None, **params):
        """``fit(X).transform(X)``."""
        return self.fit(X, y).transform(X)

    def score(self, X, y=None) -> float:
        """The ELBO of ``X`` (total nats): Σ_d ELBO_d at the optimal q(θ_d), q(z_d) − KL(q(β) ‖ p(β))."""
        check_is_fitted(self)
        X = self._validate(X, reset=False, whom="score")
        with jax.enable_x64(True):
            return self._bound(DocumentBlocks(X, self.n_components, self._threads()), sub_sampling=False)

    def perplexity(self, X, sub_sampling=False) -> float:
        """exp(−ELBO / words in ``X``); ``sub_sampling``: ``X`` stands for ``total_samples`` documents."""
        check_is_fitted(self)
        X = self._validate(X, reset=False, whom="perplexity")
        with jax.enable_x64(True):
            return self._perplexity(DocumentBlocks(X, self.n_components, self._threads()), sub_sampling)

    # ------------------------------------------------------------------------------------------------
    # the steps, through the engine

    def _threads(self) -> int:
        """Threads for a pass's blocks from ``n_jobs``: None → every core; −k → cores + 1 − k (joblib's rule)."""
        if self.n_jobs is None:
            return default_threads()
        return max(1, self.n_jobs if self.n_jobs > 0 else default_threads() + 1 + self.n_jobs)

    def _model(self) -> ConjugateModel:
        return lda.lda_model(
            self.doc_topic_prior_, self.topic_word_prior_, self.max_doc_update_iter, self.mean_change_tol, jnp.float64
        )

    def _params(self) -> lda.LDAParams:
        return lda.LDAParams(jnp.asarray(self.components_, jnp.float64))

    def _local(self) -> lda.LDALocal:
        return call(self._model(), "expect", self._params())

    def _set_components(self, params: lda.LDAParams, local: lda.LDALocal) -> None:
        dtype = self.components_.dtype
        self.components_ = np.asarray(params.topic_word).astype(dtype, copy=False)
        self.exp_dirichlet_component_ = np.asarray(local.exp_log_topics).astype(dtype, copy=False)

    def _batch_step(self, docs: DocumentBlocks) -> float:
        """λ = η + S over all documents, each started at Gamma(100, 1/100) draws (the engine's CAVI update); returns
        the bound (total nats) of the topics the pass started from, Σ_d ELBO_d − KL(q(β) ‖ p(β))."""
        model, params = self._model(), self._params()
        gamma0 = self.random_state_.gamma(100.0, 0.01, (docs.n_docs, self.n_components))
        state = IterState(params, call(model, "expect", params), jnp.asarray(-jnp.inf), jnp.asarray(0, jnp.int32))
        stats, local_elbo = docs.pass_stats(model, state.local, gamma0)
        new = _update(model, state, stats, local_elbo)
        self._set_components(new.params, new.local)
        self.n_batch_iter_ += 1
        return float(local_elbo - call(model, "kl", params))

    def _online_step(self, docs: DocumentBlocks, total_samples: float) -> None:
        """λ ← (1 − ρ)λ + ρ(η + (N/S)·S_B), ρ = (τ₀ + t)^−κ, t = ``n_batch_iter_`` (the engine's SVI update on the
        minibatch's statistics, its documents grouped by length as in a full pass)."""
        model, params = self._model(), self._params()
        gamma0 = self.random_state_.gamma(100.0, 0.01, (docs.n_docs, self.n_components))
        stats, _ = docs.pass_stats(model, call(model, "expect", params), gamma0, with_elbo=False)
        state = SVIState(params, jnp.asarray(self.n_batch_iter_, jnp.float64))
        scale = float(total_samples) / docs.n_docs
        new, _ = _svi_update(model, state, stats, scale, float(self.learning_offset), float(self.learning_decay))
        self._set_components(new.params, call(model, "expect", new.params))
        self.n_batch_iter_ += 1

    def _bound(self, docs: DocumentBlocks, sub_sampling: bool) -> float:
        """scikit-learn's approximate bound: (N/D)·Σ_d ELBO_d (N/D = 1 unless ``sub_sampling``) − KL(q(β) ‖ p(β))."""
        model, params = self._model(), self._params()
        _, local_elbo = docs.pass_stats(model, call(model, "expect", params), None)
        ratio = self.total_samples / docs.n_docs if sub_sampling else 1.0
        return float(ratio * local_elbo - call(model, "kl", params))

    def _perplexity(self, docs: DocumentBlocks, sub_sampling: bool) -> float:
        ratio = self.total_samples / docs.n_docs if sub_sampling else 1.0
        return float(np.exp(-self._bound(docs, sub_sampling) / (docs.n_words * ratio)))

    # ------------------------------------------------------------------------------------------------
    # checks and initialisation

    def _check_params(self) -> None:
        K = self.n_components
        optional_prior = lambda v: v is None or is_positive(v)
        non_negative = lambda v: is_real(v) and v >= 0
        decay_ok = non_negative(self.learning_decay) and self.learning_decay <= 1
        offset_ok = is_real(self.learning_offset) and self.learning_offset >= 1
        require(
            [
                ("n_components", K, is_count(K), "an integer ≥ 1"),
                ("doc_topic_prior", self.doc_topic_prior, optional_prior(self.doc_topic_prior), "None or > 0"),
                ("topic_word_prior", self.topic_word_prior, optional_prior(self.topic_word_prior), "None or > 0"),
                ("learning_method", self.learning_method, self.learning_method in ("batch", "online"), "batch|online"),
                ("learning_decay", self.learning_decay, decay_ok, "in [0, 1]"),
                ("learning_offset", self.learning_offset, offset_ok, "≥ 1"),
                ("max_iter", self.max_iter, is_count(self.max_iter, 0), "an integer ≥ 0"),
                ("batch_size", self.batch_size, is_count(self.batch_size), "an integer ≥ 1"),
                ("evaluate_every", self.evaluate_every, is_count(self.evaluate_every, -(2**62)), "an integer"),
                ("total_samples", self.total_samples, is_positive(self.total_samples), "> 0"),
                ("perp_tol", self.perp_tol, non_negative(self.perp_tol), "≥ 0"),
                ("mean_change_tol", self.mean_change_tol, non_negative(self.mean_change_tol), "≥ 0"),
                ("max_doc_update_iter", self.max_doc_update_iter, is_count(self.max_doc_update_iter), "an integer ≥ 1"),
                ("n_jobs", self.n_jobs, self.n_jobs is None or is_count(self.n_jobs, -(2**62)), "None or an integer"),
            ],
            "LatentDirichletAllocation",
        )  # fmt: skip

    def _validate(self, X, reset: bool, whom: str):
        import scipy.sparse as sp

        dtype = [np.float64, np.float32] if reset else self.components_.dtype
        X = _validate_data(self, X, reset=reset, accept_sparse="csr", dtype=dtype)
        check_non_negative(X, f"LatentDirichletAllocation.{whom}")
        return sp.csr_matrix(X)

    def _init_latent_vars(self, n_words: int, dtype) -> None:
        self.random_state_ = check_random_state(self.random_state)
        self.n_batch_iter_ = 1
        self.n_iter_ = 0
        K = self.n_components
        self.doc_topic_prior_ = 1.0 / K if self.doc_topic_prior is None else float(self.doc_topic_prior)
        self.topic_word_prior_ = 1.0 / K if self.topic_word_prior is None else float(self.topic_word_prior)
        self.components_ = lda.initial_topics(K, n_words, self.random_state_).astype(dtype, copy=False)
        with jax.enable_x64(True):
            self.exp_dirichlet_component_ = np.asarray(self._local().exp_log_topics).astype(dtype, copy=False)

    @property
    def _n_features_out(self) -> int:
        return self.components_.shape[0]


_update = jax.jit(partial(update, mode=Mode.VB))
_svi_update = jax.jit(svi_update)
