"""Q4: what is a variational autoencoder, and what is it used for?

A latent-variable model p(x) = ∫ p(x | z) N(z; 0, I) dz whose likelihood p(x | z) is a neural network (the
decoder), fitted by maximising the ELBO with an amortised Gaussian q(z | x) from a second network (the encoder)
and reparameterised gradients (Kingma & Welling 2014). This example trains one with ``vbayes.vae`` on
scikit-learn's digits and uses it for what VAEs are used for: generating (decode z ~ N(0, I)), density
estimation (log p(x) by the IWAE bound, Burda et al. 2016), compression/representation (a classifier on the
16 latent means instead of the 64 pixels) and reconstruction/interpolation.

    python examples/q04_what_is_a_vae.py [--quick] [--out DIR]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from vbayes import vae  # noqa: E402
from vbayes.questions import example_args, new_figure, save_figure, say  # noqa: E402
from vbayes.vae.plots import (  # noqa: E402
    image_grid,
    interpolation_images,
    latent_2d,
    prior_sample_images,
    reconstruction_images,
)


def probe_accuracy(features_train, y_train, features_test, y_test, n_labels: int | None, seed: int = 0) -> float:
    """Test accuracy of a logistic regression fitted on ``n_labels`` labelled training examples (all if None)."""
    idx = np.arange(len(y_train))
    if n_labels is not None:
        idx = np.random.default_rng(seed).permutation(len(y_train))[:n_labels]
    clf = LogisticRegression(max_iter=2000).fit(features_train[idx], y_train[idx])
    return float(clf.score(features_test, y_test))


def main(argv: Sequence[str] | None = None) -> dict:
    args = example_args(__doc__.splitlines()[0], argv)
    epochs, k = (40, 100) if args.quick else (300, 1000)
    data = vae.load_digits()
    config = vae.ModelConfig(data.data_shape, latent=16, width=200, depth=2, likelihood="bernoulli")
    result = vae.train(data, config, vae.TrainConfig(kind="vae", epochs=epochs, patience=0), progress=False)
    model = result.model
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)))
    ev = vae.evaluate(model, data.test, 0, k=k, chunk=min(k, 500))
    d = math.prod(data.data_shape)
    print(
        f"VAE: 16 latent units, MLP 64-200-200-16 encoder and decoder, {result.epochs} epochs on "
        f"{len(data.train)} binarised digits; test set of {len(data.test)}"
    )
    say("parameters", n_params, "d")
    say("test ELBO (nats per image)", ev.elbo, ".2f")
    say(f"test log p(x) ≥ IWAE-{k} (nats per image)", ev.iwae, ".2f")
    say("test log p(x) in bits per pixel", -ev.iwae / d / math.log(2), ".3f")
    say("test E_q log p(x|z) (reconstruction)", ev.reconstruction, ".2f")
    say("test KL(q(z|x) ‖ p(z)) (nats)", ev.kl, ".2f")
    say("active units of 16", ev.active_units, "d")
    # independent pixels (the best model without z): the baseline the latent variables beat
    p = np.clip(data.train.mean(0), 1e-3, 1 - 1e-3)
    rng = np.random.default_rng(0)
    xbin = (rng.random(data.test.shape) < data.test).astype(float)
    indep = float(np.mean(np.sum(xbin * np.log(p) + (1 - xbin) * np.log1p(-p), axis=(1, 2))))
    say("independent-pixel model log p(x) (no z)", indep, ".2f")

    z_train, _ = vae.posterior_means(model, data.train)
    z_test, _ = vae.posterior_means(model, data.test)
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    acc = {}
    for n_labels in (100, None):
        name = "all" if n_labels is None else str(n_labels)
        acc[f"latent_{name}"] = probe_accuracy(z_train, data.train_labels, z_test, data.test_labels, n_labels)
        acc[f"pixels_{name}"] = probe_accuracy(
            flat(data.train), data.train_labels, flat(data.test), data.test_labels, n_labels
        )
        say(f"classifier on 16 latent means, {name} labels: test accuracy", acc[f"latent_{name}"], ".3f")
        say(f"classifier on 64 pixels, {name} labels: test accuracy", acc[f"pixels_{name}"], ".3f")

    fig = new_figure(9.0, 3.0)
    axes = fig.subplots(1, 4, width_ratios=[1, 1, 1.25, 1.2])
    shows = [
        (prior_sample_images(model, 1, 36), 6, "generate: decoded z ~ N(0, I)"),
        (
            np.concatenate(
                [
                    data.test[:6],
                    reconstruction_images(model, data.test[:6]),
                    data.test[6:12],
                    reconstruction_images(model, data.test[6:12]),
                ]
            ),
            6,
            "reconstruct: test digits\n(rows 1, 3) and decoded E_q[z|x]",
        ),
        (
            np.concatenate([interpolation_images(model, data.test[2 * i], data.test[2 * i + 1], 8) for i in range(5)]),
            8,
            "interpolate between the\ncodes of two test digits",
        ),
    ]
    for ax, (imgs, cols, title) in zip(axes[:3], shows, strict=True):
        ax.imshow(image_grid(np.clip(imgs, 0, 1), cols), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    xy, how = latent_2d(model, data.test)
    axes[3].scatter(xy[:, 0], xy[:, 1], c=data.test_labels, cmap="tab10", s=6)
    for digit in range(10):
        cx, cy = np.median(xy[data.test_labels == digit], 0)
        axes[3].text(cx, cy, str(digit), fontsize=9, weight="bold", ha="center", va="center")
    axes[3].set_title("represent: test codes E_q[z|x]\n(2 principal components)", fontsize=8)
    axes[3].tick_params(labelsize=6)
    save_figure(fig, args.out, "q04_what_is_a_vae.png")
    return {
        "elbo": ev.elbo,
        "iwae": ev.iwae,
        "kl": ev.kl,
        "reconstruction": ev.reconstruction,
        "active_units": ev.active_units,
        "independent_pixels": indep,
        "accuracy": acc,
        "n_params": n_params,
    }


if __name__ == "__main__":
    main()
