"""Writing results: every output file appears whole or not at all, and output folders appear only when something
is written into them.

A file is written to a temporary name in its own folder and renamed over the target (:func:`os.replace`, atomic
on POSIX and Windows), so an interrupted or failed write leaves the previous file, or none, never half of one.
:func:`check_writable` tests an output folder *before* a long run without creating it, so a run that fails on
its input leaves no empty folder behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from vbayes.errors import VBayesError


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` for a temporary file next to ``path``, then rename it to ``path`` (creating the folder).
    On any failure the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _temporary(path: Path) -> Path:
    """A hidden name next to ``path`` that keeps its suffix (writers such as matplotlib read the format from it)."""
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


@contextlib.contextmanager
def staged(folder: str | Path, names: Iterable[str]) -> Iterator[dict[str, Path]]:
    """Write several files of one result as a set: the block writes each ``name`` to the temporary path it is
    given, and only when the block succeeds are all renamed into ``folder``, one right after the other (a kill can
    no longer fall between two slow writes and leave files of two runs). On failure the temporary files go."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = {name: _temporary(folder / name) for name in names}
    try:
        yield tmp
        for name, path in tmp.items():
            os.replace(path, folder / name)
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) to ``path``, atomically."""
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, record: Any) -> Path:
    """``record`` as indented JSON to ``path``, atomically."""
    return write_text(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")


def save_figure(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """A matplotlib figure to ``path`` (format from its suffix), atomically."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    return write_atomic(path, lambda p: fig.savefig(p, format=fmt, **savefig))


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable(folder: str | Path) -> Path:
    """``folder`` if it is, or could be created as, a writable folder; a :class:`VBayesError` naming the problem
    otherwise. Creates nothing: the first file written creates the folder."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe == folder and not folder.is_dir():
        raise VBayesError(f"cannot use {folder} as the output folder: it is a file")
    if probe != folder and not probe.is_dir():
        raise VBayesError(f"cannot create the output folder {folder}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise VBayesError(f"cannot write to the output folder {folder}: {probe} is not writable")
    return folder
