"""The ``vbayes`` command: what it prints and writes, and that bad input gets one clear line, no traceback."""

import jax

jax.config.update("jax_enable_x64", True)

import dataclasses  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from vbayes.cli import app  # noqa: E402
from vbayes.cli.loading import load_module  # noqa: E402
from vbayes.examples import EXAMPLES, linear_regression_exact  # noqa: E402
from vbayes.report import plot_trace, running_mean  # noqa: E402

DATA = Path(__file__).parent / "data"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def assert_error(result, *fragments: str) -> None:
    """Exit status 1, ``error: …`` on stderr naming the cause, nothing on stdout beyond the header."""
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def read_outputs(folder: Path) -> tuple[pd.DataFrame, dict]:
    png = (folder / "trace.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 5000
    return pd.read_csv(folder / "summary.csv", index_col="parameter"), json.loads((folder / "info.json").read_text())


# ----------------------------------------------------------------------------------------------
# vbayes examples


def test_examples_lists_every_example_with_its_dimension():
    result = invoke("examples")
    assert result.exit_code == 0, result.output
    for name in EXAMPLES:
        assert name in result.stdout
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in result.stdout.splitlines()
        if line.count("│") >= 3 and line.split("│")[1].strip()
    }
    assert rows["eight_schools_noncentered"] == "10"
    assert rows["linear_regression"] == "11"
    assert rows["banana"] == "2"


@pytest.mark.slow
def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "vbayes", "examples"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "linear_regression" in proc.stdout and "funnel" in proc.stdout


def test_the_command_ends_with_its_exit_status_after_its_exit_handlers():
    """``main`` skips Python's final teardown but not the exit handlers (a local Dask cluster is closed by one), and
    keeps every exit status: 0, 1 on bad input (no traceback), 2 on a usage error."""
    code = (
        "import atexit, sys; atexit.register(lambda: print('handler ran', flush=True)); "
        "from vbayes.cli import main; sys.argv = ['vbayes'] + sys.argv[1:]; main()"
    )
    run = lambda *args: subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, check=False
    )
    ok = run("examples")
    assert ok.returncode == 0 and "funnel" in ok.stdout and ok.stdout.rstrip().endswith("handler ran"), ok.stderr
    bad = run("fit", "no_such_example")
    assert bad.returncode == 1 and "error: unknown example" in bad.stderr and "Traceback" not in bad.stderr
    assert bad.stdout.rstrip().endswith("handler ran")
    assert run("fit", "--no-such-option").returncode == 2


# ----------------------------------------------------------------------------------------------
# vbayes fit


def test_fit_by_nuts_reports_its_draws_against_the_exact_posterior(tmp_path):
    """NUTS from the command line: the exact posterior's means and sds within Monte Carlo error, R-hat and ESS in
    the summary, and an outcome line about its chains with no ELBO (draws have no density to give one)."""
    out = tmp_path / "nuts"
    result = invoke("fit", "linear_regression", "--method", "nuts", "--out", out)
    assert result.exit_code == 0, result.output
    outcome = result.stdout.splitlines()[1]
    assert "divergent transitions" in outcome and "ELBO" not in outcome, outcome
    assert "verdict: trusted" in result.stdout
    summary, info = read_outputs(out)
    assert {"r_hat", "ess_bulk"} <= set(summary.columns) and info["method"] == "nuts"
    exact_mean, exact_cov, _ = linear_regression_exact()
    sd = np.sqrt(np.diag(exact_cov))
    got = summary.loc[[f"beta[{i}]" for i in range(11)]]
    np.testing.assert_array_less(np.abs(got["mean"].to_numpy() - exact_mean) / sd, 0.15)
    np.testing.assert_allclose(got["sd"].to_numpy(), sd, rtol=0.1)


