"""Pictures of a trained model: prior samples, reconstructions, latent interpolation, latent scatter.

Each ``*_images`` function is pure (arrays in, image arrays out); each ``plot_*`` writes a PNG with matplotlib
(Agg), whole or not at all (:mod:`vbayes.outputs`), and returns its path. For an autoencoder the same prior-sample
grid shows why it cannot generate: its decoder was never trained on z ~ N(0, I), only on the encoder's codes.
"""

from __future__ import annotations

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from vbayes.outputs import save_figure
from vbayes.vae.model import VAE


@eqx.filter_jit
def _means(model: VAE, z: Array) -> Array:
    return jax.vmap(model.mean)(z)


def prior_sample_images(model: VAE, key: Array | int = 0, n: int = 64) -> np.ndarray:
    """E[x | z] for z ~ N(0, I): ``(n, *S)``."""
    key = jax.random.PRNGKey(key) if isinstance(key, int) else key
    z = jax.random.normal(key, (n, model.latent))
    return np.asarray(_means(model, z))


def reconstruction_images(model: VAE, x: Array) -> np.ndarray:
    """E[x | z = E_q[z | x]] for each image: ``(N, *S) -> (N, *S)``."""
    loc, _ = jax.vmap(model.encode)(jnp.asarray(x))
    return np.asarray(_means(model, loc))


def interpolation_images(model: VAE, x_a: Array, x_b: Array, steps: int = 10) -> np.ndarray:
    """E[x | z_t], z_t = (1 − t) E_q[z | x_a] + t E_q[z | x_b], t = 0 … 1: ``(steps, *S)``."""
    za, _ = model.encode(jnp.asarray(x_a))
    zb, _ = model.encode(jnp.asarray(x_b))
    t = jnp.linspace(0.0, 1.0, steps)[:, None]
    return np.asarray(_means(model, (1 - t) * za + t * zb))


def latent_2d(model: VAE, x: Array) -> tuple[np.ndarray, str]:
    """E_q[z | x] in 2-D: the latent itself when d = 2, else its first two principal components."""
    loc, _ = jax.vmap(model.encode)(jnp.asarray(x))
    loc = np.asarray(loc)
    if loc.shape[1] == 1:
        return np.c_[loc[:, 0], np.zeros(len(loc))], "z"
    if loc.shape[1] == 2:
        return loc, "z"
    centred = loc - loc.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, "principal components of E_q[z | x]"


def image_grid(images: np.ndarray, cols: int) -> np.ndarray:
    """Images ``(n, h, w)`` tiled ``cols`` wide with one-pixel gaps: ``-> (rows·(h+1)+1, cols·(w+1)+1)``."""
    n, h, w = images.shape[0], images.shape[1], images.shape[2]
    rows = -(-n // cols)
    canvas = np.zeros((rows * (h + 1) + 1, cols * (w + 1) + 1))
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = img
    return canvas


def _as_2d_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 2:  # flat vectors: show as a 1-row strip each
        return images[:, None, :]
    return images.reshape(images.shape[0], images.shape[1], -1)


def _save(fig, path: str | Path) -> Path:
    """Lay out, write (atomically: :func:`vbayes.outputs.save_figure`) and close a figure."""
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        return save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)


def plot_grid(images: np.ndarray, path: str | Path, title: str, cols: int = 8) -> Path:
    """Write ``images`` ``(n, H, W)`` as a grid PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = image_grid(np.clip(_as_2d_images(images), 0, 1), cols)
    fig, ax = plt.subplots(figsize=(max(4, cols * 0.8), max(2, grid.shape[0] / grid.shape[1] * cols * 0.8) + 0.5))
    ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    return _save(fig, path)


def plot_reconstructions(model: VAE, x: Array, path: str | Path, n: int = 16) -> Path:
    """Originals (odd rows) above their reconstructions (even rows)."""
    x = np.asarray(x[:n])
    rec = reconstruction_images(model, x)
    cols = min(8, len(x))
    pairs = []
    for s in range(0, len(x), cols):
        pairs += [x[s : s + cols], rec[s : s + cols]]
    return plot_grid(np.concatenate(pairs), path, "data (odd rows) and reconstructions (even rows)", cols)


def plot_latent_scatter(model: VAE, x: Array, labels: np.ndarray, path: str | Path) -> Path:
    """E_q[z | x] in 2-D coloured by label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy, how = latent_2d(model, x)
    fig, ax = plt.subplots(figsize=(6, 5))
    points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=6, alpha=0.8)
    fig.colorbar(points, ax=ax, label="label")
    ax.set_title(f"latent means ({how})", fontsize=10)
    return _save(fig, path)


def write_figures(
    model: VAE, x: np.ndarray, labels: np.ndarray, folder: str | Path, *, kind: str = "vae", key: int = 0
) -> list[Path]:
    """samples.png, reconstructions.png, interpolation.png and latent.png in ``folder`` (created with the first)."""
    folder = Path(folder)
    title = "decoded z ~ N(0, I)" + (
        ": an autoencoder's decoder never saw these codes, so it cannot generate" if kind == "ae" else ""
    )
    paths = [plot_grid(prior_sample_images(model, key, 64), folder / "samples.png", title)]
    paths.append(plot_reconstructions(model, x, folder / "reconstructions.png"))
    rows = [interpolation_images(model, x[2 * i], x[2 * i + 1], 10) for i in range(min(4, len(x) // 2))]
    if rows:
        paths.append(plot_grid(np.concatenate(rows), folder / "interpolation.png", "latent interpolation", 10))
    paths.append(plot_latent_scatter(model, x, labels, folder / "latent.png"))
    return paths
