"""posteriordb, the loader: find the folder, tell its layout, and read one posterior's data and reference draws into
arrays. Nothing is read at import time.

The folder (:func:`posteriordb_root`) is ``root=`` when given, else ``$VBAYES_POSTERIORDB``, else the first
``shared/posteriordb`` above the working directory or above the package. Its layout is told from what it holds
(:func:`posteriordb_layout`):

* ``"vbayes"``: one folder per posterior, ``<name>/data.json``, ``<name>/reference_draws.json`` and
  ``<name>/reference_summary.json`` (this project's ``../shared/posteriordb``);
* ``"posteriordb"``: a clone of ``github.com/stan-dev/posteriordb``, its root or its ``posterior_database/`` folder
  (``posteriors/<name>.json``, zipped data and draws; see :mod:`vbayes.examples.posteriordb.official`). The summary,
  which posteriordb does not store, is computed from the draws.

Either way :func:`load_data` and :func:`load_reference` give the same arrays: posteriordb's column names and order.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from vbayes.errors import VBayesError
from vbayes.examples.posteriordb import official
from vbayes.examples.posteriordb.official import read_json

ENV_VAR = "VBAYES_POSTERIORDB"
"""Environment variable naming the posteriordb folder; overrides the search for ``../shared/posteriordb``."""

VBAYES, POSTERIORDB = "vbayes", "posteriordb"
"""The two layouts :func:`posteriordb_layout` tells apart."""

_DATA, _DRAWS, _SUMMARY = "data.json", "reference_draws.json", "reference_summary.json"


class Reference(NamedTuple):
    """One posterior's files: ``data`` (numeric lists as float64 arrays, scalars as Python int / float),
    ``columns`` (reference column names, file order), ``draws`` ``(chains, draws, n_columns)`` (10, 1000, n),
    ``pooled`` ``(chains·draws, n_columns)`` (10000, n), ``summary`` (``reference_summary.json``, or the same
    fields computed from the draws), ``name``."""

    data: dict[str, Any]
    columns: tuple[str, ...]
    draws: np.ndarray
    pooled: np.ndarray
    summary: dict[str, Any]
    name: str


class _Files(NamedTuple):
    """Where one posterior's files are: ``data``; ``draws`` (None if it has no reference draws, ``why`` says
    so); ``summary`` (None where it is computed from the draws); ``reference``, the reference posterior's name."""

    data: Path
    draws: Path | None
    summary: Path | None
    reference: str
    why: str = ""


def posteriordb_root(root: str | os.PathLike | None = None) -> Path:
    """The posteriordb folder: ``root`` if given, else ``$VBAYES_POSTERIORDB``, else the first
    ``<ancestor>/shared/posteriordb`` walking up from the working directory, then from this file
    (``<repo>/../shared/posteriordb`` for a clone). Raise :class:`VBayesError` if there is none. Its
    contents are not checked here (:func:`posteriordb_layout` does)."""
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
        f"the vbayes package (e.g. {tried[0]!r}); pass root= or set ${ENV_VAR} to the folder, e.g. a clone of "
        "github.com/stan-dev/posteriordb"
    )


def _database(root: str | os.PathLike | None) -> tuple[str, Path]:
    """(layout, folder holding the posteriors) of the posteriordb folder; raise if it is in neither layout."""
    folder = posteriordb_root(root)
    base = official.database_folder(folder)
    if base is not None:
        return POSTERIORDB, base
    if any((p / _DATA).is_file() for p in folder.iterdir() if p.is_dir()):
        return VBAYES, folder
    raise VBayesError(
        f"{str(folder)!r} is not a posteriordb folder: looked for a clone of github.com/stan-dev/posteriordb "
        f"({official.POSTERIORS_DIR}/ or {official.DATABASE}/{official.POSTERIORS_DIR}/ in it) and for "
        f"vbayes's layout (<posterior>/{_DATA} folders, as in ../shared/posteriordb), and found neither"
    )


