"""``VariationalGaussianMixture``: a scikit-learn estimator over :mod:`vbayes.conjugate.gmm` and the
conjugate engine (:mod:`vbayes.conjugate`: CAVI, SVI, EM, MAP-EM, delete/merge moves; any data source).

It only validates, converts and calls the engine: the algorithms, their schedules and the moves live there,
where every conjugate model can use them. The parameters' checks and priors are in
:mod:`~vbayes.estimators.mixture_params`, prediction in :mod:`~vbayes.estimators.mixture_predict`.

Longer than 400 lines because it is one scikit-learn estimator: its constructor must take and store scikit-learn's
21 parameters verbatim, its docstring documents each, and its four ways to fit (in memory, a stream, Dask, a
minibatch at a time) share the estimator's private state.

Same parameters, priors, initialisations and fitted attributes as scikit-learn's
``BayesianGaussianMixture`` (with ``method="em"``, as ``GaussianMixture``), so that it is a drop-in
replacement; from the same initial responsibilities both give the same parameters to ~1e-12. Beyond it:
minibatch SVI and ``partial_fit``, streaming from disk (``fit_stream``), the full ELBO with every
normalising constant, a per-point tolerance, and the posterior predictive density (a Student-t mixture).

Precision: every computation runs in float64 inside ``jax.enable_x64(True)``, a context manager, so the
estimator never changes the process-wide ``jax_enable_x64`` flag. Large N needs it: the statistics are
sums over N points and the ELBO is compared across iterations at 1e-6 nats per point.
"""

from __future__ import annotations

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from vbayes.conjugate import gmm
from vbayes.conjugate.engine.cavi import cavi
from vbayes.conjugate.engine.moves import best_run, cavi_with_moves, move_rows, svi_with_moves
from vbayes.conjugate.engine.posterior import conjugate_fit
from vbayes.conjugate.engine.svi import SVIConfig, svi
from vbayes.conjugate.model import ConjugateModel, Mode, SVIState, svi_step
from vbayes.data import InMemory, Stream
from vbayes.data.sources import check_data, row_order
from vbayes.data.stream import stream_moments
from vbayes.errors import VBayesError
from vbayes.estimators.mixture_params import (
    check_params,
    initial_resp,
    precision_cholesky,
    prior_values,
)
from vbayes.estimators.mixture_predict import MixturePredictions
from vbayes.fit import Fit

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def _validate_data(est, X, *, reset, ensure_all_finite, **kw):
        return est._validate_data(X, reset=reset, force_all_finite=ensure_all_finite, **kw)


DEFAULT_TOL = {"cavi": 1e-6, "em": 1e-6, "map": 1e-6, "svi": 2e-4}
MODES = {"cavi": Mode.VB, "svi": Mode.VB, "em": Mode.EM, "map": Mode.MAP}
FIRST_SVI_STEPS = 1024  # SVI steps before the first delete/merge sweep (at most)


