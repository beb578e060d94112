"""VAE and IWAE on dynamically binarised MNIST (Burda, Grosse & Salakhutdinov 2016 protocol) vs PyTorch.

Network: one stochastic layer of 50 units, two deterministic layers of 200 tanh units in encoder and
decoder, Bernoulli decoder; Adam (lr 1e-3, ε 1e-4, Burda's schedule 10^(−i/7) over 3^i epochs), batch 20,
all 60,000 training images; test log p(x) by IWAE with 5,000 samples on the 10,000 test images
(one fixed stochastic binarisation). Published (Burda et al. 2016, table 1): VAE 86.76, IWAE k=50 84.78.

Phases (default: all):
  throughput  examples per second of one training step, vbayes (compiled scan of steps) vs PyTorch (eager,
              the usual loop), same network, batch, binarisation and thread count, interleaved repeats;
  steps       microseconds per training step of vbayes alone (no PyTorch needed: for a GPU), with a skipped
              non-finite step done as a conditional and as a select (the default picks one per backend);
  train       trains for --minutes (resumable: --resume continues the checkpoint in --out/<model>);
  eval        IWAE-5000 test log p(x) of the trained model(s);
  report      prints the markdown table from what the phases saved in --out.

  python benchmarks/vae_mnist.py --quick                       # smoke run, ~3 minutes
  python benchmarks/vae_mnist.py --phase train --model vae --minutes 60 --resume --cpu 0
  python benchmarks/vae_mnist.py --phase eval --model vae --cpu 0 ; python benchmarks/vae_mnist.py --phase report
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
PUBLISHED = {"vae": 86.76, "iwae": 84.78}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", choices=["all", "throughput", "steps", "train", "eval", "report"], default="all")
    p.add_argument("--model", choices=["vae", "iwae", "both"], default="both")
    p.add_argument("--data", type=Path, default=MNIST)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / ".cache" / "vae_mnist")
    p.add_argument("--minutes", type=float, default=30.0, help="training budget per model in this invocation")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out/<model>")
    p.add_argument("--threads", type=int, default=1, help="threads for both libraries (1: pinned to one core)")
    p.add_argument("--cpu", type=int, default=None, help="core to pin to when --threads 1 (-1: no pinning)")
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--eval-n", type=int, default=10_000, help="test images for the IWAE evaluation")
    p.add_argument("--adam-b1", type=float, default=0.9, help="Adam's beta1 (Burda et al.'s code: 0.99)")
    p.add_argument("--iwae-gradient", choices=["dreg", "reparam"], default="dreg", help="IWAE's gradient estimator")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 minute of training, K=100 on 500 images")
    return p.parse_args()


def setup_threads(args: argparse.Namespace) -> None:
    """Same thread count for JAX and torch; with one thread, pin the process to one core."""
    if args.threads == 1:
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        cpus = sorted(os.sched_getaffinity(0))
        if args.cpu != -1:  # -1: one thread, but free to run on any core (long background training)
            os.sched_setaffinity(0, {args.cpu if args.cpu is not None else cpus[0]})
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))


def model_config():
    from vbayes.vae import ModelConfig

    return ModelConfig(
        (28, 28), latent=50, network="mlp", width=200, depth=2, activation="tanh", likelihood="bernoulli"
    )


def train_config(kind: str, epochs: int = 3280, adam_b1: float = 0.9, iwae_gradient: str = "dreg"):
    from vbayes.vae import TrainConfig

    return TrainConfig(
        kind=kind,
        k=50,
        iwae_gradient=iwae_gradient,
        batch_size=20,
        learning_rate=1e-3,
        adam_b1=adam_b1,
        adam_eps=1e-4,
        lr_schedule="burda",
        epochs=epochs,
        patience=0,
        seed=0,
        chunk=500,
    )


def load(path: Path, quick: bool):
    from vbayes.vae import load_mnist

    if not path.is_dir():
        sys.exit(f"MNIST not found in {path}; pass --data")
    return load_mnist(path, val_size=0)


# ----------------------------------------------------------------------------------------------
# throughput


def throughput(args, data) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from _torch_vae import make_trainer

    from vbayes.vae import build_model
    from vbayes.vae.config import optimizer, split_model
    from vbayes.vae.trainer import build_chunk, build_step, init

    torch.set_num_threads(args.threads)
    x = data.train
    B, steps, repeats = 20, (300 if not args.quick else 100), (5 if not args.quick else 2)
    results = {}
    for kind, k in (("vae", 1), ("iwae", 50)):
        n_steps = steps if kind == "vae" else steps // 5
        tc = train_config(kind, adam_b1=args.adam_b1)
        model = build_model(model_config(), 0)
        opt = optimizer(tc, 3000)
        chunk = build_chunk(build_step(split_model(model)[1], opt, tc, True))
        state = init(model, opt)
        data_dev = jnp.asarray(x)
        rng = np.random.default_rng(0)
        idx = jnp.asarray(rng.integers(0, len(x), (n_steps, B)))
        key = jax.random.PRNGKey(0)
        state, _ = chunk(state, data_dev, idx, key)  # compile
        jax.block_until_ready(state)
        _, tstep = make_trainer(k=k)
        xt = torch.from_numpy(x.reshape(len(x), -1))
        for _ in range(10):
            tstep(xt[rng.integers(0, len(x), B)])
        ours, theirs = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            state, info = chunk(state, data_dev, idx, key)
            jax.block_until_ready(info.loss)
            ours.append(n_steps * B / (time.perf_counter() - t0))
            batches = [xt[torch.from_numpy(rng.integers(0, len(x), B))] for _ in range(n_steps)]
            t0 = time.perf_counter()
            for xb in batches:
                loss = tstep(xb)
            float(loss.detach())
            theirs.append(n_steps * B / (time.perf_counter() - t0))
        results[kind] = {
            "vbayes": float(np.median(ours)),
            "torch": float(np.median(theirs)),
            "steps": n_steps,
            "repeats": repeats,
            "batch": B,
        }
        r = results[kind]
        print(
            f"{kind:5s} throughput: vbayes {r['vbayes']:9.0f} img/s, torch {r['torch']:9.0f} img/s, "
            f"ratio {r['vbayes'] / r['torch']:.2f}",
            flush=True,
        )
    results["load_average"] = os.getloadavg()
    return results


def step_latency(args, data, kinds: list[str]) -> dict:
    """µs per compiled training step, batch 20, for each skip variant; interleaved repeats, median."""
    import importlib

    import jax
    import jax.numpy as jnp
    import numpy as np

    from vbayes.vae import build_model

    train_module = importlib.import_module("vbayes.vae.trainer")
    default = train_module.skip_by_branching
    n_steps, repeats = (300, 2) if args.quick else (1500, 3)
    data_dev = jnp.asarray(data.train)
    idx = jnp.asarray(np.random.default_rng(0).integers(0, len(data.train), (n_steps, 20)))
    key = jax.random.PRNGKey(0)
    rows = ["| model | skip as | µs per step | default here |", "|---|---|---|---|"]
    results = {"device": str(jax.devices()[0]), "jax": jax.__version__}
    for kind in kinds:
        tc = train_config(kind, adam_b1=args.adam_b1, iwae_gradient=args.iwae_gradient)
        runs = {}
        for name, branching in (("cond", True), ("select", False)):
            train_module.skip_by_branching = lambda b=branching: b  # read when the step is traced
            model = build_model(model_config(), 0)
            opt = train_module.optimizer(tc, 3000)
            chunk = train_module.build_chunk(train_module.build_step(train_module.split_model(model)[1], opt, tc, True))
            state, info = chunk(train_module.init(model, opt), data_dev, idx, key)  # compile
            jax.block_until_ready(info.loss)
            runs[name] = [chunk, state, []]
        train_module.skip_by_branching = default
        for _ in range(repeats):
            for run in runs.values():
                t0 = time.perf_counter()
                run[1], info = run[0](run[1], data_dev, idx, key)
                jax.block_until_ready(info.loss)
                run[2].append((time.perf_counter() - t0) / n_steps * 1e6)
        for name, run in runs.items():
            us = float(np.median(run[2]))
            results[f"{kind}-{name}"] = us
            chosen = "yes" if (name == "cond") == default() else ""
            rows.append(f"| {kind.upper()} | {name} | {us:.1f} | {chosen} |")
    print(f"device {results['device']}, jax {results['jax']}, {n_steps} steps x {repeats} repeats")
    print("\n".join(rows), flush=True)
    return results


# ----------------------------------------------------------------------------------------------
# training and evaluation


def train_phase(args, data, kind: str) -> dict:
    from vbayes.vae import train

    folder = args.out / kind
    resume = args.resume and (folder / "state.json").exists()
    budget = 60 * (1.0 if args.quick else args.minutes)
    start = time.perf_counter()

    def stop_when_spent(info):
        if time.perf_counter() - start > budget:
            raise KeyboardInterrupt  # the driver checkpoints mid-epoch and returns

    tc = train_config(kind, adam_b1=args.adam_b1, iwae_gradient=args.iwae_gradient)
    result = train(
        data,
        None if resume else model_config(),
        tc,
        out=folder,
        resume=resume,
        progress=sys.stderr.isatty(),
        callback=stop_when_spent,
        data_spec=str(args.data),
    )
    seconds = sum(h["seconds"] for h in result.history)
    last = result.history[-1] if result.history else {}
    print(
        f"{kind}: {result.epochs} epochs, {result.steps} steps, {seconds / 60:.1f} min of training steps in total, "
        f"last train bound {last.get('train_bound', float('nan')):.2f}",
        flush=True,
    )
    return {
        "epochs": result.epochs,
        "steps": result.steps,
        "train_minutes": seconds / 60,
        "train_bound": last.get("train_bound"),
    }


def eval_phase(args, data, kind: str) -> dict:
    import jax
    import numpy as np

    from vbayes.vae import evaluate, load_run
    from vbayes.vae.data import binarize

    run = load_run(args.out / kind)
    k = 100 if args.quick else args.eval_k
    n = 500 if args.quick else args.eval_n
    x = np.asarray(binarize(jax.random.PRNGKey(123), jax.numpy.asarray(data.test[:n])))
    t0 = time.perf_counter()
    report = evaluate(run.model, x, key=1, k=k, kind="vae", chunk=50, batch_size=100, binarize=False)
    seconds = time.perf_counter() - t0
    print(
        f"{kind}: test ELBO {report.elbo:.2f}, IWAE-{k} {report.iwae:.2f} (log p(x) estimate), "
        f"active units {report.active_units}/{len(report.kl_per_dim)}, {seconds / 60:.1f} min",
        flush=True,
    )
    return {
        "elbo": report.elbo,
        "iwae": report.iwae,
        "iwae_se": report.iwae_se,
        "k": k,
        "n": int(n),
        "active_units": report.active_units,
        "epochs": run.meta["epoch"],
        "steps": int(run.meta["_state"].step),
        "eval_minutes": seconds / 60,
        "train_minutes": sum(h["seconds"] for h in run.meta["history"]) / 60,
    }


def save(args, name: str, value: dict) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(value, indent=1, default=float))


def report(args) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import machine_info

    info = machine_info()
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = "not installed"
    print("\nmachine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    rows = [
        "| quantity | vbayes | PyTorch | ratio (ours/theirs) | published | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    tp = args.out / "throughput.json"
    if tp.exists():
        t = json.loads(tp.read_text())
        for kind, label in (("vae", "VAE (k=1)"), ("iwae", "IWAE (k=50)")):
            if kind in t:
                r = t[kind]["vbayes"] / t[kind]["torch"]
                rows.append(
                    f"| training throughput, {label}, batch 20, {args.threads} thread | {t[kind]['vbayes']:,.0f} "
                    f"img/s | {t[kind]['torch']:,.0f} img/s | {r:.2f} | | ≥ 1.5 | {'yes' if r >= 1.5 else '**no**'} |"
                )
    for kind in ("vae", "iwae"):
        f = args.out / f"eval-{kind}.json"
        if f.exists():
            e = json.loads(f.read_text())
            nll, se = -e["iwae"], e.get("iwae_se")
            met = "yes" if nll <= PUBLISHED[kind] else "**no**"
            rows.append(
                f"| {kind.upper()} test −log p(x), IWAE-{e['k']} on {e['n']:,} images, after {e['epochs']} epochs "
                f"({e['train_minutes']:.0f} min) | {nll:.2f}{f' ± {se:.2f}' if se else ''} nats | | | "
                f"{PUBLISHED[kind]} | ≤ {PUBLISHED[kind]} | {met} |"
            )
            rows.append(f"| {kind.upper()} test −ELBO | {-e['elbo']:.2f} nats | | | | | |")
    print("\n".join(rows))


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # the training driver checkpoints and returns


def main() -> None:
    # background jobs start with SIGINT ignored; make SIGINT and SIGTERM stop training with a checkpoint
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    args = parse()
    setup_threads(args)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    kinds = ["vae", "iwae"] if args.model == "both" else [args.model]
    if args.quick:
        args.out = args.out.with_name(args.out.name + "-quick")
    data = load(args.data, args.quick) if args.phase != "report" else None
    if args.phase in ("all", "throughput"):
        save(args, "throughput", throughput(args, data))
    if args.phase == "steps":
        save(args, "steps", step_latency(args, data, kinds))
    for kind in kinds:
        if args.phase in ("all", "train"):
            save(args, f"train-{kind}", train_phase(args, data, kind))
        if args.phase in ("all", "eval"):
            save(args, f"eval-{kind}", eval_phase(args, data, kind))
    report(args)


if __name__ == "__main__":
    main()
