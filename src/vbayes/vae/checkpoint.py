"""Checkpoints: a training folder's files, written crash-safely by :func:`save`, read back and verified by
:func:`load_run`, and the rule for resuming a run (:func:`resolve_resume`).

A run folder holds (format 2, :data:`CHECKPOINT_FORMAT`):

- ``config.json``: ``{"format", "model", "train", "data"}``, the :class:`ModelConfig` and :class:`TrainConfig`;
- ``checkpoint-EEEEE-CCCCC.eqx``: the :class:`TrainState` after chunk ``CCCCC`` of epoch ``EEEEE`` (the position);
- ``best-EEEEE-CCCCC.eqx``: the best parameters so far (on validation) as of the same position;
- ``state.json``: the position and history, ``"checkpoint"`` and ``"best"`` (the two file names), and
  ``"checksums"``, the SHA-256 of each of them as written.

:func:`save` writes the parameter files under new names, then replaces ``state.json`` (atomically,
:mod:`vbayes.outputs`), then removes the files it no longer names: a kill at any moment leaves a ``state.json`` whose
files are all there with the checksums it records. (A second save at the same position rewrites the same arrays:
training is a function of the seed and the position.) :func:`load_run` refuses, naming the file, a referenced file
whose checksum differs (damaged or changed since it was written), a parameter that is not finite, and a
``config.json`` or ``state.json`` that is not JSON or lacks a key or holds a wrong value.

Format 1 (earlier versions: ``best.eqx``, no checksums, no ``"format"`` in ``state.json``) still loads, its
parameters checked for finiteness; resuming it rewrites it in format 2. ``state.json``'s ``outcome`` is
informational (``running`` while a run is under way, then the run's outcome); nothing reads it back."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from vbayes.errors import VBayesError, is_count, is_real
from vbayes.outputs import sha256, write_atomic, write_json
from vbayes.vae.config import TrainConfig, TrainState, check_model_config, optimizer, split_model
from vbayes.vae.model import VAE, ModelConfig, build_model

CHECKPOINT_FORMAT = 2
"""The format :func:`save` writes; :func:`load_run` reads it and format 1."""
RESUMABLE = frozenset({"epochs", "patience"})
"""The :class:`TrainConfig` fields a resumed run may change; every other field must equal the saved one."""
FILE_KEYS = ("format", "checkpoint", "best", "checksums")
"""The keys of ``state.json`` that describe its files rather than the run."""
_FILE_NAME = re.compile(r"[\w.-]+\.eqx")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class Run(NamedTuple):
    """A training folder read back: the best and last models, the configs, the data spec and the history."""

    model: VAE
    last_model: VAE
    model_config: ModelConfig
    train_config: TrainConfig
    data: str | None
    meta: dict[str, Any]


# ----------------------------------------------------------------------------------------------
# writing


def write_leaves(path: Path, tree: Any) -> str:
    """``tree``'s arrays to ``path`` (atomically); returns the file's SHA-256."""
    write_atomic(path, lambda p: eqx.tree_serialise_leaves(p, tree))
    return sha256(path)


def save(out: Path, state: TrainState, meta: dict[str, Any], best_params: Any | None) -> None:
    """Parameter files named by position, then the ``state.json`` that names them with their checksums, then
    remove the files it no longer names."""
    position = f"{meta['epoch']:05d}-{meta['chunk']:05d}"
    files = {"checkpoint": (f"checkpoint-{position}.eqx", state)}
    if best_params is not None:
        files["best"] = (f"best-{position}.eqx", best_params)
    checksums = {name: write_leaves(out / name, tree) for name, tree in files.values()}
    names = {key: name for key, (name, _) in files.items()}
    run = {k: v for k, v in meta.items() if k not in FILE_KEYS}
    write_json(out / "state.json", {**run, "format": CHECKPOINT_FORMAT, **names, "checksums": checksums})
    for old in [*out.glob("checkpoint-*.eqx"), *out.glob("best-*.eqx"), out / "best.eqx"]:
        if old.name not in checksums:
            old.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# reading


def check_run_folder(folder: Path) -> Path:
    """``folder`` if it is a folder; a :class:`VBayesError` saying what it is otherwise."""
    if folder.is_file():
        raise VBayesError(
            f"{folder} is a file, not a run folder: give the folder written by `vbayes vae train` "
            "(it holds config.json and state.json)"
        )
    if not folder.is_dir():
        raise VBayesError(f"no checkpoint: folder {folder} does not exist")
    return folder


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a :class:`VBayesError` naming it when it is missing, not JSON or no object."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VBayesError(f"no checkpoint: {path} is missing (train with --out first)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VBayesError(f"{path} is not valid JSON ({e}); the checkpoint is damaged") from None
    if not isinstance(record, dict):
        raise VBayesError(f"{path} is damaged: it holds a JSON {type(record).__name__}, not an object")
    return record


def _damaged(path: Path, problem: str) -> VBayesError:
    return VBayesError(f"{path} is damaged: {problem}")


def read_config(folder: Path) -> tuple[ModelConfig, TrainConfig, dict[str, Any]]:
    """The configs saved in ``folder/config.json`` and the record itself; a :class:`VBayesError` naming the file
    when a key is missing or a value wrong."""
    path = folder / "config.json"
    config = read_json(path)
    fmt = config.get("format", 1)
    if not is_count(fmt, 1) or fmt > CHECKPOINT_FORMAT:
        raise _damaged(path, f"format {fmt!r} is not one this vbayes reads (1 to {CHECKPOINT_FORMAT}; a newer one?)")
    for key in ("model", "train"):
        if not isinstance(config.get(key), dict):
            raise _damaged(path, f"{key!r} is missing or not an object")
    if not isinstance(config.get("data"), str | None):
        raise _damaged(path, f"'data' must be a string or null, got {config['data']!r}")
    try:
        mc = check_model_config(ModelConfig.from_dict(config["model"]))
        tc = TrainConfig.from_dict(config["train"])
    except (TypeError, ValueError) as e:  # a missing field, a wrong type or value (VBayesError is a ValueError)
        raise _damaged(path, str(e)) from None
    return mc, tc, config


def _file_name(value: Any) -> bool:
    return isinstance(value, str) and _FILE_NAME.fullmatch(value) is not None


def _number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def state_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with a ``state.json`` record (None when nothing): each key the trainer reads, its type."""
    fmt = meta.get("format", 1)
    if not (is_count(fmt, 1) and fmt <= CHECKPOINT_FORMAT):
        return f"'format' must be 1 to {CHECKPOINT_FORMAT}, got {fmt!r} (written by a newer vbayes?)"
    history = meta.get("history")
    records = isinstance(history, list) and all(
        isinstance(h, dict) and all(_number_or_null(v) for v in h.values()) for h in history
    )
    rules = [
        ("epoch", is_count(meta.get("epoch"), 0), "an integer ≥ 0"),
        ("chunk", is_count(meta.get("chunk"), 0), "an integer ≥ 0"),
        ("best_epoch", is_count(meta.get("best_epoch"), -1), "an integer ≥ -1"),
        ("bad_epochs", is_count(meta.get("bad_epochs"), 0), "an integer ≥ 0"),
        ("best_val", _number_or_null(meta.get("best_val")), "a number or null"),
        ("history", records, "a list of epoch records (objects of numbers)"),
        ("checkpoint", _file_name(meta.get("checkpoint")), "the name of a .eqx file in the folder"),
        ("best", "best" not in meta or _file_name(meta["best"]), "the name of a .eqx file in the folder"),
    ]
    if fmt >= 2:
        sums = meta.get("checksums")
        ok = isinstance(sums, dict) and all(_file_name(k) and _SHA256.fullmatch(str(v)) for k, v in sums.items())
        rules.append(("checksums", ok, "an object of file names and SHA-256 hex digests"))
    if "running" in meta:
        run = meta["running"]
        ok = isinstance(run, dict) and all(is_real(run.get(k)) for k in ("sum", "count", "skipped", "seconds"))
        rules.append(("running", ok, "an object of the running sums"))
    for key, ok, requirement in rules:
        if not ok:
            return f"{key!r} must be {requirement}, got {meta.get(key)!r}"
    return None


