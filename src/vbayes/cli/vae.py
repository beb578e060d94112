"""``vbayes vae``: train, evaluate and sample variational autoencoders (a typer sub-app of ``vbayes``, added to the
app in :mod:`vbayes.cli`).

Thin: it reads options into :class:`ModelConfig` / :class:`TrainConfig`, calls :func:`train`,
:func:`evaluate` and the plots, and prints. Expected failures print ``error: …`` and exit with status 1; an option
out of its range (a count below 1, say) is a usage error, status 2.

``vae train --resume`` continues the run in ``--out`` with its saved options: an option left out takes its saved
value; ``--epochs``, ``--patience`` (:data:`~vbayes.vae.checkpoint.RESUMABLE`) and ``--devices`` (not saved) may
change; any other option given with a value other than the saved one is an error naming the option, the saved and
the given value, and nothing is written.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from vbayes.cli.common import INTERRUPTED_EXIT, stdout, user_errors
from vbayes.errors import MAX_SEED, VBayesError

if TYPE_CHECKING:
    from vbayes.vae.config import TrainConfig
    from vbayes.vae.data import Dataset
    from vbayes.vae.model import ModelConfig

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


MODEL_OPTIONS = {
    "latent": "latent",
    "network": "network",
    "width": "width",
    "depth": "depth",
    "activation": "activation",
    "likelihood": "likelihood",
    "sd": "sd",
    "sd_mode": "sd_mode",
}
"""``vae train``'s parameters that set a :class:`ModelConfig` field (parameter → field)."""
TRAIN_OPTIONS = {
    "model": "kind",
    "k": "k",
    "iwae_gradient": "iwae_gradient",
    "beta": "beta",
    "anneal_steps": "anneal_steps",
    "free_bits": "free_bits",
    "batch_size": "batch_size",
    "lr": "learning_rate",
    "epochs": "epochs",
    "patience": "patience",
    "seed": "seed",
}
"""``vae train``'s parameters that set a :class:`TrainConfig` field (parameter → field); --data is saved as the
run's data, --out, --resume and --devices are not saved."""
SEED = {"min": 0, "max": MAX_SEED}


def _option(param: str) -> str:
    return "--" + param.replace("_", "-")


