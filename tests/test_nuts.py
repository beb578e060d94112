"""NUTS: exact conjugate posterior, the posteriordb reference for eight schools, the Fit it returns, and its rerun
after a few divergent transitions."""

import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm
from posteriordb_files import needs_posteriordb  # noqa: E402

import vbayes
from vbayes import VBayesError, nuts
from vbayes.checks import verify
from vbayes.compare import MethodResult, _recommend
from vbayes.diagnostics import compare_draws
from vbayes.examples import eight_schools_noncentered, linear_regression, linear_regression_exact, load_reference
from vbayes.fit import Check, Fit, FitInfo, Verdict
from vbayes.infer.nuts import RERUN_MAX_FRACTION, rerun_accept
from vbayes.samples import Empirical


def test_nuts_recovers_the_conjugate_posterior():
    m, c, _ = linear_regression_exact()
    fit = nuts(linear_regression(), chains=4, num_warmup=500, num_samples=500)
    z = np.asarray(fit.q.flat)
    sd = np.sqrt(np.diag(c))
    ess = fit.info.extra["min_ess_bulk"]
    assert fit.info.extra["max_rhat"] < 1.01 and fit.info.extra["divergences"] == 0
    # Monte Carlo error of a mean is sd/√ESS; allow 4 of them
    assert np.all(np.abs(z.mean(0) - m) / sd < 4 / np.sqrt(ess))
    np.testing.assert_allclose(z.std(0) / sd, 1.0, atol=0.1)
    assert fit.info.grad_evals > fit.info.steps  # NUTS takes several leapfrog steps per draw


@pytest.mark.slow
@needs_posteriordb
def test_nuts_matches_posteriordb_eight_schools():
    reference = load_reference("eight_schools-eight_schools_noncentered")
    names, ref = list(reference.columns), reference.pooled
    fit = nuts(eight_schools_noncentered(), chains=4, target_accept=0.95, key=1)
    draws = {k: v.reshape(-1, *v.shape[2:]) for k, v in fit.draws_by_chain().items()}
    x = np.column_stack([draws["theta"], draws["mu"], draws["tau"]])  # the reference's column order
    cmp = compare_draws(x, ref, names)
    assert cmp.mean_error.max() < 0.1, cmp.as_dict()
    assert np.all(np.abs(cmp.sd_ratio - 1) < 0.1), cmp.as_dict()
    s = fit.summary()
    assert {"r_hat", "ess_bulk"} <= set(s.columns) and s["r_hat"].max() < 1.01
    assert fit.to_arviz().posterior["theta"].shape == (4, 1000, 8)


# ----------------------------------------------------------------------------------------------------
# a few divergent transitions: one rerun with a higher target_accept and a longer warm-up


def _funnel_log_density(params, data):
    """log N(v | 0, s²) + Σ_i log N(x_i | 0, e^v): a funnel whose narrowness s is data (one compiled program)."""
    v, x = params["v"], params["x"]
    return norm.logpdf(v, 0.0, data["s"]) + jnp.sum(norm.logpdf(x, 0.0, jnp.exp(v / 2.0)))


def _funnel(s: float):
    """A 3-d funnel: s = 1 is mild (at target_accept 0.8 a few of 4,000 transitions diverge in its neck),
    s = 3 is Neal's (several % diverge: no step size reaches the neck)."""
    return vbayes.from_logdensity(_funnel_log_density, {"v": 0.0, "x": np.zeros(2)}, data={"s": s}, name="funnel")


SMALL = {"chains": 4, "num_warmup": 500, "num_samples": 1000, "key": 2}
FEW = {**SMALL, "key": 3}
"""A key at which a few transitions of the mild funnel diverge at 0.8 and none at 0.95, under XLA's default options
and the default test run's (measured: 1, 3 and 5 of 4,000 at 0.8, each 0 at 0.95)."""


def test_a_few_divergences_are_rerun_at_a_higher_target_accept():
    fit = nuts(_funnel(1.0), **FEW)
    extra = fit.info.extra
    first, rerun = extra["reruns"]
    assert first["target_accept"] == 0.8 and first["num_warmup"] == 500
    assert 0 < first["divergences"] <= RERUN_MAX_FRACTION * 4000
    assert rerun["target_accept"] == 0.95 and rerun["num_warmup"] == 1000 and rerun["divergences"] == 0
    assert extra["divergences"] == 0 and extra["divergence_fraction"] == 0.0
    assert extra["target_accept"] == 0.95 and extra["num_warmup"] == 1000
    assert fit.info.steps == 4 * (500 + 1000) + 4 * (1000 + 1000)  # both runs counted
    alone = nuts(_funnel(1.0), **FEW, reruns=0)  # the first run by itself: same key, same draws
    assert alone.info.extra["divergences"] == first["divergences"]
    assert fit.info.grad_evals > alone.info.grad_evals + 4 * 2000  # the rerun's warm-up and draws on top
    assert fit.trusted, fit.verdict.summary()
    check = fit.verdict.check("divergences")
    assert check.status == "note" and "after a rerun at target_accept 0.95" in check.message
    assert f"the first run, at 0.8, had {first['divergences']}" in check.message
    assert "rerun at 0.95 with 1000 warm-up steps: 0 divergent" in fit.info.message


