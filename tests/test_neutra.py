"""NUTS in a flow's space (``neutra``): its draws are the posterior's (a Gaussian exactly; Neal's funnel, where plain
NUTS's are not), and ``compare`` escalates to it when NUTS's divergent transitions survive their rerun,
recommending it only when its own checks pass. (The pulled-back density itself: ``test_transport.py``.)"""

import dataclasses
import time

import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm
from scipy import stats
from test_flows import COV, MEAN, _gaussian

import vbayes
from vbayes import VBayesError
from vbayes.compare import MethodResult, _recommend, compare
from vbayes.fit import Check, Fit, FitInfo, Verdict
from vbayes.samples import Empirical


def test_neutra_draws_are_the_gaussian_posterior():
    """On a correlated Gaussian the draws z = T(u) have its exact moments, and the record counts the flow's cost."""
    target = _gaussian()
    fit = vbayes.neutra(target, chains=2, num_warmup=300, num_samples=1000, key=0)
    z = np.asarray(fit.q.flat)
    assert fit.trusted, fit.verdict
    assert fit.info.method == "neutra" and "NUTS in the space of advi-flow" in fit.info.message
    se = np.sqrt(np.diag(COV) / 500)  # ESS ≥ 500 of the 2,000 draws
    assert np.all(np.abs(z.mean(0) - MEAN) < 4 * se), z.mean(0)
    np.testing.assert_allclose(np.cov(z.T), COV, atol=0.25)
    assert fit.info.steps > 2 * (300 + 1000)  # the flow's ADVI steps and the sampler's transitions
    assert fit.info.extra["max_rhat"] < 1.01 and "advi-flow" in fit.info.extra["flow"]


def test_a_flow_fit_given_is_reused_and_counted_once():
    target = _gaussian()
    flow = vbayes.advi(target, "flow", key=1, checks="none")
    t0 = time.perf_counter()
    fit = vbayes.neutra(target, flow, chains=2, num_warmup=200, num_samples=200, key=0, checks="none")
    elapsed = time.perf_counter() - t0
    nuts_grads = fit.info.grad_evals - flow.info.grad_evals
    assert 0 < nuts_grads < 2 * 400 * 2**10  # the sampler's leapfrog steps, at most 2^10 per transition
    # the given flow's wall time once, plus the sampling's (no part of the flow's fit is run or counted again)
    assert flow.info.wall_time <= fit.info.wall_time <= flow.info.wall_time + elapsed


def test_where_nuts_in_the_coupling_flows_space_is_flagged_the_autoregressive_flow_is_tried(monkeypatch):
    """No flow given: where NUTS in the coupling flow's space is flagged (forced here; on Neal's funnel by its
    divergences and R-hat, the slow test), ``neutra`` fits the masked autoregressive flow and samples in its space;
    the fit kept is that one, its record counting both runs and saying why. With checks off, no second flow."""
    import vbayes.infer.neutra as neutra_module

    real, runs = neutra_module._in_space_of, []

    def first_flagged(target, flow, **settings):
        fit = real(target, flow, **settings)
        runs.append(fit)
        if len(runs) > 1 or fit.verdict.status == "unchecked":
            return fit
        verdict = Verdict((Check("divergences", "flag", "3 divergent transitions (forced)"),))
        return dataclasses.replace(fit, info=dataclasses.replace(fit.info, verdict=verdict))

    monkeypatch.setattr(neutra_module, "_in_space_of", first_flagged)
    target = _gaussian()
    fit = vbayes.neutra(target, chains=2, num_warmup=200, num_samples=300, key=0, max_steps=300)
    assert len(runs) == 2
    first, second = runs
    assert fit.verdict == second.verdict
    assert "advi-flow" in first.info.extra["flow"] and "advi-maf" in second.info.extra["flow"]
    why = fit.info.extra["flow_choice"]
    assert why == "NUTS in the space of advi-flow flagged (3 divergent transitions (forced)); then advi-maf"
    assert fit.info.message.startswith(why)
    np.testing.assert_array_equal(np.asarray(fit.q.flat), np.asarray(second.q.flat))
    assert fit.info.grad_evals == first.info.grad_evals + second.info.grad_evals
    assert fit.info.wall_time == pytest.approx(first.info.wall_time + second.info.wall_time)
    runs.clear()
    unchecked = vbayes.neutra(target, chains=2, num_warmup=200, num_samples=300, key=0, max_steps=300, checks="none")
    assert len(runs) == 1 and "flow_choice" not in unchecked.info.extra


def test_bad_flows_and_options_are_clear_errors():
    target = _gaussian()
    gaussian = vbayes.advi(target, "fullrank", key=0, checks="none", max_steps=200)
    with pytest.raises(VBayesError, match="flow family"):
        vbayes.neutra(target, gaussian)
    other = vbayes.advi(_gaussian(), "flow", key=0, checks="none", max_steps=200)
    with pytest.raises(VBayesError, match="another target"):
        vbayes.neutra(target, other)
    with pytest.raises(VBayesError, match="need flow=None"):
        vbayes.neutra(target, other, max_steps=10)
    with pytest.raises(VBayesError, match="Target"):
        vbayes.neutra(lambda z: 0.0)


def _mcmc(method: str, divergences: int, kept_after_rerun: bool = False) -> MethodResult:
    """An MCMC result whose verdict is the real checks' on a fabricated record."""
    from vbayes.checks import verify

    extra = {"divergences": divergences, "divergence_fraction": divergences / 4000, "max_rhat": 1.003}
    if kept_after_rerun:
        runs = [
            {"target_accept": 0.95, "num_warmup": 1000, "divergences": 5, "max_rhat": 1.0},
            {"target_accept": 0.975, "num_warmup": 2000, "divergences": divergences, "max_rhat": 1.0},
        ]
        extra |= {"target_accept": 0.975, "num_warmup": 2000, "reruns": runs}
    info = FitInfo(method, "completed", "", 8000, 10**6, 0, 1.0, extra)
    fit = verify(Fit(target=None, q=Empirical(jnp.zeros((4, 1000, 1))), trace=np.zeros(1000), info=info))
    return MethodResult(method, fit, fit.verdict.flags, None, 10**6, 1.0)


