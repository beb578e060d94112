"""The shapes q can take: point mass and Gaussians on R^d, as pytrees of their free parameters.

Every family has ``sample(key, n) -> (n, d)``, ``log_prob(z)`` for ``z`` of shape ``(..., d)``,
``entropy()``, ``mean``, ``marginal_sd()`` and ``covariance()``; :func:`kl` gives KL(q‖p) in closed
form between any two Gaussians. Parameters are unconstrained (log scales, raw triangles), so every
family can be optimised directly by optax, except :class:`LowRankPrecisionGaussian`, the precision-form
Gaussian that Laplace's method returns (prior precision plus a low-rank data term).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

Array = jax.Array
_LOG_2PI = math.log(2 * math.pi)


def _gaussian_entropy(d: int, half_log_det_cov: Array) -> Array:
    """H = d/2 (1 + log 2π) + ½ log|Σ|."""
    return 0.5 * d * (1.0 + _LOG_2PI) + half_log_det_cov


class PointMass(NamedTuple):
    """q = δ(z − loc): the limit that turns VI into MAP. ``loc``: ``(d,)``."""

    loc: Array

    @classmethod
    def init(cls, loc: Array) -> PointMass:
        return cls(jnp.asarray(loc, dtype=jnp.result_type(float)))

    @property
    def mean(self) -> Array:
        return self.loc

    def sample(self, key: Array, n: int) -> Array:
        return jnp.broadcast_to(self.loc, (n,) + self.loc.shape)

    def log_prob(self, z: Array) -> Array:
        """0 by convention (a density w.r.t. the point mass itself), shape ``z.shape[:-1]``."""
        return jnp.zeros(jnp.shape(z)[:-1], self.loc.dtype)

    def entropy(self) -> Array:
        """0 by the same convention: the ELBO of a point mass is log p̃(loc), the MAP objective."""
        return jnp.zeros((), self.loc.dtype)

    def marginal_sd(self) -> Array:
        return jnp.zeros_like(self.loc)

    def covariance(self) -> Array:
        return jnp.zeros(self.loc.shape * 2, self.loc.dtype)


class MeanFieldGaussian(NamedTuple):
    """q = N(loc, diag(exp(2·log_scale))). ``loc``, ``log_scale``: ``(d,)``."""

    loc: Array
    log_scale: Array

    @classmethod
    def init(cls, loc: Array, scale: float | Array = 0.1) -> MeanFieldGaussian:
        loc = jnp.asarray(loc, dtype=jnp.result_type(float))
        return cls(loc, jnp.broadcast_to(jnp.log(jnp.asarray(scale, loc.dtype)), loc.shape))

    @property
    def mean(self) -> Array:
        return self.loc

    def sample(self, key: Array, n: int) -> Array:
        eps = jax.random.normal(key, (n,) + self.loc.shape, self.loc.dtype)
        return self.loc + jnp.exp(self.log_scale) * eps

    def log_prob(self, z: Array) -> Array:
        x = (z - self.loc) * jnp.exp(-self.log_scale)
        return -0.5 * jnp.sum(x**2, -1) - jnp.sum(self.log_scale) - 0.5 * self.loc.shape[-1] * _LOG_2PI

    def entropy(self) -> Array:
        return _gaussian_entropy(self.loc.shape[-1], jnp.sum(self.log_scale))

    def marginal_sd(self) -> Array:
        return jnp.exp(self.log_scale)

    def covariance(self) -> Array:
        return jnp.diag(jnp.exp(2 * self.log_scale))


class FullRankGaussian(NamedTuple):
    """q = N(loc, L Lᵀ), L = tril(raw, −1) + diag(exp(diag(raw))). ``loc``: ``(d,)``, ``raw_tril``: ``(d, d)``."""

    loc: Array
    raw_tril: Array

    @classmethod
    def init(cls, loc: Array, scale: float | Array = 0.1) -> FullRankGaussian:
        loc = jnp.asarray(loc, dtype=jnp.result_type(float))
        log_s = jnp.broadcast_to(jnp.log(jnp.asarray(scale, loc.dtype)), loc.shape)
        return cls(loc, jnp.diag(log_s))

    @classmethod
    def from_covariance(cls, loc: Array, cov: Array) -> FullRankGaussian:
        chol = jnp.linalg.cholesky(cov)
        d = jnp.diag(chol)
        return cls(jnp.asarray(loc), jnp.tril(chol, -1) + jnp.diag(jnp.log(d)))

    @property
    def mean(self) -> Array:
        return self.loc

    @property
    def scale_tril(self) -> Array:
        return jnp.tril(self.raw_tril, -1) + jnp.diag(jnp.exp(jnp.diag(self.raw_tril)))

    def sample(self, key: Array, n: int) -> Array:
        eps = jax.random.normal(key, (n,) + self.loc.shape, self.loc.dtype)
        return self.loc + eps @ self.scale_tril.T

    def log_prob(self, z: Array) -> Array:
        x = solve_triangular(self.scale_tril, jnp.moveaxis(z - self.loc, -1, 0), lower=True)
        half_logdet = jnp.sum(jnp.diag(self.raw_tril))
        return -0.5 * jnp.sum(x**2, 0) - half_logdet - 0.5 * self.loc.shape[-1] * _LOG_2PI

    def entropy(self) -> Array:
        return _gaussian_entropy(self.loc.shape[-1], jnp.sum(jnp.diag(self.raw_tril)))

    def marginal_sd(self) -> Array:
        return jnp.sqrt(jnp.sum(self.scale_tril**2, -1))

    def covariance(self) -> Array:
        L = self.scale_tril
        return L @ L.T


class LowRankGaussian(NamedTuple):
    """q = N(loc, D² + F Fᵀ), D = diag(exp(log_diag)). ``loc``, ``log_diag``: ``(d,)``; ``factor``: ``(d, r)``.

    Sampling, log density and entropy cost O(d r²) through the Woodbury identity and the matrix
    determinant lemma: no d×d matrix is formed.
    """

    loc: Array
    log_diag: Array
    factor: Array

    @classmethod
    def init(cls, loc: Array, scale: float | Array = 0.1, rank: int = 2, key: Array | None = None) -> LowRankGaussian:
        """Diagonal ``scale`` and a small random factor (F = 0 is a saddle point of the ELBO)."""
        loc = jnp.asarray(loc, dtype=jnp.result_type(float))
        d = loc.shape[-1]
        if not 1 <= rank <= d:
            raise ValueError(f"rank must be between 1 and the dimension {d}, got {rank}")
        key = jax.random.PRNGKey(0) if key is None else key
        log_s = jnp.broadcast_to(jnp.log(jnp.asarray(scale, loc.dtype)), loc.shape)
        factor = 0.01 * jnp.exp(log_s)[:, None] * jax.random.normal(key, (d, rank), loc.dtype)
        return cls(loc, log_s, factor)

    @property
    def mean(self) -> Array:
        return self.loc

    def _capacitance_chol(self) -> tuple[Array, Array]:
        """G = D⁻¹F ``(d, r)`` and chol(I + GᵀG) ``(r, r)``."""
        g = self.factor * jnp.exp(-self.log_diag)[:, None]
        cap = jnp.eye(g.shape[-1], dtype=g.dtype) + g.T @ g
        return g, jnp.linalg.cholesky(cap)

    def _half_log_det(self) -> Array:
        _, chol = self._capacitance_chol()
        return jnp.sum(self.log_diag) + jnp.sum(jnp.log(jnp.diag(chol)))

    def sample(self, key: Array, n: int) -> Array:
        k1, k2 = jax.random.split(key)
        d, r = self.factor.shape
        e1 = jax.random.normal(k1, (n, d), self.loc.dtype)
        e2 = jax.random.normal(k2, (n, r), self.loc.dtype)
        return self.loc + jnp.exp(self.log_diag) * e1 + e2 @ self.factor.T

    def log_prob(self, z: Array) -> Array:
        g, chol = self._capacitance_chol()
        x = (z - self.loc) * jnp.exp(-self.log_diag)
        w = solve_triangular(chol, jnp.moveaxis(x @ g, -1, 0), lower=True)
        quad = jnp.sum(x**2, -1) - jnp.sum(w**2, 0)
        return -0.5 * quad - self._half_log_det() - 0.5 * self.loc.shape[-1] * _LOG_2PI

    def entropy(self) -> Array:
        return _gaussian_entropy(self.loc.shape[-1], self._half_log_det())

    def marginal_sd(self) -> Array:
        return jnp.sqrt(jnp.exp(2 * self.log_diag) + jnp.sum(self.factor**2, -1))

    def covariance(self) -> Array:
        return jnp.diag(jnp.exp(2 * self.log_diag)) + self.factor @ self.factor.T


class LowRankPrecisionGaussian(NamedTuple):
    """q = N(loc, Λ⁻¹), Λ = L (I + U diag(λ) Uᵀ) Lᵀ: a reference precision P = L Lᵀ plus a low-rank update.

    The Laplace form of Bui-Thanh et al. (2013): P is the prior precision, U ``(d, r)`` orthonormal and λ
    ``(r,)`` > −1 the leading eigenpairs of the prior-preconditioned data Hessian L⁻¹ H_data L⁻ᵀ. ``factor`` is
    any Cholesky factor of P with ``apply_lt``, ``solve_lt``, ``solve_l``, ``inverse_diag`` and ``half_logdet``
    (:class:`~vbayes.linalg.cholesky.DiagonalCholesky`, ``DenseCholesky``, ``SparseCholesky``). In closed form
    through U:
    Λ⁻¹ = P⁻¹ − W diag(λ/(1+λ)) Wᵀ with W = L⁻ᵀU, Λ^{-1/2}-type draws z = loc + L⁻ᵀ(I − U diag(1 − (1+λ)^{-1/2}) Uᵀ)ε,
    log|Λ| = log|P| + Σ log(1+λ). Nothing here forms a d×d matrix except :meth:`covariance`.
    """

    loc: Array
    factor: Any
    basis: Array
    eigenvalues: Array

    @property
    def mean(self) -> Array:
        return self.loc

    def _half_log_det_precision(self) -> Array:
        """½ log|Λ| = ½ log|P| + ½ Σ log(1 + λ)."""
        return self.factor.half_logdet + 0.5 * jnp.sum(jnp.log1p(self.eigenvalues))

    def sample(self, key: Array, n: int) -> Array:
        eps = jax.random.normal(key, (n,) + self.loc.shape, self.loc.dtype)
        shrink = 1.0 - jax.lax.rsqrt(1.0 + self.eigenvalues)
        white = eps - ((eps @ self.basis) * shrink) @ self.basis.T
        return self.loc + self.factor.solve_lt(white)

    def log_prob(self, z: Array) -> Array:
        """−½[‖Lᵀx‖² + Σ λ (uᵀLᵀx)²] + ½ log|Λ| − d/2 log 2π, x = z − loc; shape ``z.shape[:-1]``."""
        y = self.factor.apply_lt(z - self.loc)
        quad = jnp.sum(y**2, -1) + jnp.sum(self.eigenvalues * (y @ self.basis) ** 2, -1)
        return -0.5 * quad + self._half_log_det_precision() - 0.5 * self.loc.shape[-1] * _LOG_2PI

    def entropy(self) -> Array:
        return _gaussian_entropy(self.loc.shape[-1], -self._half_log_det_precision())

    def marginal_sd(self) -> Array:
        """√diag(Λ⁻¹) = √(diag(P⁻¹) − Σ_k λ_k/(1+λ_k) (L⁻ᵀu_k)²), O(d r) beyond diag(P⁻¹)."""
        w = self.factor.solve_lt(self.basis.T)  # rows: (L⁻ᵀ u_k)ᵀ, (r, d)
        shrink = self.eigenvalues / (1.0 + self.eigenvalues)
        var = self.factor.inverse_diag() - jnp.sum(shrink[:, None] * w**2, 0)
        return jnp.sqrt(jnp.maximum(var, 0.0))

    def covariance_matvec(self, x: Array) -> Array:
        """Λ⁻¹ x for rows ``(..., d)``: L⁻ᵀ (I − U diag(λ/(1+λ)) Uᵀ) L⁻¹ x."""
        y = self.factor.solve_l(x)
        y = y - ((y @ self.basis) * (self.eigenvalues / (1.0 + self.eigenvalues))) @ self.basis.T
        return self.factor.solve_lt(y)

    def covariance(self) -> Array:
        """Λ⁻¹ as a dense ``(d, d)`` matrix: for small d and tests only."""
        d = self.loc.shape[-1]
        return self.covariance_matvec(jnp.eye(d, dtype=self.loc.dtype))


class QuasiNewtonGaussian(NamedTuple):
    """q = N(loc, Σ), Σ = diag(α) + β γ βᵀ: the L-BFGS inverse-Hessian estimate that Pathfinder builds (Zhang et
    al. 2022, eq. II.1). ``loc``, ``alpha``: ``(d,)``; ``beta``: ``(d, m)``; ``gamma``: ``(m, m)`` symmetric, not
    necessarily positive (Σ is, when the path's curvature pairs are). With Q R = β/√α (thin QR) and
    L = chol(I + R γ Rᵀ), Σ^{1/2} = diag(√α)(I + Q (L − I) Qᵀ): draws, log density and marginal sds cost
    O(d m²), and no d×d matrix is formed except in :meth:`covariance`. Draws are those of BlackJAX's
    ``bfgs_sample`` for the same key (the same ε)."""

    loc: Array
    alpha: Array
    beta: Array
    gamma: Array

    @property
    def mean(self) -> Array:
        return self.loc

    def _factors(self) -> tuple[Array, Array]:
        """Q ``(d, m')`` and L ``(m', m')``."""
        q, r = jnp.linalg.qr(self.beta / jnp.sqrt(self.alpha)[:, None], mode="reduced")
        return q, jnp.linalg.cholesky(jnp.eye(r.shape[0], dtype=r.dtype) + r @ self.gamma @ r.T)

    def _half_log_det(self, chol: Array) -> Array:
        return 0.5 * jnp.sum(jnp.log(self.alpha)) + jnp.sum(jnp.log(jnp.diag(chol)))

    def sample(self, key: Array, n: int) -> Array:
        q, chol = self._factors()
        eps = jax.random.normal(key, (n,) + self.loc.shape, self.loc.dtype)
        lift = (eps @ q) @ (chol - jnp.eye(chol.shape[0], dtype=chol.dtype)).T @ q.T
        return self.loc + jnp.sqrt(self.alpha) * (lift + eps)

    def log_prob(self, z: Array) -> Array:
        """ε = (I + Q(L⁻¹ − I)Qᵀ)(z − loc)/√α; log q = −½|ε|² − ½ log|Σ| − d/2 log 2π; shape ``z.shape[:-1]``."""
        q, chol = self._factors()
        v = (z - self.loc) / jnp.sqrt(self.alpha)
        c = v @ q
        c_solved = solve_triangular(chol, c.reshape(-1, c.shape[-1]).T, lower=True).T.reshape(c.shape)
        eps = v + (c_solved - c) @ q.T
        return -0.5 * jnp.sum(eps**2, -1) - self._half_log_det(chol) - 0.5 * self.loc.shape[-1] * _LOG_2PI

    def entropy(self) -> Array:
        return _gaussian_entropy(self.loc.shape[-1], self._half_log_det(self._factors()[1]))

    def marginal_sd(self) -> Array:
        """√(α ⊙ diag(I + Q(LLᵀ − I)Qᵀ))."""
        q, chol = self._factors()
        middle = chol @ chol.T - jnp.eye(chol.shape[0], dtype=chol.dtype)
        return jnp.sqrt(self.alpha * (1.0 + jnp.sum((q @ middle) * q, -1)))

    def covariance(self) -> Array:
        return jnp.diag(self.alpha) + self.beta @ self.gamma @ self.beta.T


Gaussian = MeanFieldGaussian | FullRankGaussian | LowRankGaussian | LowRankPrecisionGaussian | QuasiNewtonGaussian
Family = PointMass | Gaussian

FAMILIES: dict[str, type] = {
    "pointmass": PointMass,
    "meanfield": MeanFieldGaussian,
    "fullrank": FullRankGaussian,
    "lowrank": LowRankGaussian,
}


def kl(q: Gaussian, p: Gaussian) -> Array:
    """KL(q‖p) = ½[tr(Σp⁻¹Σq) + (μp−μq)ᵀΣp⁻¹(μp−μq) − d + log|Σp| − log|Σq|], any two Gaussian families.

    O(d) when both are mean-field, O(d³) otherwise.
    """
    if isinstance(q, PointMass) or isinstance(p, PointMass):
        raise ValueError("KL involving a point mass is infinite; compare Gaussians only")
    d = q.loc.shape[-1]
    if isinstance(q, MeanFieldGaussian) and isinstance(p, MeanFieldGaussian):
        ratio = jnp.exp(2 * (q.log_scale - p.log_scale))
        maha = ((q.loc - p.loc) * jnp.exp(-p.log_scale)) ** 2
        return 0.5 * jnp.sum(ratio + maha - 1.0 - jnp.log(ratio))
    chol_p = jnp.linalg.cholesky(p.covariance())
    diff = p.loc - q.loc
    trace = jnp.trace(cho_solve((chol_p, True), q.covariance()))
    maha = jnp.sum(solve_triangular(chol_p, diff, lower=True) ** 2)
    half_logdet_p = jnp.sum(jnp.log(jnp.diag(chol_p)))
    half_logdet_q = q.entropy() - 0.5 * d * (1.0 + _LOG_2PI)
    return 0.5 * (trace + maha - d) + half_logdet_p - half_logdet_q


def kl_to_standard_normal(loc: Array, *, log_scale: Array | None = None, log_var: Array | None = None) -> Array:
    """KL(N(loc, σ²) ‖ N(0, 1)) summed over the last axis: ½ Σ (σ² + loc² − 1 − log σ²).

    Give the scale either as ``log_scale`` (log σ) or as ``log_var`` (log σ²); shapes ``(..., d) -> (...)``.
    """
    if (log_scale is None) == (log_var is None):
        raise ValueError("give exactly one of log_scale or log_var")
    log_var = 2 * log_scale if log_var is None else log_var
    return 0.5 * jnp.sum(jnp.exp(log_var) + loc**2 - 1.0 - log_var, -1)