def test_fit_linear_regression_recovers_exact_posterior_means(tmp_path):
    out = tmp_path / "lr"
    result = invoke("fit", "linear_regression", "--method", "advi-fullrank", "--steps", "1000", "--out", out)
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0]
    assert "linear_regression" in header and "dim 11" in header and "advi-fullrank" in header
    assert "verdict: trusted" in result.stdout  # full rank is exact here, and its own checks say so
    assert "gradient evaluations" in result.stdout and "ELBO" in result.stdout
    assert "beta[10]" in result.stdout  # the summary table
    summary, info = read_outputs(out)
    assert list(summary.columns) == ["mean", "sd", "5%", "50%", "95%"]
    exact_mean, exact_cov, _ = linear_regression_exact()
    got = summary.loc[[f"beta[{i}]" for i in range(11)], "mean"].to_numpy()
    np.testing.assert_allclose(got, exact_mean, atol=0.05)
    np.testing.assert_allclose(summary["sd"].to_numpy(), np.sqrt(np.diag(exact_cov)), rtol=0.2)
    assert info["outcome"] in ("converged", "max_steps")
    assert info["method"] == "advi-fullrank" and info["target"] == "linear_regression" and info["dim"] == 11
    assert 0 < info["steps"] <= 1000 and info["grad_evals"] >= info["steps"]
    assert np.isfinite(info["elbo"]) and "message" in info and "wall_time" in info
    assert info["trusted"] and {c["name"] for c in info["verdict"]["checks"]} >= {
        "convergence",
        "importance",
        "reweighting",
    }
    imp = info["importance"]  # the check's draws and their q stay in memory, not in the record
    assert len(imp["log_ratios"]) == imp["num_draws"] == 4000 and not {"draws", "q"} & set(imp) and imp["khat"] < 0.7


def test_fit_numpyro_model_file_recovers_conjugate_posterior(tmp_path):
    out = tmp_path / "normal"
    result = invoke(
        "fit",
        f"{DATA / 'normal_model.py'}:model",
        "--method",
        "advi-meanfield",
        "--steps",
        "2000",
        "--out",
        out,
        "--draws",
        "8000",
    )
    assert result.exit_code == 0, result.output
    assert "dim 1" in result.stdout and "mu" in result.stdout
    summary, info = read_outputs(out)
    mean, sd = load_module(DATA / "normal_model.py").exact_posterior()
    assert summary.loc["mu", "mean"] == pytest.approx(mean, abs=0.05)
    assert summary.loc["mu", "sd"] == pytest.approx(sd, rel=0.1)
    assert info["target"] == "model" and info["outcome"] in ("converged", "max_steps")


@pytest.mark.slow
def test_fit_target_object_from_file_lowrank_default_out_folder(tmp_path, monkeypatch):
    (tmp_path / "gauss.py").write_text(
        "import jax.numpy as jnp\n"
        "import vbayes\n"
        "def log_p(params):\n"
        "    return -0.5 * jnp.sum(((params['x'] - 2.0) / 0.5) ** 2)\n"
        "gauss = vbayes.from_logdensity(log_p, {'x': jnp.zeros(3)}, name='gauss3')\n"
    )
    monkeypatch.chdir(tmp_path)
    result = invoke("fit", "gauss.py:gauss", "--method", "advi-lowrank", "--rank", "1", "--steps", "500")
    assert result.exit_code == 0, result.output
    assert "gauss3" in result.stdout and "advi-lowrank" in result.stdout
    summary, _ = read_outputs(tmp_path / "vbayes-out" / "gauss3")
    np.testing.assert_allclose(summary["mean"], 2.0, atol=0.05)


@pytest.mark.slow
def test_a_flagged_fit_says_so_and_exits_3(tmp_path):
    """Mean-field ADVI on the strongly correlated regression posterior: its sds are far too small, its own
    reweighting sees it, and the command says FLAGGED on its own line, records it, and exits 3 (not 0)."""
    out = tmp_path / "mf"
    result = invoke("fit", "linear_regression", "--method", "advi-meanfield", "--out", out)
    assert result.exit_code == 3, result.output
    assert "verdict: FLAGGED" in result.stdout and "reweighting" in result.stdout
    assert "Do not use this fit" in result.stdout.splitlines()[-1]
    _, info = read_outputs(out)
    assert info["trusted"] is False and info["verdict"]["checks"]


def test_cavi_fits_a_conjugate_example_exactly(tmp_path):
    """`--method cavi` on the regression's conjugate form: the exact posterior, its ELBO the exact log evidence,
    trusted by the same checks as every other method."""
    out = tmp_path / "cavi"
    result = invoke("fit", "linear_regression", "--method", "cavi", "--out", out)
    assert result.exit_code == 0, result.output
    assert "verdict: trusted" in result.stdout
    summary, info = read_outputs(out)
    exact_mean, exact_cov, log_z = linear_regression_exact()
    np.testing.assert_allclose(summary.loc[[f"beta[{i}]" for i in range(11)], "mean"], exact_mean, atol=0.01)
    np.testing.assert_allclose(summary["sd"], np.sqrt(np.diag(exact_cov)), rtol=0.05)
    assert info["extra"]["objective"] == pytest.approx(log_z, abs=1e-8) and info["method"] == "cavi"


