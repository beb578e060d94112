"""The ``vbayes`` command: list the built-in examples, fit a target and write a small report.

Thin by design (DESIGN.md, layer 7): it resolves what the user named into a :class:`~vbayes.Target`,
calls a library driver, and prints and writes the resulting :class:`~vbayes.Fit`. Every expected
failure becomes ``error: <message>`` on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import math
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import jax
import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vbayes import Fit, Target, advi, from_numpyro
from vbayes.errors import VBayesError
from vbayes.examples import list_examples, load
from vbayes.families import FAMILIES
from vbayes.report import plot_trace

app = typer.Typer(
    name="vbayes",
    help="Variational Bayesian inference on JAX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

TARGET_HELP = (
    "TARGET is a built-in example name (see `vbayes examples`) or FILE.py:NAME.\n\n"
    "In FILE.py:NAME, NAME is an attribute of the file that is either a vbayes Target (used as is) or a NumPyro "
    "model function. For a model function the file also defines its data at module level: `data`, a dict of "
    "keyword arguments, and/or `args`, a tuple of positional arguments; the target is then "
    "vbayes.from_numpyro(model, *args, **data). For example, in normal.py (fit with normal.py:model):\n\n"
    "    def model(y=None):\n"
    '        mu = numpyro.sample("mu", dist.Normal(0, 10))\n'
    '        numpyro.sample("y", dist.Normal(mu, 1), obs=y)\n\n'
    '    data = {"y": np.array([0.3, 1.2, 0.8])}\n\n'
    "Prints the fit's outcome and summary, and writes trace.png (ELBO trace), summary.csv and info.json to --out. "
    "Exit status 1 on bad input, and after writing the report when the fit diverged."
)


# ----------------------------------------------------------------------------------------------
# output helpers


def _stdout() -> Console:
    return Console(highlight=False)


def _fail(message: str) -> typer.Exit:
    """Print ``error: message`` in red on stderr and return the exit (status 1) to raise."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error: {escape(message)}[/red]")
    return typer.Exit(code=1)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the errors a user can cause (bad input, missing files, unwritable output) into ``error: …``."""
    try:
        yield
    except VBayesError as e:
        raise _fail(str(e)) from None
    except FileNotFoundError as e:
        raise _fail(f"file not found: {e.filename or e}") from None
    except OSError as e:
        raise _fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e)) from None


def _enable_x64() -> None:
    """Double precision for everything the command computes (before any array is made)."""
    jax.config.update("jax_enable_x64", True)


# ----------------------------------------------------------------------------------------------
# vbayes examples


@app.command()
def examples() -> None:
    """List the built-in example targets: name, dimension and description."""
    _enable_x64()
    table = Table(title="vbayes built-in examples")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("dim", justify="right")
    table.add_column("description")
    for example in list_examples():
        try:
            dim = str(example.build().dim)
        except (VBayesError, ImportError, OSError):  # e.g. its data set is unavailable: still list it
            dim = "?"
        table.add_row(example.name, dim, example.description)
    _stdout().print(table)


# ----------------------------------------------------------------------------------------------
# TARGET resolution: an example name or FILE.py:NAME


def resolve_target(spec: str) -> Target:
    """The :class:`~vbayes.Target` that ``spec`` names: ``FILE.py:NAME`` or a built-in example name."""
    path, sep, name = spec.rpartition(":")
    if sep and path.endswith(".py"):
        return target_from_file(Path(path), name)
    if spec.endswith(".py"):
        raise VBayesError(f"name the model in the file too: {spec}:NAME (NAME: a Target or a NumPyro model function)")
    return load(spec)


def load_module(path: Path) -> ModuleType:
    """Import the Python file at ``path`` as a fresh module; its own directory is importable from it."""
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
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        line = f"\n    {e.text.rstrip()}" if e.text else ""
        raise VBayesError(f"syntax error in {e.filename or path}, line {e.lineno}: {e.msg}{line}") from None
    except Exception as e:
        raise VBayesError(f"{path}{_line_in(e, path)} raised {type(e).__name__}: {e}") from None
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
        _warn(
            f"{path} defines neither `data` nor `args`: model function {name}{signature} runs with its defaults "
            "(an observed site with obs=None is sampled, so this would fit the prior)"
        )


def _warn(message: str) -> None:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[yellow]warning: {escape(message)}[/yellow]")


# ----------------------------------------------------------------------------------------------
# vbayes fit


def _run_advi(target: Target, family: str, rank: int, steps: int, seed: int) -> Fit:
    return advi(target, family, rank=rank, max_steps=steps, key=seed, progress=True)


METHODS: dict[str, Callable[[Target, str, int, int, int], Fit]] = {"advi": _run_advi}
"""``--method`` name -> ``(target, family, rank, steps, seed) -> Fit``."""


def _check_choices(method: str, family: str) -> None:
    """Fail fast, before building the target, on an unknown method or family."""
    if method not in METHODS:
        raise VBayesError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    if family not in FAMILIES:
        raise VBayesError(f"unknown family {family!r}; available: {', '.join(FAMILIES)}")


@app.command(help="Fit an approximation to TARGET's posterior, print it, and write a report.\n\n" + TARGET_HELP)
def fit(
    target: Annotated[str, typer.Argument(help="A built-in example name or FILE.py:NAME.", show_default=False)],
    method: Annotated[str, typer.Option(help=f"Inference method: {', '.join(METHODS)}.")] = "advi",
    family: Annotated[str, typer.Option(help=f"Family of q: {', '.join(FAMILIES)}.")] = "meanfield",
    rank: Annotated[int, typer.Option(min=1, help="Rank of the lowrank family.")] = 2,
    steps: Annotated[int, typer.Option(min=1, help="Maximum number of optimisation steps.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed (fit and summary draws).")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: vbayes-out/<target name>).", show_default=False)
    ] = None,
    draws: Annotated[int, typer.Option(min=2, help="Draws from q for the summary.")] = 4000,
) -> None:
    """Resolve TARGET, run the method, print the outcome and summary, write the report; see the help text."""
    _enable_x64()
    with _user_errors():
        _check_choices(method, family)
        resolved = resolve_target(target)
        folder = _output_folder(out if out is not None else Path("vbayes-out") / _safe_name(resolved.name))
        console = _stdout()
        console.print(
            f"[bold]{escape(resolved.name)}[/bold]  dim {resolved.dim}  method {method}  family {family}"
            + (f" (rank {rank})" if family == "lowrank" else "")
        )
        result = METHODS[method](resolved, family, rank, steps, seed)
        summary = result.summary(draws, seed)
        print_outcome(console, result)
        console.print(summary_table(summary))
        written = write_outputs(result, summary, folder)
        console.print(f"wrote {', '.join(p.name for p in written)} to {folder}", soft_wrap=True)
    if result.info.outcome == "diverged":
        raise _fail(f"the fit diverged (see the message above); its trace and summary are in {folder}")


def _output_folder(folder: Path) -> Path:
    """``folder``, created now so that an unwritable one fails before the fit rather than after."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VBayesError(f"cannot create the output folder {folder}: {e.strerror or e}") from None
    return folder


