"""`vbayes compare` and `vbayes gmm` from the command line: content, files, and errors without tracebacks."""

import jax
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from vbayes.cli import app

jax.config.update("jax_enable_x64", True)
runner = CliRunner()


@pytest.mark.slow
def test_compare_recommends_and_writes_the_report(tmp_path):
    result = runner.invoke(
        app,
        [
            "compare",
            "linear_regression",
            "--methods",
            "advi-fullrank,laplace",
            "--reference",
            "none",
            "--report",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Trust laplace" in result.stdout  # exact for this Gaussian posterior and 40× cheaper than ADVI
    page = (tmp_path / "index.html").read_text()
    assert "advi-fullrank" in page and "Trust: laplace" in page
    for name in ("marginals.png", "traces.png", "pair.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_bad_method_and_reference():
    result = runner.invoke(app, ["compare", "linear_regression", "--methods", "advi-meanfield,gibbs"])
    assert result.exit_code == 1 and "unknown method" in result.stderr and "Traceback" not in result.output
    result = runner.invoke(app, ["compare", "linear_regression", "--reference", "posteriordb"])
    assert result.exit_code == 1 and "posteriordb" in result.stderr and "Traceback" not in result.output


def _three_clusters(path):
    rng = np.random.default_rng(0)
    X = np.concatenate(
        [
            rng.normal([0, 0], [1, 0.5], size=(3000, 2)),
            rng.normal([6, 6], 1, size=(2000, 2)),
            rng.normal([-5, 7], 0.7, size=(1000, 2)),
        ]
    )
    np.save(path, X)
    return X


def test_gmm_finds_the_components(tmp_path):
    _three_clusters(tmp_path / "x.npy")
    result = runner.invoke(app, ["gmm", str(tmp_path / "x.npy"), "--components", "6", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    found = pd.read_csv(tmp_path / "o" / "components.csv").sort_values("weight", ascending=False)
    np.testing.assert_allclose(found["weight"].to_numpy()[:3], [0.5, 1 / 3, 1 / 6], atol=0.02)
    np.testing.assert_allclose(found[["mean0", "mean1"]].to_numpy()[:3], [[0, 0], [6, 6], [-5, 7]], atol=0.1)
    assert "converged" in result.stdout and "per point" in result.stdout
    assert (tmp_path / "o" / "gmm.png").read_bytes()[:4] == b"\x89PNG"


def test_gmm_bad_input(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b\n1,x\n2,3\n")
    result = runner.invoke(app, ["gmm", str(tmp_path / "bad.csv")])
    assert result.exit_code == 1 and "not numeric" in result.stderr and "Traceback" not in result.output
    X = _three_clusters(tmp_path / "nan.npy")
    X[[4, 8]] = np.nan
    np.save(tmp_path / "nan.npy", X)
    result = runner.invoke(app, ["gmm", str(tmp_path / "nan.npy")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "2" in result.stderr and ("NaN" in result.stderr or "non-finite" in result.stderr)
    result = runner.invoke(app, ["gmm", str(tmp_path / "missing.npy")])
    assert result.exit_code == 1 and "not found" in result.stderr
    result = runner.invoke(app, ["gmm", str(tmp_path / "x.npy"), "--method", "gibbs"])
    assert result.exit_code == 1 and "unknown method" in result.stderr
