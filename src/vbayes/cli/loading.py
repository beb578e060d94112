"""What the user names on the ``vbayes`` command line, turned into objects: a TARGET (a built-in example name or
FILE.py:NAME) into a :class:`~vbayes.Target`, its mesh, a DATA file into an array (or a Dask array), ``--devices``.

Failures are :class:`~vbayes.errors.VBayesError` (or ``OSError``) with a message naming the cause; the commands
turn them into ``error: <message>`` and exit status 1, never a traceback.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

import numpy as np

from vbayes import Target, from_numpyro
from vbayes.cli.common import warn
from vbayes.data.files import read_matrix
from vbayes.errors import VBayesError
from vbayes.examples import EXAMPLES, load


def resolve_target(spec: str) -> Target:
    """The :class:`~vbayes.Target` that ``spec`` names: ``FILE.py:NAME`` or a built-in example name."""
    path, sep, name = spec.rpartition(":")
    if sep and path.endswith(".py"):
        return target_from_file(Path(path), name)
    if spec.endswith(".py"):
        raise VBayesError(f"name the model in the file too: {spec}:NAME (NAME: a Target or a NumPyro model function)")
    return load(spec)


def load_module(path: Path) -> ModuleType:
    """Run the Python file at ``path`` as a fresh module (it is executed: it must be trusted). Modules in its
    folder are importable while it runs, after every installed package, and the folder leaves ``sys.path``
    afterwards, so a file there named like a dependency (``arviz.py``) is never run in its place."""
    if not path.exists():
        raise VBayesError(f"model file not found: {path}")
    if not path.is_file():
        raise VBayesError(f"not a file: {path}")
    module_name = "vbayes_user_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise VBayesError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    folder = str(path.resolve().parent)
    added = folder not in sys.path
    if added:  # at the end, and only while the file runs: nothing in its folder can shadow a package
        sys.path.append(folder)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        line = f"\n    {e.text.rstrip()}" if e.text else ""
        raise VBayesError(f"syntax error in {e.filename or path}, line {e.lineno}: {e.msg}{line}") from None
    except Exception as e:
        raise VBayesError(f"{path}{_line_in(e, path)} raised {type(e).__name__}: {e}") from None
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    return module


def _line_in(error: BaseException, path: Path) -> str:
    """``", line N"`` for the last frame of ``error``'s traceback inside ``path`` (empty if none)."""
    here = path.resolve()
    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == here]
    return f", line {lines[-1]}" if lines else ""


def _model_like_names(module: ModuleType) -> list[str]:
    """Names in ``module`` that could be a target: Targets and public functions defined in the file itself."""
    return [
        k
        for k, v in vars(module).items()
        if not k.startswith("_")
        and (isinstance(v, Target) or (inspect.isfunction(v) and v.__module__ == module.__name__))
    ]


def target_from_file(path: Path, name: str) -> Target:
    """The Target ``name`` in the file ``path``, or one built from the model function ``name`` and the
    file's ``data`` (keyword arguments) and ``args`` (positional arguments)."""
    module = load_module(path)
    if not name or not hasattr(module, name):
        found = _model_like_names(module)
        looks = f"it defines {', '.join(found)}" if found else "it defines no Target or function"
        what = f"no attribute {name!r}" if name else "no NAME given after ':'"
        raise VBayesError(f"{path}: {what}; {looks} (use {path}:NAME)")
    obj = getattr(module, name)
    if isinstance(obj, Target):
        return obj
    if not callable(obj):
        raise VBayesError(f"{path}:{name} is a {type(obj).__name__}, not a vbayes Target or a NumPyro model function")
    args, data = _model_arguments(module, path)
    _check_call(obj, name, path, args, data, given=hasattr(module, "data") or hasattr(module, "args"))
    try:
        return from_numpyro(obj, *args, **data)
    except VBayesError as e:  # the model failed on its data: point at the line of the file where it did
        where = _line_in(e.__cause__, path) if e.__cause__ is not None else ""
        raise VBayesError(f"{e} ({path}{where})" if where else str(e)) from None


def _model_arguments(module: ModuleType, path: Path) -> tuple[tuple, dict]:
    """The file's ``args`` (a tuple) and ``data`` (a dict of keyword arguments), empty where not defined."""
    args, data = getattr(module, "args", ()), getattr(module, "data", {})
    if not isinstance(args, (tuple, list)):
        raise VBayesError(f"`args` in {path} must be a tuple of positional arguments, got {type(args).__name__}")
    if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
        raise VBayesError(
            f"`data` in {path} must be a dict of keyword arguments {{name: value}}, got {type(data).__name__}"
        )
    return tuple(args), dict(data)


def _check_call(model: Callable, name: str, path: Path, args: tuple, data: dict, given: bool) -> None:
    """Explain, before running it, when ``model(*args, **data)`` does not match the model's signature."""
    try:
        signature = inspect.signature(model)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **data)
    except TypeError as e:
        supplied = (
            f"it is called with args of length {len(args)} and data keys {sorted(data)}"
            if given
            else "the file defines neither `data` nor `args`"
        )
        raise VBayesError(
            f"model function {name}{signature} in {path} cannot be called with the file's data: {e}; {supplied}. "
            "Define at module level `data = {...}` (keyword arguments) and/or `args = (...)` (positional arguments)."
        ) from None
    if not given and signature.parameters:
        warn(
            f"{path} defines neither `data` nor `args`: model function {name}{signature} runs with its defaults "
            "(an observed site with obs=None is sampled, so this would fit the prior)"
        )


def resolve_mesh(spec: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(points, triangles)`` when TARGET's parameters live on a triangular mesh: an example's ``mesh()``, or a
    ``mesh = (points, triangles)`` defined at module level in FILE.py."""
    path, sep, _ = spec.rpartition(":")
    if sep and path.endswith(".py"):
        module = sys.modules.get("vbayes_user_" + re.sub(r"\W", "_", Path(path).stem))
        mesh = getattr(module, "mesh", None)
        return tuple(mesh) if isinstance(mesh, (tuple, list)) and len(mesh) == 2 else None
    example = EXAMPLES.get(spec)
    return example.mesh() if example is not None and example.mesh is not None else None


def load_dask(path: Path, header: bool | None = None):
    """A Dask array over DATA without reading it here: ``.npy`` (rows read by the workers), a ``.zarr``
    store, ``.parquet`` (file or folder; needs pyarrow), or a CSV (read here, then partitioned)."""
    import dask.array as da

    from vbayes.data.dask import from_npy

    if not path.exists():  # (from_npy and read_matrix check the rest: empty, truncated, dtype, values)
        raise VBayesError(f"data file not found: {path}")
    if path.suffix == ".npy":
        return from_npy(path)
    if path.suffix == ".zarr":
        return da.from_zarr(str(path))
    if path.suffix == ".parquet":
        import dask.dataframe as dd

        return dd.read_parquet(str(path)).to_dask_array(lengths=True)
    X = read_matrix(path, header)
    return da.from_array(X, chunks=(max(1, -(-X.shape[0] // 8)), X.shape[1]))


def parse_devices(devices: str | None, console) -> str | int | None:
    """``--devices`` (:func:`vbayes.data.devices.parse_devices_option`), its note printed."""
    from vbayes.data.devices import parse_devices_option

    parsed, note = parse_devices_option(devices)
    if note:
        console.print(note, soft_wrap=True)
    return parsed
