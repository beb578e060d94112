"""``vbayes vae``: train, evaluate and sample variational autoencoders (a typer sub-app of ``vbayes``, added to the
app in :mod:`vbayes.cli`).

Thin: it reads options into :class:`ModelConfig` / :class:`TrainConfig`, calls :func:`train`,
:func:`evaluate` and the plots, and prints. Expected failures print ``error: …`` and exit with status 1.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from vbayes.cli.common import INTERRUPTED_EXIT, stdout, user_errors
from vbayes.errors import VBayesError

vae_app = typer.Typer(
    name="vae",
    help="Variational autoencoders: train (vae | iwae | ae), evaluate log p(x) and diagnostics, draw pictures.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _load_data(spec: str):
    from vbayes.vae.data import load

    if spec != "digits" and not Path(spec).is_dir():
        raise VBayesError(f"data {spec!r}: use digits or a folder holding the MNIST IDX files")
    return load(spec)


def _fmt(value: float, digits: int = 2) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


@vae_app.command("train")
def train_cmd(
    data: Annotated[str, typer.Option(help="digits (scikit-learn's 8x8, built in) or a folder of MNIST IDX files.")] = (
        "digits"
    ),
    model: Annotated[
        str, typer.Option(help="vae (ELBO), iwae (importance-weighted bound) or ae (autoencoder).")
    ] = "vae",
    latent: Annotated[int, typer.Option(help="Latent dimension.")] = 16,
    beta: Annotated[float, typer.Option(help="Weight of the KL term (1: the ELBO).")] = 1.0,
    epochs: Annotated[int, typer.Option(help="Maximum number of epochs.")] = 200,
    out: Annotated[Path | None, typer.Option(help="Run folder (default vbayes-out/vae-<data>-<model>).")] = None,
    k: Annotated[int, typer.Option(help="Importance samples for iwae.")] = 50,
    iwae_gradient: Annotated[
        str,
        typer.Option(help="iwae's gradient: dreg (doubly reparameterised, Tucker et al.) or reparam (Burda et al.)."),
    ] = "dreg",
    network: Annotated[str, typer.Option(help="mlp or conv.")] = "mlp",
    width: Annotated[int, typer.Option(help="Hidden width (mlp) or channels (conv).")] = 200,
    depth: Annotated[int, typer.Option(help="Hidden layers of the MLPs.")] = 2,
    activation: Annotated[str, typer.Option(help="tanh, relu, softplus or gelu.")] = "tanh",
    likelihood: Annotated[str, typer.Option(help="bernoulli, gaussian, categorical or continuous_bernoulli.")] = (
        "bernoulli"
    ),
    sd: Annotated[float, typer.Option(help="Gaussian likelihood: the (initial) sd.")] = 0.1,
    sd_mode: Annotated[str, typer.Option(help="Gaussian likelihood: fixed, global or pixel.")] = "fixed",
    batch_size: Annotated[int, typer.Option(help="Minibatch size.")] = 100,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    anneal_steps: Annotated[int, typer.Option(help="KL annealing: steps to raise the KL weight from 0 to beta.")] = 0,
    free_bits: Annotated[float, typer.Option(help="Free bits: nats per latent dimension not penalised.")] = 0.0,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better validation bound.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed (initialisation, batches, binarisation).")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue the run saved in --out.")] = False,
    devices: Annotated[
        str | None, typer.Option(help="Data parallel over JAX devices: 'all' or a count (batch size a multiple).")
    ] = None,
) -> None:
    """Train on the data, checkpointing every epoch (Ctrl-C saves; --resume continues); write pictures."""
    from vbayes.data.devices import parse_devices_option
    from vbayes.vae.checkpoint import load_run
    from vbayes.vae.config import TrainConfig
    from vbayes.vae.diagnostics import activity, collapse_messages, kl_per_dimension
    from vbayes.vae.model import ModelConfig
    from vbayes.vae.plots import write_figures
    from vbayes.vae.trainer import train

    with user_errors():
        devices, note = parse_devices_option(devices)
        if note:
            stdout().print(note, soft_wrap=True)
        dataset = _load_data(data)
        folder = out or Path("vbayes-out") / f"vae-{'digits' if data == 'digits' else Path(data).name}-{model}"
        levels = dataset.levels if likelihood == "categorical" else 256
        mc = ModelConfig(
            dataset.data_shape,
            latent=latent,
            network=network,
            width=width,
            depth=depth,
            activation=activation,
            likelihood=likelihood,
            sd=sd,
            sd_mode=sd_mode,
            levels=levels,
        )
        tc = TrainConfig(
            kind=model,
            k=k,
            iwae_gradient=iwae_gradient,
            beta=beta,
            anneal_steps=anneal_steps,
            free_bits=free_bits,
            batch_size=batch_size,
            learning_rate=lr,
            epochs=epochs,
            patience=patience,
            seed=seed,
        )
        spec = "digits" if data == "digits" else str(Path(data).resolve())
        if resume:  # the saved configs, with the new --epochs and --patience
            saved = load_run(folder).train_config
            mc, tc = None, dataclasses.replace(saved, epochs=epochs, patience=patience)
        result = train(dataset, mc, tc, out=folder, resume=resume, data_spec=spec, devices=devices)
        console = stdout()
        last = result.history[-1] if result.history else {}
        label = {"vae": "ELBO", "iwae": f"IWAE-{k}", "ae": "log p(x|z)"}[model]
        console.print(
            f"[bold]{result.outcome}[/bold] after {result.epochs} epochs ({result.steps} steps); "
            f"train {label} {_fmt(last.get('train_bound'))}, validation {_fmt(last.get('val_bound'))} "
            f"(best at epoch {result.best_epoch}) nats per image",
            soft_wrap=True,
        )
        if result.outcome == "interrupted":
            console.print(f"checkpoint saved in {folder}; continue with --resume --out {folder}", soft_wrap=True)
            raise typer.Exit(code=INTERRUPTED_EXIT)
        x_check = dataset.val if len(dataset.val) else dataset.train
        if model != "ae":
            act = activity(result.model, x_check)
            messages = collapse_messages(kl_per_dimension(result.model, x_check), act)
            console.print(f"active units {int((act > 0.01).sum())}/{len(act)} (validation data)")
            for m in messages:
                console.print(f"[yellow]warning: {escape(m)}[/yellow]", soft_wrap=True)
        x_show = dataset.test if len(dataset.test) else x_check
        y_show = dataset.test_labels if len(dataset.test) else dataset.val_labels
        for path in write_figures(result.model, x_show[:1000], y_show[:1000], folder, kind=model, key=seed):
            console.print(f"wrote {path}", soft_wrap=True)


@vae_app.command("evaluate")
def evaluate_cmd(
    folder: Annotated[Path, typer.Argument(help="A run folder written by `vbayes vae train`.")],
    k: Annotated[int, typer.Option(help="Importance samples for the IWAE estimate of log p(x).")] = 5000,
    n: Annotated[int | None, typer.Option(help="Use only the first N test images.")] = None,
    data: Annotated[
        str | None, typer.Option(help="Override the data the run was trained on (digits or folder).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed for the Monte Carlo estimates.")] = 0,
) -> None:
    """Test ELBO, IWAE-k log p(x), reconstruction, KL per dimension, active units; writes evaluation.json."""
    from vbayes.vae.checkpoint import load_run
    from vbayes.vae.diagnostics import evaluate

    with user_errors():
        run = load_run(folder)
        dataset = _load_data(data or run.data or "digits")
        x = dataset.test if n is None else dataset.test[:n]
        report = evaluate(run.model, x, seed, k=k, kind=run.train_config.kind, chunk=min(k, 500))
        console = stdout()
        table = Table(title=f"{escape(str(folder))}: {report.n} test images, nats per image")
        table.add_column("quantity", style="bold")
        table.add_column("value", justify="right")
        rows = [
            ("ELBO", _fmt(report.elbo)),
            (f"IWAE-{report.k} (≈ log p(x))", _fmt(report.iwae)),
            ("  its standard error over the images", _fmt(report.iwae_se)),
            ("E_q log p(x | z)", _fmt(report.reconstruction)),
            ("KL(q ‖ p)", _fmt(report.kl)),
            ("reconstruction error Σ(x − x̂)²", _fmt(report.reconstruction_error)),
            ("active units", f"{report.active_units}/{len(report.activity)}"),
        ]
        for name, value in rows:
            table.add_row(name, value)
        console.print(table)
        kl_line = " ".join(f"{v:.2f}" for v in report.kl_per_dim)
        console.print(f"KL per latent dimension: {kl_line}", soft_wrap=True)
        for m in report.warnings:
            console.print(f"[yellow]warning: {escape(m)}[/yellow]", soft_wrap=True)
        path = Path(folder) / "evaluation.json"
        path.write_text(json.dumps(report.to_dict(), indent=1))
        console.print(f"wrote {path}", soft_wrap=True)


@vae_app.command("sample")
def sample_cmd(
    folder: Annotated[Path, typer.Argument(help="A run folder written by `vbayes vae train`.")],
    data: Annotated[
        str | None, typer.Option(help="Override the data the run was trained on (digits or folder).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed for the prior samples.")] = 0,
) -> None:
    """Write samples.png (decoded z ~ N(0, I)), reconstructions.png, interpolation.png and latent.png."""
    from vbayes.vae.checkpoint import load_run
    from vbayes.vae.plots import write_figures

    with user_errors():
        run = load_run(folder)
        dataset = _load_data(data or run.data or "digits")
        x, y = (dataset.test, dataset.test_labels) if len(dataset.test) else (dataset.train, dataset.train_labels)
        for path in write_figures(run.model, x[:1000], y[:1000], folder, kind=run.train_config.kind, key=seed):
            stdout().print(f"wrote {path}", soft_wrap=True)
