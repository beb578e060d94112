"""Property-based checks (Hypothesis) of the public entry points: any value of any option of any registered method,
and any array given to the Gaussian-mixture estimator, gives a :class:`VBayesError` that names the cause, or a
correct result; never another exception, never a Python warning. Fixed seed (derandomized) and a bounded number of
examples, so the run is the same every time."""

import functools

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vbayes import VBayesError, methods  # noqa: E402
from vbayes.estimators import VariationalGaussianMixture  # noqa: E402
from vbayes.examples import linear_regression, linear_regression_exact  # noqa: E402
from vbayes.fit import OUTCOMES  # noqa: E402

PROPERTY = settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# the options each method documents, with a small budget where the option under test is not the budget itself
OPTIONS = {
    "advi-meanfield": ["max_steps", "learning_rate", "chunk_size", "max_decays", "tol", "num_check", "num_samples"],
    "advi-lowrank": ["rank", "max_bad_in_row", "objective", "batch_size"],
    "laplace-dense": ["max_iter", "gtol", "eig_floor", "batch_size", "polish_steps", "dense_max_dim"],
    "laplace-lowrank": ["rank", "eig_tol", "krylov_dim"],
    "laplace-diag": ["exact_diag_max", "diag_probes"],
    "nuts": ["chains", "num_warmup", "num_samples", "target_accept", "init_radius", "reruns"],
    "pathfinder": ["num_paths", "max_iter", "history", "num_elbo_draws", "num_draws", "init_radius"],
    "cavi": ["tol", "max_iter", "scale", "chunk_size", "n_threads"],
    "svi": ["batch_size", "learning_offset", "learning_decay", "tol", "max_epochs", "eval_size", "chunk_size"],
}
BUDGET = {
    "advi-meanfield": {"max_steps": 200},
    "advi-lowrank": {"max_steps": 200},
    "nuts": {"chains": 1, "num_warmup": 30, "num_samples": 30},
    "pathfinder": {"num_paths": 2, "max_iter": 20},
    "svi": {"max_epochs": 3.0},
}
VALUES = st.one_of(
    st.integers(-2, 4),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.5, 1e-3, 2**70, -1e-300]),
    st.text(max_size=2),
    st.none(),
    st.booleans(),
)
CASES = st.sampled_from([(m, o) for m, options in OPTIONS.items() for o in options])


@pytest.fixture(scope="module")
def target():
    return linear_regression()


@pytest.mark.slow
@pytest.mark.filterwarnings("error")
@PROPERTY
@given(case=CASES, value=VALUES)
def test_any_option_value_is_refused_by_name_or_gives_a_sound_fit(target, case, value):
    method, option = case
    options = {**BUDGET.get(method, {}), option: value}
    try:
        fit = methods.fit(target, method, checks="none", **options)
    except VBayesError as e:
        assert option in str(e), (option, value, str(e))
        return
    assert fit.info.outcome in OUTCOMES
    # deterministic methods that say they converged reach their answer whatever the option's value (at a tolerance
    # the user did not loosen: with tol=1 CAVI stops by the user's own rule long before the optimum): Laplace the exact
    # posterior mean; CAVI its own mean-field optimum, the default fit's (mean-field VB over the weights and the noise
    # precision is not the exact Student-t posterior: its mean differs from it by 0.004 here)
    deterministic = method.startswith(("laplace", "cavi")) and "tol" not in option
    if fit.info.outcome in ("converged", "completed") and deterministic:
        mean = _cavi_mean() if method == "cavi" else linear_regression_exact()[0]
        np.testing.assert_allclose(np.asarray(fit.q.mean), mean, atol=1e-3 * (1 + np.abs(mean).max()))


@functools.lru_cache(maxsize=1)
def _cavi_mean() -> np.ndarray:
    """The mean of CAVI's fit of the linear regression with the default options."""
    return np.asarray(methods.fit(linear_regression(), "cavi", checks="none").q.mean)


DTYPES = st.sampled_from(["float64", "float32", "int64", "bool", "complex128", "object", "U3"])


@st.composite
def arrays_with_faults(draw):
    """Small (N, D) arrays (sometimes 1-D or 3-D) of any dtype, with NaN/inf at random positions."""
    ndim = draw(st.sampled_from([1, 2, 2, 2, 3]))
    shape = tuple(draw(st.lists(st.integers(0, 7), min_size=ndim, max_size=ndim)))
    x = np.random.default_rng(draw(st.integers(0, 2**16))).normal(size=shape)
    dtype = np.dtype(draw(DTYPES))
    if x.size and dtype.kind not in "iub" and draw(st.booleans()):  # integers and booleans hold no NaN
        x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return x.astype(dtype)


@pytest.mark.slow
@pytest.mark.filterwarnings("error")
@PROPERTY
@given(x=arrays_with_faults())
def test_the_mixture_estimator_refuses_bad_arrays_by_name_or_fits_them(x):
    est = VariationalGaussianMixture(2, max_iter=20, random_state=0)
    try:
        est.fit(x)
    except VBayesError as e:
        message = str(e)
        if x.ndim == 2 and x.shape[0] >= 2 and x.shape[1] >= 1 and x.dtype.kind == "f" and not np.isfinite(x).all():
            assert "NaN or inf" in message and "row" in message, message  # the rows are named
        elif x.dtype.kind == "c":
            assert "Complex" in message, message
        else:
            assert message
        return
    # accepted: a real 2-D array of finite numbers (numbers held as objects or numeric strings convert, as in
    # scikit-learn), at least 2 rows
    assert x.dtype.kind != "c"
    values = np.asarray(x, dtype=np.float64)
    assert values.ndim == 2 and values.shape[0] >= 2 and np.all(np.isfinite(values))
    low, high = values.min(0), values.max(0)
    means = est.means_[est.weights_ > 1e-3]
    assert np.all(means >= low - 1e-6) and np.all(means <= high + 1e-6)  # component means are averages of rows


@PROPERTY
@given(seed=st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_an_integer_seed_gives_the_key_jax_gives(seed):
    from vbayes.keys import as_key

    assert np.array_equal(np.asarray(as_key(seed)), np.asarray(jax.random.PRNGKey(seed)))


def test_a_seed_beyond_64_bits_is_a_clear_error():
    from vbayes.keys import as_key

    for seed in (2**63, -(2**63) - 1, 2**64):  # JAX itself overflows on 2**63 and up
        with pytest.raises(VBayesError, match="signed 64-bit"):
            as_key(seed)
