"""Checkpoints: a training folder's files (``config.json``, ``state.json``, the ``checkpoint-*.eqx`` it points
at and ``best.eqx``), written atomically by :func:`save` and read back by :func:`load_run`, and the check that a
resumed run keeps its saved configuration (:func:`resolve_resume`).

``state.json``'s ``outcome`` is informational (``running`` while a run is under way, then the run's outcome);
nothing reads it back, so folders written with the older VAE outcome words load and resume as before."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax.numpy as jnp

from vbayes.errors import VBayesError
from vbayes.vae.config import TrainConfig, TrainState, optimizer, split_model
from vbayes.vae.model import VAE, ModelConfig, build_model

CHECKPOINT_FORMAT = 1


class Run(NamedTuple):
    """A training folder read back: the best and last models, the configs, the data spec and the history."""

    model: VAE
    last_model: VAE
    model_config: ModelConfig
    train_config: TrainConfig
    data: str | None
    meta: dict[str, Any]


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save(out: Path, state: TrainState, meta: dict[str, Any], best_params: Any | None) -> None:
    """Checkpoint file named by position, then the JSON that points at it, then remove the old one."""
    name = f"checkpoint-{meta['epoch']:05d}-{meta['chunk']:05d}.eqx"
    write_atomic(out / name, lambda p: eqx.tree_serialise_leaves(p, state))
    if best_params is not None:
        write_atomic(out / "best.eqx", lambda p: eqx.tree_serialise_leaves(p, best_params))
    meta = {**meta, "checkpoint": name}
    write_atomic(out / "state.json", lambda p: p.write_text(json.dumps(meta, indent=1)))
    for old in out.glob("checkpoint-*.eqx"):
        if old.name != name:
            old.unlink(missing_ok=True)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise VBayesError(f"no checkpoint: {path} is missing (train with --out first)") from None
    except json.JSONDecodeError as e:
        raise VBayesError(f"{path} is not valid JSON ({e}); the checkpoint is damaged") from None


def load_run(folder: str | Path) -> Run:
    """Read a training folder written by :func:`~vbayes.vae.trainer.train`; a clear error when it is missing or
    damaged."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VBayesError(f"no checkpoint: folder {folder} does not exist")
    config = read_json(folder / "config.json")
    meta = read_json(folder / "state.json")
    mc = ModelConfig.from_dict(config["model"])
    tc = TrainConfig.from_dict(config["train"])
    like = build_model(mc, 0)
    params, _ = split_model(like)
    opt = optimizer(tc)
    state_like = TrainState(params, opt.init(params), jnp.asarray(0, jnp.int32))
    ckpt = folder / meta.get("checkpoint", "")
    if not ckpt.is_file():
        raise VBayesError(f"no checkpoint: {ckpt} is missing")
    try:
        state = eqx.tree_deserialise_leaves(ckpt, state_like)
        best = eqx.tree_deserialise_leaves(folder / "best.eqx", params) if (folder / "best.eqx").is_file() else None
    except Exception as e:  # a truncated or foreign file
        raise VBayesError(f"cannot read the checkpoint in {folder}: {e}") from None
    last = eqx.combine(state.params, split_model(like)[1])
    model = eqx.combine(best, split_model(like)[1]) if best is not None else last
    return Run(model, last, mc, tc, config.get("data"), {**meta, "_state": state})


_RESUMABLE_CHANGES = {"epochs", "patience"}


def resolve_resume(out: Path, model_config, train_config):
    config = read_json(out / "config.json")
    saved_mc = ModelConfig.from_dict(config["model"])
    saved_tc = TrainConfig.from_dict(config["train"])
    if model_config is not None and model_config != saved_mc:
        raise VBayesError(f"cannot resume {out} with a different model: saved {saved_mc}, given {model_config}")
    if train_config is not None:
        diff = [f for f in saved_tc.to_dict() if getattr(saved_tc, f) != getattr(train_config, f)]
        bad = [f for f in diff if f not in _RESUMABLE_CHANGES]
        if bad:
            raise VBayesError(
                f"cannot resume {out} with different {', '.join(bad)} (only epochs and patience may change)"
            )
        saved_tc = train_config
    return saved_mc, saved_tc, config