def _given(ctx: typer.Context) -> set[str]:
    """The parameters the user set: every ``ParameterSource`` (command line, environment, ...) but ``DEFAULT``
    counts (by name: typer may bring its own copy of click's enum)."""
    return {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"}


def _with_option(error: VBayesError) -> VBayesError:
    """A config error (``field must …``) with the field named as its command-line option (``--lr must …``)."""
    message = str(error)
    for param, field in {**MODEL_OPTIONS, **TRAIN_OPTIONS}.items():
        if message.startswith(f"{field} must "):
            return VBayesError(_option(param) + message[len(field) :])
    return error


def _data_spec(data: str) -> str:
    return "digits" if data == "digits" else str(Path(data).resolve())


def _new_configs(options: dict[str, Any], dataset: Dataset) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs of a new run from the command's options."""
    from vbayes.vae.config import TrainConfig, check_model_config
    from vbayes.vae.model import ModelConfig

    levels = dataset.levels if options["likelihood"] == "categorical" else 256
    fields = {field: options[param] for param, field in MODEL_OPTIONS.items()}
    try:
        mc = check_model_config(ModelConfig(dataset.data_shape, levels=levels, **fields))
        return mc, TrainConfig(**{field: options[param] for param, field in TRAIN_OPTIONS.items()})
    except VBayesError as e:
        raise _with_option(e) from None


def _resumed_configs(
    folder: Path, options: dict[str, Any], given: set[str]
) -> tuple[ModelConfig, TrainConfig, str, int]:
    """``(model config, train config, data spec, epochs done)`` to resume ``folder`` with: the saved values, the
    given options in their place; a :class:`VBayesError` naming each given option that differs from its saved
    value when it may not change (:data:`~vbayes.vae.checkpoint.RESUMABLE`, and --devices, which is not saved)."""
    from vbayes.vae.checkpoint import RESUMABLE, check_run_folder, read_config, read_state, resume_conflicts

    saved_mc, saved_tc, config = read_config(check_run_folder(folder))
    done = read_state(folder)["epoch"]
    try:
        mc = dataclasses.replace(saved_mc, **{f: options[p] for p, f in MODEL_OPTIONS.items() if p in given})
        tc = dataclasses.replace(saved_tc, **{f: options[p] for p, f in TRAIN_OPTIONS.items() if p in given})
    except VBayesError as e:
        raise _with_option(e) from None
    param = {field: param for param, field in {**MODEL_OPTIONS, **TRAIN_OPTIONS}.items()}
    bad = [(_option(param.get(f, f)), old, new) for f, old, new in resume_conflicts((saved_mc, saved_tc), (mc, tc))]
    spec = config["data"]
    if "data" in given and spec is not None and _data_spec(options["data"]) != spec:
        bad.append(("--data", spec, _data_spec(options["data"])))
    if bad:
        listed = "; ".join(f"{option} (saved {old!r}, given {new!r})" for option, old, new in bad)
        free = [_option(p) for p, f in TRAIN_OPTIONS.items() if f in RESUMABLE] + ["--devices"]
        raise VBayesError(
            f"cannot resume {folder} with a different {listed}: with --resume only {', '.join(free[:-1])} and "
            f"{free[-1]} may change "
            "(leave the other options out to keep their saved values)"
        )
    return mc, tc, spec or _data_spec(options["data"]), done


@vae_app.command("train")
def train_cmd(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(help="digits (scikit-learn's 8x8, built in) or a folder of MNIST IDX files.")] = (
        "digits"
    ),
    model: Annotated[
        str, typer.Option(help="vae (ELBO), iwae (importance-weighted bound) or ae (autoencoder).")
    ] = "vae",
    latent: Annotated[int, typer.Option(min=1, help="Latent dimension.")] = 16,
    beta: Annotated[float, typer.Option(help="Weight of the KL term (1: the ELBO).")] = 1.0,
    epochs: Annotated[
        int, typer.Option(min=1, help="Maximum number of epochs (with --resume: in all, default the saved number).")
    ] = 200,
    out: Annotated[Path | None, typer.Option(help="Run folder (default vbayes-out/vae-<data>-<model>).")] = None,
    k: Annotated[int, typer.Option(min=1, help="Importance samples for iwae.")] = 50,
    iwae_gradient: Annotated[
        str,
        typer.Option(help="iwae's gradient: dreg (doubly reparameterised, Tucker et al.) or reparam (Burda et al.)."),
    ] = "dreg",
    network: Annotated[str, typer.Option(help="mlp or conv.")] = "mlp",
    width: Annotated[int, typer.Option(min=1, help="Hidden width (mlp) or channels (conv).")] = 200,
    depth: Annotated[int, typer.Option(min=0, help="Hidden layers of the MLPs.")] = 2,
    activation: Annotated[str, typer.Option(help="tanh, relu, softplus or gelu.")] = "tanh",
    likelihood: Annotated[str, typer.Option(help="bernoulli, gaussian, categorical or continuous_bernoulli.")] = (
        "bernoulli"
    ),
    sd: Annotated[float, typer.Option(help="Gaussian likelihood: the (initial) sd.")] = 0.1,
    sd_mode: Annotated[str, typer.Option(help="Gaussian likelihood: fixed, global or pixel.")] = "fixed",
    batch_size: Annotated[int, typer.Option(min=1, help="Minibatch size.")] = 100,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    anneal_steps: Annotated[
        int, typer.Option(min=0, help="KL annealing: steps to raise the KL weight from 0 to beta.")
    ] = 0,
    free_bits: Annotated[float, typer.Option(help="Free bits: nats per latent dimension not penalised.")] = 0.0,
    patience: Annotated[
        int, typer.Option(min=0, help="Stop after this many epochs without a better validation bound (0: never).")
    ] = 20,
    seed: Annotated[int, typer.Option(**SEED, help="Random seed (initialisation, batches, binarisation).")] = 0,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the run saved in --out. Options left out take their saved values; --epochs, --patience "
            "and --devices may change; any other option given must equal its saved value, else it is an error."
        ),
    ] = False,
    devices: Annotated[
        str | None, typer.Option(help="Data parallel over JAX devices: 'all' or a count (batch size a multiple).")
    ] = None,
) -> None:
    """Train on the data, checkpointing every epoch (Ctrl-C saves; --resume continues); write pictures."""
    from vbayes.data.devices import parse_devices_option
    from vbayes.outputs import check_writable
    from vbayes.vae.diagnostics import activity, collapse_messages, kl_per_dimension
    from vbayes.vae.plots import write_figures
    from vbayes.vae.trainer import train

    with user_errors():
        devices, note = parse_devices_option(devices)
        if note:
            stdout().print(note, soft_wrap=True)
        folder = out or Path("vbayes-out") / f"vae-{'digits' if data == 'digits' else Path(data).name}-{model}"
        if resume:
            mc, tc, spec, done = _resumed_configs(folder, ctx.params, _given(ctx))
            dataset = _load_data(spec)
        else:
            check_writable(folder)
            dataset = _load_data(data)
            (mc, tc), spec, done = _new_configs(ctx.params, dataset), _data_spec(data), 0
        result = train(dataset, mc, tc, out=folder, resume=resume, data_spec=spec, devices=devices)
        console = stdout()
        last = result.history[-1] if result.history else {}
        label = {"vae": "ELBO", "iwae": f"IWAE-{tc.k}", "ae": "log p(x|z)"}[tc.kind]
        console.print(
            f"[bold]{result.outcome}[/bold] after {result.epochs} epochs ({result.steps} steps); "
            f"train {label} {_fmt(last.get('train_bound'))}, validation {_fmt(last.get('val_bound'))} "
            f"(best at epoch {result.best_epoch}) nats per image",
            soft_wrap=True,
        )
        if result.outcome == "interrupted":
            console.print(f"checkpoint saved in {folder}; continue with --resume --out {folder}", soft_wrap=True)
            raise typer.Exit(code=INTERRUPTED_EXIT)
        if result.epochs == done:
            console.print(
                f"nothing was trained: the run in {folder} had already ended after {done} epochs; to train further, "
                "resume with a larger --epochs (or --patience, if early stopping ended it)",
                soft_wrap=True,
            )
            return
        x_check = dataset.val if len(dataset.val) else dataset.train
        if tc.kind != "ae":
            act = activity(result.model, x_check)
            messages = collapse_messages(kl_per_dimension(result.model, x_check), act)
            console.print(f"active units {int((act > 0.01).sum())}/{len(act)} (validation data)")
            for m in messages:
                console.print(f"[yellow]warning: {escape(m)}[/yellow]", soft_wrap=True)
        x_show = dataset.test if len(dataset.test) else x_check
        y_show = dataset.test_labels if len(dataset.test) else dataset.val_labels
        for path in write_figures(result.model, x_show[:1000], y_show[:1000], folder, kind=tc.kind, key=tc.seed):
            console.print(f"wrote {path}", soft_wrap=True)


