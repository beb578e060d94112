"""``vbayes fit``: fit an approximation to a TARGET's posterior with a method (ADVI or Laplace), print its outcome
and summary, and write the report (trace.png, summary.csv, info.json; posterior_sd.png on a mesh).
Registered on the app in :mod:`vbayes.cli`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape

from vbayes import Fit, Target, advi, laplace
from vbayes.cli.common import (
    FIRST_ROWS,
    MAX_SUMMARY_ROWS,
    enable_x64,
    fail,
    jsonable,
    output_folder,
    print_outcome,
    safe_name,
    stdout,
    summary_by_parameter,
    summary_table,
    user_errors,
)
from vbayes.cli.loading import resolve_mesh, resolve_target
from vbayes.errors import VBayesError
from vbayes.families import FAMILIES
from vbayes.infer.laplace import CURVATURES
from vbayes.report import plot_mesh_fields, plot_trace

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


HELP = "Fit an approximation to TARGET's posterior, print it, and write a report.\n\n" + TARGET_HELP
"""Help text of ``vbayes fit``."""


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
    enable_x64()
    with user_errors():
        _check_choices(method, family, curvature)
        resolved = resolve_target(target)
        folder = output_folder(out if out is not None else Path("vbayes-out") / safe_name(resolved.name))
        console = stdout()
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
        raise fail(f"the fit diverged (see the message above); its trace and summary are in {folder}")


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
    info.write_text(json.dumps(jsonable(record), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return [png, csv, info]


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