def read_state(folder: Path) -> dict[str, Any]:
    """``folder/state.json``, checked (:func:`state_problem`)."""
    path = folder / "state.json"
    meta = read_json(path)
    problem = state_problem(meta)
    if problem is not None:
        raise _damaged(path, problem)
    return meta


def referenced_files(folder: Path, meta: dict[str, Any]) -> dict[str, Path]:
    """The parameter files ``state.json`` names: ``checkpoint`` and, when there is one, ``best`` (format 1: the
    ``best.eqx`` beside it)."""
    files = {"checkpoint": folder / meta["checkpoint"]}
    if "best" in meta:
        files["best"] = folder / meta["best"]
    elif meta.get("format", 1) == 1 and (folder / "best.eqx").is_file():
        files["best"] = folder / "best.eqx"
    return files


def verify_checksum(path: Path, checksums: dict[str, str] | None) -> None:
    """Nothing when ``path``'s SHA-256 is the one recorded for it (format 1: no record, nothing to compare);
    a :class:`VBayesError` naming the file otherwise."""
    if not path.is_file():
        raise VBayesError(f"no checkpoint: {path} is missing (state.json refers to it)")
    if checksums is None:
        return
    expected = checksums.get(path.name)
    if expected is None:
        raise _damaged(path.parent / "state.json", f"it records no checksum for {path.name}")
    if sha256(path) != expected:
        raise VBayesError(
            f"{path} is damaged or was changed since it was written: its SHA-256 is not the one state.json "
            "recorded for it"
        )


