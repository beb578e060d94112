"""Data files (vbayes.data.files and the CLI on top of it): every malformed file a VBayesError naming the file
and, for values, the 1-based row/line and column; no row lost; nothing unpickled; no traceback, no warning."""

import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from vbayes.cli import app
from vbayes.cli.loading import load_module
from vbayes.data import Stream
from vbayes.data.dask import from_npy
from vbayes.data.files import read_matrix
from vbayes.errors import VBayesError

runner = CliRunner()


def _gmm(path, *extra):
    """`vbayes gmm PATH` run so that it fails before fitting (or fits 2 components quickly)."""
    return runner.invoke(app, ["gmm", str(path), "--components", "2", *extra])


def _cli_error(path, *extra) -> str:
    result = _gmm(path, *extra)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "Aborted" not in result.output
    return result.stderr


def test_an_empty_file_is_an_error_not_an_abort(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "empty.csv").write_bytes(b"")
    for name in ("empty.npy", "empty.csv"):
        with pytest.raises(VBayesError, match="empty"):
            read_matrix(tmp_path / name)
        assert "empty (0 bytes)" in _cli_error(tmp_path / name)


def test_a_numeric_csv_without_a_header_keeps_its_first_row(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 3))
    np.savetxt(tmp_path / "plain.csv", x, delimiter=",")
    np.testing.assert_allclose(read_matrix(tmp_path / "plain.csv"), x)
    np.savetxt(tmp_path / "named.csv", x, delimiter=",", header="a,b,c", comments="")
    np.testing.assert_allclose(read_matrix(tmp_path / "named.csv"), x)
    # stated explicitly: --no-header on a headed file names the header's line; --header drops line 1
    with pytest.raises(VBayesError, match=r"line 1, column 1: 'a' is not numeric"):
        read_matrix(tmp_path / "named.csv", header=False)
    np.testing.assert_allclose(read_matrix(tmp_path / "plain.csv", header=True), x[1:])
    result = _gmm(tmp_path / "plain.csv", "--out", str(tmp_path / "o"))
    assert result.exit_code in (0, 3) and "N 200" in result.stdout, result.output


def test_a_nan_is_reported_at_the_users_row_and_column(tmp_path):
    x = np.ones((50, 3))
    x[6, 2] = np.nan  # the 7th data row
    np.savetxt(tmp_path / "plain.csv", x, delimiter=",")
    np.savetxt(tmp_path / "named.csv", x, delimiter=",", header="a,b,c", comments="")
    np.save(tmp_path / "x.npy", x)
    assert "plain.csv, line 7, column 3" in _cli_error(tmp_path / "plain.csv")
    assert "named.csv, line 8, column 3" in _cli_error(tmp_path / "named.csv")
    assert "x.npy, row 7, column 3" in _cli_error(tmp_path / "x.npy")
    (tmp_path / "gap.csv").write_text("1,2\n3,\n5,6\n")
    assert "line 2, column 2: an empty field is not numeric" in _cli_error(tmp_path / "gap.csv")


def test_data_that_overflow_are_blamed_not_the_priors(tmp_path):
    x = np.random.default_rng(1).normal(size=(100, 2)) * 1e300
    np.save(tmp_path / "huge.npy", x)
    message = _cli_error(tmp_path / "huge.npy")
    assert "overflow" in message and "rescale" in message and "mean_prior" not in message.split("(")[0]


@pytest.mark.parametrize(
    "array, said",
    [
        (np.array([[1, "a"], [2, None]], dtype=object), "Python objects"),
        (np.array([["1", "2"], ["3", "4"]]), "strings"),
        (np.ones((3, 2)) + 1j, "complex"),
        (np.zeros(3, dtype=[("a", "f8"), ("b", "i4")]), "records"),
    ],
)
def test_npy_files_of_other_dtypes_are_refused(tmp_path, array, said):
    path = tmp_path / "x.npy"
    np.save(path, array, allow_pickle=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning: the imaginary part is never dropped quietly
        with pytest.raises(VBayesError, match=said):
            read_matrix(path)
    assert said in _cli_error(path)


def test_truncated_and_garbage_npy_files_are_errors(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.arange(40.0).reshape(20, 2))
    data = good.read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-8])
    (tmp_path / "head.npy").write_bytes(data[:20])
    (tmp_path / "junk.npy").write_bytes(b"\x00garbage bytes that are not an array" * 4)
    assert "truncated" in _cli_error(tmp_path / "cut.npy")
    for name in ("head.npy", "junk.npy"):
        message = _cli_error(tmp_path / name)
        assert "not a readable .npy file" in message and "allow_pickle" not in message
    for reader in (Stream, from_npy):  # the streaming and Dask readers check the same header, up front
        with pytest.raises(VBayesError, match="truncated"):
            reader(tmp_path / "cut.npy")


def test_a_model_files_folder_does_not_stay_on_the_path(tmp_path):
    (tmp_path / "json.py").write_text("raise SystemExit('a file named like a module was run')\n")
    (tmp_path / "helper.py").write_text("VALUE = 3\n")
    (tmp_path / "model.py").write_text("import json\nimport helper\nvalue = helper.VALUE\n")
    before = list(sys.path)
    module = load_module(tmp_path / "model.py")
    assert module.value == 3 and sys.path == before
    assert "trust" in runner.invoke(app, ["fit", "--help"]).stdout


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 4)),
    dtype=st.sampled_from(["f8", "f4", "i4", "u1", "?", ">f8"]),
    bad=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.sampled_from([np.nan, np.inf, -np.inf]))),
    cut=st.one_of(st.none(), st.integers(0, 200)),
    form=st.sampled_from(["npy", "csv"]),
)
def test_any_file_reads_correctly_or_fails_with_a_vbayes_error(tmp_path, shape, dtype, bad, cut, form):
    """Random shapes, dtypes, NaN/inf positions and truncations: the loader returns exactly the file's numbers
    or raises VBayesError; nothing else escapes."""
    x = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    if x.dtype.kind == "f":
        for i, j, v in bad:
            if i < shape[0] and j < shape[1]:
                x[i, j] = v
    path = tmp_path / f"x.{form}"
    if form == "npy":
        np.save(path, x)
    else:
        np.savetxt(path, x.astype(np.float64), delimiter=",")
    whole = len(path.read_bytes())
    if cut is not None:
        path.write_bytes(path.read_bytes()[:cut])
    data = path.read_bytes()
    full = x.astype(np.float64)
    finite = bool(np.isfinite(full).all())
    try:
        got = read_matrix(path)
    except VBayesError:
        must_read = finite and (cut is None or cut >= whole)
        assert not must_read, "a valid file was refused"
        return
    assert finite, "a NaN or inf was let through"
    if form == "npy":
        assert cut is None or cut >= whole, "a truncated .npy was read"
        np.testing.assert_array_equal(got, full)
    else:  # a CSV carries no length: the complete lines must be exact, a cut last line may read as a number
        complete = data.count(b"\n")
        assert got.shape[0] in (complete, complete + 1)
        assert got.shape[1] == shape[1] or complete == 0  # a cut first line is a narrower, valid file
        np.testing.assert_array_equal(got[:complete], full[:complete])