def test_reruns_0_keeps_the_first_run_and_flags_it():
    fit = nuts(_funnel(1.0), **FEW, reruns=0)
    assert len(fit.info.extra["reruns"]) == 1 and fit.info.extra["divergences"] > 0
    assert not fit.trusted and fit.verdict.check("divergences").status == "flag"


def test_many_divergences_are_not_rerun_and_are_flagged_with_their_fraction():
    fit = nuts(_funnel(3.0), **SMALL)  # measured: 301 of 4000 (7.5%)
    extra = fit.info.extra
    assert len(extra["reruns"]) == 1 and extra["divergence_fraction"] > RERUN_MAX_FRACTION
    assert extra["divergences"] == round(extra["divergence_fraction"] * 4000)
    check = fit.verdict.check("divergences")
    assert not fit.trusted and check.status == "flag"
    assert f"({extra['divergence_fraction']:.2%} of the draws)" in check.message
    assert "not rerun" in fit.info.message


def test_the_rerun_rule_and_its_option():
    assert rerun_accept(0.8) == 0.95 and rerun_accept(0.5) == 0.95  # halfway to 1, at least 0.95
    assert rerun_accept(0.95) == pytest.approx(0.975) and rerun_accept(0.99) == pytest.approx(0.995)
    for bad in (-1, 1.5, True):
        with pytest.raises(VBayesError, match="reruns"):
            nuts(_funnel(1.0), reruns=bad)


def _result(method: str, q, checks: tuple[Check, ...], extra: dict | None = None) -> MethodResult:
    """A MethodResult with a fabricated fit: its q, its extra, and its verdict from ``checks``."""
    info = FitInfo(method, "completed", "", 1, 100, 0, 0.1, extra or {}, verdict=Verdict(checks))
    fit = Fit(target=None, q=q, trace=np.zeros(1), info=info)
    return MethodResult(method, fit, fit.verdict.flags, None, 100, 0.1)


def _nuts_result(first_divergences: int, kept_divergences: int) -> MethodResult:
    """NUTS that reran (0.95 → 0.975) and kept the rerun, its verdict from the real checks."""
    draws = Empirical(jnp.zeros((4, 1000, 1)))
    runs = [
        {"target_accept": 0.95, "num_warmup": 1000, "divergences": first_divergences, "max_rhat": 1.002},
        {"target_accept": 0.975, "num_warmup": 2000, "divergences": kept_divergences, "max_rhat": 1.003},
    ]
    extra = {"divergences": kept_divergences, "divergence_fraction": kept_divergences / 4000, "max_rhat": 1.003}
    extra |= {"target_accept": 0.975, "num_warmup": 2000, "reruns": runs}
    info = FitInfo("nuts", "completed", "", 12000, 10**5, 0, 1.0, extra)
    fit = verify(Fit(target=None, q=draws, trace=np.zeros(1000), info=info))
    return MethodResult("nuts", fit, fit.verdict.flags, None, 10**5, 1.0)


def test_recommend_names_nuts_with_its_caveat_after_a_clean_rerun():
    vi = _result("advi-meanfield", None, (Check("importance", "flag", "k̂ = 0.90 ≥ 0.70"),))
    clean = _nuts_result(4, 0)
    assert clean.trusted and clean.fit.verdict.check("divergences").status == "note"
    method, reason = _recommend([vi, clean])
    assert method == "nuts", reason
    assert "NUTS is recommended" in reason and "caveat" in reason
    assert "after a rerun at target_accept 0.975 with 2000 warm-up steps (the first run, at 0.95, had 4)" in reason
    method, reason = _recommend([vi, _nuts_result(4, 2)])
    assert method == "none" and "extreme curvature" in reason and "2 divergent transitions (0.05%" in reason


def test_a_trusted_vi_fit_is_not_recommended_where_nuts_still_diverges():
    """Divergences a rerun did not clear mark a funnel's neck that no q's checks reach: a VI method that passes its
    own checks there is not recommended (on the centred eight schools a flow did, and its log τ was too narrow)."""
    flow = _result("advi-maf", None, (Check("importance", "pass", "k̂ 0.60 < 0.70"),))
    assert flow.trusted
    method, reason = _recommend([flow, _nuts_result(40, 30)])
    assert method == "none" and "advi-maf passes its own checks" in reason and "extreme curvature" in reason
    method, _ = _recommend([flow, _nuts_result(4, 0)])  # a clean rerun: no neck left, the cheaper flow wins
    assert method == "advi-maf"
