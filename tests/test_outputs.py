"""Results written whole or not at all (`vbayes.outputs`): a failed write keeps the previous file and leaves no
temporary one, files of one result appear together, and an output folder is checked without being created."""

import os

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vbayes import VBayesError
from vbayes.outputs import check_writable, save_figure, sha256, staged, write_atomic, write_json, write_text


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = write_text(tmp_path / "info.json", "old")

    def half_then_fail(p):
        p.write_text("half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["info.json"]
    write_json(path, {"a": 1})
    assert path.read_text() == '{\n "a": 1\n}\n'


def test_staged_files_appear_together_or_not_at_all(tmp_path):
    folder = tmp_path / "out"
    with staged(folder, ["components.csv", "gmm.png"]) as tmp:
        tmp["components.csv"].write_text("run 1")
        tmp["gmm.png"].write_text("run 1")
    with pytest.raises(RuntimeError), staged(folder, ["components.csv", "gmm.png"]) as tmp:
        tmp["components.csv"].write_text("run 2")
        raise RuntimeError("killed before the picture")
    assert {p.name: p.read_text() for p in folder.iterdir()} == {"components.csv": "run 1", "gmm.png": "run 1"}


def test_save_figure_writes_the_format_of_its_suffix(tmp_path):
    fig = Figure()
    FigureCanvasAgg(fig)
    fig.subplots().plot([0, 1])
    png, svg = save_figure(fig, tmp_path / "a.png"), save_figure(fig, tmp_path / "a.svg")
    assert png.read_bytes().startswith(b"\x89PNG") and b"<svg" in svg.read_bytes()[:500]
    assert len(sha256(png)) == 64 and sha256(png) == sha256(png) != sha256(svg)


def test_check_writable_creates_nothing_and_names_what_is_in_the_way(tmp_path):
    assert check_writable(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(VBayesError, match="it is a file"):
        check_writable(blocker)
    with pytest.raises(VBayesError, match="cannot create the output folder .*file is a file"):
        check_writable(blocker / "sub")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(VBayesError, match="not writable"):
                check_writable(locked / "out")
        finally:
            locked.chmod(0o700)
