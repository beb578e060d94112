"""Image data: scikit-learn's 8×8 digits (embedded, the default) and MNIST from IDX files given by path.

Images are float32 grey levels in [0, 1] of shape ``(N, H, W)``; labels ``(N,)`` int. Nothing is
downloaded. Binary data for the Bernoulli likelihood come from :func:`binarize` (dynamic binarisation:
a fresh x ~ Bernoulli(grey) at every step during training, one fixed draw for validation and test).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from jax import Array

from vbayes.errors import VBayesError


class Dataset(NamedTuple):
    """Train / validation / test images ``(N, *data_shape)`` in [0, 1] and their labels; ``levels`` grey levels."""

    name: str
    train: np.ndarray
    train_labels: np.ndarray
    val: np.ndarray
    val_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    levels: int

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])


def _split(x: np.ndarray, y: np.ndarray, n_val: int, n_test: int, seed: int):
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    a, b = len(x) - n_val - n_test, len(x) - n_test
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


def load_digits(*, val_size: int = 200, test_size: int = 300, seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 handwritten 8×8 digits (17 grey levels, /16), split at random with ``seed``."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)
    (xt, yt), (xv, yv), (xs, ys) = _split(x, bunch.target.astype(np.int64), val_size, test_size, seed)
    return Dataset("digits", xt, yt, xv, yv, xs, ys, 17)


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (``.gz`` or plain) as a NumPy array of its declared type and shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise VBayesError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise VBayesError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = raw[2], raw[3]
    if code not in dtypes:
        raise VBayesError(f"{path}: unknown IDX data type 0x{code:02x}")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=dtypes[code], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise VBayesError(f"{path}: header says shape {shape} but the file holds {data.size} values")
    return data.reshape(shape).astype(dtypes[code][1:])


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem, f"{stem.replace('-idx', '.idx')}.gz", stem.replace("-idx", ".idx")):
        if (folder / name).exists():
            return folder / name
    raise VBayesError(f"MNIST file {stem}[.gz] not found in {folder}")


def load_mnist(path: str | Path, *, val_size: int = 10_000, seed: int = 0) -> Dataset:
    """MNIST from the four IDX files in folder ``path`` (``train-images-idx3-ubyte.gz`` etc.).

    The last ``val_size`` of the 60,000 training images (after a shuffle with ``seed``) are the
    validation set; ``val_size=0`` trains on all 60,000 (Burda et al.'s protocol). Test: the 10,000.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise VBayesError(f"MNIST folder not found: {folder} (expected the four IDX files in it)")
    x = read_idx(_find(folder, "train-images-idx3-ubyte"))
    y = read_idx(_find(folder, "train-labels-idx1-ubyte"))
    xs = read_idx(_find(folder, "t10k-images-idx3-ubyte"))
    ys = read_idx(_find(folder, "t10k-labels-idx1-ubyte"))
    if x.ndim != 3 or xs.ndim != 3 or len(x) != len(y) or len(xs) != len(ys):
        raise VBayesError(
            f"{folder}: image and label files do not match ({x.shape}, {y.shape}; {xs.shape}, {ys.shape})"
        )
    (xt, yt), (xv, yv), _ = _split(x, y.astype(np.int64), val_size, 0, seed)
    scale = lambda a: (a / 255.0).astype(np.float32)
    return Dataset("mnist", scale(xt), yt, scale(xv), yv, scale(xs), ys.astype(np.int64), 256)


def load(spec: str | Path, **kwargs) -> Dataset:
    """``"digits"`` or a folder holding the MNIST IDX files."""
    if str(spec) == "digits":
        return load_digits(**kwargs)
    return load_mnist(spec, **kwargs)


def binarize(key: Array, x: Array) -> Array:
    """A draw x' ~ Bernoulli(x) elementwise (dynamic binarisation); shapes unchanged."""
    return (jax.random.uniform(key, x.shape) < x).astype(x.dtype)


def check_images(x: np.ndarray, data_shape: tuple[int, ...], what: str = "data") -> np.ndarray:
    """``x`` as a float array of shape ``(N, *data_shape)``, N ≥ 1; a clear error otherwise."""
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise VBayesError(f"{what}: images must be numeric arrays, got dtype {x.dtype}")
    if x.ndim == len(data_shape) and tuple(x.shape) == tuple(data_shape):
        raise VBayesError(
            f"{what}: got one image of shape {x.shape}; pass a batch of shape (N, {', '.join(map(str, data_shape))})"
        )
    if tuple(x.shape[1:]) != tuple(data_shape):
        raise VBayesError(
            f"{what}: images of shape {tuple(x.shape[1:])} do not fit a model for images of shape {tuple(data_shape)}"
        )
    if x.shape[0] == 0:
        raise VBayesError(f"{what}: the data set is empty (0 images)")
    return x.astype(np.float32) if x.dtype != np.float64 else x
