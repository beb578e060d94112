"""Console and output helpers shared by the ``vbayes`` commands: standard output, ``error: …`` exits and
warnings, double precision, output folders, JSON-safe values, and the printing of a fit's outcome and summary.

The CLI is thin by design (DESIGN.md, layer 7): every expected failure becomes ``error: <message>`` on stderr and
exit status 1, never a traceback (:func:`user_errors`, :func:`fail`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vbayes import Fit
from vbayes.errors import VBayesError
from vbayes.samples import Empirical

if TYPE_CHECKING:
    import pandas as pd


def stdout() -> Console:
    """Standard output; 120 columns when it is not a terminal (rich would use 80)."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=120)


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` in red on stderr and return the exit (status 1) to raise."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error: {escape(message)}[/red]")
    return typer.Exit(code=1)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause (bad input, missing files, unwritable output) into ``error: …``."""
    try:
        yield
    except VBayesError as e:
        raise fail(str(e)) from None
    except FileNotFoundError as e:
        raise fail(f"file not found: {e.filename or e}") from None
    except OSError as e:
        raise fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e)) from None


def enable_x64() -> None:
    """Double precision for everything the command computes (before any array is made)."""
    jax.config.update("jax_enable_x64", True)


def warn(message: str) -> None:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[yellow]warning: {escape(message)}[/yellow]")


def safe_name(name: str) -> str:
    """``name`` usable as one folder name."""
    return re.sub(r"[^\w.-]", "_", name) or "target"


def jsonable(x: Any) -> Any:
    """``x`` with NumPy/JAX scalars and arrays as plain Python, and non-finite floats as ``None``."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, np.generic, jax.Array)):
        return jsonable(np.asarray(x).tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


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
    Laplace, the log evidence and the number of curvature products; for importance sampling, its log evidence)."""
    i = result.info
    style = _OUTCOME_STYLE.get(i.outcome, "white") if not result.verdict.status == "flagged" else "yellow"
    if "log_evidence" in i.extra:
        tail = f"curvature products {i.extra.get('products')}, log evidence (Laplace) {i.extra['log_evidence']:.4f}"
    elif "density_evals" in i.extra and i.importance is not None:  # importance sampling: its estimate of log Z
        tail = f"evaluations of p̃ {i.extra['density_evals']}, log evidence (importance) {i.importance.log_evidence:.4f}"
    elif isinstance(result.q, Empirical):  # MCMC draws have no density: no ELBO to show
        tail = ""
    else:
        tail = f"ELBO {result.elbo:.4f}"
    console.print(
        f"[{style}]{i.outcome}[/{style}]: {escape(i.message.rstrip('.'))}; steps {i.steps}, gradient evaluations "
        f"{i.grad_evals}, skipped {i.skipped_steps}, wall {i.wall_time:.2f} s" + (f", {tail}" if tail else ""),
        soft_wrap=True,
    )


VERDICT_STYLE = {"trusted": "bold green", "flagged": "bold red", "unchecked": "bold yellow"}
FLAGGED_EXIT = 3
"""Exit status of a command whose fit finished but is flagged by its own checks."""
INTERRUPTED_EXIT = 130
"""Exit status of a command stopped by Ctrl-C after writing what it had (128 + SIGINT, as a shell reports it)."""


def print_verdict(console: Console, result: Fit) -> None:
    """The verdict on its own line: trusted / FLAGGED / unchecked, what each check found, and what the checks
    cost as a share of the fit."""
    v = result.verdict
    style = VERDICT_STYLE[v.status]
    word = "FLAGGED" if v.status == "flagged" else v.status
    cost = ""
    if v.checks:
        share = v.seconds / max(result.info.wall_time, 1e-9)
        cost = f" [dim](checks: {v.seconds:.2f} s, {share:.0%} of the fit; {v.evaluations} evaluations)[/dim]"
    lines = [f"[{style}]verdict: {word}[/{style}]{cost}"]
    for c in v.checks:
        mark = {"pass": "[green]✓[/green]", "note": "[yellow]![/yellow]", "flag": "[red]✗[/red]", "skip": "–"}[c.status]
        lines.append(f"  {mark} {c.name}: {escape(c.message)}")
    console.print("\n".join(lines), soft_wrap=True)


def summary_by_parameter(summary: pd.DataFrame, order: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per named parameter (``x[0]``, ``x[1]``, … grouped as ``x``): its size, the median of its means, and the
    min / median / max of its sds; parameters named in ``order`` first, in that order."""
    import pandas as pd

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