def _safe_name(name: str) -> str:
    """``name`` usable as one folder name."""
    return re.sub(r"[^\w.-]", "_", name) or "target"


_OUTCOME_STYLE = {"converged": "green", "max_steps": "yellow", "interrupted": "yellow", "diverged": "red"}


def print_outcome(console: Console, result: Fit) -> None:
    """One line: outcome, message, steps, gradient evaluations, skipped steps, wall time, final ELBO."""
    i = result.info
    style = _OUTCOME_STYLE.get(i.outcome, "white")
    console.print(
        f"[{style}]{i.outcome}[/{style}]: {escape(i.message.rstrip('.'))}; steps {i.steps}, gradient evaluations "
        f"{i.grad_evals}, skipped {i.skipped_steps}, wall {i.wall_time:.2f} s, ELBO {result.elbo:.4f}",
        soft_wrap=True,
    )


def summary_table(summary: pd.DataFrame) -> Table:
    """The ``Fit.summary()`` DataFrame (mean, sd, 5%, 50%, 95% per parameter) as a rich table."""
    table = Table()
    table.add_column("parameter", no_wrap=True)
    for column in summary.columns:
        table.add_column(str(column), justify="right")
    for label, row in summary.iterrows():
        table.add_row(escape(str(label)), *(f"{v:.4g}" for v in row))
    return table


def write_outputs(result: Fit, summary: pd.DataFrame, folder: Path) -> list[Path]:
    """Write ``trace.png``, ``summary.csv`` and ``info.json`` into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    title = f"{result.target.name}: {result.info.method} ({result.info.outcome})"
    png = plot_trace(result.trace, folder / "trace.png", title)
    csv = folder / "summary.csv"
    summary.to_csv(csv, index_label="parameter")
    info = folder / "info.json"
    record = {"target": result.target.name, "dim": result.target.dim, **dataclasses.asdict(result.info)}
    record["elbo"] = result.elbo
    info.write_text(json.dumps(_jsonable(record), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return [png, csv, info]


def _jsonable(x: Any) -> Any:
    """``x`` with NumPy/JAX scalars and arrays as plain Python, and non-finite floats as ``None``."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, np.generic, jax.Array)):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def main() -> None:
    """Entry point for ``python -m vbayes``."""
    app(prog_name="vbayes")
