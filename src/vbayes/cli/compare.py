"""``vbayes compare``: run several methods on one TARGET, check each with its own diagnostics, measure each
against a reference, say which to trust, and write the HTML report. Registered on the app in :mod:`vbayes.cli`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vbayes.cli.common import (
    FLAGGED_EXIT,
    VERDICT_STYLE,
    enable_x64,
    safe_name,
    stdout,
    user_errors,
)
from vbayes.cli.loading import resolve_target
from vbayes.compilation import import_ahead
from vbayes.diagnostics import import_arviz
from vbayes.errors import MAX_SEED, VBayesError
from vbayes.outputs import check_writable
from vbayes.report import DRAWING_MODULES

if TYPE_CHECKING:
    import pandas as pd

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

HELP = (
    "Run several methods on TARGET (default: eight_schools_noncentered), read each one's verdict (its own "
    "checks), measure each against a reference, and say which to trust.\n\n"
    "TARGET: an example name, posteriordb:NAME (a posteriordb posterior, read from $VBAYES_POSTERIORDB, a clone "
    "of stan-dev/posteriordb or a folder in vbayes's layout, else from ../shared/posteriordb; it also allows "
    "--reference posteriordb), or FILE.py:NAME."
)
"""Help text of ``vbayes compare``."""


def compare(
    target: Annotated[str, typer.Argument(help="Example name, posteriordb:NAME or FILE.py:NAME.")] = (
        "eight_schools_noncentered"
    ),
    methods: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated method names (any of `vbayes fit --method`'s); default: advi-meanfield, "
            "advi-fullrank, advi-is, advi-lowrank, laplace, pathfinder, nuts, and cavi, svi for a target with a "
            "conjugate form."
        ),
    ] = None,
    reference: Annotated[str, typer.Option(help="nuts, posteriordb (for posteriordb:NAME targets) or none.")] = "nuts",
    report: Annotated[
        Path | None, typer.Option(help="Folder for the HTML report (default: vbayes-out/compare-<target>).")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Random seed.")] = 0,
) -> None:
    """Compare methods on one target; print the table and the recommendation; write the HTML report."""
    enable_x64()
    import_ahead("pandas", "blackjax", import_arviz, *DRAWING_MODULES)
    from vbayes.compare import compare as run_compare
    from vbayes.report import write_compare_report

    with user_errors():
        if reference not in ("nuts", "posteriordb", "none"):
            raise VBayesError(f"unknown reference {reference!r}; use nuts, posteriordb or none")
        names = None if methods is None else tuple(m.strip() for m in methods.split(",") if m.strip())
        resolved = resolve_target(target)
        folder = check_writable(
            report if report is not None else Path("vbayes-out") / f"compare-{safe_name(resolved.name)}"
        )
        console = stdout()
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
            status = r.fit.verdict.status
            style = VERDICT_STYLE[status]
            word = "FLAGGED" if status == "flagged" else status
            detail = "; ".join(r.flags) if r.flags else r.fit.verdict.summary().partition(": ")[2]
            line = f"[bold]{escape(r.method)}[/bold] verdict: [{style}]{word}[/{style}] — {escape(detail)}"
            console.print(line, soft_wrap=True)
        if result.recommended == "none":
            console.print(f"\n[bold red]Trust none[/bold red]: {escape(result.reason)}.", soft_wrap=True)
        else:
            trust = f"[bold green]Trust {escape(result.recommended)}[/bold green]"
            console.print(f"\n{trust}: {escape(result.reason)}.", soft_wrap=True)
        path = write_compare_report(result, folder)
        console.print(f"wrote {path}", soft_wrap=True)
    if result.recommended == "none":
        raise typer.Exit(code=FLAGGED_EXIT)


def compare_table(table: pd.DataFrame) -> Table:
    """A rich table of :meth:`Comparison.table` (method rows; flags printed separately)."""
    out = Table(show_lines=False)
    out.add_column("method", style="bold")
    cols = [(key, label, fmt) for key, label, fmt in COMPARE_COLUMNS if key in table.columns]
    for _, label, _ in cols:
        out.add_column(label, justify="right")
    out.add_column("verdict")
    if "accurate" in table.columns:
        out.add_column("accurate")
    yes_no = lambda ok: "[green]yes[/green]" if ok else "[red]no[/red]"
    for method, row in table.iterrows():
        cells = []
        for key, _, fmt in cols:
            value = row[key]
            cells.append("" if isinstance(value, float) and not np.isfinite(value) else fmt.format(value))
        verdict = row["verdict"]
        cells.append(f"[{VERDICT_STYLE[verdict]}]{'FLAGGED' if verdict == 'flagged' else verdict}[/]")
        if "accurate" in table.columns:
            cells.append("" if not isinstance(row["accurate"], bool | np.bool_) else yes_no(row["accurate"]))
        out.add_row(method, *cells)
    return out
