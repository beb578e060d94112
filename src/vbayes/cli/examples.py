"""``vbayes examples``: list the built-in example targets, or (``--questions``) the questions that runnable
examples answer. Registered on the app in :mod:`vbayes.cli`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from vbayes.cli.common import enable_x64, stdout
from vbayes.errors import VBayesError
from vbayes.examples import list_examples


def examples(
    questions: Annotated[
        bool, typer.Option("--questions", help="List the questions answered by runnable examples instead.")
    ] = False,
) -> None:
    """List the built-in example targets: name, dimension and description (or, with --questions, the questions)."""
    if questions:
        _print_questions()
        return
    enable_x64()
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
    stdout().print(table)


def _print_questions() -> None:
    """The registry of :mod:`vbayes.questions`: number, question, one-line answer, script (or "planned")."""
    from vbayes.questions import list_questions

    table = Table(title="questions about variational Bayes, answered by runnable examples (docs/questions.md)")
    table.add_column("#", justify="right")
    table.add_column("question")
    table.add_column("answer in one line")
    table.add_column("example", no_wrap=True)
    for q in list_questions():
        run = q.script if q.status == "ready" else "[dim](planned)[/dim]"
        table.add_row(str(q.number), escape(q.question), escape(q.answer), run)
    stdout().print(table)
