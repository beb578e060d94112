"""Data files, checked before anything is fitted: ``.npy`` (a 2-D real array; the header is read and checked
against the file's length before a byte of data is) and numeric CSV (a header row detected or stated).

Every failure is a :class:`~vbayes.errors.VBayesError` naming the file and, for values, the row and column as the
user counts them (1-based; for a CSV, the line of the file). Nothing is unpickled: object arrays are refused.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vbayes.errors import VBayesError

REAL_KINDS = "biuf"
"""dtype kinds read as float64: bool, signed and unsigned integers, floats."""


class NpyHeader(NamedTuple):
    """A checked ``.npy`` header: ``shape``, ``dtype``, C order, and the byte ``offset`` where the data start."""

    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int


def existing_file(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`Path`, or a :class:`VBayesError` if it is missing, a folder, or empty (0 bytes)."""
    path = Path(path)
    if not path.exists():
        raise VBayesError(f"data file not found: {path} (it does not exist, or not at this path)")
    if path.is_dir():
        raise VBayesError(f"{path} is a folder, not a data file")
    if path.stat().st_size == 0:
        raise VBayesError(f"{path} is empty (0 bytes)")
    return path


def npy_header(path: str | os.PathLike, ndim: int | None = 2) -> NpyHeader:
    """The header of the ``.npy`` file at ``path``, checked: a real dtype (bool, int, float; not object, string,
    complex or structured), C order, ``ndim`` dimensions (any if None), and a file long enough for its data."""
    path = existing_file(path)
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
        except (ValueError, EOFError, SyntaxError, TypeError) as e:
            raise VBayesError(f"{path} is not a readable .npy file ({_first_line(e)})") from None
        offset = f.tell()
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise VBayesError(f"{path} holds Python objects (dtype object): vbayes reads numbers only")
    if dtype.kind not in REAL_KINDS:
        what = {"c": "complex numbers", "U": "strings", "S": "bytes", "V": "records", "M": "dates", "m": "durations"}
        raise VBayesError(
            f"{path} holds {what.get(dtype.kind, 'values of dtype ' + str(dtype))} (dtype {dtype}); "
            "vbayes reads real numbers only"
            + ("; keep the real part yourself if that is what you mean" if dtype.kind == "c" else "")
        )
    if fortran and len(shape) > 1:
        raise VBayesError(f"{path} is in Fortran order; save it with np.save(path, np.ascontiguousarray(x))")
    if ndim is not None and len(shape) != ndim and not (ndim == 2 and len(shape) == 1):
        raise VBayesError(f"{path} must hold an (N, D) matrix, got shape {shape}")
    needed = offset + math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if size < needed:
        raise VBayesError(
            f"{path} is truncated: its header promises shape {shape} of {dtype} ({needed:,} bytes), "
            f"the file has {size:,}"
        )
    return NpyHeader(tuple(shape), dtype, offset)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0].rstrip(".") if text else type(error).__name__


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """The (N, D) float64 matrix in a checked ``.npy`` file (a 1-D array is one column)."""
    header = npy_header(path)
    x = np.fromfile(path, dtype=header.dtype, count=math.prod(header.shape), offset=header.offset)
    x = x.reshape(header.shape).astype(np.float64)
    return x[:, None] if x.ndim == 1 else x


def csv_has_header(path: str | os.PathLike) -> bool:
    """Whether the first line of a CSV is a header: some field of it is not a number (``nan`` and ``inf`` count
    as numbers, so a numeric first row is never taken as a header)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = next(csv.reader(f), [])
    return any(not _is_number(field) for field in first)


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return field.strip() == ""  # an empty field is a missing number, not a name
    return True


def read_csv(path: str | os.PathLike, header: bool | None = None) -> np.ndarray:
    """The (N, D) float64 matrix in a numeric CSV. ``header``: whether the first line names the columns (None:
    detected, :func:`csv_has_header`). Non-numeric or missing values are errors naming their line and column."""
    import pandas as pd

    path = existing_file(path)
    try:
        has_header = csv_has_header(path) if header is None else header
        frame = pd.read_csv(path, header=0 if has_header else None, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as e:
        raise VBayesError(f"malformed CSV {path}: {_first_line(e)}") from None
    first_line = 2 if has_header else 1
    values = np.empty(frame.shape, dtype=np.float64)
    for j, column in enumerate(frame.columns):
        numbers = pd.to_numeric(frame[column].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
        text = frame[column].to_numpy()
        bad = np.flatnonzero(np.isnan(numbers) & ~np.char.startswith(np.char.lower(text.astype(str)), "nan"))
        if bad.size:
            i = int(bad[0])
            shown = repr(text[i]) if text[i].strip() else "an empty field"
            raise VBayesError(
                f"{path}, line {i + first_line}, column {j + 1}"
                + (f" ({column})" if has_header else "")
                + f": {shown} is not numeric"
                + (f" ({bad.size} such values in this column)" if bad.size > 1 else "")
                + ("" if has_header or header is not None else "; if line 1 names the columns, pass --header")
            )
        values[:, j] = numbers
    if frame.shape[0] == 0:
        raise VBayesError(f"{path} has no data rows" + (" (only a header line)" if has_header else ""))
    return check_finite(values, path, first_line=first_line, unit="line")


def check_finite(x: np.ndarray, path: str | os.PathLike, first_line: int = 1, unit: str = "row") -> np.ndarray:
    """``x`` (N, D) if every value is finite, else a :class:`VBayesError` naming the first NaN/inf by its
    ``unit`` (row ``i`` is ``first_line + i``) and column, both 1-based, and how many rows have one."""
    finite = np.isfinite(x)
    if finite.all():
        return x
    rows = np.flatnonzero(~finite.all(axis=1))
    i = int(rows[0])
    j = int(np.flatnonzero(~finite[i])[0])
    raise VBayesError(
        f"{str(path)}, {unit} {i + first_line}, column {j + 1}: {x[i, j]} "
        f"({rows.size} row{'s' if rows.size > 1 else ''} with NaN or inf values); remove or impute them"
    )


def read_matrix(path: str | os.PathLike, header: bool | None = None) -> np.ndarray:
    """The checked, finite, non-empty (N, D) float64 matrix in a ``.npy`` or ``.csv``/``.txt`` file
    (``header``: as :func:`read_csv`; only for CSV)."""
    path = existing_file(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if header is not None:
            raise VBayesError("--header/--no-header apply to CSV files only")
        x = check_finite(read_npy(path), path)
    elif suffix in (".csv", ".txt"):
        x = read_csv(path, header)
    else:
        raise VBayesError(f"data must be a .npy or .csv file, got {path.name}")
    if x.ndim != 2 or x.size == 0:
        raise VBayesError(f"{path} must hold a non-empty (N, D) matrix, got shape {x.shape}")
    return x
