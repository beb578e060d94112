"""``vbayes fit``: fit an approximation to a TARGET's posterior with any method of the registry
(:mod:`vbayes.methods`), print its outcome, the verdict of its own checks and its summary, and write the report
(trace.png, summary.csv, info.json; posterior_sd.png on a mesh).
Registered on the app in :mod:`vbayes.cli`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape

from vbayes import methods as registry
from vbayes.cli.common import (
    FIRST_ROWS,
    FLAGGED_EXIT,
    INTERRUPTED_EXIT,
    MAX_SUMMARY_ROWS,
    enable_x64,
    fail,
    jsonable,
    print_outcome,
    print_verdict,
    safe_name,
    stdout,
    summary_by_parameter,
    summary_table,
    user_errors,
)
from vbayes.cli.loading import resolve_mesh, resolve_target
from vbayes.compilation import import_ahead
from vbayes.errors import MAX_SEED, VBayesError
from vbayes.families import PointMass
from vbayes.fit import Fit
from vbayes.outputs import check_writable, write_atomic, write_json
from vbayes.predictive import require_observations
from vbayes.report import DRAWING_MODULES, plot_mesh_fields, plot_ppc, plot_trace

if TYPE_CHECKING:
    import pandas as pd

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
    "Prints the fit's outcome, its verdict and summary, and writes trace.png (the method's trace), summary.csv and "
    "info.json (the record, verdict included) to --out. FILE.py is executed as Python: run only files you trust."
)


HELP = (
    "Fit an approximation to TARGET's posterior with a method, print it with the verdict of its own checks, and "
    "write a report.\n\n" + TARGET_HELP + "\n\nExit status: 0 when the fit's own checks vouch for it (or none could "
    f"run), {FLAGGED_EXIT} when the fit finished but its checks flag it (do not use it as the posterior), 1 on bad "
    f"input or a fit that diverged, 2 on a usage error (an unknown option, a missing argument), {INTERRUPTED_EXIT} "
    "when interrupted (Ctrl-C; the fit so far is written)."
)
"""Help text of ``vbayes fit``."""


def fit(
    target: Annotated[str, typer.Argument(help="A built-in example name or FILE.py:NAME.", show_default=False)],
    method: Annotated[str, typer.Option(help=f"Inference method: {', '.join(registry.METHODS)}.")] = "advi",
    rank: Annotated[
        int | None,
        typer.Option(min=1, help="Rank of advi-lowrank (default 2) or of laplace's lowrank/ggn curvature."),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(min=1, help="Step budget: ADVI steps, L-BFGS iterations, NUTS draws, CAVI passes, SVI epochs."),
    ] = None,
    checks: Annotated[
        str, typer.Option(help="The verdict's checks: default, all (adds restarts: a second fit), none.")
    ] = "default",
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Random seed (fit and summary draws).")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: vbayes-out/<target name>).", show_default=False)
    ] = None,
    draws: Annotated[int, typer.Option(min=2, help="Draws from q for the summary.")] = 4000,
    predict: Annotated[
        bool,
        typer.Option(
            "--predict",
            help="Also check the model against its data: the posterior predictive check (ppc.png, for a NumPyro "
            "model) and the q-corrected PSIS-LOO (loo.json, printed). Needs per-observation log-likelihoods: a "
            "NumPyro model or a from_loglik target.",
        ),
    ] = False,
) -> None:
    """Resolve TARGET, run the method, print the outcome, verdict and summary, write the report; see the help."""
    enable_x64()
    import_ahead("pandas", *DRAWING_MODULES)
    with user_errors():
        chosen = registry.get(method)
        if checks not in ("default", "all", "none"):
            raise VBayesError(f"unknown checks {checks!r}; use default, all or none")
        options = {}
        if rank is not None:
            if chosen.rank is None:
                raise VBayesError(f"--rank applies to advi-lowrank and the laplace methods, not {method}")
            options[chosen.rank] = rank
        if steps is not None:
            options[chosen.steps] = steps
        if chosen.kind == "vi":
            options["progress"] = True
        elif chosen.kind == "laplace":
            console_err = Console(stderr=True, highlight=False, soft_wrap=True)
            options["log"] = lambda m: console_err.print(f"[dim]{escape(m)}[/dim]")
        resolved = resolve_target(target)
        if predict:
            require_observations(resolved)
        folder = check_writable(out if out is not None else Path("vbayes-out") / safe_name(resolved.name))
        console = stdout()
        console.print(f"[bold]{escape(resolved.name)}[/bold]  dim {resolved.dim}  method {method}")
        result = registry.fit(resolved, method, key=seed, checks=checks, **options)
        summary = result.summary(draws, seed)
        print_outcome(console, result)
        print_verdict(console, result)
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
        if predict and result.info.outcome != "diverged":
            written += write_predictive(result, folder, seed, console)
        console.print(f"wrote {', '.join(p.name for p in written)} to {folder}", soft_wrap=True)
    if result.info.outcome == "interrupted":  # the result so far is written; the shell sees the interruption
        console.print(f"[yellow]interrupted[/yellow]: the fit so far is in {folder}", soft_wrap=True)
        raise typer.Exit(code=INTERRUPTED_EXIT)
    if result.info.outcome == "diverged":
        raise fail(f"the fit diverged (see the message above); its trace and summary are in {folder}")
    if result.verdict.status == "flagged":
        console.print(
            f"[bold red]verdict: FLAGGED[/bold red] — {escape(result.verdict.flags[0])}. Do not use this fit as the "
            "posterior: try another method (vbayes compare) or more steps.",
            soft_wrap=True,
        )
        raise typer.Exit(code=FLAGGED_EXIT)


def write_outputs(result: Fit, summary: pd.DataFrame, folder: Path) -> list[Path]:
    """Write ``trace.png``, ``summary.csv`` and ``info.json`` (last: the record of the run) into ``folder``, each
    atomically; return their paths."""
    title = f"{result.target.name}: {result.info.method} ({result.info.outcome})"
    png = plot_trace(result.trace, folder / "trace.png", title)
    csv = write_atomic(folder / "summary.csv", lambda p: summary.to_csv(p, index_label="parameter"))
    run = result.info
    record = {"target": result.target.name, "dim": result.target.dim}
    record |= dataclasses.asdict(dataclasses.replace(run, importance=None))
    if run.importance is not None:  # by name; the check's draws and their q stay in memory (for LOO)
        record["importance"] = {k: v for k, v in run.importance._asdict().items() if k not in ("draws", "q")}
    record["elbo"] = result.elbo
    record["trusted"] = result.trusted
    info = write_json(folder / "info.json", jsonable(record))
    return [png, csv, info]


def write_predictive(result: Fit, folder: Path, seed: int, console: Console) -> list[Path]:
    """``ppc.png`` (a NumPyro model's observed sites against data replicated from the fit) and ``loo.json`` (the
    q-corrected PSIS-LOO, also printed); a fit that has no draws to give (a point estimate) gets neither LOO nor a
    check, and says why."""
    from vbayes.cross_validation import loo
    from vbayes.predictive import observed_data

    if isinstance(result.q, PointMass):
        console.print("[yellow]no LOO or predictive check[/yellow]: a point estimate has no posterior draws")
        return []
    written = []
    observed = observed_data(result.target)
    if observed:
        title = f"{result.target.name}: posterior predictive check ({result.info.method})"
        written.append(plot_ppc(observed, result.predict(n=200, key=seed), folder / "ppc.png", title))
    cv = loo(result)  # the importance check's draws (they follow the seed), else fresh ones
    style = "green" if cv.reliable else "yellow"
    console.print(f"[{style}]LOO[/{style}]: {escape(cv.summary())}", soft_wrap=True)
    record = cv._asdict() | {"n_obs": cv.n_obs, "reliable": cv.reliable, "warnings": cv.warnings()}
    written.append(write_json(folder / "loo.json", jsonable(record)))
    return written


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
