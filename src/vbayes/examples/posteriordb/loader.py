"""posteriordb, the loader: the folder (``$VBAYES_POSTERIORDB``, else ``shared/posteriordb`` above the working
directory or the package) and one posterior's files read into arrays: ``data.json`` (:func:`load_data`), and with
the reference draws and their summary (:func:`load_reference`). Nothing is read at import time."""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from vbayes.errors import VBayesError

ENV_VAR = "VBAYES_POSTERIORDB"
"""Environment variable naming the posteriordb folder; overrides the search for ``../shared/posteriordb``."""

_DATA, _DRAWS, _SUMMARY = "data.json", "reference_draws.json", "reference_summary.json"


class Reference(NamedTuple):
    """One posterior's files: ``data`` (numeric lists as float64 arrays, scalars as Python int / float),
    ``columns`` (reference column names, file order), ``draws`` ``(chains, draws, n_columns)`` (10, 1000, n),
    ``pooled`` ``(chains·draws, n_columns)`` (10000, n), ``summary`` (``reference_summary.json``), ``name``."""

    data: dict[str, Any]
    columns: tuple[str, ...]
    draws: np.ndarray
    pooled: np.ndarray
    summary: dict[str, Any]
    name: str


def posteriordb_root(root: str | os.PathLike | None = None) -> Path:
    """The posteriordb folder: ``root`` if given, else ``$VBAYES_POSTERIORDB``, else the first
    ``<ancestor>/shared/posteriordb`` walking up from the working directory, then from this file
    (``<repo>/../shared/posteriordb`` for a clone). Raise :class:`VBayesError` if there is none."""
    if root is None and os.environ.get(ENV_VAR):
        root, origin = os.environ[ENV_VAR], f" (from ${ENV_VAR})"
    else:
        origin = ""
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise VBayesError(f"posteriordb folder {str(path)!r}{origin} does not exist or is not a folder")
        return path
    tried = []
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "posteriordb"
            if candidate.is_dir():
                return candidate
            tried.append(str(candidate))
    raise VBayesError(
        "no posteriordb folder found: looked for shared/posteriordb above the working directory and above "
        f"the vbayes package (e.g. {tried[0]!r}); pass root= or set ${ENV_VAR} to the folder"
    )


def list_posteriors(root: str | os.PathLike | None = None) -> list[str]:
    """Names (sorted) of the posterior folders under the posteriordb root, i.e. those holding a ``data.json``."""
    base = posteriordb_root(root)
    return sorted(p.name for p in base.iterdir() if (p / _DATA).is_file())


def _folder(name: str, root: str | os.PathLike | None) -> Path:
    base = posteriordb_root(root)
    folder = base / name
    if not folder.is_dir():
        known = list_posteriors(base)
        close = difflib.get_close_matches(str(name), known, n=2)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise VBayesError(
            f"no posterior {name!r} in {str(base)!r} (missing folder {str(folder)!r}); {hint}"
            f"found: {', '.join(known) or 'none'}"
        )
    return folder


def _read_json(folder: Path, filename: str) -> Any:
    path = folder / filename
    if not path.is_file():
        raise VBayesError(f"posteriordb file {filename!r} is missing: expected {str(path)!r}")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise VBayesError(f"cannot read {str(path)!r}: {type(e).__name__}: {e}") from e


def _convert(value: Any) -> Any:
    """JSON value → numeric lists as float64 arrays; int and float scalars (sizes, hyperparameters) kept."""
    if isinstance(value, list):
        return np.asarray(value, dtype=np.float64)
    return value


def load_data(name: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """``<root>/<name>/data.json`` as a dict: lists → float64 arrays (matrices (rows, cols)), scalars as is."""
    raw = _read_json(_folder(name, root), _DATA)
    return {k: _convert(v) for k, v in raw.items()}


def load_reference(name: str, root: str | os.PathLike | None = None) -> Reference:
    """Data, reference draws ``(chains, draws, n_columns)`` and their summary for the posterior ``name``."""
    folder = _folder(name, root)
    data = {k: _convert(v) for k, v in _read_json(folder, _DATA).items()}
    chains = _read_json(folder, _DRAWS)
    summary = _read_json(folder, _SUMMARY)
    path = folder / _DRAWS
    if not isinstance(chains, list) or not chains or not all(isinstance(c, dict) and c for c in chains):
        raise VBayesError(f"{str(path)!r} must be a non-empty list of chains, each a dict column -> draws")
    columns = tuple(chains[0])
    for i, chain in enumerate(chains):
        if tuple(chain) != columns:
            raise VBayesError(f"{str(path)!r}: chain {i + 1} has columns {list(chain)}, chain 1 has {list(columns)}")
    try:
        draws = np.array([[chain[c] for c in columns] for chain in chains], dtype=np.float64).transpose(0, 2, 1)
    except ValueError as e:
        raise VBayesError(f"{str(path)!r}: chains or columns differ in length ({e})") from e
    if list(summary.get("params", columns)) != list(columns):
        raise VBayesError(
            f"{str(folder / _SUMMARY)!r} lists params {summary.get('params')}, the draws have {list(columns)}"
        )
    pooled = draws.reshape(-1, draws.shape[-1])
    return Reference(data, columns, draws, pooled, summary, name)
