"""``vbayes vae``: train / evaluate / sample write what they say, and bad input is one ``error:`` line."""

import json
import shutil
import warnings
from pathlib import Path

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


@pytest.mark.slow
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


# ----------------------------------------------------------------------------------------------
# hardening (issue 22): damaged checkpoints, a file for a folder, the resume rule, bad options, no warnings


def _copy(run_dir, tmp_path):
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _flat(text):
    """Output with rich's box characters and line breaks taken out."""
    return " ".join(text.replace("│", " ").split())


def test_evaluate_refuses_a_damaged_checkpoint_naming_the_file(run_dir, tmp_path):
    folder = _copy(run_dir, tmp_path)
    best = folder / json.loads((folder / "state.json").read_text())["best"]
    data = bytearray(best.read_bytes())
    data[-40:] = b"\xff" * 40  # part of the float data overwritten
    best.write_bytes(bytes(data))
    (folder / "evaluation.json").unlink(missing_ok=True)
    result = invoke("evaluate", folder, "--k", "10", "--n", "20")
    assert_error(result, f"{best} is damaged or was changed since it was written")
    assert "ELBO" not in result.stdout and "KL" not in result.stdout
    assert not (folder / "evaluation.json").exists()


def test_a_file_given_for_the_run_folder_is_called_a_file(run_dir):
    file = run_dir / "config.json"
    for args in (["evaluate", file], ["sample", file], ["train", "--resume", "--out", file]):
        assert_error(invoke(*args), f"{file} is a file", "vbayes vae train", "config.json and state.json")


RESUME_CHANGES = [
    (["--lr", "0.01"], "--lr", "0.001", "0.01"),
    (["--latent", "3"], "--latent", "2", "3"),
    (["--width", "64"], "--width", "32", "64"),
    (["--model", "iwae"], "--model", "'vae'", "'iwae'"),
    (["--batch-size", "50"], "--batch-size", "100", "50"),
    (["--seed", "1"], "--seed", "0", "1"),
    (["--beta", "2"], "--beta", "1.0", "2.0"),
    (["--likelihood", "gaussian"], "--likelihood", "'bernoulli'", "'gaussian'"),
    (["--anneal-steps", "10"], "--anneal-steps", "0", "10"),
]


@pytest.mark.parametrize(("args", "option", "saved", "given"), RESUME_CHANGES, ids=[c[1] for c in RESUME_CHANGES])
def test_resume_refuses_a_changed_option_naming_it_with_the_saved_and_given_values(
    run_dir, tmp_path, args, option, saved, given
):
    folder = _copy(run_dir, tmp_path)
    before = _files(folder)
    result = invoke("train", "--resume", "--out", folder, "--epochs", "9", *args)
    assert_error(result, f"{option} (saved {saved}, given {given})", "only --epochs, --patience and --devices")
    assert _files(folder) == before  # nothing written


def test_resume_refuses_other_data(run_dir, tmp_path):
    folder = _copy(run_dir, tmp_path)
    assert_error(invoke("train", "--resume", "--out", folder, "--data", tmp_path), "--data (saved 'digits'")


def test_resume_without_epochs_keeps_the_saved_number_and_a_finished_run_trains_nothing(run_dir, tmp_path):
    folder = _copy(run_dir, tmp_path)
    saved = json.loads((folder / "config.json").read_text())["train"]["epochs"]
    done = json.loads((folder / "state.json").read_text())["epoch"]
    assert saved == done  # the run is finished
    result = invoke("train", "--resume", "--out", folder, "--lr", "0.001")  # given but equal: allowed
    assert result.exit_code == 0, result.output
    assert "nothing was trained" in result.stdout
    assert "active units" not in result.stdout and "warning" not in result.stdout  # no diagnostics on it
    assert json.loads((folder / "config.json").read_text())["train"]["epochs"] == saved
    assert json.loads((folder / "state.json").read_text())["epoch"] == done


