"""Parity with scikit-learn: from the same initial responsibilities and priors, CAVI gives the same
parameters as ``BayesianGaussianMixture`` and EM the same as ``GaussianMixture`` (to ~1e-12), and our
full ELBO differs from scikit-learn's constant-free bound by the same constant at every iteration."""

import warnings

import numpy as np
import pytest
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from vbayes import conjugate as cj
from vbayes.conjugate import gmm
from vbayes.estimators.mixture import VariationalGaussianMixture

N, D, K, ITERS = 500, 3, 4, 12


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=3.0, size=(K, D))
    shapes = rng.normal(size=(K, D, D)) * 0.5 + np.eye(D)
    z = rng.integers(K, size=N)
    x = centers[z] + np.einsum("nd,nde->ne", rng.normal(size=(N, D)), shapes[z]) + 10.0  # offset from 0
    resp = rng.dirichlet(np.ones(K), size=N)  # soft, so that no component starts empty
    return x, resp


def _fixed_init(cls, resp):
    """scikit-learn's estimator, initialised from the given responsibilities."""

    class Fixed(cls):
        def _initialize_parameters(self, X, random_state, xp=None):
            self._initialize(X, resp)

    return Fixed


def _sklearn_run(cls, x, resp, **kw):
    est = _fixed_init(cls, resp)(tol=0.0, max_iter=ITERS, reg_covar=0.0, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 never converges
        est.fit(x)
    return est


def _close(ours, theirs, rtol=1e-8):
    theirs = np.asarray(theirs)
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=rtol, atol=1e-14 * np.max(np.abs(theirs)))


@pytest.mark.parametrize("weight_type", ["dirichlet_process", "dirichlet_distribution"])
@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_cavi_equals_bayesian_gaussian_mixture(data, covariance_type, weight_type):
    x, resp = data
    sk = _sklearn_run(
        BayesianGaussianMixture,
        x,
        resp,
        n_components=K,
        covariance_type=covariance_type,
        weight_concentration_prior_type=weight_type,
    )
    prior = gmm.default_prior(x, K, covariance_type, reg_covar=0.0)
    model = gmm.bayesian_gmm(prior, covariance_type, weight_type)
    fit = cj.cavi(model, gmm.init_params(model, x, resp), x, tol=0.0, max_iter=ITERS)
    assert fit.info.steps == ITERS == sk.n_iter_

    weights, means, covariances = gmm.point_estimates(model, fit.q.params)
    _close(weights, sk.weights_)
    _close(means, sk.means_)
    _close(covariances, sk.covariances_)
    p = fit.q.params
    _close(p.beta, sk.mean_precision_)
    _close(p.nu, sk.degrees_of_freedom_)
    if weight_type == "dirichlet_process":
        _close(p.weight_a, sk.weight_concentration_[0])
        _close(p.weight_b, sk.weight_concentration_[1])
    else:
        _close(p.weight_a, sk.weight_concentration_)

    # the full ELBO minus scikit-learn's bound (constants dropped) is one constant over all iterations
    diff = fit.trace - np.asarray(sk.lower_bounds_)
    assert np.ptp(diff) <= 1e-10 * np.max(np.abs(fit.trace))
    assert abs(diff[0]) > 1.0  # and the constants are really there


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_em_equals_gaussian_mixture(data, covariance_type):
    x, resp = data
    sk = _sklearn_run(GaussianMixture, x, resp, n_components=K, covariance_type=covariance_type)
    model = gmm.bayesian_gmm(gmm.flat_prior(D, covariance_type), covariance_type, "dirichlet_distribution")
    fit = cj.cavi(model, gmm.init_params(model, x, resp), x, mode="em", tol=0.0, max_iter=ITERS)
    weights, means, covariances = gmm.point_estimates(model, fit.q.params, point_mass=True)
    _close(weights, sk.weights_)
    _close(means, sk.means_)
    _close(covariances, sk.covariances_)
    # the same log-likelihood per point, iteration by iteration (scikit-learn's lower_bounds_)
    np.testing.assert_allclose(fit.trace / N, sk.lower_bounds_, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("covariance_type", "weight_type", "init"),
    [
        ("full", "dirichlet_process", "kmeans"),
        ("diag", "dirichlet_distribution", "random"),
        ("spherical", "dirichlet_process", "k-means++"),
    ],
)
def test_estimator_defaults_match_sklearn(data, covariance_type, weight_type, init):
    """Same random_state, same defaults (priors, reg_covar, initialisation): the same fitted mixture."""
    x, _ = data
    kw = dict(
        n_components=K,
        covariance_type=covariance_type,
        weight_concentration_prior_type=weight_type,
        init_params=init,
        random_state=3,
        max_iter=25,
        tol=0.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = BayesianGaussianMixture(**kw).fit(x)
        ours = VariationalGaussianMixture(**kw, delete_merge=False).fit(x)
    for name in [
        "weights_",
        "means_",
        "covariances_",
        "precisions_cholesky_",
        "precisions_",
        "mean_precision_",
        "degrees_of_freedom_",
    ]:
        _close(getattr(ours, name), getattr(sk, name), rtol=1e-7)
    _close(ours.mean_prior_, sk.mean_prior_)
    _close(ours.covariance_prior_, sk.covariance_prior_)
    np.testing.assert_allclose(ours.predict_proba(x), sk.predict_proba(x), atol=1e-9)
    np.testing.assert_allclose(ours.score_samples(x), sk.score_samples(x), rtol=1e-9)
    np.testing.assert_array_equal(ours.predict(x), sk.predict(x))


def test_em_estimator_matches_gaussian_mixture(data):
    x, _ = data
    kw = dict(n_components=K, random_state=1, max_iter=30, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = GaussianMixture(**kw).fit(x)
        ours = VariationalGaussianMixture(method="em", **kw).fit(x)
    for name in ["weights_", "means_", "covariances_", "precisions_cholesky_"]:
        _close(getattr(ours, name), getattr(sk, name), rtol=1e-7)
    np.testing.assert_allclose(ours.score_samples(x), sk.score_samples(x), rtol=1e-9)
    np.testing.assert_allclose(ours.lower_bounds_, sk.lower_bounds_, rtol=1e-10)
