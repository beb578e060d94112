"""Symmetric eigensolvers from products only: an operator is a map on rows ``(k, d) -> (k, d)``.

:func:`block_krylov_eigh`: Ritz pairs on a randomized block Krylov space, grown until the caller says the pairs
that matter have converged (Halko, Martinsson & Tropp 2011; Musco & Musco 2015). :func:`exact_eigh`: every
eigenpair, from d products with the unit vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def block_krylov_eigh(
    op: Callable[[Array], Array],
    d: int,
    max_dim: int,
    block: int,
    key: Array,
    dtype: Any,
    enough: Callable[[np.ndarray, np.ndarray], bool] | None = None,
) -> tuple[Array, Array]:
    """Ritz pairs of a symmetric d×d operator A on a randomized block Krylov space, from products only.

    span{Ω, AΩ, A²Ω, …} with Ω ``(d, block)`` Gaussian, grown block by block with full (twice repeated)
    reorthogonalisation, one product per basis vector, up to ``max_dim`` vectors or until ``enough(θ, ρ)`` says
    so (θ: the current Ritz values, ρ: their residual norms ‖A y − θ y‖, which bound the distance from θ to an
    eigenvalue); then Rayleigh-Ritz: T = Qᵀ(AQ), A ≈ Q S diag(θ) SᵀQᵀ.
    ``op`` maps rows ``(k, d) -> (k, d)``. Returns ``(θ (m,), vectors (m, d))`` for the m vectors used
    (Halko, Martinsson & Tropp 2011; Musco & Musco 2015).
    """
    block = max(1, min(block, max_dim))
    q = jnp.linalg.qr(jax.random.normal(key, (d, block), dtype))[0]
    basis, images = [], []
    t = np.zeros((0, 0))
    while True:
        aq = op(q.T).T
        if basis:  # grow T = Qᵀ A Q by the new block's row and column (A symmetric: Q_oldᵀAq = (AQ_old)ᵀq)
            cross = np.asarray(jnp.concatenate(images, axis=1).T @ q)
            corner = np.asarray(q.T @ aq)
            t = np.block([[t, cross], [cross.T, 0.5 * (corner + corner.T)]])
        else:
            t = np.asarray(q.T @ aq)
            t = 0.5 * (t + t.T)
        basis.append(q)
        images.append(aq)
        size = t.shape[0]
        if size >= max_dim:
            break
        if enough is not None:
            # A Q = Q T + R with R nonzero only in the last block's columns: AQ_last − Q T[:, last]
            theta, s = np.linalg.eigh(t)
            prev = jnp.concatenate(basis, axis=1)
            r_last = aq - prev @ jnp.asarray(t[:, -q.shape[1] :])
            residual = np.linalg.norm(np.asarray(r_last) @ s[-q.shape[1] :], axis=0)
            if enough(theta, residual):
                break
        prev = jnp.concatenate(basis, axis=1)
        w = aq[:, : min(block, max_dim - size)]
        for _ in range(2):  # twice is enough (Giraud et al. 2005)
            w = w - prev @ (prev.T @ w)
            w = jnp.linalg.qr(w)[0]
        q = w
    theta, s = np.linalg.eigh(t)
    return jnp.asarray(theta), (jnp.concatenate(basis, axis=1) @ jnp.asarray(s)).T


def exact_eigh(op: Callable[[Array], Array], d: int, dtype: Any) -> tuple[Array, Array]:
    """All eigenpairs of a symmetric operator from d products with the unit vectors: ``(θ (d,), vectors (d, d))``."""
    a = op(jnp.eye(d, dtype=dtype))
    theta, v = jnp.linalg.eigh(0.5 * (a + a.T))
    return theta, v.T