@vae_app.command("evaluate")
def evaluate_cmd(
    folder: Annotated[Path, typer.Argument(help="A run folder written by `vbayes vae train`.")],
    k: Annotated[int, typer.Option(min=1, help="Importance samples for the IWAE estimate of log p(x).")] = 5000,
    n: Annotated[int | None, typer.Option(min=1, help="Use only the first N test images.")] = None,
    data: Annotated[
        str | None, typer.Option(help="Override the data the run was trained on (digits or folder).")
    ] = None,
    seed: Annotated[int, typer.Option(**SEED, help="Random seed for the Monte Carlo estimates.")] = 0,
) -> None:
    """Test ELBO, IWAE-k log p(x), reconstruction, KL per dimension, active units; writes evaluation.json."""
    from vbayes.outputs import check_writable, write_json
    from vbayes.vae.checkpoint import load_run
    from vbayes.vae.diagnostics import PosteriorCollapseWarning, evaluate

    with user_errors():
        run = load_run(folder)
        check_writable(folder)
        dataset = _load_data(data or run.data or "digits")
        x = dataset.test if n is None else dataset.test[:n]
        with warnings.catch_warnings():  # its message is printed below as a warning line
            warnings.simplefilter("ignore", PosteriorCollapseWarning)
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
        path = write_json(Path(folder) / "evaluation.json", report.to_dict())
        console.print(f"wrote {path}", soft_wrap=True)


@vae_app.command("sample")
def sample_cmd(
    folder: Annotated[Path, typer.Argument(help="A run folder written by `vbayes vae train`.")],
    data: Annotated[
        str | None, typer.Option(help="Override the data the run was trained on (digits or folder).")
    ] = None,
    seed: Annotated[int, typer.Option(**SEED, help="Random seed for the prior samples.")] = 0,
) -> None:
    """Write samples.png (decoded z ~ N(0, I)), reconstructions.png, interpolation.png and latent.png."""
    from vbayes.outputs import check_writable
    from vbayes.vae.checkpoint import load_run
    from vbayes.vae.plots import write_figures

    with user_errors():
        run = load_run(folder)
        check_writable(folder)
        dataset = _load_data(data or run.data or "digits")
        x, y = (dataset.test, dataset.test_labels) if len(dataset.test) else (dataset.train, dataset.train_labels)
        for path in write_figures(run.model, x[:1000], y[:1000], folder, kind=run.train_config.kind, key=seed):
            stdout().print(f"wrote {path}", soft_wrap=True)
