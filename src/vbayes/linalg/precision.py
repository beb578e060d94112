"""Gaussian priors on z: precision operators (their Cholesky factors are in :mod:`vbayes.linalg.cholesky`).

A precision P (d×d, symmetric positive definite) is kept in the form it was given (a diagonal, a dense
matrix, or a sparse matrix) and used through products only: ``matvec`` in the log density and in
Gauss-Newton products, and a Cholesky factor P = L Lᵀ for prior preconditioning, sampling and
log|P|. Vectors are rows: every method maps ``(..., d) -> (..., d)``. No method forms a dense d×d
matrix unless P was given as one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.errors import VBayesError
from vbayes.linalg.cholesky import DenseCholesky, DiagonalCholesky, SparseCholesky

Array = jax.Array


@jax.tree_util.register_pytree_node_class
class DiagonalPrecision:
    """P = diag(p). ``p``: ``(d,)``, positive."""

    def __init__(self, diagonal: Array):
        self.diagonal = diagonal

    def tree_flatten(self):
        return (self.diagonal,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    @property
    def dim(self) -> int:
        return int(np.shape(self.diagonal)[-1])

    def matvec(self, x: Array) -> Array:
        """P x for rows ``x``: ``(..., d) -> (..., d)``."""
        return self.diagonal * x

    def cholesky(self) -> DiagonalCholesky:
        """L = diag(√p)."""
        return DiagonalCholesky(jnp.sqrt(jnp.asarray(self.diagonal)))

    def logdet(self) -> float:
        """log|P| = Σ log p_i (host)."""
        return float(np.sum(np.log(np.asarray(self.diagonal, dtype=np.float64))))


@jax.tree_util.register_pytree_node_class
class DensePrecision:
    """P a dense symmetric positive definite matrix ``(d, d)``."""

    def __init__(self, matrix: Array):
        self.matrix = matrix

    def tree_flatten(self):
        return (self.matrix,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    @property
    def dim(self) -> int:
        return int(np.shape(self.matrix)[-1])

    def matvec(self, x: Array) -> Array:
        """P x for rows ``x``: ``(..., d) -> (..., d)`` (P symmetric, so x Pᵀ = x P)."""
        return x @ self.matrix

    def cholesky(self) -> DenseCholesky:
        """L = chol(P), lower triangular ``(d, d)``; O(d³)."""
        chol = jnp.linalg.cholesky(jnp.asarray(self.matrix))
        if not bool(jnp.all(jnp.isfinite(chol))):
            raise VBayesError("the prior precision matrix is not positive definite (its Cholesky factorisation failed)")
        return DenseCholesky(chol)

    def logdet(self) -> float:
        """log|P| (host, via the Cholesky factor)."""
        return 2.0 * float(self.cholesky().half_logdet)


@jax.tree_util.register_pytree_node_class
class SparsePrecision:
    """P a sparse symmetric positive definite matrix, ``jax.experimental.sparse.BCOO`` of shape ``(d, d)``.

    Its Cholesky factor is sparse too: a fill-reducing ordering q and P[q][:, q] = C Cᵀ, computed once on
    the host (SuperLU with a symmetric ordering and no pivoting); see :class:`SparseCholesky`.
    """

    def __init__(self, matrix: Any):
        self.matrix = matrix

    def tree_flatten(self):
        return (self.matrix,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[-1])

    def matvec(self, x: Array) -> Array:
        """P x for rows ``x``: ``(..., d) -> (..., d)``, a sparse product (differentiable)."""
        d = self.dim
        flat = jnp.reshape(x, (-1, d))
        return jnp.reshape((self.matrix @ flat.T).T, jnp.shape(x))

    def to_scipy(self):
        """The matrix as ``scipy.sparse.csc_matrix`` (host)."""
        import scipy.sparse as sp

        data = np.asarray(self.matrix.data, dtype=np.float64)
        idx = np.asarray(self.matrix.indices)
        return sp.csc_matrix(sp.coo_matrix((data, (idx[:, 0], idx[:, 1])), shape=self.matrix.shape))

    def cholesky(self) -> SparseCholesky:
        """Sparse Cholesky factor and diag(P⁻¹) (host, once); O(nnz(C)) memory."""
        return SparseCholesky.from_scipy(self.to_scipy())

    def logdet(self) -> float:
        """log|P| = 2 Σ log C_ii (host)."""
        return 2.0 * float(SparseCholesky.from_scipy(self.to_scipy(), inverse_diag=False).half_logdet)


Precision = DiagonalPrecision | DensePrecision | SparsePrecision


def as_precision(value: Any, dim: int) -> Precision:
    """A precision operator from a scalar or vector (diagonal), a dense ``(d, d)`` array, a sparse matrix
    (``jax.experimental.sparse.BCOO`` or ``scipy.sparse``), a precision instance, or a function
    ``v ↦ P v`` on ``(d,)`` (materialised once into a dense matrix by d products; d ≤ 4096 only)."""
    from jax.experimental import sparse as jsparse

    if isinstance(value, (DiagonalPrecision, DensePrecision, SparsePrecision)):
        out = value
    elif isinstance(value, jsparse.BCOO):
        out = SparsePrecision(value)
    elif hasattr(value, "tocoo") and hasattr(value, "nnz"):  # scipy.sparse
        out = SparsePrecision(jsparse.BCOO.from_scipy_sparse(value.tocoo()))
    elif callable(value):
        if dim > 4096:
            raise VBayesError(
                f"a prior precision given as a function is materialised into a dense matrix, which is too big at "
                f"d={dim}; pass a sparse matrix (BCOO or scipy.sparse) or a vector (diagonal) instead"
            )
        eye = jnp.eye(dim, dtype=jnp.result_type(float))
        out = DensePrecision(jax.vmap(value)(eye))
    else:
        arr = jnp.asarray(value, dtype=jnp.result_type(float))
        if arr.ndim == 0:
            arr = jnp.full((dim,), arr)
        if arr.ndim == 1:
            out = DiagonalPrecision(arr)
        elif arr.ndim == 2:
            out = DensePrecision(arr)
        else:
            raise VBayesError(f"a prior precision must be a scalar, a (d,) vector or a (d, d) matrix, got {arr.shape}")
    if out.dim != dim:
        raise VBayesError(f"the prior precision is for dimension {out.dim}, but the parameters have dimension {dim}")
    _check_precision_values(out)
    return out


def _check_precision_values(p: Precision) -> None:
    if isinstance(p, DiagonalPrecision):
        diag = np.asarray(p.diagonal)
        if not np.all(np.isfinite(diag)) or np.any(diag <= 0):
            raise VBayesError("a diagonal prior precision must be positive and finite everywhere")
    elif isinstance(p, DensePrecision):
        m = np.asarray(p.matrix)
        if not np.all(np.isfinite(m)):
            raise VBayesError("the prior precision matrix has non-finite entries")
        if not np.allclose(m, m.T, rtol=1e-10, atol=1e-12 * np.abs(m).max()):
            raise VBayesError("the prior precision matrix is not symmetric")
