"""``vbayes compare-models``: fit two or more models of the same data, estimate each one's expected log predictive
density by q-corrected PSIS-LOO, and say which predicts best (or that they tie). Registered on the app in
:mod:`vbayes.cli`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vbayes import methods as registry
from vbayes.cli.common import FLAGGED_EXIT, VERDICT_STYLE, enable_x64, stdout, user_errors
from vbayes.cli.loading import resolve_target
from vbayes.compilation import import_ahead
from vbayes.diagnostics import import_arviz
from vbayes.errors import MAX_SEED, VBayesError
from vbayes.outputs import check_writable, write_atomic
from vbayes.report import DRAWING_MODULES

HELP = (
    "Fit each of two or more models of the same data (TARGETs: example names, posteriordb:NAME or FILE.py:NAME, "
    "each a NumPyro model or a from_loglik target), estimate each one's expected log predictive density by PSIS-LOO "
    "corrected for q ≠ posterior, and compare: elpd_loo ± se, the difference to the best ± its se, stacking "
    "weights, and the evidence estimates each fit has (importance-sampling log Z, Laplace log Z, ELBO). Writes "
    "model_comparison.png and model_comparison.csv.\n\nEach model is fitted by --method, or by the method `vbayes "
    f"compare` recommends for it (slower: it runs several). Exit status: 0, or {FLAGGED_EXIT} when the best model's "
    "fit or its LOO cannot be vouched for; 1 on bad input."
)
"""Help text of ``vbayes compare-models``."""

COLUMNS = (
    ("method", "method", "{}"),
    ("elpd_loo", "elpd_loo", "{:.1f}"),
    ("se", "se", "{:.1f}"),
    ("elpd_diff", "diff", "{:.1f}"),
    ("se_diff", "se diff", "{:.1f}"),
    ("p_loo", "p_loo", "{:.1f}"),
    ("weight", "weight", "{:.2f}"),
    ("bad_k", "k̂ ≥ 0.7", "{:d}"),
    ("log_z_is", "log Z (IS)", "{:.1f}"),
    ("log_z_laplace", "log Z (Laplace)", "{:.1f}"),
    ("elbo", "ELBO", "{:.1f}"),
)


def compare_models(
    targets: Annotated[list[str], typer.Argument(help="Two or more models of the same data.", show_default=False)],
    method: Annotated[
        str | None, typer.Option(help=f"Fit every model by this method ({', '.join(registry.METHODS)}).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("vbayes-out") / "compare-models",
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Random seed.")] = 0,
) -> None:
    """Fit the models, print the comparison and its verdict, write the picture and the table."""
    enable_x64()
    import_ahead("pandas", "blackjax", import_arviz, *DRAWING_MODULES)
    from vbayes.model_comparison import compare_models as run
    from vbayes.report import plot_model_comparison

    with user_errors():
        if method is not None:
            registry.get(method)
        models: dict[str, object] = {}
        for spec in targets:
            target = resolve_target(spec)
            name = target.name if target.name not in models else spec
            if name in models:
                raise VBayesError(f"model {spec!r} is named twice")
            models[name] = target
        folder = check_writable(out)
        err = Console(stderr=True, highlight=False)
        result = run(models, method, key=seed, log=lambda m: err.print(f"[dim]{escape(m)}[/dim]"))
        console = stdout()
        table = result.table()
        console.print(_table(table))
        for r in result.results:
            status = r.fit.verdict.status
            word = "FLAGGED" if status == "flagged" else status
            detail = f"; LOO: {'; '.join(r.loo.warnings())}" if r.loo.warnings() else ""
            line = f"[bold]{escape(r.name)}[/bold] ({escape(r.method)}): [{VERDICT_STYLE[status]}]{word}[/]"
            console.print(line + escape(detail), soft_wrap=True)
        console.print(f"\n[bold]{escape(result.verdict)}[/bold]", soft_wrap=True)
        png = plot_model_comparison(result, folder / "model_comparison.png")
        csv = write_atomic(folder / "model_comparison.csv", lambda p: table.to_csv(p))
        console.print(f"wrote {png.name}, {csv.name} to {folder}", soft_wrap=True)
    if not result.results[0].trusted:
        raise typer.Exit(code=FLAGGED_EXIT)


def _table(table) -> Table:
    out = Table(show_lines=False)
    out.add_column("model", style="bold", no_wrap=True)
    for key, label, _ in COLUMNS:
        out.add_column(label, justify="right", no_wrap=key == "method")
    for model, row in table.iterrows():
        cells = []
        for key, _, fmt in COLUMNS:
            value = row[key]
            finite = not isinstance(value, float | np.floating) or np.isfinite(value)
            cells.append(fmt.format(int(value) if fmt == "{:d}" else value) if finite else "")
        out.add_row(str(model), *cells)
    return out
