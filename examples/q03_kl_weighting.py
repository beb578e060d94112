"""Q3: how should the KL term be weighted against the reconstruction term in a VAE?

With weight 1, the reconstruction summed over the D pixels: that sum minus the KL is the ELBO (Kingma & Welling
2014). Averaging the reconstruction over the pixels while summing the KL (``mean`` reduction in a BCE or MSE
loss) is D times smaller than the loss with β = D: a β-VAE (Higgins et al. 2017) with β = 64 on the 8×8 digits.
A Gaussian decoder with a fixed sd σ is a hidden β too: its loss is Σ(x − μ)²/(2σ²) + KL, so changing σ from
σ₀ to σ rescales the KL's weight by (σ/σ₀)², and "MSE(mean) + KL" is a Gaussian decoder with σ = √(D/2).
This example checks both identities on a batch, then trains each weighting on scikit-learn's digits and
reports the test ELBO, the KL, the active units and the prior samples side by side.

    python examples/q03_kl_weighting.py [--quick] [--out DIR]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from vbayes import vae  # noqa: E402
from vbayes.questions import example_args, new_figure, save_figure, say  # noqa: E402
from vbayes.vae.plots import image_grid, prior_sample_images  # noqa: E402

LATENT, WIDTH, DEPTH, BATCH, LR = 16, 200, 2, 100, 1e-3


def build(likelihood: str, sd: float = 0.1, seed: int = 0) -> vae.VAE:
    """The same MLP VAE (16 latent units, two tanh layers of 200) with a Bernoulli or fixed-sd Gaussian decoder."""
    config = vae.ModelConfig((8, 8), latent=LATENT, width=WIDTH, depth=DEPTH, likelihood=likelihood, sd=sd)
    return vae.build_model(config, seed)


@eqx.filter_jit
def _train(model, x, idx, key, beta, binarize: bool):
    """Adam on (1/B) Σ_b −log p(x_b | z_b) + β KL_b over the minibatches ``x[idx[i]]``; β is traced (one compile)."""
    opt = optax.adam(LR)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def step(carry, inputs):
        params, opt_state = carry
        i, k = inputs
        k_bin, k_loss = jax.random.split(k)
        xb = vae.binarize(k_bin, x[i]) if binarize else x[i]
        grads = jax.grad(lambda p: vae.negative_elbo(eqx.combine(p, static), xb, k_loss, beta=beta)[0])(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    keys = jax.random.split(key, idx.shape[0])
    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), (idx, keys))
    return eqx.combine(params, static)


def fit(model: vae.VAE, x: np.ndarray, beta: float, epochs: int, seed: int = 0) -> vae.VAE:
    """``epochs`` passes of shuffled minibatches of 100 (dynamically binarised for the Bernoulli decoder), from
    the data bias."""
    rng = np.random.default_rng(seed)
    n = len(x) // BATCH * BATCH
    idx = np.concatenate([rng.permutation(len(x))[:n].reshape(-1, BATCH) for _ in range(epochs)])
    binarize = model.likelihood.name == "bernoulli"
    model = vae.with_data_bias(model, x)  # start from the pixel-wise fit, as vae.train does
    return _train(model, jnp.asarray(x), jnp.asarray(idx), jax.random.PRNGKey(seed), jnp.asarray(beta), binarize)


def identities(x: np.ndarray) -> dict[str, float]:
    """Both identities on one batch with the same noise: pixel-mean loss × D = β = D loss; σ as an implicit β."""
    xb = jnp.asarray(x[:BATCH])
    d = xb[0].size
    key = jax.random.PRNGKey(7)
    bern = build("bernoulli")
    xbin = vae.binarize(jax.random.PRNGKey(8), xb)
    pixel_mean = float(vae.negative_elbo_pixel_mean(bern, xbin, key))
    beta_d = float(vae.negative_elbo(bern, xbin, key, beta=float(d))[0])
    # Gaussian, fixed sd: L_σ(β=1) − D log(σ√2π) = Σ(x−μ)²/(2σ²) + KL; times σ², it is the σ₀ loss with β = (σ/σ₀)²
    s0, s1 = 0.1, 0.3
    g0 = vae.build_model(vae.ModelConfig((8, 8), latent=LATENT, width=WIDTH, depth=DEPTH, likelihood="gaussian", sd=s0))
    g1 = eqx.tree_at(lambda m: m.likelihood.log_sd, g0, jnp.full_like(g0.likelihood.log_sd, math.log(s1)))
    const = lambda s: d * math.log(s * math.sqrt(2 * math.pi))  # noqa: E731
    lhs = s1**2 * (float(vae.negative_elbo(g1, xb, key)[0]) - const(s1))
    rhs = s0**2 * (float(vae.negative_elbo(g0, xb, key, beta=(s1 / s0) ** 2)[0]) - const(s0))
    return {"pixel_mean_times_d": pixel_mean * d, "beta_d_loss": beta_d, "sigma_lhs": lhs, "sigma_rhs": rhs, "d": d}


def main(argv: Sequence[str] | None = None) -> dict:
    args = example_args(__doc__.splitlines()[0], argv)
    epochs, k = (40, 100) if args.quick else (300, 1000)
    data = vae.load_digits()
    ids = identities(data.train)
    d = ids["d"]
    say("pixel-mean loss × D (one batch, same noise)", ids["pixel_mean_times_d"], ".6f")
    say("sum loss with β = D = 64 (same batch)", ids["beta_d_loss"], ".6f")
    say("Gaussian σ = 0.3, β = 1: σ² × (loss − const)", ids["sigma_lhs"], ".6f")
    say("Gaussian σ = 0.1, β = 9: σ₀² × (loss − const)", ids["sigma_rhs"], ".6f")

    sd_mse_mean = math.sqrt(d / 2)  # MSE(mean) + KL = (2σ²/D)(Σ(x−μ)²/(2σ²) + KL) at σ² = D/2
    settings = {
        "Bernoulli, β = 1 (sum: the ELBO)": ("bernoulli", 1.0, 0.1),
        "Bernoulli, β = 4": ("bernoulli", 4.0, 0.1),
        f"Bernoulli, β = {d} (pixel mean)": ("bernoulli", float(d), 0.1),
        "Gaussian σ = 0.1": ("gaussian", 1.0, 0.1),
        "Gaussian σ = 0.3": ("gaussian", 1.0, 0.3),
        f"Gaussian σ = {sd_mse_mean:.2f} (MSE mean)": ("gaussian", 1.0, sd_mse_mean),
    }
    rows, samples = {}, {}
    for label, (lik, beta, sd) in settings.items():
        model = fit(build(lik, sd), data.train, beta, epochs)
        with warnings.catch_warnings():  # collapse is what the heavy weights demonstrate; "0 active" says it
            warnings.simplefilter("ignore", vae.PosteriorCollapseWarning)
            ev = vae.evaluate(model, data.test, 0, k=k, chunk=min(k, 500))
        rows[label] = {
            "elbo": ev.elbo,
            "iwae": ev.iwae,
            "kl": ev.kl,
            "rec": ev.reconstruction,
            "active": ev.active_units,
        }
        samples[label] = prior_sample_images(model, 1, 16)
        say(f"{label}: test ELBO", ev.elbo, ".2f")
        say(f"{label}: test KL", ev.kl, ".2f")
        say(f"{label}: test E log p(x|z)", ev.reconstruction, ".2f")
        say(f"{label}: active units of {LATENT}", ev.active_units, "d")

    fig = new_figure(9.0, 3.6)
    axes = fig.subplots(1, len(samples))
    for ax, (label, imgs) in zip(axes, samples.items(), strict=True):
        ax.imshow(image_grid(np.clip(imgs, 0, 1), 4), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        r = rows[label]
        title = label.replace(", β", "\nβ").replace(" (", "\n(")
        ax.set_title(f"{title}\nKL {r['kl']:.1f} nats, {r['active']} active", fontsize=7)
        ax.axis("off")
    fig.suptitle("decoded z ~ N(0, I): the KL weight, explicit (β) or hidden in a Gaussian decoder's σ", fontsize=9)
    save_figure(fig, args.out, "q03_kl_weighting.png")
    return {**ids, "rows": rows}


if __name__ == "__main__":
    main()
