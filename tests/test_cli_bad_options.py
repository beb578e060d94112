"""Every ``vbayes`` command with invalid options: the documented exit status (2 for a usage error that the option
parser catches, 1 for a value vbayes refuses), one message naming the option, no traceback, and no output
folder left behind."""

import jax

jax.config.update("jax_enable_x64", True)

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import typer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from vbayes.cli import app  # noqa: E402

USAGE, REFUSED = 2, 1

# (command line, expected exit status, a fragment the message must contain); DATA is an (N, D) .npy file, FILE an
# existing regular file; OUT is added as the output folder of the commands that write one.
CASES = [
    (["--no-such-command-option"], USAGE, "No such option"),
    (["nosuchcommand"], USAGE, "No such command"),
    (["examples", "--bogus"], USAGE, "--bogus"),
    (["fit"], USAGE, "Missing argument"),
    (["fit", "banana", "--no-such-option"], USAGE, "--no-such-option"),
    (["fit", "banana", "--steps", "0"], USAGE, "--steps"),
    (["fit", "banana", "--steps", "ten"], USAGE, "--steps"),
    (["fit", "banana", "--rank", "0"], USAGE, "--rank"),
    (["fit", "banana", "--draws", "1"], USAGE, "--draws"),
    (["fit", "banana", "--seed", "-1"], USAGE, "--seed"),
    (["fit", "banana", "--seed", "99999999999999999999"], USAGE, "--seed"),
    (["fit", "banana", "--seed", "1.5"], USAGE, "--seed"),
    (["fit", "banana", "--checks", "some"], REFUSED, "unknown checks 'some'"),
    (["fit", "banana", "--method", "hmc"], REFUSED, "unknown method 'hmc'"),
    (["fit", "banana", "--method", "advi-lowrank", "--rank", "99"], REFUSED, "rank must be between 1 and 2"),
    (["fit", "banana", "--method", "nuts", "--rank", "2"], REFUSED, "--rank applies to"),
    (["fit", "banana", "--method", "cavi"], REFUSED, "conjugate form"),
    (["fit", "no_such_example"], REFUSED, "unknown example"),
    # a start outside the support: the remedy named is one the CLI user has (the model), the API's init= as such
    (["fit", "MODEL:target"], REFUSED, "not finite (-inf) at the initial point"),
    (["fit", "MODEL:target"], REFUSED, "from the Python API, init= starts a fit elsewhere"),
    (["fit", "banana", "--out", "FILE"], REFUSED, "it is a file"),
    (["fit", "banana", "--out", "FILE/sub"], REFUSED, "cannot create the output folder"),
    (["compare", "banana", "--methods", "hmc"], REFUSED, "unknown method(s) ['hmc']"),
    (["compare", "banana", "--methods", ","], REFUSED, "give at least one method"),
    (["compare", "banana", "--reference", "exact"], REFUSED, "unknown reference 'exact'"),
    (["compare", "banana", "--seed", "-3"], USAGE, "--seed"),
    (["compare", "banana", "--report", "FILE"], REFUSED, "it is a file"),
    (["compare", "banana", "--out", "x"], USAGE, "--out"),
    (["compare-models"], USAGE, "Missing argument"),
    (["compare-models", "banana", "funnel", "--method", "hmc"], REFUSED, "unknown method 'hmc'"),
    (["compare-models", "banana", "funnel"], REFUSED, "no per-observation log-likelihood"),
    (["compare-models", "banana", "banana"], REFUSED, "named twice"),
    (["compare-models", "banana", "funnel", "--seed", "-1"], USAGE, "--seed"),
    (["compare-models", "banana", "funnel", "--out", "FILE"], REFUSED, "it is a file"),
    (["fit", "banana", "--predict"], REFUSED, "no per-observation log-likelihood"),
    (["gmm"], USAGE, "Missing argument"),
    (["gmm", "DATA", "--components", "0"], USAGE, "--components"),
    (["gmm", "DATA", "--seed", "-1"], USAGE, "--seed"),
    (["gmm", "DATA", "--method", "gibbs"], REFUSED, "unknown method 'gibbs'"),
    (["gmm", "DATA", "--covariance", "tied"], REFUSED, "unknown covariance 'tied'"),
    (["gmm", "DATA", "--weights", "uniform"], REFUSED, "weight_concentration_prior_type must be one of"),
    (["gmm", "DATA", "--components", "60"], REFUSED, "n_samples >= n_components"),
    (["gmm", "DATA", "--devices", "zero"], REFUSED, "--devices must be"),
    (["gmm", "DATA", "--dask", "local", "--devices", "all"], REFUSED, "alternatives"),
    (["gmm", "DATA", "--out", "FILE"], REFUSED, "it is a file"),
    (["gmm", "FILE"], REFUSED, "not a readable .npy"),
    (["lda"], USAGE, "Missing argument"),
    (["lda", "DOCS", "--topics", "0"], USAGE, "--topics"),
    (["lda", "DOCS", "--held-out", "0.9"], USAGE, "--held-out"),
    (["lda", "DOCS", "--method", "gibbs"], REFUSED, "unknown method 'gibbs'"),
    (["lda", "DOCS", "--held-out-from", "999"], REFUSED, "beyond the last document"),
    (["lda", "DOCS", "--vocab", "FILE"], REFUSED, "has 1 words, the documents' vocabulary 3"),
    (["lda", "DOCS", "--dates", "FILE"], REFUSED, "no readable `year` column"),
    (["lda", "DOCS", "--out", "FILE"], REFUSED, "it is a file"),
    (["lda", "FILE"], REFUSED, "should be D (documents), an integer"),
    (["vae", "train", "--no-such-option"], USAGE, "--no-such-option"),
    (["vae", "evaluate"], USAGE, "Missing argument"),
    (["vae", "sample", "--seed", "x"], USAGE, "--seed"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_options")
    data = root / "data.npy"
    np.save(data, np.random.default_rng(0).normal(size=(50, 2)))
    regular = root / "file.npy"  # an existing regular file where a folder (or a .npy array) is wanted
    regular.write_bytes(b"not an array")
    model = root / "model.py"
    model.write_text(
        "import jax.numpy as jnp\nimport vbayes\n"
        "target = vbayes.from_logdensity(lambda p: jnp.log(p['x'][0]), {'x': jnp.zeros(1)}, name='log_x')\n"
    )
    docs = root / "docword.txt"  # a bag of words: 2 documents over 3 words
    docs.write_text("2\n3\n3\n1 1 2\n1 3 1\n2 2 4\n")
    return {"DATA": data, "FILE": regular, "MODEL": model, "DOCS": docs}


def _command_line(args: list[str], files: dict[str, Path], out: Path) -> list[str]:
    """``args`` with DATA and FILE replaced, and the output folder ``out`` added where the command writes one."""
    line = []
    for a in args:
        for name, path in files.items():
            a = a.replace(name, str(path)) if a.startswith(name) else a
        line.append(a)
    writes = {"fit": "--out", "gmm": "--out", "lda": "--out", "compare": "--report", "compare-models": "--out"}
    flag = writes.get(line[0]) if line else None
    if flag and flag not in line and len(line) > 1 and "--out" not in line:
        line += [flag, str(out)]
    return line


@pytest.mark.parametrize(("args", "status", "fragment"), CASES, ids=[" ".join(c[0]) or "empty" for c in CASES])
def test_invalid_options_exit_with_the_documented_status_and_no_traceback(args, status, fragment, files, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, _command_line(args, files, out))
    output = " ".join((result.stdout + result.stderr).split())
    assert result.exit_code == status, output
    assert "Traceback" not in output and (result.exception is None or isinstance(result.exception, SystemExit))
    assert fragment in output, (fragment, output)
    if status == REFUSED:
        assert result.stderr.startswith("error: "), result.stderr
    assert not out.exists(), "an output folder was created for a run that never started"


def _commands(group, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every leaf command of a (typer) click group, as its words."""
    found = set()
    for name, command in group.commands.items():
        found |= _commands(command, prefix + (name,)) if hasattr(command, "commands") else {prefix + (name,)}
    return found


def test_every_command_is_exercised_with_invalid_options():
    every = _commands(typer.main.get_command(app))
    covered = {tuple(args[:2]) if args[0] == "vae" else (args[0],) for args, _, _ in CASES if args}
    assert every - covered == set(), f"commands without an invalid-option case: {sorted(every - covered)}"
