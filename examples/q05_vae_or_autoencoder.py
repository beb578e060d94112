"""Q5: when should I use a VAE rather than an autoencoder?

When you need more than reconstructions: samples, a density, or a latent space with a known distribution. An
autoencoder (AE) and a VAE with the same networks are trained with ``vbayes.vae.trainer`` (``kind="ae"`` /
``"vae"``) on scikit-learn's digits with every 7 held out, and compared on what each is for: decoding z ~ N(0, I)
(only the VAE's decoder was trained on codes that follow N(0, I)); where the codes lie; and the held-out 7s as
anomalies, scored by the VAE's −log p(x) (IWAE bound, Burda et al. 2016) or by the AE's reconstruction error.

    python examples/q05_vae_or_autoencoder.py [--quick] [--out DIR]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from vbayes import vae  # noqa: E402
from vbayes.questions import example_args, new_figure, save_figure, say  # noqa: E402
from vbayes.vae.plots import image_grid, prior_sample_images, reconstruction_images  # noqa: E402

HELD_OUT = 7
LATENT = 16


def without_digit(data: vae.Dataset, digit: int) -> tuple[vae.Dataset, np.ndarray]:
    """The data set with ``digit`` removed from train, validation and test, and all images of ``digit``."""
    keep = lambda x, y: (x[y != digit], y[y != digit])  # noqa: E731
    (xt, yt), (xv, yv), (xs, ys) = (
        keep(data.train, data.train_labels),
        keep(data.val, data.val_labels),
        keep(data.test, data.test_labels),
    )
    held = np.concatenate(
        [
            x[y == digit]
            for x, y in ((data.train, data.train_labels), (data.val, data.val_labels), (data.test, data.test_labels))
        ]
    )
    return vae.Dataset(data.name, xt, yt, xv, yv, xs, ys, data.levels), held


def nearest_distance(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance (over the 64 pixels) from each image to its nearest reference image."""
    a, b = images.reshape(len(images), -1), reference.reshape(len(reference), -1)
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
    return np.maximum(d2.min(1), 0)


@eqx.filter_jit
def _iwae(model, x, key, k: int):
    return vae.iwae_bound(model, x, key, k, chunk=min(k, 100))


@eqx.filter_jit
def _ae_log_lik(model, x):
    return jax.vmap(lambda xb: model.log_likelihood(model.encode(xb)[0], xb))(x)