BAD_OPTIONS = [  # (command, options, exit status, what the message names)
    ("train", ["--epochs", "0"], 2, "'--epochs'"),
    ("train", ["--epochs", "-3"], 2, "'--epochs'"),
    ("train", ["--latent", "0"], 2, "'--latent'"),
    ("train", ["--width", "0"], 2, "'--width'"),
    ("train", ["--depth", "-1"], 2, "'--depth'"),
    ("train", ["--batch-size", "0"], 2, "'--batch-size'"),
    ("train", ["--k", "0"], 2, "'--k'"),
    ("train", ["--patience", "-1"], 2, "'--patience'"),
    ("train", ["--anneal-steps", "-1"], 2, "'--anneal-steps'"),
    ("train", ["--seed", "-1"], 2, "'--seed'"),
    ("train", ["--seed", str(2**32)], 2, "'--seed'"),
    ("train", ["--epochs", "two"], 2, "'--epochs'"),
    ("train", ["--lr", "0"], 1, "--lr must be a finite number > 0"),
    ("train", ["--lr", "-0.1"], 1, "--lr must be"),
    ("train", ["--lr", "inf"], 1, "--lr must be"),
    ("train", ["--lr", "nan"], 1, "--lr must be"),
    ("train", ["--beta", "-1"], 1, "--beta must be"),
    ("train", ["--beta", "nan"], 1, "--beta must be"),
    ("train", ["--free-bits", "-0.5"], 1, "--free-bits must be"),
    ("train", ["--sd", "0"], 1, "--sd must be"),
    ("train", ["--sd", "inf"], 1, "--sd must be"),
    ("train", ["--model", "gan"], 1, "unknown model kind 'gan'"),
    ("train", ["--network", "rnn"], 1, "unknown network"),
    ("train", ["--activation", "swish"], 1, "unknown activation"),
    ("train", ["--likelihood", "poisson"], 1, "unknown likelihood"),
    ("train", ["--sd-mode", "learned"], 1, "unknown Gaussian sd mode"),
    ("train", ["--iwae-gradient", "stl"], 1, "unknown iwae_gradient"),
    ("train", ["--devices", "0"], 1, "--devices must be"),
    ("train", ["--network", "conv", "--likelihood", "gaussian", "--sd", "-1"], 1, "--sd must be"),
    ("evaluate", ["--k", "0"], 2, "'--k'"),
    ("evaluate", ["--n", "0"], 2, "'--n'"),
    ("evaluate", ["--seed", "-1"], 2, "'--seed'"),
    ("evaluate", ["--data", "nowhere"], 1, "use digits or a folder"),
    ("sample", ["--seed", "-1"], 2, "'--seed'"),
    ("sample", ["--seed", "x"], 2, "'--seed'"),
    ("sample", ["--data", "nowhere"], 1, "use digits or a folder"),
]


@pytest.mark.parametrize(
    ("command", "options", "status", "named"), BAD_OPTIONS, ids=[f"{c[0]}{' '.join(c[1])}" for c in BAD_OPTIONS]
)
def test_a_bad_option_exits_with_its_documented_status_and_a_message_naming_it(
    run_dir, tmp_path, command, options, status, named
):
    """Status 2: a usage error (out of the option's range or not a number); 1: ``error: …``. No traceback, no
    exception but the exit, and a refused ``train`` creates no folder."""
    out = tmp_path / "out"
    target = ["--out", out] if command == "train" else [run_dir]
    result = invoke(command, *target, *options)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == status, result.output
    if status == 2:
        assert "Invalid value for" in _flat(result.output) and named in _flat(result.output), result.output
    else:
        assert_error(result, named)
    assert not out.exists()


@pytest.mark.slow
def test_no_python_warning_from_vbayes_reaches_the_user(tmp_path):
    """A run whose posterior collapses (beta 1000) says so once, as a ``warning:`` line, not as a Python warning."""
    import vbayes

    out = tmp_path / "collapsed"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = invoke(
            "train",
            "--latent",
            "2",
            "--epochs",
            "1",
            "--width",
            "8",
            "--depth",
            "1",
            "--beta",
            "1000",
            "--lr",
            "0.01",
            "--out",
            out,
        )
        evaluate = invoke("evaluate", out, "--k", "10", "--n", "50")
        sample = invoke("sample", out)
    assert [r.exit_code for r in (train, evaluate, sample)] == [0, 0, 0], train.output + evaluate.output
    assert "posterior collapse" in evaluate.stdout  # the case that used to raise a Python warning too
    source = str(Path(vbayes.__file__).parent)
    ours = [w for w in caught if w.filename.startswith(source) or type(w.message).__module__.startswith("vbayes")]
    assert not ours, [str(w.message) for w in ours]
