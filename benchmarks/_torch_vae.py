"""The PyTorch competitor for ``vae_mnist.py``: the same VAE / IWAE network and loss, written the usual way.

Encoder 784-200-200-(50 mean, 50 log-variance) and decoder 50-200-200-784 (Bernoulli logits), tanh,
Adam(lr, eps); dynamic binarisation on the fly; loss summed over pixels and averaged over the batch.
Imported only by the benchmark (torch is the ``bench`` extra, never a vbayes dependency).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class TorchVAE(nn.Module):
    def __init__(self, pixels: int = 784, latent: int = 50, width: int = 200):
        super().__init__()
        self.latent = latent
        self.enc = nn.Sequential(
            nn.Linear(pixels, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 2 * latent)
        )
        self.dec = nn.Sequential(
            nn.Linear(latent, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, pixels)
        )

    def loss(self, x: torch.Tensor, k: int = 1) -> torch.Tensor:
        """Negative ELBO (k = 1, closed-form KL) or negative IWAE_k bound, mean over the batch."""
        h = self.enc(x)
        mu, log_var = h[:, : self.latent], h[:, self.latent :]
        if k == 1:
            z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
            rec = -F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
            kl = 0.5 * (log_var.exp() + mu**2 - 1 - log_var).sum(-1)
            return (kl - rec).mean()
        eps = torch.randn(k, *mu.shape)
        z = mu + torch.exp(0.5 * log_var) * eps  # (k, B, d)
        logits = self.dec(z)
        rec = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        log_prior = -0.5 * (z**2 + math.log(2 * math.pi)).sum(-1)
        log_q = -0.5 * (eps**2 + log_var + math.log(2 * math.pi)).sum(-1)
        bound = torch.logsumexp(rec + log_prior - log_q, 0) - math.log(k)
        return -bound.mean()


def make_trainer(k: int = 1, lr: float = 1e-3, eps: float = 1e-4, seed: int = 0):
    """``step(x_grey_batch) -> loss`` closure over a fresh model and Adam (binarises each batch)."""
    torch.manual_seed(seed)
    model = TorchVAE()
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=eps)

    def step(x: torch.Tensor) -> float:
        xb = torch.bernoulli(x)
        opt.zero_grad(set_to_none=True)
        loss = model.loss(xb, k)
        loss.backward()
        opt.step()
        return loss

    return model, step
