"""Q6: what is the "capacity" of a model?

The range of functions (here: of distributions p(x)) it can represent, which grows with its size. This example
holds a VAE's encoder fixed (64-200-200-16, tanh) and varies only its decoder p(x | z): linear in z, then one
hidden tanh layer of width 8 … 2,048. Trained the same way on scikit-learn's digits, each is measured by its
ELBO on the training and the test images, its IWAE bound on log p(x) (Burda et al. 2016), the KL it spends
(the information its latent code carries, in nats) and its active units.

    python examples/q06_model_capacity.py [--quick] [--out DIR]
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from vbayes import vae  # noqa: E402
from vbayes.questions import example_args, new_figure, save_figure, say  # noqa: E402

LATENT, BATCH, LR = 16, 100, 1e-3


def build(width: int, seed: int = 0) -> vae.VAE:
    """The fixed encoder and a decoder with one hidden layer of ``width`` tanh units (``width`` 0: linear)."""
    k_enc, k_dec = jax.random.split(jax.random.PRNGKey(seed))
    enc = vae.MLPEncoder((8, 8), LATENT, width=200, depth=2, act="tanh", key=k_enc)
    dec = vae.MLPDecoder((8, 8), LATENT, 1, width=max(width, 1), depth=1 if width else 0, act="tanh", key=k_dec)
    return vae.VAE(enc, dec, vae.Bernoulli())


def n_params(module) -> int:
    return sum(a.size for a in jax.tree_util.tree_leaves(eqx.filter(module, eqx.is_inexact_array)))


@eqx.filter_jit
def _train(model, x, idx, key):
    """Adam on the negative ELBO over the minibatches ``x[idx[i]]``, dynamically binarised."""
    opt = optax.adam(LR)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def step(carry, inputs):
        params, opt_state = carry
        i, k = inputs
        k_bin, k_loss = jax.random.split(k)
        xb = vae.binarize(k_bin, x[i])
        grads = jax.grad(lambda p: vae.negative_elbo(eqx.combine(p, static), xb, k_loss)[0])(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    keys = jax.random.split(key, idx.shape[0])
    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), (idx, keys))
    return eqx.combine(params, static)


def fit(model: vae.VAE, x: np.ndarray, epochs: int, seed: int = 0) -> vae.VAE:
    rng = np.random.default_rng(seed)
    n = len(x) // BATCH * BATCH
    idx = np.concatenate([rng.permutation(len(x))[:n].reshape(-1, BATCH) for _ in range(epochs)])
    model = vae.with_data_bias(model, x)  # start from the pixel-wise fit, as vae.train does
    return _train(model, jnp.asarray(x), jnp.asarray(idx), jax.random.PRNGKey(seed))


@eqx.filter_jit
def _elbo(model, x, key):
    return vae.elbo(model, x, key, samples=10)


def mean_elbo(model: vae.VAE, x_bin: jax.Array) -> float:
    return float(jnp.mean(_elbo(model, x_bin, jax.random.PRNGKey(3))))


def main(argv: Sequence[str] | None = None) -> dict:
    args = example_args(__doc__.splitlines()[0], argv)
    widths, epochs, k = ((0, 16, 256), 40, 50) if args.quick else ((0, 8, 32, 128, 512, 2048), 300, 500)
    data = vae.load_digits()
    train_bin = vae.binarize(jax.random.PRNGKey(11), jnp.asarray(data.train))  # one fixed draw, for evaluation
    test_bin = vae.binarize(jax.random.PRNGKey(12), jnp.asarray(data.test))
    print(f"encoder 64-200-200-{LATENT} fixed; decoder {LATENT}-w-64; {epochs} epochs on {len(data.train)} digits")
    rows = []
    for w in widths:
        model = fit(build(w), data.train, epochs)
        iwae = vae.iwae_bound(model, test_bin, jax.random.PRNGKey(4), k, chunk=min(k, 100))
        row = {
            "width": w,
            "decoder_params": n_params(model.decoder),
            "train_elbo": mean_elbo(model, train_bin),
            "test_elbo": mean_elbo(model, test_bin),
            "test_iwae": float(jnp.mean(iwae)),
            "kl": float(np.sum(vae.kl_per_dimension(model, test_bin))),
            "active": vae.active_units(model, test_bin),
        }
        rows.append(row)
        name = "linear decoder" if w == 0 else f"decoder width {w}"
        say(f"{name}: decoder parameters", row["decoder_params"], "d")
        say(f"{name}: train ELBO", row["train_elbo"], ".2f")
        say(f"{name}: test ELBO", row["test_elbo"], ".2f")
        say(f"{name}: test IWAE-{k}", row["test_iwae"], ".2f")
        say(f"{name}: test KL (nats)", row["kl"], ".2f")
        say(f"{name}: active units of {LATENT}", row["active"], "d")

    fig = new_figure(9.0, 3.2)
    ax1, ax2 = fig.subplots(1, 2)
    lin = [r for r in rows if r["width"] == 0]
    mlp = [r for r in rows if r["width"] > 0]
    x = [r["width"] for r in mlp]
    series = [("train_elbo", "o-", "ELBO, training digits"), ("test_elbo", "s-", "ELBO, test digits")]
    series.append(("test_iwae", "^--", f"IWAE-{k} ≤ log p(x), test digits"))
    for i, (key, style, label) in enumerate(series):
        ax1.plot(x, [r[key] for r in mlp], style, color=f"C{i}", label=label)
        for r in lin:
            ax1.axhline(r[key], color=f"C{i}", lw=0.8, ls=":")
    if lin:
        ax1.text(x[0], lin[0]["train_elbo"], " dotted: linear decoder", fontsize=7, va="bottom")
    ax1.set(xscale="log", xlabel="decoder hidden width (one tanh layer)", ylabel="nats per image")
    ax1.legend(fontsize=7)
    ax2.plot(x, [r["kl"] for r in mlp], "o-", color="C3", label="KL(q(z|x) ‖ p(z)), test (nats)")
    ax2.set(xscale="log", xlabel="decoder hidden width (one tanh layer)", ylabel="KL (nats)")
    ax3 = ax2.twinx()
    ax3.plot(x, [r["active"] for r in mlp], "s--", color="C4", label="active units")
    ax3.set(ylabel=f"active units (of {LATENT})", ylim=(0, LATENT + 0.5))
    ax2.legend(handles=ax2.get_lines() + ax3.get_lines(), fontsize=7, loc="lower right")
    save_figure(fig, args.out, "q06_model_capacity.png")
    return {"rows": rows}


if __name__ == "__main__":
    main()