def posteriordb_layout(root: str | os.PathLike | None = None) -> str:
    """The layout of the posteriordb folder (:func:`posteriordb_root`): ``"vbayes"`` (``<name>/data.json`` …) or
    ``"posteriordb"`` (a clone of stan-dev/posteriordb). Raise :class:`VBayesError` naming both if neither."""
    return _database(root)[0]


def list_posteriors(root: str | os.PathLike | None = None) -> list[str]:
    """Names (sorted) of the posteriors in the folder: those with a ``data.json`` folder (vbayes's layout) or a
    ``posteriors/<name>.json`` (posteriordb's: all of them, implemented here or not)."""
    layout, base = _database(root)
    if layout == POSTERIORDB:
        return official.posterior_names(base)
    return sorted(p.name for p in base.iterdir() if (p / _DATA).is_file())


def _unknown(name: str, base: Path, missing: Path, known: list[str]) -> VBayesError:
    close = difflib.get_close_matches(str(name), known, n=2)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    shown = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
    return VBayesError(
        f"no posterior {name!r} in {str(base)!r} (missing {str(missing)!r}); {hint}found: {shown or 'none'}"
    )


def _files(name: str, root: str | os.PathLike | None) -> _Files:
    """Where the posterior ``name``'s files are, in either layout; raise if it is not in the folder."""
    layout, base = _database(root)
    if layout == VBAYES:
        folder = base / name
        if not folder.is_dir():
            raise _unknown(name, base, folder, list_posteriors(base))
        return _Files(folder / _DATA, folder / _DRAWS, folder / _SUMMARY, name)
    path = official.posterior_path(base, name)
    if not path.is_file():
        raise _unknown(name, base, path, official.posterior_names(base))
    info = read_json(path)
    if not isinstance(info, dict):
        raise VBayesError(f"{str(path)!r} should hold a JSON object (posteriordb's posterior fields)")
    data, reference = official.data_path(base, info, path), official.reference_name(info, path)
    if reference is None:
        why = f"posteriordb has no reference draws for {name!r} (reference_posterior_name is null in {str(path)!r})"
        return _Files(data, None, None, name, why)
    return _Files(data, official.draws_path(base, reference), None, reference)


def _convert(value: Any) -> Any:
    """JSON value → numeric lists as float64 arrays; int and float scalars (sizes, hyperparameters) kept."""
    if isinstance(value, list):
        return np.asarray(value, dtype=np.float64)
    return value


def _read_data(path: Path) -> dict[str, Any]:
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise VBayesError(f"{str(path)!r} should hold a JSON object of data names → values")
    return {k: _convert(v) for k, v in raw.items()}


def load_data(name: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The posterior ``name``'s data (``<root>/<name>/data.json``, or posteriordb's zipped data file) as a dict:
    lists → float64 arrays (matrices (rows, cols)), scalars as is."""
    return _read_data(_files(name, root).data)


def _draws(chains: Any, path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """(columns, draws ``(chains, draws, n_columns)``) of a reference-draws file: a list of chains, each a dict
    column → draws, every chain with the same columns in the same order."""
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
    return columns, draws


def load_reference(name: str, root: str | os.PathLike | None = None) -> Reference:
    """Data, reference draws ``(chains, draws, n_columns)`` and their summary for the posterior ``name``."""
    files = _files(name, root)
    if files.draws is None:
        raise VBayesError(files.why)
    data = _read_data(files.data)
    columns, draws = _draws(read_json(files.draws), files.draws)
    if files.summary is None:
        summary = official.summarise(name, files.reference, columns, draws)
    else:
        summary = read_json(files.summary)
        if list(summary.get("params", columns)) != list(columns):
            raise VBayesError(
                f"{str(files.summary)!r} lists params {summary.get('params')}, the draws have {list(columns)}"
            )
    pooled = draws.reshape(-1, draws.shape[-1])
    return Reference(data, columns, draws, pooled, summary, name)