def check_finite(tree: Any, path: Path) -> Any:
    """``tree`` when every floating-point leaf is finite; a :class:`VBayesError` naming ``path`` otherwise."""
    for leaf in jax.tree_util.tree_leaves(tree):
        if eqx.is_inexact_array(leaf) and not np.all(np.isfinite(np.asarray(leaf))):
            raise VBayesError(f"{path} is damaged: it holds non-finite values (NaN or infinity) among its parameters")
    return tree


def read_leaves(path: Path, like: Any, checksums: dict[str, str] | None) -> Any:
    """The arrays in ``path`` (shaped like ``like``), checksum and finiteness verified."""
    verify_checksum(path, checksums)
    try:
        tree = eqx.tree_deserialise_leaves(path, like)
    except Exception as e:  # a truncated or foreign file
        raise VBayesError(f"cannot read the checkpoint file {path}: {e}") from None
    return check_finite(tree, path)


def load_run(folder: str | Path) -> Run:
    """Read a training folder written by :func:`~vbayes.vae.trainer.train`; a :class:`VBayesError` naming the file
    when the folder or a file is missing, damaged or changed since it was written."""
    folder = check_run_folder(Path(folder))
    mc, tc, config = read_config(folder)
    meta = read_state(folder)
    like = build_model(mc, 0)
    params, static = split_model(like)
    state_like = TrainState(params, optimizer(tc).init(params), jnp.asarray(0, jnp.int32))
    checksums = meta.get("checksums") if meta.get("format", 1) >= 2 else None
    files = referenced_files(folder, meta)
    state = read_leaves(files["checkpoint"], state_like, checksums)
    best = read_leaves(files["best"], params, checksums) if "best" in files else None
    last = eqx.combine(state.params, static)
    model = eqx.combine(best, static) if best is not None else last
    return Run(model, last, mc, tc, config.get("data"), {**meta, "_state": state})


# ----------------------------------------------------------------------------------------------
# resuming


def config_changes(saved: Any, given: Any) -> list[tuple[str, Any, Any]]:
    """``(field, saved value, given value)`` for each field where two configs of one dataclass differ."""
    return [
        (f.name, getattr(saved, f.name), getattr(given, f.name))
        for f in dataclasses.fields(saved)
        if getattr(saved, f.name) != getattr(given, f.name)
    ]


def resume_conflicts(
    saved: tuple[ModelConfig, TrainConfig], given: tuple[ModelConfig | None, TrainConfig | None]
) -> list[tuple[str, Any, Any]]:
    """The changes a resumed run may not make: any to the model, any to training but :data:`RESUMABLE`."""
    changes = config_changes(saved[0], given[0]) if given[0] is not None else []
    if given[1] is not None:
        changes += [c for c in config_changes(saved[1], given[1]) if c[0] not in RESUMABLE]
    return changes


def resolve_resume(
    out: Path, model_config: ModelConfig | None, train_config: TrainConfig | None
) -> tuple[ModelConfig, TrainConfig, dict[str, Any]]:
    """The configs to resume ``out`` with: the saved ones, ``epochs`` and ``patience`` from ``train_config`` when
    given; a :class:`VBayesError` listing every other field given with a different value (saved and given)."""
    saved_mc, saved_tc, config = read_config(out)
    bad = resume_conflicts((saved_mc, saved_tc), (model_config, train_config))
    if bad:
        listed = "; ".join(f"{name} (saved {old!r}, given {new!r})" for name, old, new in bad)
        allowed = " and ".join(sorted(RESUMABLE))
        raise VBayesError(f"cannot resume {out} with different {listed}: only {allowed} may change")
    if train_config is not None:
        saved_tc = dataclasses.replace(saved_tc, **{f: getattr(train_config, f) for f in RESUMABLE})
    return saved_mc, saved_tc, config
