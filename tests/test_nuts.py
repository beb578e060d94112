"""NUTS: exact conjugate posterior, the posteriordb reference for eight schools, and the Fit it returns."""

import json
from pathlib import Path

import numpy as np
import pytest

from vbayes import nuts
from vbayes.diagnostics import compare_draws
from vbayes.examples import eight_schools_noncentered, linear_regression, linear_regression_exact

POSTERIORDB = Path(__file__).resolve().parents[2] / "shared" / "posteriordb"


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
@pytest.mark.skipif(not POSTERIORDB.exists(), reason="../shared/posteriordb not present")
def test_nuts_matches_posteriordb_eight_schools():
    chains = json.loads((POSTERIORDB / "eight_schools-eight_schools_noncentered" / "reference_draws.json").read_text())
    names = list(chains[0])
    ref = np.array([[ch[n] for n in names] for ch in chains]).transpose(0, 2, 1).reshape(-1, len(names))
    fit = nuts(eight_schools_noncentered(), chains=4, target_accept=0.95, key=1)
    draws = {k: v.reshape(-1, *v.shape[2:]) for k, v in fit.draws_by_chain().items()}
    x = np.column_stack([draws["theta"], draws["mu"], draws["tau"]])  # the reference's column order
    cmp = compare_draws(x, ref, names)
    assert cmp.mean_error.max() < 0.1, cmp.as_dict()
    assert np.all(np.abs(cmp.sd_ratio - 1) < 0.1), cmp.as_dict()
    s = fit.summary()
    assert {"r_hat", "ess_bulk"} <= set(s.columns) and s["r_hat"].max() < 1.01
    assert fit.to_arviz().posterior["theta"].shape == (4, 1000, 8)