def main(argv: Sequence[str] | None = None) -> dict:
    args = example_args(__doc__.splitlines()[0], argv)
    epochs, k, n_samples, reps = (40, 100, 500, 2) if args.quick else (300, 1000, 2000, 10)
    data, held = without_digit(vae.load_digits(), HELD_OUT)
    config = vae.ModelConfig(data.data_shape, latent=LATENT, width=200, depth=2, likelihood="bernoulli")
    models = {
        kind: vae.train(data, config, vae.TrainConfig(kind=kind, epochs=epochs, patience=0), progress=False).model
        for kind in ("vae", "ae")
    }
    print(
        f"AE and VAE: the same MLP (64-200-200-{LATENT}), {epochs} epochs on {len(data.train)} digits without "
        f"the {HELD_OUT}s"
    )

    # 1. decode z ~ N(0, I): how far is each sample from the nearest training digit?
    ref = nearest_distance(data.test, data.train)
    say("test digits: mean squared distance to the nearest training digit", float(ref.mean()), ".2f")
    out: dict = {"test_nn": float(ref.mean())}
    for kind, model in models.items():
        dist = nearest_distance(prior_sample_images(model, 1, n_samples), data.train)
        out[f"{kind}_sample_nn"] = float(dist.mean())
        say(
            f"{kind.upper()} decoded z ~ N(0, I): mean squared distance to the nearest training digit",
            dist.mean(),
            ".2f",
        )

    # 2. where the codes lie: per-dimension sd of E_q[z|x] and mean log N(code; 0, I) over the training digits
    for kind, model in models.items():
        codes, _ = vae.posterior_means(model, data.train)
        sd = codes.std(0)
        log_prior = float(np.mean(-0.5 * np.sum(codes**2 + math.log(2 * math.pi), 1)))
        out[f"{kind}_code_sd"] = (float(sd.min()), float(sd.max()))
        out[f"{kind}_code_log_prior"] = log_prior
        say(f"{kind.upper()} codes: per-dimension sd, min to max", f"{sd.min():.2f} to {sd.max():.2f}")
        say(f"{kind.upper()} codes: mean log N(code; 0, I)", log_prior, ".1f")
    say("z ~ N(0, I) itself: E log N(z; 0, I)", -0.5 * LATENT * (1 + math.log(2 * math.pi)), ".1f")

    # 3. the held-out 7s as anomalies among the other test digits. The models are densities of binary images, so a
    # grey image's −log p is averaged over `reps` binarisations; the reconstruction errors use the grey levels.
    x_all = np.concatenate([data.test, held])
    is_anomaly = np.r_[np.zeros(len(data.test)), np.ones(len(held))]
    vae_model, ae_model = models["vae"], models["ae"]
    iwae, ae_nll = np.zeros(len(x_all)), np.zeros(len(x_all))
    for r in range(reps):
        x_bin = vae.binarize(jax.random.PRNGKey(100 + r), jnp.asarray(x_all))
        iwae += np.asarray(_iwae(vae_model, x_bin, jax.random.PRNGKey(1000 + r), k)) / reps
        ae_nll -= np.asarray(_ae_log_lik(ae_model, x_bin)) / reps
    sq_error = lambda m: np.sum((reconstruction_images(m, x_all) - x_all).reshape(len(x_all), -1) ** 2, 1)  # noqa: E731
    scores = {
        f"VAE −log p(x) (IWAE-{k})": -iwae,
        "VAE squared reconstruction error": sq_error(vae_model),
        "AE −log p(x | z = code)": ae_nll,
        "AE squared reconstruction error": sq_error(ae_model),
    }
    print(
        f"anomaly detection: {len(data.test)} test digits (not {HELD_OUT}) against {len(held)} {HELD_OUT}s; "
        f"−log p averaged over {reps} binarisations"
    )
    aucs = {}
    for name, s in scores.items():
        aucs[name] = float(roc_auc_score(is_anomaly, s))
        say(f"AUC, {name}", aucs[name], ".3f")
    say(f"VAE test log p(x) of the other digits (IWAE-{k}, nats)", float(iwae[is_anomaly == 0].mean()), ".2f")
    say(f"VAE log p(x) of the {HELD_OUT}s (IWAE-{k}, nats)", float(iwae[is_anomaly == 1].mean()), ".2f")

    fig = new_figure(9.0, 3.0)
    axes = fig.subplots(1, 3, width_ratios=[1, 1, 1.3])
    for ax, kind in zip(axes[:2], ("vae", "ae"), strict=True):
        ax.imshow(
            image_grid(np.clip(prior_sample_images(models[kind], 1, 36), 0, 1), 6),
            cmap="gray_r",
            vmin=0,
            vmax=1,
            interpolation="nearest",
        )
        ax.set_title(
            f"{kind.upper()}: decoded z ~ N(0, I)\nnearest-digit distance {out[f'{kind}_sample_nn']:.1f}", fontsize=8
        )
        ax.axis("off")
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(is_anomaly, s)
        axes[2].plot(fpr, tpr, label=f"{name}: AUC {aucs[name]:.2f}")
    axes[2].plot([0, 1], [0, 1], color="0.7", lw=0.8)
    axes[2].set(xlabel="false-alarm rate (other digits)", ylabel=f"detection rate ({HELD_OUT}s)")
    axes[2].set_title(f"anomaly scores: unseen {HELD_OUT}s", fontsize=8)
    axes[2].legend(fontsize=6, loc="lower right")
    axes[2].tick_params(labelsize=7)
    save_figure(fig, args.out, "q05_vae_or_autoencoder.png")
    return {
        **out,
        "aucs": aucs,
        "iwae_normal": float(iwae[is_anomaly == 0].mean()),
        "iwae_anomaly": float(iwae[is_anomaly == 1].mean()),
    }


if __name__ == "__main__":
    main()
