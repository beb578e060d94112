"""Bags of words: the UCI format (``docword.txt``, optionally gzipped, and ``vocab.txt``) as a scipy sparse matrix.

The UCI bag-of-words format (Newman, UCI Machine Learning Repository, "Bag of Words" data set): three header lines
D (documents), W (words in the vocabulary), NNZ (non-zero entries), then one ``docID wordID count`` line per
non-zero entry, ids 1-based. :func:`read_uci_bow` returns the ``(D, W)`` CSR matrix of counts and checks the file
against its header: a truncated, corrupted or inconsistent file is a :class:`~vbayes.errors.VBayesError` naming
what is wrong, never a matrix with documents missing.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from vbayes.data.files import existing_file
from vbayes.errors import VBayesError


def _open_text(path: Path):
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="ascii") if gzipped else open(path, encoding="ascii")


def _header(f, path: Path) -> tuple[int, int, int]:
    values = []
    for name in ("D (documents)", "W (words)", "NNZ (entries)"):
        line = f.readline()
        try:
            values.append(int(line.strip()))
        except ValueError:
            raise VBayesError(
                f"{path}: line {len(values) + 1} should be {name}, an integer; got {line.strip()!r}"
            ) from None
    if min(values) < 0:
        raise VBayesError(f"{path}: negative counts in the header {values}")
    return values[0], values[1], values[2]


def read_uci_bow(path: str | os.PathLike, dtype=np.float64):
    """The document-term matrix ``(D, W)`` (scipy CSR, counts as ``dtype``) of a UCI ``docword`` file."""
    import scipy.sparse as sp

    path = existing_file(path)
    try:
        with _open_text(path) as f:
            n_docs, n_words, nnz = _header(f, path)
            try:
                table = np.loadtxt(f, dtype=np.int64, ndmin=2) if nnz else np.zeros((0, 3), np.int64)
            except ValueError as e:
                raise VBayesError(f"{path}: an entry is not three integers `docID wordID count` ({e})") from None
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as e:
        raise VBayesError(f"{path}: cannot be read as a bag-of-words file ({type(e).__name__}: {e})") from None
    if table.shape != (nnz, 3):
        found = table.shape[0] if table.shape[-1] == 3 else "malformed"
        raise VBayesError(f"{path}: the header promises {nnz} entries of 3 integers, the file has {found} (truncated?)")
    doc, word, count = table.T
    bad = (doc < 1) | (doc > n_docs) | (word < 1) | (word > n_words) | (count < 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise VBayesError(
            f"{path}: entry {i + 1} (line {i + 4}) `{doc[i]} {word[i]} {count[i]}` is outside the header's "
            f"{n_docs} documents × {n_words} words, or its count is < 1"
        )
    docs = sp.csr_matrix((count.astype(dtype), (doc - 1, word - 1)), shape=(n_docs, n_words))
    docs.sum_duplicates()
    return docs


def read_vocabulary(path: str | os.PathLike) -> list[str]:
    """The words of a ``vocab.txt`` file, one per line, in order."""
    path = existing_file(path)
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise VBayesError(f"{path}: cannot be read as a vocabulary ({type(e).__name__}: {e})") from None