class VariationalGaussianMixture(MixturePredictions, DensityMixin, BaseEstimator):
    """Bayesian Gaussian mixture fitted by CAVI, SVI, EM or MAP-EM (scikit-learn API).

    Parameters are scikit-learn's ``BayesianGaussianMixture``'s (same defaults and meaning: priors
    ``weight_concentration_prior`` = 1/K, ``mean_precision_prior`` = 1, ``mean_prior`` = data mean,
    ``degrees_of_freedom_prior`` = D, ``covariance_prior`` = data covariance), except:

    method : {"cavi", "svi", "em", "map"}, default "cavi"
        Coordinate-ascent VB on all data; stochastic VB on minibatches (Hoffman et al. 2013); EM for the
        maximum-likelihood mixture (priors ignored; as ``GaussianMixture``); MAP-EM (the mode of the same
        posterior; needs ``weight_concentration_prior`` ≥ 1 and ``degrees_of_freedom_prior`` > D, whose
        defaults for this method are 1 and D + 1, since below them the mode is on the boundary).
    tol : float, default None
        Stop when the objective changes by less than ``tol`` nats *per point* (scikit-learn's BGM uses the
        total, which at large N never converges). None: 1e-6 for cavi/em/map — at N ≤ 1e6 at most 1 nat
        in total, below what separates two models — and 2e-4 for SVI, whose rule estimates the gap to the
        optimum left by the minibatch noise (see :func:`vbayes.conjugate.engine.svi.svi`).
    max_iter : int, default 1000
        Iterations (passes) for cavi/em/map; for SVI, the budget in passes' worth of points
        (``n_iter_`` then counts SVI steps).
    batch_size, learning_offset, learning_decay : SVI's S (None: min(N, 4096)), τ and κ in
        ρ_t = (t + τ)^−κ; ``partial_fit`` uses the last two.
    total_samples : int or None
        N in SVI's scale N/S for ``partial_fit``; None: the number of points seen so far.
    delete_merge : bool, default True
        For cavi and svi: once the ELBO changes by less than 1e-4 nats per point, try removing each
        component, smallest first: delete it (its statistics set to zero) or else merge it into its
        nearest component (statistics added), then one CAVI update; a move is kept when it raises the ELBO
        (Hughes & Sudderth 2013). SVI judges its moves on a uniform subset (:meth:`_move_rows` rows): the
        baseline after three CAVI updates, each move after up to six. Surplus components otherwise drain over
        hundreds to thousands of
        iterations (CAVI's slow mode; scikit-learn's BGM at K = 10 on 5 clusters) or never (a cluster
        split in two), and SVI's decaying steps never finish draining them. ``False`` gives
        scikit-learn's iterates exactly.
    devices : None, "all", int or list of JAX devices
        Data-parallel passes over several JAX devices (GPUs; simulated CPU devices): the data (cavi/em/map)
        or each SVI minibatch split across them, statistics summed by a ``psum``
        (:mod:`vbayes.data.devices`). Same result as on one device up to summation order.

    ``fit`` also takes a Dask array or DataFrame (one row per point): the statistics are then computed on
    the cluster's workers, partition by partition, and only they travel (:mod:`vbayes.data.dask`).

    Fitted attributes are scikit-learn's (``weights_``, ``means_``, ``covariances_``, ``precisions_``,
    ``precisions_cholesky_``, ``weight_concentration_``, ``mean_precision_``, ``degrees_of_freedom_``,
    the ``*_prior_`` values, ``converged_``, ``n_iter_``, ``lower_bound_``, ``lower_bounds_``), with
    ``lower_bound_`` / ``lower_bounds_`` the *full* ELBO (every normalising constant) *per point* —
    scikit-learn's BGM reports its constant-free bound in total — or the log-likelihood per point for
    em/map (as ``GaussianMixture``). Also ``elbo_`` (total) and ``result_``, the run as a :class:`vbayes.Fit`:
    q(β) (``result_.q.params``), the trace, the outcome, the cost and the verdict of its checks.

    The data are centred by their mean inside (the statistics Σ r x xᵀ then lose no digits to an offset);
    every attribute is in the data's own coordinates. Not supported: ``covariance_type="tied"``,
    ``warm_start`` (use ``partial_fit``, which continues from a fit), sample weights, ``verbose``.
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        method="cavi",
        tol=None,
        reg_covar=1e-6,
        max_iter=1000,
        n_init=1,
        init_params="kmeans",
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        batch_size=None,
        learning_offset=10.0,
        learning_decay=0.6,
        total_samples=None,
        delete_merge=True,
        devices=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.method = method
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.batch_size = batch_size
        self.learning_offset = learning_offset
        self.learning_decay = learning_decay
        self.total_samples = total_samples
        self.delete_merge = delete_merge
        self.devices = devices

    # ------------------------------------------------------------------------------------------------
    # fitting

    def fit_predict(self, X, y=None) -> np.ndarray:
        """Fit, then return the most probable component of each point (a final E-step, as scikit-learn)."""
        return self.fit(X).predict(X)

    def fit(self, X, y=None, *, client=None):
        """Fit by ``method`` with ``n_init`` initialisations, keeping the one with the highest objective.
        ``X``: an (N, D) array, or a Dask array / DataFrame fitted on its cluster (:meth:`_fit_dask`;
        ``client``: a ``dask.distributed.Client``, a scheduler address or ``"local[:WORKERS]"``; default the
        current client, else a local cluster)."""
        self._check_params()
        if hasattr(X, "__dask_graph__"):
            return self._fit_dask(X, client)
        X = self._validate(X, reset=True, min_samples=2)
        self._check_n_samples(X.shape[0])
        self._shift = gmm.column_mean(X)
        xc = X - self._shift
        with jax.enable_x64(True):
            model = self._build_model(xc)
            rng = check_random_state(self.random_state)
            data = None
            if self.method != "svi":
                data = self._in_memory(xc)
            self._set_fitted(model, best_run([self._run(model, X, xc, data, rng) for _ in range(self.n_init)]))
        return self

    def fit_stream(self, source, y=None):
        """Streaming fit (cavi, em or map) on data too large for memory: ``source`` is a ``.npy`` path,
        a ``np.memmap``, or a function returning an iterable of (n_i, D) arrays (called once per pass).
        Memory is O(block) (blocks of 65536 rows): one pass finds the mean, the covariance (default
        priors) and a uniform random sample of 20000 rows for the initialisation, then each iteration is
        one pass. Same result as ``fit`` from the same initialisation."""
        self._check_params()
        if self.method == "svi":
            raise VBayesError("fit_stream runs cavi, em or map; for minibatches from a stream call partial_fit")
        rng = check_random_state(self.random_state)
        with jax.enable_x64(True):
            stream = Stream(source)
            n, dim = int(stream.n_samples), stream.dim
            self._check_n_samples(n)
            mean, cov, sample = stream_moments(stream, rng, 20000)
            if n < 2:
                raise VBayesError("fit_stream needs at least 2 rows")
            self._set_n_features(dim)
            self._shift = mean
            stream.transform = lambda rows: rows - mean
            sc = sample - mean
            model = self._build_model(None, moments=(n, cov))
            runs = []
            for _ in range(self.n_init):
                resp = initial_resp(sample, self.n_components, self.init_params, rng)
                params = gmm.init_params(model, sc, resp, scale=n / sample.shape[0])
                runs.append(self._iterate(model, params, stream))
            self._set_fitted(model, best_run(runs))
        return self

    def _fit_dask(self, X, client):
        """The fit on a Dask collection, as :meth:`fit_stream` (one pass for the moments — the default priors
        — and a uniform sample of 20000 rows (svi: :meth:`_move_rows`) for the initialisation, checking every
        partition; then each iteration is one pass on the workers). The same drivers on
        :class:`vbayes.data.dask.DaskData`; SVI's minibatches are random partitions (``batch_size`` unused),
        its delete/merge moves judged on the sample."""
        from vbayes.data import dask as vd

        rng = check_random_state(self.random_state)
        with jax.enable_x64(True):
            data = vd.DaskData(X, client)
            self._check_n_samples(int(data.n_samples))
            if data.n_samples < 2:
                raise VBayesError("fit needs at least 2 rows")
            size = self._move_rows(data.dim) if self.method == "svi" else 20000
            n, mean, cov, sample = vd.moments(data, size, seed=int(rng.randint(2**31 - 1)))
            self._set_n_features(data.dim)
            self._shift = mean
            data.transform = _Centre(mean)
            model = self._build_model(None, moments=(n, cov))
            runs = []
            for _ in range(self.n_init):
                resp = initial_resp(sample, self.n_components, self.init_params, rng)
                params = gmm.init_params(model, sample - mean, resp, scale=n / sample.shape[0])
                if self.method != "svi":
                    runs.append(self._iterate(model, params, data))
                    continue
                run = partial(self._svi, model, data, key=int(rng.randint(2**31 - 1)))
                if not self.delete_merge:
                    runs.append(run(params))
                else:
                    subset = InMemory(sample - mean, chunk_size=self._chunk(sample))
                    first = min(float(self.max_iter), 1.0)
                    runs.append(svi_with_moves(run, model, params, subset, n, first, data))
            self._set_fitted(model, best_run(runs))
        return self

    def partial_fit(self, X, y=None):
        """One SVI step on the minibatch ``X`` (online EM for method em/map): λ ← (1 − ρ_t)λ + ρ_t λ̂ with
        λ̂ the global step on ``X``'s statistics scaled by N/len(X) (N = ``total_samples``, or the points
        seen so far). The first call sets the priors' data-dependent defaults and the initialisation
        from this batch."""
        first = not hasattr(self, "_svi_state")
        if first:
            self._check_params()
        X = self._validate(X, reset=first, min_samples=1)
        with jax.enable_x64(True):
            if first:
                self._check_n_samples(X.shape[0])
                self._shift = gmm.column_mean(X)
                self._seen = 0
                model = self._build_model(X - self._shift)
                rng = check_random_state(self.random_state)
                resp = initial_resp(X, self.n_components, self.init_params, rng)
                total = self.total_samples or X.shape[0]
                params = gmm.init_params(model, X - self._shift, resp, scale=total / X.shape[0])
                self._svi_state = SVIState(params, np.float64(0.0))
                self._lower_bounds = []
            else:
                model = self._model()
            self._seen += X.shape[0]
            total = float(self.total_samples or self._seen)
            state = jax.tree.map(jnp.asarray, self._svi_state)
            x = jnp.asarray(X - self._shift)
            offset, decay = float(self.learning_offset), float(self.learning_decay)
            state, elbo = _partial_step(model, state, x, total, offset, decay, MODES[self.method])
            self._lower_bounds.append(float(elbo) / total)
            fit = conjugate_fit(
                model,
                state.params,
                MODES[self.method],
                method="svi" if self.method in ("cavi", "svi") else "online-em",
                outcome="completed",
                message="partial_fit: one stochastic step per call",
                steps=len(self._lower_bounds),
                seconds=0.0,
                trace=np.asarray(self._lower_bounds) * total,
                trace_of="the minibatch estimate of the objective of the λ entering each step (total nats)",
                objective=float(elbo),
                n_samples=total,
                checks="none",
            )
            self._set_fitted(model, fit, warn=False)
            self._svi_state = jax.tree.map(np.asarray, state)
        return self

    # ------------------------------------------------------------------------------------------------
    # internals

    def _check_params(self) -> None:
        check_params(self)

    def _validate(self, X, reset: bool, min_samples: int = 1) -> np.ndarray:
        """scikit-learn's validation (n_features_in_, feature names, 1-D and empty input), its errors as
        :class:`VBayesError`; then finiteness with the rows named."""
        try:
            X = _validate_data(
                self,
                X,
                reset=reset,
                dtype=[np.float64, np.float32],
                ensure_all_finite=False,
                ensure_min_samples=min_samples,
            )
        except ValueError as e:
            raise VBayesError(str(e)) from e
        return check_data(X)

    def _checked(self, X) -> np.ndarray:
        check_is_fitted(self)
        return self._validate(X, reset=False)

    def _set_n_features(self, dim: int) -> None:
        self.n_features_in_ = dim
        if hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _check_n_samples(self, n: int) -> None:
        if n < self.n_components:
            raise VBayesError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, n_samples = {n}"
            )

    def _build_model(self, xc, moments=None) -> ConjugateModel:
        prior = prior_values(self, xc, moments)
        wtype = "dirichlet_distribution" if self.method == "em" else self.weight_concentration_prior_type
        self._prior = jax.tree.map(np.asarray, prior)
        self._wtype = wtype
        return gmm.bayesian_gmm(prior, self.covariance_type, wtype)

    def _model(self) -> ConjugateModel:
        prior = jax.tree.map(jax.numpy.asarray, self._prior)
        return gmm.bayesian_gmm(prior, self.covariance_type, self._wtype)

    def _tol(self) -> float:
        return DEFAULT_TOL[self.method] if self.tol is None else float(self.tol)

    def _iterate(self, model, params, data) -> Fit:
        if self.method != "cavi" or not self.delete_merge:
            return cavi(model, params, data, mode=MODES[self.method], tol=self._tol(), max_iter=self.max_iter)
        return cavi_with_moves(model, params, data, self._tol(), self.max_iter)

    def _svi(self, model, data, params, *, key, max_epochs=None, **options) -> Fit:
        """SVI from ``params`` on ``data`` with this estimator's settings (``options``: :func:`svi`'s keywords)."""
        config = SVIConfig(
            batch_size=self.batch_size,
            learning_offset=self.learning_offset,
            learning_decay=self.learning_decay,
            tol=self._tol(),
            max_epochs=float(self.max_iter if max_epochs is None else max_epochs),
        )
        return svi(model, params, data, key=key, config=config, **options)

    def _run(self, model, X, xc, data, rng) -> Fit:
        """One initialisation and one run (scikit-learn's random stream for the initialisation)."""
        n = X.shape[0]
        if self.method != "svi":
            resp = initial_resp(X, self.n_components, self.init_params, rng)
            return self._iterate(model, gmm.init_params(model, xc, resp), data)
        batch = int(min(n, self.batch_size or 4096))
        key = int(rng.randint(2**31 - 1))
        order = row_order(n, key)  # SVI's minibatch order; its first rows are uniform random subsets
        xs = xc[order]  # shuffled once for all the runs below
        sub = np.sort(order[: 3 * batch])
        resp = initial_resp(X[sub], self.n_components, self.init_params, rng)
        params = gmm.init_params(model, xc[sub], resp, scale=n / sub.size)
        run = partial(self._svi, model, xs, key=key, shuffle=False, devices=self.devices)
        if not self.delete_merge:
            return run(params)
        subset = xs[: self._move_rows(xc.shape[1])]
        first = min(float(self.max_iter), FIRST_SVI_STEPS * batch / n)  # moves early: surplus components drain slowly
        subset = InMemory(subset, chunk_size=self._chunk(xc), dtype=np.float32)
        return svi_with_moves(run, model, params, subset, n, first, self._in_memory(xc))

    def _in_memory(self, xc: np.ndarray):
        """The centred data on the device (or across ``devices``), for the full passes."""
        if self.devices is None:
            return InMemory(xc, chunk_size=self._chunk(xc))
        from vbayes.data.devices import ShardedData

        return ShardedData(xc, self.devices)

    def _move_rows(self, dim: int) -> int:
        """Rows on which SVI's delete/merge moves are judged: :func:`~vbayes.conjugate.engine.moves.move_rows` of the
        statistics of q(β), K (1 + D + D(D+1)/2) for full covariances, K (1 + 2D) diagonal, K (2 + D) spherical."""
        second = {"full": dim * (dim + 1) // 2, "diag": dim, "spherical": 1}[self.covariance_type]
        return move_rows(self.n_components * (1 + dim + second))

    def _chunk(self, x: np.ndarray) -> int:
        """Rows per E-step chunk for this data width and K (:func:`vbayes.conjugate.gmm.chunk_rows`)."""
        return gmm.chunk_rows(x.shape[1], self.n_components)

    def _set_fitted(self, model, fit: Fit, warn: bool = True) -> None:
        """scikit-learn's fitted attributes from q(β) (or its mode for em/map), in the data's coordinates;
        the state ``partial_fit`` continues from (step t = iterations done, points seen = N)."""
        point = self.method in ("em", "map")
        params = jax.tree.map(np.asarray, fit.q.params)
        self._params = gmm.GMMParams(*params)
        n_samples, objective = fit.info.extra["n_samples"], fit.info.extra["objective"]
        if warn:  # a fit, not a partial_fit: partial_fit continues from here
            state = fit.state
            step = float(state.step) if isinstance(state, SVIState) else float(fit.info.steps)
            self._svi_state = SVIState(self._params, np.float64(step))
            self._seen = int(n_samples)
            self._lower_bounds = list(np.asarray(fit.trace) / n_samples)
        weights, means, cov = (np.asarray(a) for a in gmm.point_estimates(model, fit.q.params, point_mass=point))
        self.weights_ = weights
        self.means_ = means + self._shift
        self.covariances_ = cov
        self.precisions_cholesky_ = precision_cholesky(cov, self.covariance_type)
        self.precisions_ = (
            np.einsum("kij,klj->kil", self.precisions_cholesky_, self.precisions_cholesky_)
            if self.covariance_type == "full"
            else self.precisions_cholesky_**2
        )
        a, b = params.weight_a, params.weight_b
        self.weight_concentration_ = (a, b) if self._wtype == "dirichlet_process" else a
        self.mean_precision_ = params.beta
        self.degrees_of_freedom_ = params.nu
        prior = self._prior
        self.weight_concentration_prior_ = float(prior.weight_concentration)
        self.mean_precision_prior_ = float(prior.mean_precision)
        self.mean_prior_ = np.asarray(prior.mean) + self._shift
        self.degrees_of_freedom_prior_ = float(prior.degrees_of_freedom)
        self.covariance_prior_ = np.asarray(prior.covariance)
        self.elbo_ = float(objective)
        self.lower_bound_ = float(objective) / n_samples
        self.lower_bounds_ = list(np.asarray(fit.trace) / n_samples)
        self.n_iter_ = int(fit.info.steps)
        self.converged_ = fit.info.outcome == "converged"
        self.result_ = fit
        if warn and not self.converged_ and fit.info.method != "svi":
            warnings.warn(
                f"{type(self).__name__} did not converge: {fit.info.message}. Increase max_iter or tol, "
                "or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=3,
            )


class _Centre:
    """rows ↦ rows − mean (picklable, for the Dask workers)."""

    def __init__(self, mean: np.ndarray):
        self.mean = mean

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return rows - self.mean


@partial(jax.jit, static_argnames="mode")
def _partial_step(model, state, x, n_total, offset, decay, mode: Mode):
    """One SVI (or online-EM) step, and the minibatch estimate of the objective of the entering λ:
    N/S · local ELBO − KL (VB), or the log-likelihood estimate [+ log prior] (EM / MAP)."""
    if mode.point_mass:
        penalty = -model.log_prior(state.params) if mode is Mode.MAP else 0.0
    else:
        penalty = model.kl(state.params)
    state, info = svi_step(model, state, x, jnp.ones(x.shape[0], x.dtype), n_total, offset, decay, mode)
    return state, info.local_elbo - penalty