@pytest.mark.slow
def test_diverged_fit_writes_report_and_exits_1(tmp_path):
    out = tmp_path / "div"
    result = invoke("fit", f"{DATA / 'nan_outside.py'}:target", "--steps", "500", "--out", out)
    assert_error(result, "diverged", str(out))
    assert "diverged: 20 steps in a row" in result.stdout
    _, info = read_outputs(out)
    assert info["outcome"] == "diverged" and info["skipped_steps"] >= 20 and info["elbo"] is None


def test_an_interrupted_fit_writes_what_it_has_and_exits_130(tmp_path, monkeypatch):
    """Ctrl-C ends a fit with outcome `interrupted` (the drivers catch it): the command writes the report of the
    fit so far and exits 130, as `vbayes vae train` does, not 0."""
    from vbayes import methods

    real = methods.fit

    def interrupted(*args, **kwargs):
        fit = real(*args, **kwargs)
        return dataclasses.replace(fit, info=dataclasses.replace(fit.info, outcome="interrupted"))

    monkeypatch.setattr(methods, "fit", interrupted)
    out = tmp_path / "int"
    result = invoke("fit", "linear_regression", "--method", "laplace", "--out", out)
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.stdout.splitlines()[-1]
    _, info = read_outputs(out)
    assert info["outcome"] == "interrupted"


def test_usage_errors_exit_2_as_documented():
    result = invoke("fit", "linear_regression", "--no-such-option")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "2 on a usage error" in " ".join(invoke("fit", "--help").stdout.split())


def test_compare_help_names_the_methods_it_runs_by_default():
    from vbayes.compare import CONJUGATE_METHODS, DEFAULT_METHODS

    text = " ".join(invoke("compare", "--help").stdout.replace("│", " ").split())
    assert all(f" {name}," in text or f" {name} " in text for name in DEFAULT_METHODS + CONJUGATE_METHODS), text


# ----------------------------------------------------------------------------------------------
# bad input: one red line on stderr, exit status 1, no traceback


def test_unknown_example_lists_known_names():
    assert_error(invoke("fit", "eight_school"), "unknown example 'eight_school'", "eight_schools_noncentered")


def test_missing_file():
    assert_error(invoke("fit", "no/such/model.py:model"), "not found", "no/such/model.py")


def test_file_with_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("import numpy as np\n\ndef model(y:\n    pass\n")
    assert_error(invoke("fit", f"{bad}:model"), "syntax error", "broken.py", "line 3")


def test_file_that_raises_on_import_names_line(tmp_path):
    bad = tmp_path / "raises.py"
    bad.write_text("x = 1\ny = undefined_name\n")
    assert_error(invoke("fit", f"{bad}:x"), "raises.py, line 2", "NameError", "undefined_name")


def test_missing_attribute_lists_model_like_names():
    assert_error(invoke("fit", f"{DATA / 'normal_model.py'}:modl"), "no attribute 'modl'", "model", "exact_posterior")


def test_file_without_name():
    assert_error(invoke("fit", str(DATA / "normal_model.py")), "normal_model.py:NAME")


def test_model_without_its_data_is_explained(tmp_path):
    bad = tmp_path / "nodata.py"
    bad.write_text(
        "import numpyro, numpyro.distributions as dist\n"
        "def model(y):\n"
        "    mu = numpyro.sample('mu', dist.Normal(0.0, 1.0))\n"
        "    numpyro.sample('y', dist.Normal(mu, 1.0), obs=y)\n"
    )
    assert_error(invoke("fit", f"{bad}:model"), "missing a required argument: 'y'", "neither `data` nor `args`")


def test_model_failing_on_its_data_names_the_line(tmp_path):
    bad = tmp_path / "fails.py"
    bad.write_text(
        "import numpyro, numpyro.distributions as dist\n"
        "def model(y):\n"
        "    mu = numpyro.sample('mu', dist.Normal(0.0, 1.0))\n"
        "    numpyro.sample('y', dist.Normal(mu, 1.0), obs=y.no_such_attribute)\n"
        "data = {'y': 1.0}\n"
    )
    assert_error(invoke("fit", f"{bad}:model"), "could not be run", "no_such_attribute", "fails.py, line 4")


