"""The meaning of :class:`~vbayes.estimators.mixture.VariationalGaussianMixture`'s parameters: their checks, the
priors they make (scikit-learn's data-dependent defaults), the initial responsibilities (scikit-learn's random
stream) and scikit-learn's read-out of the precisions."""

from __future__ import annotations

import numpy as np

from vbayes.conjugate import gmm
from vbayes.errors import VBayesError, is_count, is_positive, is_real, is_seed, require

METHODS = ("cavi", "svi", "em", "map")
INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")


def check_params(est) -> None:
    """Every constructor argument of the estimator ``est`` checked, a :class:`VBayesError` naming the first that is
    wrong."""
    integer = lambda v, low: is_count(v, low)
    real = lambda v, low: is_real(v) and v >= low
    optional_positive = lambda v: v is None or is_positive(v)
    rules = [
        ("n_components", integer(est.n_components, 1), "an integer >= 1"),
        ("covariance_type", est.covariance_type in gmm.COVARIANCE_TYPES, f"one of {gmm.COVARIANCE_TYPES}"),
        ("method", est.method in METHODS, f"one of {METHODS}"),
        ("init_params", est.init_params in INIT_PARAMS, f"one of {INIT_PARAMS}"),
        (
            "weight_concentration_prior_type",
            est.weight_concentration_prior_type in gmm.WEIGHT_PRIORS,
            f"one of {gmm.WEIGHT_PRIORS}",
        ),
        ("tol", est.tol is None or real(est.tol, 0), "None or >= 0"),
        ("max_iter", integer(est.max_iter, 1), "an integer >= 1"),
        ("n_init", integer(est.n_init, 1), "an integer >= 1"),
        ("delete_merge", isinstance(est.delete_merge, bool | np.bool_), "True or False"),
        ("reg_covar", real(est.reg_covar, 0), ">= 0"),
        ("batch_size", est.batch_size is None or integer(est.batch_size, 1), "None or an integer >= 1"),
        (
            "learning_decay",
            real(est.learning_decay, 0) and est.learning_decay > 0.5 and est.learning_decay <= 1,
            "in (0.5, 1]",
        ),
        ("learning_offset", real(est.learning_offset, 1.0), ">= 1"),
        ("total_samples", optional_positive(est.total_samples), "None or > 0"),
        ("weight_concentration_prior", optional_positive(est.weight_concentration_prior), "None or > 0"),
        ("mean_precision_prior", optional_positive(est.mean_precision_prior), "None or > 0"),
        (
            "degrees_of_freedom_prior",
            est.degrees_of_freedom_prior is None or is_real(est.degrees_of_freedom_prior),
            "None or a finite number",
        ),
        ("random_state", _is_seed(est.random_state), "None, an integer in [0, 2**32 - 1] or a NumPy RandomState"),
    ]
    require((name, getattr(est, name), ok, requirement) for name, ok, requirement in rules)


def _is_seed(value) -> bool:
    """What scikit-learn's ``check_random_state`` accepts."""
    if value is None or isinstance(value, np.random.RandomState):
        return True
    return is_seed(value)


def prior_values(est, xc, moments=None) -> gmm.GMMPrior:
    """The prior in centred coordinates (the data mean subtracted): scikit-learn's defaults from the
    data ``xc`` or from streamed ``moments`` = (n, covariance); MAP-specific defaults and checks."""
    dim = est._shift.shape[0]
    ct = est.covariance_type
    if est.method == "em":
        return gmm.flat_prior(dim, ct, est.reg_covar)
    alpha0, nu0 = est.weight_concentration_prior, est.degrees_of_freedom_prior
    if est.method == "map":
        alpha0 = 1.0 if alpha0 is None else alpha0
        nu0 = dim + 1.0 if nu0 is None else nu0
        if alpha0 < 1 or nu0 <= dim:
            raise VBayesError(
                f"method='map' needs weight_concentration_prior >= 1 and degrees_of_freedom_prior "
                f"> n_features = {dim} (below, the posterior mode lies on the boundary); got "
                f"{alpha0} and {nu0}"
            )
    m0 = None if est.mean_prior is None else np.asarray(est.mean_prior, dtype=np.float64) - est._shift
    if m0 is not None and m0.shape != (dim,):
        raise VBayesError(f"mean_prior must have shape ({dim},), got {np.shape(est.mean_prior)}")
    if moments is None:
        return gmm.default_prior(
            xc,
            est.n_components,
            ct,
            weight_concentration_prior=alpha0,
            mean_precision_prior=est.mean_precision_prior,
            mean_prior=m0,
            degrees_of_freedom_prior=nu0,
            covariance_prior=est.covariance_prior,
            reg_covar=est.reg_covar,
        )
    _, cov = moments
    var = np.diag(cov)
    cov_default = {"full": cov, "diag": var, "spherical": np.float64(var.mean())}[ct]
    return gmm.make_prior(
        dim,
        ct,
        1.0 / est.n_components if alpha0 is None else float(alpha0),
        1.0 if est.mean_precision_prior is None else float(est.mean_precision_prior),
        np.zeros(dim) if m0 is None else m0,
        float(dim) if nu0 is None else float(nu0),
        cov_default if est.covariance_prior is None else est.covariance_prior,
        est.reg_covar,
    )


def precision_cholesky(cov: np.ndarray, ctype: str) -> np.ndarray:
    """scikit-learn's ``precisions_cholesky_``: the upper-triangular P with P Pᵀ = Σ⁻¹ (full), or Σ^{-1/2}."""
    if ctype != "full":
        return 1.0 / np.sqrt(cov)
    chol = np.linalg.cholesky(cov)
    eye = np.broadcast_to(np.eye(cov.shape[-1]), cov.shape)
    return np.triu(np.swapaxes(np.linalg.solve(chol, eye), -1, -2))


def initial_resp(X: np.ndarray, k: int, init: str, rng: np.random.RandomState) -> np.ndarray:
    """Initial responsibilities (N, K), drawing from ``rng`` exactly as scikit-learn's mixtures do, so that
    the same ``random_state`` gives the same initialisation: one-hot k-means labels (one k-means run),
    one-hot k-means++ seeds or random data points, or uniform random rows normalised."""
    from sklearn.cluster import KMeans, kmeans_plusplus

    n = X.shape[0]
    resp = np.zeros((n, k))
    if init == "kmeans":
        labels = KMeans(n_clusters=k, n_init=1, random_state=rng).fit(X).labels_
        resp[np.arange(n), labels] = 1.0
    elif init == "random":
        resp = rng.uniform(size=(n, k))
        resp /= resp.sum(axis=1, keepdims=True)
    elif init == "random_from_data":
        resp[rng.choice(n, size=k, replace=False), np.arange(k)] = 1.0
    else:
        _, idx = kmeans_plusplus(X, k, random_state=rng)
        resp[idx, np.arange(k)] = 1.0
    return resp
