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
import warnings
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

from vbayes import Fit, Target, advi, from_numpyro, laplace
from vbayes.errors import VBayesError
from vbayes.examples import EXAMPLES, list_examples, load
from vbayes.families import FAMILIES
from vbayes.infer.laplace import CURVATURES
from vbayes.report import plot_mesh_fields, plot_trace
from vbayes.vae.cli import vae_app

app = typer.Typer(
    name="vbayes",
    help="Variational Bayesian inference on JAX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(vae_app, name="vae")

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
    """Standard output; 120 columns when it is not a terminal (rich would use 80)."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=120)


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
def examples(
    questions: Annotated[
        bool, typer.Option("--questions", help="List the questions answered by runnable examples instead.")
    ] = False,
) -> None:
    """List the built-in example targets: name, dimension and description (or, with --questions, the questions)."""
    if questions:
        _print_questions()
        return
    _enable_x64()
    table = Table(title="vbayes built-in examples")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("dim", justify="right")
    table.add_column("description")
    for example in list_examples():
        try:
            dim = str(example.dim if example.dim is not None else example.build().dim)
        except (VBayesError, ImportError, OSError):  # e.g. its data set is unavailable: still list it
            dim = "?"
        table.add_row(example.name, dim, example.description)
    _stdout().print(table)


def _print_questions() -> None:
    """The registry of :mod:`vbayes.questions`: number, question, one-line answer, script (or "planned")."""
    from vbayes.questions import list_questions

    table = Table(title="questions about variational Bayes, answered by runnable examples (docs/README.md)")
    table.add_column("#", justify="right")
    table.add_column("question")
    table.add_column("answer in one line")
    table.add_column("example", no_wrap=True)
    for q in list_questions():
        run = q.script if q.status == "ready" else "[dim](planned)[/dim]"
        table.add_row(str(q.number), escape(q.question), escape(q.answer), run)
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


def _run_advi(target: Target, family: str, rank: int | None, steps: int, seed: int) -> Fit:
    return advi(target, family, rank=rank or 2, max_steps=steps, key=seed, progress=True)


def _run_laplace(target: Target, family: str, rank: int | None, steps: int, seed: int, curvature: str = "auto") -> Fit:
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    return laplace(
        target, curvature, rank=rank, max_iter=steps, key=seed, log=lambda m: console.print(f"[dim]{m}[/dim]")
    )


METHODS: dict[str, Callable[..., Fit]] = {"advi": _run_advi, "laplace": _run_laplace}
"""``--method`` name -> ``(target, family, rank, steps, seed[, curvature=]) -> Fit`` (``curvature``: laplace only)."""


def _check_choices(method: str, family: str, curvature: str = "auto") -> None:
    """Fail fast, before building the target, on an unknown method, family or curvature."""
    if method not in METHODS:
        raise VBayesError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    if family not in FAMILIES:
        raise VBayesError(f"unknown family {family!r}; available: {', '.join(FAMILIES)}")
    if curvature not in CURVATURES:
        raise VBayesError(f"unknown curvature {curvature!r}; available: {', '.join(CURVATURES)}")


@app.command(help="Fit an approximation to TARGET's posterior, print it, and write a report.\n\n" + TARGET_HELP)
def fit(
    target: Annotated[str, typer.Argument(help="A built-in example name or FILE.py:NAME.", show_default=False)],
    method: Annotated[str, typer.Option(help=f"Inference method: {', '.join(METHODS)}.")] = "advi",
    family: Annotated[str, typer.Option(help=f"Family of q: {', '.join(FAMILIES)}.")] = "meanfield",
    rank: Annotated[
        int | None,
        typer.Option(min=1, help="Rank of the lowrank family (default 2), or of laplace's lowrank/ggn curvature."),
    ] = None,
    curvature: Annotated[
        str, typer.Option(help=f"Laplace curvature: {', '.join(CURVATURES)} (dense for d ≤ 1000, else ggn/lowrank).")
    ] = "auto",
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
        _check_choices(method, family, curvature)
        resolved = resolve_target(target)
        folder = _output_folder(out if out is not None else Path("vbayes-out") / _safe_name(resolved.name))
        console = _stdout()
        if method == "laplace":
            what = f"curvature {curvature}" + (f" (rank {rank})" if rank and curvature in ("lowrank", "ggn") else "")
        else:
            what = f"family {family}" + (f" (rank {rank or 2})" if family == "lowrank" else "")
        console.print(f"[bold]{escape(resolved.name)}[/bold]  dim {resolved.dim}  method {method}  {what}")
        options = {"curvature": curvature} if method == "laplace" else {}
        result = METHODS[method](resolved, family, rank, steps, seed, **options)
        summary = result.summary(draws, seed)
        print_outcome(console, result)
        if len(summary) > MAX_SUMMARY_ROWS:
            console.print(summary_table(summary_by_parameter(summary, result.target.names), "parameter"))
            console.print(f"first {FIRST_ROWS} of {len(summary)} rows (all in summary.csv):")
            console.print(summary_table(summary.head(FIRST_ROWS)))
        else:
            console.print(summary_table(summary))
        written = write_outputs(result, summary, folder)
        mesh = resolve_mesh(target)
        if mesh is not None:
            written.append(write_mesh_picture(result, summary, mesh, folder))
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


_OUTCOME_STYLE = {
    "converged": "green",
    "max_steps": "yellow",
    "interrupted": "yellow",
    "indefinite": "yellow",
    "diverged": "red",
}

MAX_SUMMARY_ROWS = 60
"""Summaries longer than this are printed per parameter (min/median/max sd) plus their first rows."""
FIRST_ROWS = 8


def print_outcome(console: Console, result: Fit) -> None:
    """One line: outcome, message, steps, gradient evaluations, skipped steps, wall time, final ELBO (or, for
    Laplace, the log evidence and the number of curvature products)."""
    i = result.info
    style = _OUTCOME_STYLE.get(i.outcome, "white")
    if "log_evidence" in i.extra:
        tail = f"curvature products {i.extra.get('products')}, log evidence (Laplace) {i.extra['log_evidence']:.4f}"
    else:
        tail = f"ELBO {result.elbo:.4f}"
    console.print(
        f"[{style}]{i.outcome}[/{style}]: {escape(i.message.rstrip('.'))}; steps {i.steps}, gradient evaluations "
        f"{i.grad_evals}, skipped {i.skipped_steps}, wall {i.wall_time:.2f} s, {tail}",
        soft_wrap=True,
    )


def summary_by_parameter(summary: pd.DataFrame, order: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per named parameter (``x[0]``, ``x[1]``, … grouped as ``x``): its size, the median of its means, and the
    min / median / max of its sds; parameters named in ``order`` first, in that order."""
    base = summary.index.to_series().str.replace(r"\[.*\]$", "", regex=True)
    groups = summary.groupby(base.to_numpy(), sort=False)
    table = pd.DataFrame(
        {
            "size": groups.size(),
            "median mean": groups["mean"].median(),
            "min sd": groups["sd"].min(),
            "median sd": groups["sd"].median(),
            "max sd": groups["sd"].max(),
        }
    )
    first = [name for name in order if name in table.index]
    return table.loc[first + [name for name in table.index if name not in first]]


def summary_table(summary: pd.DataFrame, index_name: str = "parameter") -> Table:
    """The ``Fit.summary()`` DataFrame (mean, sd, 5%, 50%, 95% per parameter) as a rich table."""
    table = Table()
    table.add_column(index_name, no_wrap=True)
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


def write_mesh_picture(result: Fit, summary: pd.DataFrame, mesh: tuple, folder: Path) -> Path:
    """``posterior_sd.png``: the posterior sd of every parameter with one value per mesh vertex, one panel each."""
    points, triangles = mesh
    n = np.shape(points)[0]
    fields = {}
    for spec in result.target.params:
        if spec.shape == (n,):
            fields[spec.name] = summary.loc[[f"{spec.name}[{i}]" for i in range(n)], "sd"].to_numpy()
    if not fields:
        raise VBayesError(f"the mesh has {n} vertices but no parameter of {result.target.name!r} has that shape")
    title = f"{result.target.name}: posterior sd ({result.info.method})"
    return plot_mesh_fields(points, triangles, fields, folder / "posterior_sd.png", title)


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


# ----------------------------------------------------------------------------------------------
# vbayes gmm


def load_matrix(path: Path) -> np.ndarray:
    """An (N, D) float array from a ``.npy`` file or a numeric CSV (a header row is allowed)."""
    if not path.exists():
        raise FileNotFoundError(2, "No such file", str(path))
    if path.suffix == ".npy":
        X = np.load(path, allow_pickle=False)
    elif path.suffix in (".csv", ".txt"):
        try:
            frame = pd.read_csv(path, header="infer")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise VBayesError(f"malformed CSV {path}: {e}") from None
        bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if bad:
            raise VBayesError(f"malformed CSV {path}: column(s) {bad[:5]} are not numeric")
        X = frame.to_numpy(dtype=np.float64)
    else:
        raise VBayesError(f"data must be a .npy or .csv file, got {path.name}")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.size == 0:
        raise VBayesError(f"data in {path} must be a non-empty (N, D) matrix, got shape {X.shape}")
    return X


def _load_dask(path: Path):
    """A Dask array over DATA without reading it here: ``.npy`` (rows read by the workers), a ``.zarr``
    store, ``.parquet`` (file or folder; needs pyarrow), or a CSV (read here, then partitioned)."""
    import dask.array as da

    from vbayes.infer.dask import from_npy

    if not path.exists():
        raise FileNotFoundError(2, "No such file", str(path))
    if path.suffix == ".npy":
        return from_npy(path)
    if path.suffix == ".zarr":
        return da.from_zarr(str(path))
    if path.suffix == ".parquet":
        import dask.dataframe as dd

        return dd.read_parquet(str(path)).to_dask_array(lengths=True)
    X = load_matrix(path)
    return da.from_array(X, chunks=(max(1, -(-X.shape[0] // 8)), X.shape[1]))


def _parse_devices(devices: str | None, console) -> str | int | None:
    """``--devices`` (:func:`vbayes.infer.sharding.parse_devices_option`), its note printed."""
    from vbayes.infer.sharding import parse_devices_option

    parsed, note = parse_devices_option(devices)
    if note:
        console.print(note, soft_wrap=True)
    return parsed


@app.command(help="Fit a Bayesian Gaussian mixture to DATA (.npy or numeric .csv) by CAVI, SVI, EM or MAP-EM.")
def gmm(
    data: Annotated[Path, typer.Argument(help="An (N, D) .npy file or a numeric CSV.", show_default=False)],
    components: Annotated[
        int, typer.Option(min=1, help="Number of components K (an upper bound with the DP prior).")
    ] = 10,
    method: Annotated[str, typer.Option(help="cavi, svi, em or map.")] = "cavi",
    covariance: Annotated[str, typer.Option(help="full, diag or spherical.")] = "full",
    weights: Annotated[str, typer.Option(help="dirichlet_process or dirichlet_distribution.")] = "dirichlet_process",
    seed: Annotated[int, typer.Option(help="Random seed of the initialisation.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: vbayes-out/gmm-<data>).")] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask",
            metavar="SCHEDULER_ADDRESS|local[:WORKERS]",
            help="Fit on a Dask cluster: statistics computed on the workers partition by partition (DATA: .npy, "
            ".zarr or .parquet, read by the workers: the path must be visible to them).",
        ),
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option("--devices", metavar="all|N", help="Split the passes over the local JAX devices (GPUs)."),
    ] = None,
) -> None:
    """Fit, print the components found, the ELBO and the outcome; write gmm.png and components.csv."""
    from vbayes.mixture import METHODS as GMM_METHODS
    from vbayes.mixture import VariationalGaussianMixture
    from vbayes.report import plot_mixture

    with _user_errors():
        if method not in GMM_METHODS:
            raise VBayesError(f"unknown method {method!r}; available: {', '.join(GMM_METHODS)}")
        if covariance not in ("full", "diag", "spherical"):
            raise VBayesError(f"unknown covariance {covariance!r}; available: full, diag, spherical")
        if dask is not None and devices is not None:
            raise VBayesError("--dask and --devices are alternatives: choose one")
        console = _stdout()
        if dask is not None:
            from vbayes.infer.dask import connect

            client = connect(dask)  # fails early, with the address, if the scheduler cannot be reached
            full = _load_dask(data)
            X = np.asarray(full[: min(full.shape[0], 200_000)].compute(), dtype=np.float64)  # for the picture
            n, where = full.shape[0], f"  dask {len(client.scheduler_info()['workers'])} workers"
        else:
            X = full = load_matrix(data)
            n, where = X.shape[0], ""
        use = _parse_devices(devices, console)
        folder = _output_folder(out if out is not None else Path("vbayes-out") / f"gmm-{_safe_name(data.stem)}")
        console.print(
            f"[bold]{escape(data.name)}[/bold]  N {n}  D {X.shape[1]}  K {components}  {method}{where}", soft_wrap=True
        )
        model = VariationalGaussianMixture(
            n_components=components,
            covariance_type=covariance,
            weight_concentration_prior_type=weights,
            method=method,
            random_state=seed,
            devices=use,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(full, client=client) if dask is not None else model.fit(full)
        info = model.fit_info_
        console.print(
            f"[{'green' if model.converged_ else 'yellow'}]{info.outcome}[/]: {escape(info.message)}; "
            f"{model.n_iter_} iterations, {info.wall_time:.2f} s; ELBO {model.elbo_:.6g} "
            f"({model.lower_bound_:.6f} per point)",
            soft_wrap=True,
        )
        covs = model.covariances_
        if covariance == "diag":
            covs = np.stack([np.diag(c) for c in covs])
        elif covariance == "spherical":
            covs = np.stack([c * np.eye(X.shape[1]) for c in np.atleast_1d(covs)])
        table = Table(title="components with weight > 1%")
        for col in ("k", "weight", "mean", "sd (diagonal)", "largest correlation"):
            table.add_column(col)
        rows = []
        for k in np.argsort(-model.weights_):
            if model.weights_[k] < 0.01:
                continue
            sd = np.sqrt(np.diag(covs[k]))
            corr = covs[k] / np.outer(sd, sd) - np.eye(len(sd))
            show = lambda v: "[" + ", ".join(f"{x:.3g}" for x in v[:4]) + (", …]" if len(v) > 4 else "]")
            big = float(corr.flat[np.argmax(np.abs(corr))]) if len(sd) > 1 else 0.0
            table.add_row(str(k), f"{model.weights_[k]:.3f}", show(model.means_[k]), show(sd), f"{big:+.2f}")
            rows.append(
                {"k": int(k), "weight": model.weights_[k], **{f"mean{j}": m for j, m in enumerate(model.means_[k])}}
            )
        console.print(table)
        pd.DataFrame(rows).to_csv(folder / "components.csv", index=False)
        picture = plot_mixture(X, model.weights_, model.means_, covs, model.lower_bounds_, folder / "gmm.png")
        console.print(f"wrote {picture.name}, components.csv to {folder}", soft_wrap=True)


# ----------------------------------------------------------------------------------------------
# vbayes compare

COMPARE_COLUMNS = (
    ("wall_s", "wall s", "{:.1f}"),
    ("grad_evals", "grad evals", "{:.0f}"),
    ("khat", "k̂", "{:.2f}"),
    ("mean_error_max", "mean err", "{:.2f}"),
    ("sd_ratio_min", "sd ratio ≥", "{:.2f}"),
    ("sd_ratio_max", "sd ratio ≤", "{:.2f}"),
    ("w1_mean", "W1/sd", "{:.3f}"),
    ("worst", "worst", "{}"),
)


@app.command(
    help="Run several methods on TARGET (default: eight_schools_noncentered), check each with its own "
    "diagnostics, measure each against a reference, and say which to trust.\n\n"
    "TARGET: an example name, posteriordb:NAME (a posterior in ../shared/posteriordb, which also allows "
    "--reference posteriordb), or FILE.py:NAME."
)
def compare(
    target: Annotated[str, typer.Argument(help="Example name, posteriordb:NAME or FILE.py:NAME.")] = (
        "eight_schools_noncentered"
    ),
    methods: Annotated[
        str, typer.Option(help="Comma-separated: advi-meanfield, advi-fullrank, advi-lowrank, laplace, nuts.")
    ] = "advi-meanfield,advi-fullrank,advi-lowrank,laplace,nuts",
    reference: Annotated[str, typer.Option(help="nuts, posteriordb (for posteriordb:NAME targets) or none.")] = "nuts",
    report: Annotated[
        Path | None, typer.Option(help="Folder for the HTML report (default: vbayes-out/compare-<target>).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Compare methods on one target; print the table and the recommendation; write the HTML report."""
    _enable_x64()
    from vbayes.compare import compare as run_compare
    from vbayes.report import write_compare_report

    with _user_errors():
        if reference not in ("nuts", "posteriordb", "none"):
            raise VBayesError(f"unknown reference {reference!r}; use nuts, posteriordb or none")
        names = tuple(m.strip() for m in methods.split(",") if m.strip())
        resolved = resolve_target(target)
        folder = _output_folder(
            report if report is not None else Path("vbayes-out") / f"compare-{_safe_name(resolved.name)}"
        )
        console = _stdout()
        console.print(f"[bold]{escape(resolved.name)}[/bold]  dim {resolved.dim}  reference {reference}")
        err = Console(stderr=True, highlight=False)
        result = run_compare(
            resolved,
            names,
            None if reference == "none" else reference,
            key=seed,
            log=lambda m: err.print(f"[dim]{m}[/dim]"),
        )
        console.print(compare_table(result.table()))
        for r in result.results:
            if r.flags:
                console.print(f"[yellow]{escape(r.method)}[/yellow]: {escape('; '.join(r.flags))}", soft_wrap=True)
        trust = f"[bold green]Trust {escape(result.recommended)}[/bold green]"
        console.print(f"\n{trust}: {escape(result.reason)}.", soft_wrap=True)
        path = write_compare_report(result, folder)
        console.print(f"wrote {path}", soft_wrap=True)


def compare_table(table: pd.DataFrame) -> Table:
    """A rich table of :meth:`Comparison.table` (method rows; flags printed separately)."""
    out = Table(show_lines=False)
    out.add_column("method", style="bold")
    cols = [(key, label, fmt) for key, label, fmt in COMPARE_COLUMNS if key in table.columns]
    for _, label, _ in cols:
        out.add_column(label, justify="right")
    out.add_column("trusted")
    if "accurate" in table.columns:
        out.add_column("accurate")
    yes_no = lambda ok: "[green]yes[/green]" if ok else "[red]no[/red]"
    for method, row in table.iterrows():
        cells = []
        for key, _, fmt in cols:
            value = row[key]
            cells.append("" if isinstance(value, float) and not np.isfinite(value) else fmt.format(value))
        cells.append(yes_no(row["trusted"]))
        if "accurate" in table.columns:
            cells.append("" if not isinstance(row["accurate"], bool | np.bool_) else yes_no(row["accurate"]))
        out.add_row(method, *cells)
    return out


def main() -> None:
    """Entry point for ``python -m vbayes``."""
    app(prog_name="vbayes")
