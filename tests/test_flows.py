"""Normalizing-flow families: they start exactly as the Gaussian they are built around, fit a Gaussian target to
its log evidence, fit the banana and Neal's funnel that every Gaussian misses (checked against exact draws), and a
flow too small for its target is flagged by its own verdict."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import vbayes
from vbayes import VBayesError
from vbayes.compilation import count_compilations
from vbayes.diagnostics import compare_draws
from vbayes.examples import banana, funnel
from vbayes.examples.classic import BANANA_B
from vbayes.flows import FLOWS, FlowSize, build_flow
from vbayes.infer.advi_config import FLOW_FIRST_STAGE

COV = np.array([[2.0, 0.9, 0.0], [0.9, 1.0, -0.4], [0.0, -0.4, 0.5]])
MEAN = np.array([1.0, -2.0, 0.5])


def _gaussian() -> vbayes.Target:
    prec = jnp.asarray(np.linalg.inv(COV))
    log_p = lambda p: -0.5 * (p["z"] - MEAN) @ prec @ (p["z"] - MEAN)  # noqa: E731
    return vbayes.from_logdensity(log_p, {"z": jnp.zeros(3)}, name="gaussian3")


def _banana_draws(n: int, seed: int = 0) -> np.ndarray:
    """Exact draws: x1 ~ N(0, 10²), x2 = b(x1² − 100) + N(0, 1)."""
    rng = np.random.default_rng(seed)
    x1 = 10.0 * rng.normal(size=n)
    return np.column_stack([x1, BANANA_B * (x1**2 - 100.0) + rng.normal(size=n)])


@pytest.mark.parametrize("kind", FLOWS)
@pytest.mark.parametrize("full", [False, True])
def test_a_new_flow_is_the_gaussian_it_is_built_around(kind, full):
    """The conditioners' last layers start at zero, so every layer starts as the identity: the flow's density and
    draws are those of N(loc, diag(scale²)) (or N(loc, LLᵀ)) exactly."""
    loc = jnp.array([1.0, -2.0, 0.5])
    chol = jnp.asarray(np.linalg.cholesky(COV))
    scale = chol if full else jnp.array([0.5, 3.0, 1.0])
    q = build_flow(kind, loc, scale, jax.random.PRNGKey(0))
    cov = np.asarray(chol @ chol.T) if full else np.diag(np.asarray(scale) ** 2)
    z = np.random.default_rng(0).normal(size=(6, 3))
    np.testing.assert_allclose(q.log_prob(jnp.asarray(z)), stats.multivariate_normal(loc, cov).logpdf(z), rtol=1e-10)
    draws, log_q = q.sample_and_log_prob(jax.random.PRNGKey(1), 5)
    np.testing.assert_allclose(log_q, q.log_prob(draws), rtol=1e-10)
    np.testing.assert_allclose(q.mean, loc, atol=4 * np.sqrt(np.diag(cov)).max() / np.sqrt(4096))
    np.testing.assert_allclose(q.marginal_sd() / np.sqrt(np.diag(cov)), 1.0, atol=0.05)
    with pytest.raises(NotImplementedError, match="entropy"):
        q.entropy()


def test_a_flow_from_another_seed_runs_the_same_compiled_programs():
    """Another key draws other weights and other permutations between the layers, but the flow's static part is the
    same (both kinds): a compiled program of one flow runs the other without compiling (the permutations are
    arrays, not constants). (A whole fit with a new seed compiling nothing: the slow run.)"""
    loc, scale = jnp.zeros(5), jnp.ones(5)
    z = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5)))
    for kind in FLOWS:
        a, b = (build_flow(kind, loc, scale, jax.random.PRNGKey(k)) for k in (0, 1))
        assert a.structure == b.structure and hash(a.structure) == hash(b.structure)
        pairs = zip(jax.tree_util.tree_leaves(a.buffers), jax.tree_util.tree_leaves(b.buffers), strict=True)
        assert any(not np.array_equal(x, y) for x, y in pairs)  # other permutations
        a.log_prob(z)
        with count_compilations() as c:
            b.log_prob(z)
        assert c.events == [], c.events


@pytest.mark.slow
def test_a_fit_with_another_seed_compiles_nothing():
    target = vbayes.from_logdensity(lambda p: -0.5 * jnp.sum(p["z"] ** 2), {"z": jnp.zeros(5)}, name="normal5")
    options = dict(progress=False, checks="none", max_steps=100)
    vbayes.advi(target, "flow", key=0, **options)
    with count_compilations() as c:
        fit = vbayes.advi(target, "flow", key=1, **options)
    assert not [name for name, _, _ in c.events if name in ("jit(run)", "jit(_init_state)")], c.events
    assert fit.info.steps == 100


@pytest.mark.slow
@pytest.mark.parametrize("kind", FLOWS)
def test_on_a_gaussian_target_the_flow_reaches_the_log_evidence(kind):
    """KL(q‖p) = log Z − ELBO → 0: started at the full-rank fit, which is already exact, the flow stays there."""
    fit = vbayes.advi(_gaussian(), kind, progress=False, key=0)
    log_z = 0.5 * 3 * np.log(2 * np.pi) + 0.5 * np.linalg.slogdet(COV)[1]
    assert fit.info.extra["init"].startswith("advi-fullrank")
    assert abs(fit.elbo - log_z) < 0.01
    assert fit.trusted, fit.verdict.summary()
    z = np.asarray(fit.draws_unconstrained(100_000))
    sd = np.sqrt(np.diag(COV))
    np.testing.assert_allclose(z.mean(0), MEAN, atol=0.03 * sd.min())
    np.testing.assert_allclose(z.std(0) / sd, 1.0, atol=0.03)
    assert fit.info.method == f"advi-{kind}" and fit.info.grad_evals > fit.info.extra["init_evals"] > 0
    # the short first stage is enough here: its schedule, and no second stage
    assert fit.info.extra["objective"] == "renyi" and fit.info.extra["num_samples"] == 4
    assert fit.info.extra["schedule"].startswith("short (chunk_size 125") and "then" not in fit.info.extra["schedule"]
    assert fit.info.grad_evals == fit.info.steps * 4 + fit.info.extra["init_evals"]
    unchecked = vbayes.advi(_gaussian(), kind, progress=False, key=0, checks="none")  # nothing to decide a stage on
    assert "schedule" not in unchecked.info.extra and unchecked.info.extra["num_samples"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("kind", FLOWS)
def test_flows_fit_the_banana_that_every_gaussian_misses(kind):
    """The full-rank Gaussian is wrong and flagged; each flow, over four seeds, is never trusted where it is wrong
    (posteriordb's rule against exact draws) and is right and trusted at three or more (measured: at all four, or
    at three with one flagged, as the compiler's floating-point paths vary); the flow's short first stage alone is
    not trusted."""
    target = banana()
    truth = _banana_draws(20_000)
    gaussian = vbayes.advi(target, "fullrank", progress=False, key=0)
    assert not gaussian.trusted
    assert not compare_draws(np.asarray(gaussian.draws_unconstrained(20_000)), truth, ["x1", "x2"]).accurate()
    good = []
    for key in range(4):
        fit = vbayes.advi(target, kind, progress=False, key=key)
        cmp = compare_draws(np.asarray(fit.draws_unconstrained(20_000)), truth, ["x1", "x2"])
        assert cmp.accurate() or not fit.trusted, (key, cmp.as_dict(), fit.verdict.summary())
        if cmp.accurate() and fit.trusted:
            good.append((key, fit))
    assert len(good) >= 3, [k for k, _ in good]
    key, fit = good[0]
    assert abs(fit.elbo) < 0.05  # log Z = 0: the banana's density is normalised
    # the short first stage was flagged, so the fit went on with the full schedule from its q; both are counted
    short = vbayes.advi(target, kind, progress=False, key=key, **FLOW_FIRST_STAGE)
    assert not short.trusted
    assert "flagged" in fit.info.extra["schedule"] and "then the full schedule" in fit.info.extra["schedule"]
    assert fit.info.extra["num_samples"] == 8
    assert fit.info.grad_evals == fit.info.steps * 8 + short.info.grad_evals


def _funnel_draws(n: int, seed: int = 0) -> np.ndarray:
    """Exact draws of the 10-d funnel in its non-centred coordinates (v, x·e^(−v/2)): v ~ N(0, 3²), the rest N(0, 1)."""
    rng = np.random.default_rng(seed)
    return np.column_stack([3.0 * rng.normal(size=n), rng.normal(size=(n, 9))])


def _noncentred(z: np.ndarray) -> np.ndarray:
    """(v, x) ↦ (v, x·e^(−v/2)), a bijection. The funnel's accuracy is measured in these coordinates: in x itself
    the reference's sd cannot be measured (Var x_i = E e^v = e^4.5, and the sample variance of 20,000 exact draws
    varies by ±64% between seeds: Var e^v / (E e^v)² = e^9 − 1), while every coordinate here is a plain normal."""
    return np.column_stack([z[:, 0], z[:, 1:] * np.exp(-z[:, :1] / 2.0)])


@pytest.mark.slow
def test_the_autoregressive_flow_is_accurate_on_neals_funnel():
    """v ~ N(0, 3²), x_i | v ~ N(0, e^v), d = 10 (test_verdict: every Gaussian is flagged there). The masked
    autoregressive flow is accurate by posteriordb's rule at every seed (measured at seeds 0–7 in float64 and 0–4
    in float32: v's sd 2.67–2.91 of 3, smallest sd ratio 0.89); its checks still flag it (k̂ ≥ 0.7, or the wider
    q's reweighting moves v's tail: the missing 5–10% of v's sd is the neck), which is where ``neutra`` samples it
    exactly (test_neutra). The coupling flow misses the neck further (v's sd 1.4–2.6) and is flagged; neither is
    trusted where it is wrong."""
    target = funnel()
    truth = _funnel_draws(20_000)
    names = target.coordinate_names()
    for key in range(3):
        for kind in FLOWS:
            fit = vbayes.advi(target, kind, progress=False, key=key)
            cmp = compare_draws(_noncentred(np.asarray(fit.draws_unconstrained(20_000))), truth, names)
            assert cmp.accurate() or not fit.trusted, (kind, key, cmp.as_dict(), fit.verdict.summary())
            if kind == "maf":
                assert cmp.accurate(), (key, cmp.as_dict())


def test_a_flow_too_small_for_its_target_is_flagged():
    """One coupling layer of two hidden units cannot bend a standard normal into the banana: the fit is wrong, and
    its verdict says so."""
    small = build_flow("flow", jnp.zeros(2), jnp.array([10.0, 4.0]), jax.random.PRNGKey(0), FlowSize(1, 2))
    fit = vbayes.advi(banana(), "flow", init=small, progress=False, key=0)
    cmp = compare_draws(np.asarray(fit.draws_unconstrained(20_000)), _banana_draws(20_000), ["x1", "x2"])
    assert not cmp.accurate()
    assert not fit.trusted, fit.verdict.summary()


def test_flows_need_two_dimensions_and_a_known_kind():
    with pytest.raises(VBayesError, match="dimension ≥ 2"):
        build_flow("flow", jnp.zeros(1), jnp.ones(1), jax.random.PRNGKey(0))
    with pytest.raises(VBayesError, match="unknown flow"):
        build_flow("glow", jnp.zeros(2), jnp.ones(2), jax.random.PRNGKey(0))
    with pytest.raises(VBayesError, match="unknown family"):
        vbayes.advi(banana(), "realnvp")


def test_a_flow_refuses_the_closed_form_elbo_and_the_automatic_family_does_not_escalate_with_it():
    """The ``elbo`` objective needs q's entropy in closed form: a flow family refuses it with a clear error, and the
    automatic family keeps its flagged Gaussian and says why instead of failing inside the flow's fit."""
    with pytest.raises(VBayesError, match="objective 'elbo' needs q's entropy in closed form"):
        vbayes.advi(banana(), "maf", objective="elbo", progress=False)
    auto = vbayes.advi(banana(), objective="elbo", progress=False, key=0)
    assert auto.info.method == "advi-fullrank" and not auto.trusted
    assert "not a flow: objective 'elbo' needs a closed-form entropy" in auto.info.extra["family_choice"]


def test_the_automatic_family_is_full_rank_when_that_passes():
    """No family named: full rank (d ≤ 500), the same fit as naming it, and the record says why."""
    auto = vbayes.advi(_gaussian(), progress=False, key=3)
    named = vbayes.advi(_gaussian(), "fullrank", progress=False, key=3)
    assert auto.info.method == "advi-fullrank" and auto.info.extra["family_choice"] == "fullrank: d = 3 ≤ 500"
    np.testing.assert_array_equal(np.asarray(auto.q.loc), np.asarray(named.q.loc))
    assert auto.trusted and auto.info.grad_evals == named.info.grad_evals
    unchecked = vbayes.advi(banana(), progress=False, checks="none", max_steps=300)
    assert unchecked.info.method == "advi-fullrank"  # without checks there is no flag to escalate on


@pytest.mark.slow
def test_the_automatic_family_escalates_to_a_flow_when_the_gaussian_is_flagged():
    gaussian = vbayes.advi(banana(), "fullrank", progress=False, key=0)
    auto = vbayes.advi(banana(), progress=False, key=0)
    assert not gaussian.trusted
    assert auto.info.method == "advi-flow" and auto.trusted, auto.verdict.summary()
    assert auto.info.extra["family_choice"].startswith("flow: the fullrank fit was flagged (")
    assert auto.info.extra["init"].startswith("advi-fullrank")  # the flow started at that very fit
    assert auto.info.grad_evals > gaussian.info.grad_evals  # and its cost is counted
    cmp = compare_draws(np.asarray(auto.draws_unconstrained(20_000)), _banana_draws(20_000), ["x1", "x2"])
    assert cmp.accurate(), cmp.as_dict()
