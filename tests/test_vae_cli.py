"""``vbayes vae``: train / evaluate / sample write what they say, and bad input is one ``error:`` line."""

import json

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

from vbayes.cli import app

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    result = CliRunner().invoke(app, ["vae", *[str(a) for a in args]])
    assert "Traceback" not in result.output, result.output
    return result


def assert_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "digits"
    result = invoke(
        "train",
        "--data",
        "digits",
        "--model",
        "vae",
        "--latent",
        "2",
        "--epochs",
        "4",
        "--width",
        "32",
        "--depth",
        "1",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "max_steps after 4 epochs" in result.stdout and "active units" in result.stdout
    return out


def test_train_writes_checkpoints_and_pictures(run_dir):
    for name in ("samples.png", "reconstructions.png", "interpolation.png", "latent.png"):
        data = (run_dir / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 3000, name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["latent"] == 2 and config["train"]["kind"] == "vae" and config["data"] == "digits"
    state = json.loads((run_dir / "state.json").read_text())
    assert state["epoch"] == 4 and len(state["history"]) == 4 and (run_dir / state["checkpoint"]).is_file()


def test_evaluate_reports_ordered_bounds(run_dir):
    result = invoke("evaluate", run_dir, "--k", "100", "--n", "100")
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / "evaluation.json").read_text())
    assert report["n"] == 100 and report["k"] == 100
    assert report["elbo"] < report["iwae"] + 0.5 and report["iwae"] < 0  # the ordering itself: test_vae.py
    np.testing.assert_allclose(report["kl"], sum(report["kl_per_dim"]), rtol=1e-9)
    assert "IWAE-100" in result.stdout and "active units" in result.stdout


def test_sample_and_resume(run_dir):
    (run_dir / "samples.png").unlink()
    result = invoke("sample", run_dir, "--seed", "1")
    assert result.exit_code == 0, result.output
    assert (run_dir / "samples.png").read_bytes().startswith(PNG_SIGNATURE)
    result = invoke("train", "--out", run_dir, "--resume", "--epochs", "5", "--width", "32", "--depth", "1")
    assert result.exit_code == 0, result.output
    assert "after 5 epochs" in result.stdout
    assert json.loads((run_dir / "state.json").read_text())["epoch"] == 5


def test_cli_bad_input(tmp_path, run_dir):
    assert_error(invoke("evaluate", tmp_path / "missing"), "no checkpoint")
    assert_error(invoke("sample", tmp_path), "no checkpoint")
    assert_error(invoke("train", "--data", tmp_path / "nowhere"), "use digits or a folder")
    assert_error(invoke("train", "--model", "gan", "--out", tmp_path / "x"), "unknown model kind 'gan'")
    assert_error(invoke("train", "--likelihood", "poisson", "--out", tmp_path / "x"), "unknown likelihood")
    assert_error(invoke("train", "--latent", "0", "--out", tmp_path / "x"), "latent dimension")
    assert_error(invoke("train", "--out", run_dir, "--epochs", "1"), "already holds a training run")
    assert_error(invoke("train", "--out", tmp_path / "fresh", "--resume"), "no checkpoint")
    assert_error(
        invoke("train", "--data", tmp_path, "--out", tmp_path / "y"), "not found"
    )  # a folder without IDX files


def test_vae_help_lists_the_commands():
    result = CliRunner().invoke(app, ["vae", "--help"])
    assert result.exit_code == 0
    for command in ("train", "evaluate", "sample"):
        assert command in result.output
    jax.numpy.zeros(1)  # jax importable alongside the CLI
