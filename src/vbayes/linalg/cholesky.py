"""Cholesky factors P = L Lᵀ of the precision operators of :mod:`vbayes.linalg.precision`.

:class:`DiagonalCholesky` and :class:`DenseCholesky` in JAX; :class:`SparseCholesky`, a fill-reducing ordering
and a sparse lower-triangular factor computed once on the host (SuperLU with a symmetric ordering and no
pivoting), its triangular solves on the host through ``jax.pure_callback``. diag(P⁻¹) comes without a dense
inverse, from Takahashi's recursions (:func:`selected_inverse_diag`). Vectors are rows: every method maps
``(..., d) -> (..., d)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.errors import VBayesError

Array = jax.Array


class DiagonalCholesky(NamedTuple):
    """L = diag(s), P = diag(s²). ``s``: ``(d,)``."""

    sqrt_diagonal: Array

    @property
    def half_logdet(self) -> Array:
        """½ log|P| = Σ log s_i."""
        return jnp.sum(jnp.log(self.sqrt_diagonal))

    def apply_lt(self, x: Array) -> Array:
        """Lᵀ x, rows ``(..., d)``."""
        return x * self.sqrt_diagonal

    def solve_lt(self, y: Array) -> Array:
        """L⁻ᵀ y, rows ``(..., d)``."""
        return y / self.sqrt_diagonal

    def solve_l(self, x: Array) -> Array:
        """L⁻¹ x, rows ``(..., d)``."""
        return x / self.sqrt_diagonal

    def inverse_diag(self) -> Array:
        """diag(P⁻¹) ``(d,)``."""
        return 1.0 / self.sqrt_diagonal**2


class DenseCholesky(NamedTuple):
    """P = L Lᵀ, ``chol`` = L lower triangular ``(d, d)``."""

    chol: Array

    @property
    def half_logdet(self) -> Array:
        return jnp.sum(jnp.log(jnp.diag(self.chol)))

    def apply_lt(self, x: Array) -> Array:
        """Lᵀ x for rows: (Lᵀ x)ᵀ = xᵀ L."""
        return x @ self.chol

    def solve_lt(self, y: Array) -> Array:
        """L⁻ᵀ y for rows ``(..., d)``."""
        flat = jnp.reshape(y, (-1, y.shape[-1])).T
        out = jax.scipy.linalg.solve_triangular(self.chol, flat, lower=True, trans="T")
        return jnp.reshape(out.T, y.shape)

    def solve_l(self, x: Array) -> Array:
        """L⁻¹ x for rows ``(..., d)``."""
        flat = jnp.reshape(x, (-1, x.shape[-1])).T
        out = jax.scipy.linalg.solve_triangular(self.chol, flat, lower=True)
        return jnp.reshape(out.T, x.shape)

    def inverse_diag(self) -> Array:
        """diag(P⁻¹)_i = ‖L⁻¹ e_i‖², the squared column norms of L⁻¹; O(d³)."""
        inv = jax.scipy.linalg.solve_triangular(
            self.chol, jnp.eye(self.chol.shape[0], dtype=self.chol.dtype), lower=True
        )
        return jnp.sum(inv**2, axis=0)


def selected_inverse_diag(c_lower: Any) -> np.ndarray:
    """diag((C Cᵀ)⁻¹) for a sparse lower-triangular C ``(d, d)``, without forming the inverse.

    Takahashi, Fagan & Chen (1973); Rue & Martino (2007): Σ = (CCᵀ)⁻¹ satisfies, for i = d−1 … 0 and
    j ∈ {i} ∪ pattern(C[:, i]), Σ_ji = δ_ij / C_ii² − (1/C_ii) Σ_{k ∈ pattern(C[:, i]), k > i} C_ki Σ_kj, and
    the Σ_kj needed lie on the pattern of C. Cost O(Σ_i m_i²), m_i the count of column i.
    """
    import scipy.sparse as sp

    c = sp.csc_matrix(c_lower)
    c.sort_indices()
    d = c.shape[0]
    rows_of: list[np.ndarray] = [np.zeros(0, np.int64)] * d
    sigma_of: list[np.ndarray] = [np.zeros(0)] * d
    out = np.empty(d)
    for i in range(d - 1, -1, -1):
        rows = c.indices[c.indptr[i] : c.indptr[i + 1]]
        vals = c.data[c.indptr[i] : c.indptr[i + 1]]
        if rows.size == 0 or rows[0] != i:
            raise VBayesError("selected_inverse_diag needs a lower-triangular factor with a nonzero diagonal")
        cii, rows, vals = vals[0], rows[1:], vals[1:]
        block = np.empty((rows.size, rows.size))
        for a, j in enumerate(rows):  # Σ[rows, rows] from the columns already done (all > i)
            col = sigma_of[j][np.searchsorted(rows_of[j], rows[a:])]
            block[a:, a] = col
            block[a, a:] = col
        s = -(block @ vals) / cii
        sii = 1.0 / cii**2 - (vals @ s) / cii
        rows_of[i] = np.concatenate([[i], rows])
        sigma_of[i] = np.concatenate([[sii], s])
        out[i] = sii
    return out


def _csr(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray):
    import scipy.sparse as sp

    indptr, indices, data = (np.ravel(a) for a in (indptr, indices, data))  # vmap's expand_dims adds axes
    n = indptr.shape[0] - 1
    return sp.csr_matrix((np.asarray(data, np.float64), indices, indptr), shape=(n, n))


def _host_triangular_solve(indptr, indices, data, b, lower: bool) -> np.ndarray:
    """T⁻¹ b for a sparse triangular T (CSR arrays) and rows ``b`` ``(..., d)`` (host, scipy)."""
    from scipy.sparse.linalg import spsolve_triangular

    flat = np.reshape(np.asarray(b, np.float64), (-1, b.shape[-1])).T
    out = spsolve_triangular(_csr(indptr, indices, data), flat, lower=lower)
    return np.reshape(np.asarray(out).T, b.shape).astype(b.dtype)


@jax.tree_util.register_pytree_node_class
class SparseCholesky:
    """P = L Lᵀ with L = Πᵀ C: ``order`` q is a fill-reducing permutation and P[q][:, q] = C Cᵀ, C sparse lower.

    Every part is an array leaf (C as CSR arrays and as a BCOO of Cᵀ, the permutation, ½ log|P| and
    diag(P⁻¹)), so factors of equal sparsity share compiled code. Products with Lᵀ run in JAX (differentiable);
    solves with L and Lᵀ run on the host (scipy's sparse triangular solve) through ``jax.pure_callback``, so
    they also work under ``jit``, ``vmap`` and reverse-mode ``grad`` (not forward mode). diag(P⁻¹) comes from
    Takahashi's recursions (:func:`selected_inverse_diag`): no dense inverse.
    """

    def __init__(self, ct, lower, upper, order, half_logdet, inv_diag=None):
        self.ct = ct  # Cᵀ as BCOO
        self.lower = lower  # (indptr, indices, data) of C in CSR
        self.upper = upper  # (indptr, indices, data) of Cᵀ in CSR
        self.order = order
        self._half_logdet = half_logdet
        self.inv_diag = inv_diag

    def tree_flatten(self):
        return (self.ct, self.lower, self.upper, self.order, self._half_logdet, self.inv_diag), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    @classmethod
    def from_scipy(cls, matrix: Any, inverse_diag: bool = True) -> SparseCholesky:
        """Factor a symmetric positive definite ``scipy.sparse`` matrix ``(d, d)`` (and, by default, find diag(P⁻¹))."""
        from jax.experimental import sparse as jsparse

        c, order = _sparse_cholesky(matrix)
        lower, upper = c.tocsr(), c.T.tocsr()
        arrays = lambda m: (jnp.asarray(m.indptr), jnp.asarray(m.indices), jnp.asarray(m.data))
        inv = jnp.asarray(selected_inverse_diag(c)[np.argsort(order)]) if inverse_diag else None
        ct = jsparse.BCOO.from_scipy_sparse(c.T.tocoo())
        return cls(ct, arrays(lower), arrays(upper), jnp.asarray(order), jnp.asarray(np.sum(np.log(c.diagonal()))), inv)

    @property
    def half_logdet(self) -> Array:
        return self._half_logdet

    def apply_lt(self, x: Array) -> Array:
        """Lᵀ x = Cᵀ (x[q]) for rows ``(..., d)``."""
        d = x.shape[-1]
        flat = jnp.reshape(x, (-1, d))[:, self.order]
        return jnp.reshape((self.ct @ flat.T).T, x.shape)

    def _solve(self, x: Array, transpose: bool) -> Array:
        """C⁻¹x (or C⁻ᵀx) on the host; reverse-mode differentiable (the two solves are each other's transpose)."""
        arrays = self.upper if transpose else self.lower

        @jax.custom_vjp
        def solve(b):
            fn = lambda *a: _host_triangular_solve(*a, lower=not transpose)
            out = jax.ShapeDtypeStruct(b.shape, b.dtype)
            return jax.pure_callback(fn, out, *arrays, b, vmap_method="expand_dims")

        solve.defvjp(lambda b: (solve(b), None), lambda _, ct: (self._solve(ct, not transpose),))
        return solve(x)

    def solve_lt(self, y: Array) -> Array:
        """L⁻ᵀ y = Πᵀ C⁻ᵀ y for rows ``(..., d)``."""
        return self._solve(y, True)[..., jnp.argsort(self.order)]

    def solve_l(self, x: Array) -> Array:
        """L⁻¹ x = C⁻¹ (x[q]) for rows ``(..., d)``."""
        return self._solve(x[..., self.order], False)

    def inverse_diag(self) -> Array:
        """diag(P⁻¹) ``(d,)``: precomputed by :meth:`from_scipy`, else computed now on the host."""
        if self.inv_diag is not None:
            return self.inv_diag

        def host(indptr, indices, data, order):
            c = _csr(indptr, indices, data)
            return selected_inverse_diag(c)[np.argsort(np.ravel(order))].astype(data.dtype)

        out = jax.ShapeDtypeStruct(self.order.shape, self.lower[2].dtype)
        return jax.pure_callback(host, out, *self.lower, self.order, vmap_method="sequential")


def _sparse_cholesky(matrix: Any) -> tuple[Any, np.ndarray]:
    """(C, q) with P[q][:, q] = C Cᵀ, C sparse lower triangular; raise if P is not symmetric positive definite."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    p = sp.csc_matrix(matrix, dtype=np.float64)
    if p.shape[0] != p.shape[1]:
        raise VBayesError(f"the prior precision must be square, got shape {p.shape}")
    scale = float(abs(p).max()) if p.nnz else 0.0
    if not np.all(np.isfinite(p.data)) or scale == 0.0:
        raise VBayesError("the prior precision has non-finite entries or is zero")
    if p.nnz and float(abs(p - p.T).max()) > 1e-10 * scale:
        raise VBayesError("the prior precision is not symmetric")
    try:
        lu = splu(p, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    except RuntimeError as e:  # an exactly singular matrix
        raise VBayesError(f"the prior precision is not positive definite ({e})") from None
    pivots = lu.U.diagonal()
    if not np.array_equal(lu.perm_r, lu.perm_c) or not np.all(pivots > 0):
        raise VBayesError(
            "the prior precision is not positive definite "
            f"({int(np.sum(pivots <= 0))} non-positive pivot(s) in its symmetric factorisation)"
        )
    c = (lu.L @ sp.diags(np.sqrt(pivots))).tocsc()
    order = np.argsort(lu.perm_c)
    x = np.random.default_rng(0).normal(size=p.shape[0])
    err = np.linalg.norm(c @ (c.T @ x) - p[order][:, order] @ x)
    if not err <= 1e-8 * scale * np.linalg.norm(x) * max(1.0, np.sqrt(p.shape[0])):
        raise VBayesError("the prior precision could not be factored as L Lᵀ (is it symmetric positive definite?)")
    return c, order
