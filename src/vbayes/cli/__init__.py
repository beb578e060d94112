"""The ``vbayes`` command: list the built-in examples, fit a target and write a small report.

Thin by design (DESIGN.md, layer 7): it resolves what the user named into a :class:`~vbayes.Target`,
calls a library driver, and prints and writes the resulting :class:`~vbayes.Fit`. Every expected
failure becomes ``error: <message>`` on stderr and exit status 1, never a traceback.

This module holds the typer ``app`` and registers the commands on it; each command lives in its own module
(:mod:`~vbayes.cli.examples`, :mod:`~vbayes.cli.fit`, :mod:`~vbayes.cli.gmm`, :mod:`~vbayes.cli.compare`,
:mod:`~vbayes.cli.models` (``vbayes compare-models``),
and the ``vbayes vae`` sub-app in :mod:`~vbayes.cli.vae`), on top of :mod:`~vbayes.cli.common` (output
helpers) and :mod:`~vbayes.cli.loading` (targets and data from what the user named).
"""

from __future__ import annotations

import atexit
import os
import sys

import typer

from vbayes.cli import compare, examples, fit, gmm, lda, models
from vbayes.cli.vae import vae_app

app = typer.Typer(
    name="vbayes",
    help="Variational Bayesian inference on JAX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(vae_app, name="vae")

app.command()(examples.examples)
app.command(help=fit.HELP)(fit.fit)
app.command(help=gmm.HELP)(gmm.gmm)
app.command(help=lda.HELP)(lda.lda)
app.command(help=compare.HELP)(compare.compare)
app.command(name="compare-models", help=models.HELP)(models.compare_models)


def main() -> None:
    """Entry point of the ``vbayes`` command and of ``python -m vbayes``: runs :data:`app`, then ends the process.

    Once the command has returned (its files written and closed, its output flushed, the exit handlers run: a
    local Dask cluster is closed by one), the process ends without Python's final teardown of every module and
    object, which for JAX's client and compiled programs takes ~0.4 s and changes nothing the command wrote. An
    unexpected exception is left to propagate as usual."""
    try:
        app(prog_name="vbayes")
        code: object = 0
    except SystemExit as stop:
        code = stop.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`vbayes fit ... | head`) or a closed stream
            pass
    atexit._run_exitfuncs()
    os._exit(code)