def test_nan_in_model_data_reaches_the_user():
    assert_error(invoke("fit", f"{DATA / 'nan_model.py'}:model"), "'y'", "non-finite", "NaN")


def test_unknown_family():
    assert_error(invoke("fit", "banana", "--method", "advi-fulrank"), "unknown method 'advi-fulrank'", "advi-fullrank")


def test_unknown_method():
    assert_error(invoke("fit", "banana", "--method", "hmc"), "unknown method 'hmc'; available: advi")
    assert_error(invoke("fit", "banana", "--method", "cavi"), "conjugate form")
    assert_error(invoke("fit", "banana", "--method", "nuts", "--rank", "2"), "--rank applies to")


def test_unwritable_output_folder_fails_before_fitting(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = invoke("fit", "banana", "--out", blocker / "sub")
    assert_error(result, "cannot create the output folder", "a_file")
    assert "ELBO" not in result.stdout


def test_out_of_range_option_is_a_usage_error():
    result = invoke("fit", "banana", "--steps", "0")
    assert result.exit_code == 2 and "--steps" in result.output


# ----------------------------------------------------------------------------------------------
# report


def test_running_mean_skips_nan():
    x = np.array([1.0, np.nan, 3.0, 5.0])
    np.testing.assert_allclose(running_mean(x, 2), [1.0, 1.0, 3.0, 4.0])


def test_plot_trace_writes_png_even_for_degenerate_traces(tmp_path):
    rng = np.random.default_rng(0)
    trace = np.concatenate([[-1e6, -1e4, np.nan], -10 + rng.normal(size=500)])
    for i, t in enumerate([trace, np.full(50, -3.0), np.array([np.nan]), np.zeros(0)]):
        path = plot_trace(t, tmp_path / f"t{i}.png", "title")
        assert path.read_bytes().startswith(PNG_SIGNATURE)


# ----------------------------------------------------------------------------------------------
# --method laplace


@pytest.mark.slow
def test_laplace_on_a_mesh_target_prints_fields_and_draws_the_posterior_sd(tmp_path):
    (tmp_path / "tomo.py").write_text(
        "from vbayes.examples.tomography import plasma_tomography, plasma_tomography_mesh\n"
        "target = plasma_tomography('small')\n"
        "mesh = plasma_tomography_mesh('small')\n"
    )
    out = tmp_path / "out"
    result = invoke("fit", f"{tmp_path / 'tomo.py'}:target", "--method", "laplace-lowrank", "--out", out)
    # 222 dimensions: importance sampling from the Laplace q cannot vouch for it, and the verdict says so (exit 3)
    assert result.exit_code == 3, result.output
    assert "verdict: FLAGGED" in result.stdout and "importance sampling from q does not reach" in result.stdout
    assert "method laplace-lowrank" in result.stdout.splitlines()[0]
    assert "log evidence (Laplace)" in result.stdout and "curvature products" in result.stdout
    assert "median sd" in result.stdout and "first 8 of 222 rows" in result.stdout  # per field, not 222 rows
    for field in ("log_ne", "log_te", "fraction"):
        assert field in result.stdout
    png = (out / "posterior_sd.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 20_000
    summary, info = read_outputs(out)
    assert len(summary) == 222 and info["method"] == "laplace-lowrank" and info["outcome"] == "converged"
    assert np.isfinite(info["extra"]["log_evidence"]) and info["extra"]["rank"] >= 1


def test_laplace_dense_gives_the_exact_evidence_of_linear_regression(tmp_path):
    out = tmp_path / "lr"
    result = invoke("fit", "linear_regression", "--method", "laplace-dense", "--out", out)
    assert result.exit_code == 0, result.output
    summary, info = read_outputs(out)
    exact_mean, _, log_z = linear_regression_exact()
    assert info["extra"]["log_evidence"] == pytest.approx(log_z, abs=1e-6)
    np.testing.assert_allclose(summary.loc[[f"beta[{i}]" for i in range(11)], "mean"], exact_mean, atol=0.02)
    assert not (out / "posterior_sd.png").exists()


def test_laplace_bad_choices_are_one_line_errors():
    assert_error(invoke("fit", "banana", "--method", "laplace-hess"), "unknown method 'laplace-hess'")
    assert_error(invoke("fit", "banana", "--method", "laplace-ggn"), "least-squares target")
    result = invoke("fit", "banana", "--method", "laplace-lowrank", "--rank", "3")
    assert_error(result, "rank must be between 1 and the dimension 2")


def test_examples_lists_the_tomography_example_without_generating_it():
    result = invoke("examples")
    assert result.exit_code == 0 and "plasma_tomography" in result.stdout and "2055" in result.stdout


@pytest.mark.slow
def test_normal_runs_let_no_python_warning_reach_the_user(tmp_path):
    """Warnings that matter are part of the verdict: a normal `fit`, a flagged `fit` whose log density is −inf
    where q puts mass (a NumPy RuntimeWarning from the stopping rule leaked there) and a `gmm` run print none."""
    import warnings

    model = tmp_path / "cut.py"
    model.write_text(
        "import jax.numpy as jnp\nimport vbayes\n"
        "def logp(p):\n"
        "    return jnp.where(p['x'][0] > -0.5, -0.5 * jnp.sum(p['x'] ** 2), -jnp.inf)\n"
        "target = vbayes.from_logdensity(logp, {'x': jnp.zeros(2)}, name='cut')\n"
    )
    data = tmp_path / "blobs.npy"
    rng = np.random.default_rng(0)
    np.save(data, np.concatenate([rng.normal(-3, 1, (100, 2)), rng.normal(3, 1, (100, 2))]))
    runs = [
        (["fit", "linear_regression", "--method", "laplace", "--out", tmp_path / "a"], 0),
        (["fit", f"{model}:target", "--out", tmp_path / "b"], 3),
        (["gmm", data, "--components", "3", "--out", tmp_path / "c"], 0),
    ]
    for args, status in runs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = invoke(*args)
        assert result.exit_code == status, result.output
        assert not caught, [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught]
        assert "Warning" not in result.stderr, result.stderr
        if status == 3:
            assert "−inf at" in result.stdout and "Declare the support" in result.stdout


# ----------------------------------------------------------------------------------------------
# model criticism: --predict and vbayes compare-models


def test_fit_predict_writes_the_predictive_check_and_the_exact_loo(tmp_path):
    """For the normal mean (closed form), the printed and written elpd_loo is the exact Σ log p(y_i | y₋ᵢ)."""
    from scipy import stats

    module = load_module(DATA / "normal_model.py")
    y, sigma = module.data["y"], module.data["sigma"]
    exact = 0.0
    for i in range(y.size):
        rest = np.delete(y, i)
        precision = 1 / module.PRIOR_SD**2 + rest.size / sigma**2
        mean = (module.PRIOR_MEAN / module.PRIOR_SD**2 + rest.sum() / sigma**2) / precision
        exact += stats.norm.logpdf(y[i], mean, np.sqrt(sigma**2 + 1 / precision))
    out = tmp_path / "normal"
    result = invoke("fit", f"{DATA / 'normal_model.py'}:model", "--method", "advi-meanfield", "--predict", "--out", out)
    assert result.exit_code == 0, result.output
    assert "LOO: elpd_loo" in result.stdout and "q-corrected" in result.stdout
    assert (out / "ppc.png").read_bytes().startswith(PNG_SIGNATURE)
    record = json.loads((out / "loo.json").read_text())
    assert record["elpd"] == pytest.approx(exact, abs=0.1) and record["n_obs"] == 8 and record["reliable"]
    assert len(record["pointwise"]) == 8 and record["corrected"]


def test_fit_predict_needs_observations_and_says_so_before_fitting(tmp_path):
    result = invoke("fit", "banana", "--predict", "--out", tmp_path / "b")
    assert_error(result, "no per-observation log-likelihood", "from_numpyro")
    assert not (tmp_path / "b").exists()


def test_compare_models_names_the_better_model_and_writes_its_picture(tmp_path):
    models = DATA / "two_models.py"
    out = tmp_path / "models"
    result = invoke("compare-models", f"{models}:right", f"{models}:wrong", "--method", "advi-meanfield", "--out", out)
    assert result.exit_code == 0, result.output
    assert "right predicts best" in " ".join(result.stdout.split())
    table = pd.read_csv(out / "model_comparison.csv", index_col="model")
    assert list(table.index) == ["right", "wrong"] and table.loc["wrong", "elpd_diff"] > 10
    assert table.loc["right", "weight"] > 0.9
    assert (out / "model_comparison.png").read_bytes().startswith(PNG_SIGNATURE)
    assert_error(invoke("compare-models", f"{models}:right", "--out", out), "at least two models")
    assert_error(invoke("compare-models", f"{models}:right", "banana", "--out", out), "per-observation")