def _vi(method: str, status: str) -> MethodResult:
    info = FitInfo(method, "converged", "", 1, 100, 0, 0.1, {}, verdict=Verdict((Check("importance", status, ""),)))
    fit = Fit(target=None, q=None, trace=np.zeros(1), info=info)
    return MethodResult(method, fit, fit.verdict.flags, None, 100, 0.1)


def test_recommend_takes_neutra_where_nuts_still_diverges_and_only_if_it_is_trusted():
    flow_passes = _vi("advi-maf", "pass")
    nuts = _mcmc("nuts", 40, kept_after_rerun=True)
    method, reason = _recommend([flow_passes, nuts, _mcmc("neutra", 0, kept_after_rerun=True)])
    assert method == "neutra", reason
    assert "advi-maf passes its own checks and is not recommended" in reason and "caveat" in reason
    method, reason = _recommend([flow_passes, nuts, _mcmc("neutra", 2, kept_after_rerun=True)])
    assert method == "none" and "NUTS in a flow's space warns too" in reason
    method, reason = _recommend([_vi("advi-fullrank", "flag"), _mcmc("nuts", 0), _mcmc("neutra", 0)])
    assert method == "nuts", reason  # NUTS clean: neutra (had it been asked for) is not needed
    method, reason = _recommend([_vi("advi-fullrank", "flag"), _mcmc("neutra", 0)])
    assert method == "neutra" and "NUTS in a flow's space (neutra) is recommended" in reason


def _funnel(s: float, dim: int = 2) -> vbayes.Target:
    def log_p(params, data):
        v, x = params["v"], params["x"]
        return norm.logpdf(v, 0.0, data["s"]) + jnp.sum(norm.logpdf(x, 0.0, jnp.exp(v / 2.0)))

    return vbayes.from_logdensity(log_p, {"v": 0.0, "x": np.zeros(dim)}, data={"s": s}, name="funnel")


@pytest.mark.slow
def test_neutra_reaches_the_neck_of_neals_funnel_that_nuts_misses():
    """v ~ N(0, 3²), x_i | v ~ N(0, e^v): plain NUTS misses the neck (v's mean pushed up, its sd short) and says so
    by its divergences; in the flows' space NUTS draws v from N(0, 3²). Measured at keys 0–2: NUTS in the coupling
    flow's space kept 1–4 divergent transitions of 4,000 after its reruns (flagged), so the autoregressive flow
    was fitted, and NUTS in its space was trusted at all three (v's sd 2.93–3.05)."""
    target = _funnel(3.0)
    plain = vbayes.nuts(target, num_warmup=500, key=0)
    v_plain = np.asarray(plain.q.flat)[:, 0]
    assert not plain.trusted and (abs(v_plain.mean()) > 0.4 or v_plain.std() < 2.6)
    trusted = 0
    for key in (0, 1):
        fit = vbayes.neutra(target, num_warmup=500, key=key)
        v = np.asarray(fit.q.flat)[:, 0]
        assert abs(v.mean()) < 0.25 and abs(v.std() / 3.0 - 1.0) < 0.06, (key, v.mean(), v.std())
        assert stats.kstest(v / 3.0, "norm").statistic < 0.04
        assert fit.info.extra["divergences"] <= 4  # against plain NUTS's tens of the 4,000
        trusted += fit.trusted
    assert trusted >= 1


@pytest.mark.slow
def test_compare_escalates_to_neutra_when_nuts_diverges():
    """``compare`` with NUTS on Neal's funnel: NUTS's divergences survive the rerun, so ``neutra`` runs (fitting its
    own flows) and is the answer when its checks pass; else "none" — never a Gaussian."""
    target = _funnel(3.0)
    cmp = compare(target, methods=("advi-fullrank", "advi-flow", "nuts"), reference=None, restarts=False)
    names = [r.method for r in cmp.results]
    assert names == ["advi-fullrank", "advi-flow", "nuts", "neutra"]
    by = {r.method: r for r in cmp.results}
    assert by["nuts"].fit.verdict.check("divergences").status == "flag"
    assert "NUTS in the space of advi-flow" in by["neutra"].fit.info.message
    assert by["neutra"].grad_evals > by["advi-flow"].grad_evals  # the flow's fit is counted in neutra's cost
    expected = "neutra" if by["neutra"].trusted else "none"
    assert cmp.recommended == expected, cmp.reason
    assert "extreme curvature" in cmp.reason


def test_compare_says_why_when_neutra_cannot_run(monkeypatch):
    """Where NUTS diverges and NUTS in a flow's space fails with a clear error, ``compare`` still answers: "none",
    with that error in its reason."""
    from vbayes import methods as registry

    def refuse(target, **options):
        raise VBayesError("the pulled-back density is not finite at the chains' starts")

    monkeypatch.setitem(registry.METHODS, "neutra", registry.METHODS["neutra"]._replace(run=refuse))
    cmp = compare(_funnel(3.0), methods=("nuts",), restarts=False)  # reference: NUTS's own draws
    assert [r.method for r in cmp.results] == ["nuts"] and cmp.reference == "nuts"
    assert cmp.recommended == "none"
    assert "could not run (the pulled-back density is not finite" in cmp.reason
