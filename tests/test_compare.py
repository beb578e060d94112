"""`vbayes.compare`: recommendations, flags that catch inaccurate answers, NUTS against the references.

The checks over all posteriordb posteriors are slow (minutes) and marked so; CI runs them.
"""

import numpy as np
import pytest
from posteriordb_files import needs_posteriordb

from vbayes import VBayesError
from vbayes.checks import widened_reweighting
from vbayes.compare import compare
from vbayes.examples import POSTERIORS, linear_regression, load, load_reference, to_unconstrained
from vbayes.infer.advi import advi


@pytest.mark.slow
def test_gaussian_posterior_recommends_a_cheap_exact_method():
    """Conjugate linear regression: Laplace and full-rank ADVI are exact, mean field is not (strong correlations)."""
    c = compare(linear_regression(), methods=("advi-meanfield", "advi-fullrank", "laplace", "nuts"))
    table = c.table()
    assert c.recommended == "laplace", c.reason  # exact here, and by far the cheapest of these
    assert table.loc["advi-fullrank", "trusted"] and table.loc["advi-fullrank", "accurate"]
    assert not table.loc["advi-meanfield", "trusted"] and not table.loc["advi-meanfield", "accurate"]
    assert table.loc["laplace", "grad_evals"] * 20 < table.loc["nuts", "grad_evals"]
    assert "nuts" in c.reason.lower()


def test_widened_reweighting_sees_an_underdispersed_q():
    t = linear_regression()
    fit = advi(t, "meanfield")  # sds far below the marginal ones: the posterior is strongly correlated
    khat, shift, ratios = widened_reweighting(fit)
    exact = advi(t, "fullrank")
    assert np.max(ratios) > 1.25
    assert not fit.trusted and fit.verdict.flags  # its own record says it cannot be trusted
    assert {c.name for c in fit.verdict.checks if c.status == "flag"} & {"importance", "reweighting"}
    assert exact.trusted and exact.verdict.flags == ()


def test_unknown_method_and_bad_reference():
    with pytest.raises(VBayesError, match="unknown method.*available"):
        compare(linear_regression(), methods=("advi-meanfield", "hmc"))
    with pytest.raises(VBayesError, match="shape"):
        compare(linear_regression(), methods=("laplace",), reference=np.zeros((10, 3)))
    with pytest.raises(VBayesError, match="posteriordb"):
        compare(linear_regression(), methods=("laplace",), reference="posteriordb")


@needs_posteriordb
@pytest.mark.slow
@pytest.mark.parametrize("name", POSTERIORS)
def test_no_silent_failures(name):
    """Every VI method is accurate (mean W₁/sd ≤ 0.1, sd ratios in [0.8, 1.25]) or flagged by its own checks."""
    c = compare(
        load(f"posteriordb:{name}"),
        methods=("advi-meanfield", "advi-fullrank", "advi-lowrank", "laplace", "pathfinder"),
        reference="posteriordb",
    )
    for r in c.results:
        assert r.accuracy.accurate() or r.flags, (name, r.method, r.accuracy.as_dict())
    rec = next((r for r in c.results if r.method == c.recommended), None)
    assert rec is None or rec.accuracy.accurate(), (name, c.recommended, rec.accuracy.as_dict())
    assert c.recommended in ("nuts", *(r.method for r in c.results if not r.flags))


@needs_posteriordb
@pytest.mark.slow
@pytest.mark.parametrize("name", POSTERIORS)
def test_no_silent_failures_at_the_single_fit_level(name):
    """A single fit's own verdict, with the default checks (no restarts), never calls an inaccurate fit trusted:
    every method on every shared posterior is accurate or flagged by its own record."""
    from vbayes import methods
    from vbayes.diagnostics import compare_draws

    target = load(f"posteriordb:{name}")
    ref = np.asarray(to_unconstrained(name, load_reference(name).pooled))
    for method in ("advi-meanfield", "advi-fullrank", "advi-lowrank", "laplace", "pathfinder"):
        fit = methods.fit(target, method)
        accuracy = compare_draws(np.asarray(fit.draws_unconstrained(4000, 99)), ref)
        assert accuracy.accurate() or not fit.trusted, (name, method, accuracy.as_dict(), fit.verdict.summary())


@needs_posteriordb
@pytest.mark.slow
@pytest.mark.parametrize("name", POSTERIORS)
def test_nuts_matches_every_reference(name):
    """Means within 0.1 reference sd, sds within 10%. The centred eight schools is the exception NUTS
    itself reports: its funnel neck is out of reach (posteriordb's reference for it is the non-centred
    run), so there it must flag itself with divergent transitions instead."""
    from vbayes import nuts
    from vbayes.diagnostics import compare_draws

    target = load(f"posteriordb:{name}")
    fit = nuts(target, target_accept=0.95 if "eight_schools" in name or "diamonds" in name else 0.8, key=1)
    ref = np.asarray(to_unconstrained(name, load_reference(name).pooled))
    cmp = compare_draws(np.asarray(fit.q.flat), ref)
    if name == "eight_schools-eight_schools_centered":
        assert fit.info.extra["divergences"] > 0 and fit.info.outcome == "completed"
        assert not fit.trusted and fit.verdict.check("divergences").status == "flag"
        return
    assert cmp.mean_error.max() < 0.1, (name, cmp.as_dict())
    # sds within 10%, or within 4 Monte Carlo standard errors where the margin's tails make that wider:
    # se(sd)/sd ≈ √((κ − 1)/(4 n)) for kurtosis κ (of the reference margin) and n the run's bulk ESS
    kurtosis = np.mean((ref - ref.mean(0)) ** 4, 0) / ref.var(0) ** 2
    tolerance = np.maximum(0.1, 4 * np.sqrt((kurtosis - 1) / (4 * fit.info.extra["min_ess_bulk"])))
    assert np.all(np.abs(cmp.sd_ratio - 1) < tolerance), (name, cmp.as_dict(), tolerance)


def test_the_report_draws_every_method_however_many(tmp_path, monkeypatch):
    """The report's figures cycle their colours: a comparison of more methods than colours (CAVI, SVI and the seven
    default methods on a conjugate target make nine) still draws every one of them, each in the legend."""
    from types import SimpleNamespace

    from vbayes import report

    rng = np.random.default_rng(0)
    names = [f"method-{i}" for i in range(len(report._COLOURS) + 3)]
    results = [
        SimpleNamespace(
            method=m,
            fit=SimpleNamespace(q=SimpleNamespace(flat=rng.normal(size=(200, 2))), trace=rng.normal(size=50)),
            accuracy=None,
        )
        for m in names
    ]
    target = SimpleNamespace(coordinate_names=lambda: ["a", "b"], name="two")
    comparison = SimpleNamespace(target=target, results=results, reference="none")
    legends = []
    monkeypatch.setattr(
        report, "save_figure", lambda fig, path: legends.append(fig.axes[0].get_legend_handles_labels()[1])
    )
    report.plot_marginals(comparison, None, tmp_path / "m.png")
    report.plot_traces(comparison, tmp_path / "t.png")
    report.plot_pair(comparison, None, tmp_path / "p.png")
    assert legends == [names, names, names]
