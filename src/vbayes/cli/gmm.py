"""``vbayes gmm``: fit a Bayesian Gaussian mixture to a DATA file by CAVI, SVI, EM or MAP-EM (locally, over the
JAX devices, or on a Dask cluster); print the components, write gmm.png and components.csv.
Registered on the app in :mod:`vbayes.cli`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from vbayes.cli.common import FLAGGED_EXIT, print_verdict, safe_name, stdout, user_errors
from vbayes.cli.loading import load_dask, parse_devices
from vbayes.data.files import read_matrix
from vbayes.errors import MAX_SEED, VBayesError
from vbayes.outputs import check_writable, staged

HELP = "Fit a Bayesian Gaussian mixture to DATA (.npy or numeric .csv) by CAVI, SVI, EM or MAP-EM."
"""Help text of ``vbayes gmm``."""


def gmm(
    data: Annotated[Path, typer.Argument(help="An (N, D) .npy file or a numeric CSV.", show_default=False)],
    header: Annotated[
        bool | None,
        typer.Option(
            "--header/--no-header",
            help="Whether a CSV's first line names the columns (default: it does when a field of it is not a number).",
            show_default=False,
        ),
    ] = None,
    components: Annotated[
        int, typer.Option(min=1, help="Number of components K (an upper bound with the DP prior).")
    ] = 10,
    method: Annotated[str, typer.Option(help="cavi, svi, em or map.")] = "cavi",
    covariance: Annotated[str, typer.Option(help="full, diag or spherical.")] = "full",
    weights: Annotated[str, typer.Option(help="dirichlet_process or dirichlet_distribution.")] = "dirichlet_process",
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Random seed of the initialisation.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: vbayes-out/gmm-<data>).")] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask",
            metavar="SCHEDULER_ADDRESS|local[:WORKERS]",
            help="Fit on a Dask cluster: statistics computed on the workers partition by partition (DATA: .npy, "
            ".zarr or .parquet, read by the workers: the path must be visible to them). Connect only to a "
            "scheduler you trust: Dask exchanges pickled Python objects, which run code when loaded.",
        ),
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option("--devices", metavar="all|N", help="Split the passes over the local JAX devices (GPUs)."),
    ] = None,
) -> None:
    """Fit, print the components found, the ELBO and the outcome; write gmm.png and components.csv."""
    from vbayes.estimators.mixture import VariationalGaussianMixture
    from vbayes.estimators.mixture_params import METHODS as GMM_METHODS
    from vbayes.report import plot_mixture

    with user_errors():
        if method not in GMM_METHODS:
            raise VBayesError(f"unknown method {method!r}; available: {', '.join(GMM_METHODS)}")
        if covariance not in ("full", "diag", "spherical"):
            raise VBayesError(f"unknown covariance {covariance!r}; available: full, diag, spherical")
        if dask is not None and devices is not None:
            raise VBayesError("--dask and --devices are alternatives: choose one")
        console = stdout()
        if dask is not None:
            from vbayes.data.dask import connect

            client = connect(dask)  # fails early, with the address, if the scheduler cannot be reached
            full = load_dask(data, header)
            X = np.asarray(full[: min(full.shape[0], 200_000)].compute(), dtype=np.float64)  # for the picture
            n, where = full.shape[0], f"  dask {len(client.scheduler_info()['workers'])} workers"
        else:
            X = full = read_matrix(data, header)
            n, where = X.shape[0], ""
        use = parse_devices(devices, console)
        folder = check_writable(out if out is not None else Path("vbayes-out") / f"gmm-{safe_name(data.stem)}")
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
        info = model.result_.info
        console.print(
            f"[{'green' if model.converged_ else 'yellow'}]{info.outcome}[/]: {escape(info.message)}; "
            f"{model.n_iter_} iterations, {info.wall_time:.2f} s; ELBO {model.elbo_:.6g} "
            f"({model.lower_bound_:.6f} per point)",
            soft_wrap=True,
        )
        print_verdict(console, model.result_)
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
        # both files are made under temporary names first, then renamed together: a kill leaves one run's pair
        with staged(folder, ("components.csv", "gmm.png")) as tmp:
            import pandas as pd

            pd.DataFrame(rows).to_csv(tmp["components.csv"], index=False)
            plot_mixture(X, model.weights_, model.means_, covs, model.lower_bounds_, tmp["gmm.png"])
        picture = folder / "gmm.png"
        console.print(f"wrote {picture.name}, components.csv to {folder}", soft_wrap=True)
    if model.result_.verdict.status == "flagged":
        raise typer.Exit(code=FLAGGED_EXIT)
