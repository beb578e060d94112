"""How a VAE's start changes where MNIST training gets: the benchmark's network (Burda et al. 2016), one start per
process, the same seed, steps and test images.

    python benchmarks/vae_start.py --start old|bias|glorot|both --epochs 40 [--kind vae|iwae] [--seed 0] [--adam-b1 0.9]

Starts: ``old`` Equinox's default initialisation with its random decoder output bias (how runs began before
2026-11-26); ``bias`` the same with the output bias at the likelihood's pixel-wise fit (``vae.with_data_bias``,
the default now); ``glorot`` Glorot-uniform weights and zero biases (Burda et al.'s code); ``both``. Prints one
JSON line: test log p(x) by IWAE-1,000 on the first 2,000 test images (one binarisation, seed 123), the ELBO,
active units and the training bound per epoch; one core, one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def glorot(mlp, key):
    """``mlp`` with weights U(±√(6 / (fan_in + fan_out))) and zero biases (Glorot & Bengio 2010)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    layers = []
    for layer, k in zip(mlp.layers, jax.random.split(key, len(mlp.layers)), strict=True):
        limit = math.sqrt(6.0 / sum(layer.weight.shape))
        w = jax.random.uniform(k, layer.weight.shape, layer.weight.dtype, -limit, limit)
        layers.append(eqx.tree_at(lambda lin: (lin.weight, lin.bias), layer, (w, jnp.zeros_like(layer.bias))))
    return eqx.tree_at(lambda m: m.layers, mlp, tuple(layers))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start", choices=["old", "bias", "glorot", "both"], required=True)
    p.add_argument("--kind", choices=["vae", "iwae"], default="vae")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--adam-b1", type=float, default=0.9)
    p.add_argument("--cpu", type=int, default=None, help="core to pin to")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mnist")
    args = p.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    import equinox as eqx
    import jax
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import vae_mnist

    from vbayes.vae import build_model, evaluate, load_mnist
    from vbayes.vae.data import binarize

    train_module = importlib.import_module("vbayes.vae.trainer")
    if args.start in ("old", "glorot"):
        train_module.with_data_bias = lambda model, x: model
    if args.start in ("glorot", "both"):

        def build(config, key=0):
            model = build_model(config, key)
            k_enc, k_dec = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(7), args.seed))
            model = eqx.tree_at(lambda m: m.encoder.mlp, model, glorot(model.encoder.mlp, k_enc))
            return eqx.tree_at(lambda m: m.decoder.mlp, model, glorot(model.decoder.mlp, k_dec))

        train_module.build_model = build
    data = load_mnist(args.data, val_size=0)
    config = vae_mnist.train_config(args.kind, epochs=args.epochs, adam_b1=args.adam_b1)
    t0 = time.perf_counter()
    result = train_module.train(
        data, vae_mnist.model_config(), dataclasses.replace(config, seed=args.seed), progress=False
    )
    seconds = time.perf_counter() - t0
    x = np.asarray(binarize(jax.random.PRNGKey(123), jax.numpy.asarray(data.test[:2000])))
    report = evaluate(result.model, x, key=1, k=1000, kind="vae", chunk=50, batch_size=100, binarize=False)
    print(
        json.dumps(
            {
                **vars(args),
                "data": str(args.data),
                "train_seconds": round(seconds, 1),
                "test_iwae1000": round(report.iwae, 3),
                "test_elbo": round(report.elbo, 3),
                "active_units": report.active_units,
                "train_bounds": [round(h["train_bound"], 3) for h in result.history],
            }
        )
    )


if __name__ == "__main__":
    main()
