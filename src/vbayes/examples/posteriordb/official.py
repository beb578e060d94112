"""posteriordb, the layout of the posteriordb repository itself (``github.com/stan-dev/posteriordb``), read in place
from a clone: its ``posterior_database/`` folder, or the clone's root above it.

* ``posteriors/<name>.json``: the posterior; its fields ``data_name`` and ``reference_posterior_name`` (null when
  posteriordb has no reference draws for it) name the other two files.
* ``data/data/<data_name>.json.zip``: a zip holding ``<data_name>.json``, the data (as vbayes's ``data.json``).
* ``reference_posteriors/draws/draws/<reference_posterior_name>.json.zip``: a zip holding
  ``<reference_posterior_name>.json``, the reference draws: a list of chains, each a dict column → draws, columns
  named as in Stan (``theta[1]``), the same file as vbayes's ``reference_draws.json``. Several posteriors may share
  one (the centred eight schools uses the non-centred one's).

posteriordb stores no summary of the draws; :func:`summarise` computes the one vbayes's layout keeps in
``reference_summary.json``. An unzipped ``.json`` is read where the ``.json.zip`` is absent.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from vbayes.errors import VBayesError

DATABASE = "posterior_database"
"""The folder of a posteriordb clone that holds the database."""

POSTERIORS_DIR = "posteriors"
DATA_DIR = Path("data") / "data"
DRAWS_DIR = Path("reference_posteriors") / "draws" / "draws"

QUANTILES = (5, 25, 50, 75, 95)
"""The percentiles in a summary (``q05`` … ``q95``)."""


def database_folder(folder: Path) -> Path | None:
    """``folder`` if it is a ``posterior_database`` folder (it holds ``posteriors/``), else
    ``folder/posterior_database`` if that is one (``folder`` is a clone's root), else None."""
    for base in (folder, folder / DATABASE):
        if (base / POSTERIORS_DIR).is_dir():
            return base
    return None


def posterior_names(base: Path) -> list[str]:
    """Names (sorted) of the posteriors in the database ``base``: the ``posteriors/*.json`` files."""
    return sorted(p.name.removesuffix(".json") for p in (base / POSTERIORS_DIR).glob("*.json") if p.is_file())


def posterior_path(base: Path, name: str) -> Path:
    """``posteriors/<name>.json`` in ``base``."""
    return base / POSTERIORS_DIR / f"{name}.json"


def _zipped(folder: Path, stem: str) -> Path:
    """``<folder>/<stem>.json.zip``, or the unzipped ``<stem>.json`` when only that exists."""
    zipped, plain = folder / f"{stem}.json.zip", folder / f"{stem}.json"
    return plain if plain.is_file() and not zipped.is_file() else zipped


def _field(info: dict, key: str, path: Path) -> Any:
    if key not in info:
        raise VBayesError(f"{str(path)!r} has no field {key!r}")
    return info[key]


def data_path(base: Path, info: dict, path: Path) -> Path:
    """The data file of the posterior ``info`` (read from ``path``): ``data/data/<data_name>.json.zip``."""
    return _zipped(base / DATA_DIR, str(_field(info, "data_name", path)))


def reference_name(info: dict, path: Path) -> str | None:
    """The posterior's ``reference_posterior_name`` (None when posteriordb has no reference draws for it)."""
    name = _field(info, "reference_posterior_name", path)
    return None if name is None else str(name)


def draws_path(base: Path, reference: str) -> Path:
    """The reference draws ``reference_posteriors/draws/draws/<reference>.json.zip``."""
    return _zipped(base / DRAWS_DIR, reference)


def read_json(path: Path) -> Any:
    """The JSON file ``path``, or the one JSON file in the zip ``path`` (``<stem>.json`` when it holds several).
    Raise :class:`VBayesError` naming the path if it is missing or unreadable."""
    if not path.is_file():
        raise VBayesError(f"posteriordb file {path.name!r} is missing: expected {str(path)!r}")
    try:
        if path.suffix != ".zip":
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.namelist() if not m.endswith("/")]
            wanted = path.name.removesuffix(".zip")
            member = wanted if wanted in members else members[0] if len(members) == 1 else None
            if member is None:
                raise VBayesError(f"{str(path)!r} should hold one JSON file ({wanted!r}), it holds {members}")
            with z.open(member) as f:
                return json.load(f)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise VBayesError(f"cannot read {str(path)!r}: {type(e).__name__}: {e}") from e


def summarise(name: str, reference: str, columns: tuple[str, ...], draws: np.ndarray) -> dict[str, Any]:
    """The summary vbayes's layout stores in ``reference_summary.json``, from draws ``(chains, draws, n_columns)``
    pooled over chains: per column ``mean``, ``sd`` (ddof = 1) and the quantiles ``q05`` … ``q95`` (NumPy's
    default, linear), with ``params`` the column names."""
    pooled = draws.reshape(-1, draws.shape[-1])
    summary: dict[str, Any] = {
        "posterior": name,
        "reference_posterior_name": reference,
        "n_chains": int(draws.shape[0]),
        "n_draws_per_chain": int(draws.shape[1]),
        "params": list(columns),
        "mean": pooled.mean(axis=0).tolist(),
        "sd": pooled.std(axis=0, ddof=1).tolist(),
    }
    for q in QUANTILES:
        summary[f"q{q:02d}"] = np.quantile(pooled, q / 100, axis=0).tolist()
    summary["note"] = "computed by vbayes from the reference draws pooled over all chains; sd uses ddof=1"
    return summary
