"""Training: an optax ``init``/``step`` core, compiled chunks of steps, and a resumable driver.

The core is :func:`init` and :func:`build_step` (``state, info = step(state, x, key)``) over a
:class:`~vbayes.vae.config.TrainState` NamedTuple. The driver :func:`train` runs epochs of shuffled minibatches
as compiled ``lax.scan`` chunks, shows a progress bar with the running bound, evaluates the validation set after
every epoch (early stopping with ``patience``), and checkpoints to ``out`` after every epoch and on
Ctrl-C (:mod:`vbayes.vae.checkpoint`). Everything random is a function of ``seed``, the epoch and the step, so a
resumed run computes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

from vbayes.data import devices as sharding
from vbayes.errors import VBayesError
from vbayes.outputs import check_writable, write_json
from vbayes.vae.checkpoint import CHECKPOINT_FORMAT, FILE_KEYS, check_run_folder, load_run, resolve_resume, save
from vbayes.vae.config import TrainConfig, TrainState, check_model_config, optimizer, split_model
from vbayes.vae.data import Dataset, binarize, check_images
from vbayes.vae.losses import elbo, iwae_bound, kl_weight, make_objective
from vbayes.vae.model import VAE, ModelConfig, build_model, with_data_bias


class StepInfo(NamedTuple):
    """One step: the loss, the batch-mean bound (ELBO / IWAE / reconstruction) and whether it was applied."""

    loss: Array
    bound: Array
    finite: Array


def init(model: VAE, opt: optax.GradientTransformation) -> TrainState:
    """The state before the first step."""
    params, _ = split_model(model)
    return TrainState(params, opt.init(params), jnp.asarray(0, jnp.int32))


def skip_by_branching() -> bool:
    """Whether a skipped step is a ``lax.cond`` (CPU) rather than a select (GPU, TPU).

    On CPU the conditional is cheaper: the skipped branch costs nothing, and a ``where`` over every leaf
    cost a pass over the parameters and Adam's moments. On a GPU a conditional copies its predicate to the
    host, so every step waits for the previous one and the host's kernel launches are never hidden; the
    select fuses into the update's kernels.
    """
    return jax.default_backend() == "cpu"


def keep_if_finite(finite: Array, update: Callable[[None], Any], old: Any) -> Any:
    """``update(None)`` where ``finite`` is true, else ``old`` (pytrees of the same structure)."""
    if skip_by_branching():
        return jax.lax.cond(finite, update, lambda _: old, None)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), update(None), old)


def build_step(
    static: Any, opt: optax.GradientTransformation, config: TrainConfig, do_binarize: bool
) -> Callable[[TrainState, Array, Array], tuple[TrainState, StepInfo]]:
    """``step(state, x, key) -> (state, info)``: one optimiser step on the minibatch ``x`` ``(B, *S)``.

    The step's randomness is ``fold_in(key, state.step)``; a step whose loss or gradient is not finite is
    skipped (``info.finite`` false).
    """
    objective = make_objective(config.kind, k=config.k, free_bits=config.free_bits, iwae_gradient=config.iwae_gradient)

    def loss_fn(params, x, key, weight):
        return objective(eqx.combine(params, static), x, key, weight)

    def step(state: TrainState, x: Array, key: Array) -> tuple[TrainState, StepInfo]:
        k_bin, k_loss = jax.random.split(jax.random.fold_in(key, state.step))
        if do_binarize:
            x = binarize(k_bin, x)
        weight = kl_weight(state.step, config.beta, config.anneal_steps)
        (loss, info), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x, k_loss, weight)
        finite = jnp.isfinite(loss)
        for g in jax.tree_util.tree_leaves(grads):
            finite &= jnp.all(jnp.isfinite(g))

        def apply(_):
            updates, opt_state = opt.update(grads, state.opt_state, state.params)
            return optax.apply_updates(state.params, updates), opt_state

        params, opt_state = keep_if_finite(finite, apply, (state.params, state.opt_state))
        return TrainState(params, opt_state, state.step + 1), StepInfo(loss, info.bound, finite)

    return step


def build_chunk(step: Callable) -> Callable[[TrainState, Array, Array, Array], tuple[TrainState, StepInfo]]:
    """``chunk(state, data, idx, key)``: ``step`` over the minibatches ``data[idx[i]]``, ``idx`` (n, B), compiled."""

    @jax.jit
    def chunk(state, data, idx, key):
        return jax.lax.scan(lambda s, i: step(s, data[i], key), state, idx)

    return chunk


# ----------------------------------------------------------------------------------------------
# validation


def bound_fn(kind: str, k: int) -> Callable[[VAE, Array, Array], Array]:
    """Per-image validation bound: ELBO (vae), IWAE_k (iwae), log p(x | z = loc) (ae); ``(B, *S) -> (B,)``."""
    if kind == "vae":
        return lambda model, x, key: elbo(model, x, key)
    if kind == "iwae":
        return lambda model, x, key: iwae_bound(model, x, key, k)
    return lambda model, x, key: jax.vmap(lambda xb: model.log_likelihood(model.encode(xb)[0], xb))(x)


def batched_mean(fn: Callable[[Array, Array], Array], x: Array, key: Array, batch: int = 500) -> float:
    """Mean of ``fn(x_batch, key_batch)`` (per-image values) over ``x`` in batches of ``batch``."""
    total, n = 0.0, 0
    for i, start in enumerate(range(0, x.shape[0], batch)):
        values = fn(x[start : start + batch], jax.random.fold_in(key, i))
        total += float(jnp.sum(values))
        n += values.shape[0]
    return total / max(n, 1)


def _step_config(tc: TrainConfig) -> TrainConfig:
    """``tc`` with the fields that do not change a step reset (the cache key of :func:`_compiled`)."""
    return dataclasses.replace(tc, epochs=1, patience=0, seed=0, chunk=1)


@functools.lru_cache(maxsize=16)
def _compiled(mc: ModelConfig, tc: TrainConfig, do_binarize: bool, steps_per_epoch: int, mesh: Any = None):
    """The jitted chunk and validation functions for one model structure and step configuration, cached so
    that a second run (new seed, resumed, more epochs) reuses the compiled code. With a device ``mesh`` every
    minibatch is split over its devices (:func:`vbayes.data.devices.data_parallel`)."""
    static = split_model(build_model(mc, 0))[1]
    step = build_step(static, optimizer(tc, steps_per_epoch), tc, do_binarize)
    if mesh is not None:
        step = sharding.data_parallel(step, mesh, 1)
    chunk = build_chunk(step)
    bound = bound_fn(tc.kind, tc.k)
    return chunk, jax.jit(lambda p, xb, kb: bound(eqx.combine(p, static), xb, kb))


# ----------------------------------------------------------------------------------------------
# the driver


class TrainResult(NamedTuple):
    """``model``: best on validation (last without validation data); ``history``: one dict per epoch;
    ``outcome``, in the vocabulary of every vbayes fit: ``"converged"`` (early stopping: ``patience`` epochs
    without a better validation bound), ``"completed"`` (all ``epochs`` run, no early-stopping rule:
    ``patience`` 0), ``"max_steps"`` (all ``epochs`` run before the ``patience`` rule fired) or
    ``"interrupted"`` (Ctrl-C: the result so far)."""

    model: VAE
    last_model: VAE
    history: list[dict[str, float]]
    outcome: str
    epochs: int
    steps: int
    best_epoch: int
    out: Path | None


def _as_dataset(data: Dataset | np.ndarray) -> Dataset:
    if isinstance(data, Dataset):
        return data
    x = np.asarray(data)
    empty = np.zeros((0, *x.shape[1:]), np.float32)
    no_labels = np.zeros(0, np.int64)
    return Dataset("array", x, np.zeros(len(x), np.int64), empty, no_labels, empty, no_labels, 0)


def prepare(x: np.ndarray, model: VAE, data_shape: tuple[int, ...], what: str) -> np.ndarray:
    """Shape, emptiness and support checks for images fed to ``model``; returns the float array."""
    x = check_images(x, data_shape, what)
    model.likelihood.check(x)
    return x


def train(
    data: Dataset | np.ndarray,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
    data_spec: str | None = None,
    devices: Any = None,
) -> TrainResult:
    """Train a VAE / IWAE / autoencoder on ``data`` (a :class:`Dataset` or an array ``(N, *S)``).

    With ``out`` the run is checkpointed there after every epoch and on Ctrl-C (KeyboardInterrupt: the result so
    far comes back with ``outcome="interrupted"``). ``callback(info)`` is called after every compiled chunk with
    the epoch, step and running bound. Defaults: ``ModelConfig(data_shape)``, ``TrainConfig()``. ``devices``
    (``"all"``, a count or a list of JAX devices) splits every minibatch over those devices (data parallel: the
    gradient is all-reduced, so the run equals the one-device run to float summation order); the batch size must
    be a multiple of their number. It is not saved: a run may be resumed on other devices.

    Resuming: ``resume=True`` continues the run saved in ``out`` with its saved configs. A ``model_config`` or
    ``train_config`` given with it must equal the saved one except for ``epochs`` and ``patience``
    (:data:`~vbayes.vae.checkpoint.RESUMABLE`), which it sets; any other difference is a :class:`VBayesError`
    giving the saved and the given values. A resumed run computes exactly what an uninterrupted one would.
    """
    dataset = _as_dataset(data)
    out = Path(out) if out is not None else None
    config_json: dict[str, Any] = {}
    if resume:
        if out is None:
            raise VBayesError("resume=True needs the run's folder as out=")
        if not (check_run_folder(out) / "state.json").exists():
            raise VBayesError(f"no checkpoint to resume in {out} (state.json is missing)")
        model_config, train_config, config_json = resolve_resume(out, model_config, train_config)
    else:
        if out is not None and (check_writable(out) / "state.json").exists():
            raise VBayesError(f"{out} already holds a training run; resume it or choose another folder")
        if model_config is None:
            if dataset.train.ndim < 2:
                raise VBayesError(f"images must be an array (N, *shape); got shape {dataset.train.shape}")
            model_config = ModelConfig(dataset.train.shape[1:])
        train_config = train_config or TrainConfig()
    mc, tc = check_model_config(model_config), train_config
    model = build_model(mc, jax.random.fold_in(jax.random.PRNGKey(tc.seed), 0))
    x_train = prepare(dataset.train, model, mc.data_shape, "training data")
    if not resume:
        model = with_data_bias(model, x_train)
    has_val = dataset.val.shape[0] > 0
    x_val = prepare(dataset.val, model, mc.data_shape, "validation data") if has_val else None
    do_binarize = tc.binarize if tc.binarize is not None else mc.likelihood == "bernoulli"

    n = x_train.shape[0]
    batch = min(tc.batch_size, n)
    n_batches = n // batch
    opt = optimizer(tc, n_batches)
    params, static = split_model(model)
    state = init(model, opt)
    meta: dict[str, Any] = {"epoch": 0, "chunk": 0, "best_val": None, "best_epoch": -1, "bad_epochs": 0, "history": []}
    best_params = None
    if resume:
        run = load_run(out)
        state = run.meta.pop("_state")
        meta = {k: v for k, v in run.meta.items() if k not in FILE_KEYS}
        best_params = split_model(run.model)[0]
    elif out is not None:
        config_json = {"format": CHECKPOINT_FORMAT, "model": mc.to_dict(), "train": tc.to_dict(), "data": data_spec}
    if out is not None:
        config_json = {**config_json, "format": CHECKPOINT_FORMAT, "train": tc.to_dict()}
        if data_spec is not None:
            config_json["data"] = data_spec
        write_json(out / "config.json", config_json)

    key = jax.random.PRNGKey(tc.seed)
    key_perm, key_step, key_val = (jax.random.fold_in(key, i) for i in (1, 2, 3))
    n_chunks = -(-n_batches // tc.chunk)
    data_dev = jnp.asarray(x_train)
    mesh = None
    if devices is not None:
        mesh = sharding.data_mesh(devices)
        if batch % mesh.size:
            raise VBayesError(
                f"batch_size {batch} cannot be split over {mesh.size} devices: use a multiple of {mesh.size}"
            )
        data_dev, state = sharding.replicate((data_dev, state), mesh)
    chunk_fn, val_eval = _compiled(mc, _step_config(tc), do_binarize, n_batches, mesh)
    if has_val:
        val_dev = jnp.asarray(x_val)
        if do_binarize:
            val_dev = binarize(jax.random.fold_in(key_val, 0), val_dev)

    history: list[dict[str, float]] = list(meta["history"])
    outcome = "max_steps" if tc.patience and has_val else "completed"
    bar = _progress(progress)
    task = bar.add_task("training", total=tc.epochs * n_chunks, completed=meta["epoch"] * n_chunks + meta["chunk"])
    try:
        with bar:
            while meta["epoch"] < tc.epochs:
                epoch = meta["epoch"]
                if tc.patience and meta["bad_epochs"] >= tc.patience:
                    outcome = "converged"
                    break
                perm = np.asarray(jax.random.permutation(jax.random.fold_in(key_perm, epoch), n))
                idx = perm[: n_batches * batch].reshape(n_batches, batch)
                acc = meta.setdefault("running", {"sum": 0.0, "count": 0, "skipped": 0, "seconds": 0.0})
                for c in range(meta["chunk"], n_chunks):
                    t0 = time.perf_counter()
                    new_state, info = chunk_fn(
                        state, data_dev, jnp.asarray(idx[c * tc.chunk : (c + 1) * tc.chunk]), key_step
                    )
                    # wait for the result before committing it: an interrupt while the chunk runs (dispatch is
                    # asynchronous) leaves state and position both at the previous chunk
                    jax.block_until_ready(new_state)
                    bounds, ok = np.asarray(info.bound), np.asarray(info.finite)
                    state, meta["chunk"] = new_state, c + 1
                    acc["sum"] += float(bounds[ok].sum())
                    acc["count"] += int(ok.sum())
                    acc["skipped"] += int((~ok).sum())
                    acc["seconds"] += time.perf_counter() - t0
                    running = acc["sum"] / max(acc["count"], 1)
                    bar.update(
                        task, advance=1, description=f"epoch {epoch + 1}/{tc.epochs}  {_label(tc.kind)} {running:9.2f}"
                    )
                    if callback is not None:
                        callback({"epoch": epoch, "chunk": c, "step": int(state.step), "running_bound": running})
                record = {
                    "epoch": epoch + 1,
                    "steps": int(state.step),
                    "train_bound": acc["sum"] / max(acc["count"], 1),
                    "skipped_steps": acc["skipped"],
                    "seconds": acc["seconds"],
                }
                if has_val:
                    value = batched_mean(functools.partial(val_eval, state.params), val_dev, key_val)
                    record["val_bound"] = value
                    if meta["best_val"] is None or value > meta["best_val"]:
                        meta["best_val"], meta["best_epoch"], meta["bad_epochs"] = value, epoch + 1, 0
                        best_params = state.params
                    else:
                        meta["bad_epochs"] += 1
                else:
                    best_params, meta["best_epoch"] = state.params, epoch + 1
                history.append(record)
                meta.update(epoch=epoch + 1, chunk=0, history=history)
                meta.pop("running", None)
                if out is not None:
                    save(out, state, {**meta, "outcome": "running"}, best_params)
            else:
                if tc.patience and meta["bad_epochs"] >= tc.patience:
                    outcome = "converged"
    except KeyboardInterrupt:
        outcome = "interrupted"
    meta["history"] = history
    if out is not None:
        save(out, state, {**meta, "outcome": outcome}, best_params)
    last = eqx.combine(state.params, static)
    best = eqx.combine(best_params, static) if best_params is not None else last
    return TrainResult(best, last, history, outcome, meta["epoch"], int(state.step), meta["best_epoch"], out)


def _label(kind: str) -> str:
    return {"vae": "ELBO", "iwae": "IWAE", "ae": "log p(x|z)"}[kind]


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )
