"""Least-squares targets: Gaussian observations of a forward model, Gaussian prior on z.

:func:`from_least_squares` builds them (with an optional linear operator whose data are compressed once into
AᵀΣ⁻¹A); :func:`least_squares_parts` exposes their residual (or latent and Gram matrix) and prior for
Gauss-Newton curvature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.errors import VBayesError
from vbayes.linalg.precision import Precision, as_precision
from vbayes.targets.builders import as_constraint
from vbayes.targets.core import (
    Frozen,
    ParamSpec,
    Target,
    biject_to,
    check_finite,
    check_scalar,
    split,
    unflatten,
)

Array = jax.Array
PyTree = Any


class LeastSquaresParts(NamedTuple):
    """The structure of a least-squares target, for Gauss-Newton: the data term −½‖r(z)‖² has Gauss-Newton
    matrix Jᵀ W J. Plain targets: ``residual(z)`` = (y − f(θ(z)))/σ, flat ``(N,)``, J its Jacobian, W = I
    (``gram`` None). Targets with an ``operator`` A (f = A g): ``latent(z)`` = g(θ(z)) ``(m,)``, J its Jacobian,
    W = ``gram`` = AᵀΣ⁻¹A ``(m, m)`` with ``gram_sqrt`` S, S Sᵀ = W, for m ≤ 4,000 (else None); ``residual`` is
    None: the N rows are not kept. The prior z ~ N(``prior_mean`` ``(d,)``, ``prior_precision``⁻¹)."""

    residual: Callable[[Array], Array] | None
    prior_mean: Array
    prior_precision: Precision
    latent: Callable[[Array], Array] | None = None
    gram: Array | None = None
    gram_sqrt: Array | None = None


@dataclass(frozen=True, eq=False)
class _LeastSquaresDensity:
    """log p̃(z) = −½‖(y − f(θ(z)))/σ‖² − ½(z − m)ᵀP(z − m) + log N and prior normalising constants."""

    forward: Callable
    specs: tuple[ParamSpec, ...]
    constraints: tuple[Any, ...]
    frozen: Frozen  # {"observations", "noise_sd", "prior_mean", "prior_precision", "prior_logdet", "data"}

    def _key(self) -> tuple:
        return (self.forward, self.specs, tuple(repr(c) for c in self.constraints), self.frozen)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _LeastSquaresDensity) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def unconstrained(self, z: Array) -> dict[str, Array]:
        return unflatten(self.specs, z)

    def constrain(self, z: Array, data: tuple) -> dict[str, Array]:
        u = self.unconstrained(z)
        return {s.name: biject_to(c)(u[s.name]) for s, c in zip(self.specs, self.constraints, strict=True)}

    def predict(self, z: Array, data: tuple) -> Array:
        """f(θ(z)), the shape of the observations."""
        parts = self.frozen.merge(data)
        params = self.constrain(z, data)
        return self.forward(params) if parts["data"] is None else self.forward(params, parts["data"])

    def residual(self, z: Array, data: tuple) -> Array:
        """(y − f(θ(z)))/σ, flat ``(N,)``."""
        parts = self.frozen.merge(data)
        r = (parts["observations"] - self.predict(z, data)) / parts["noise_sd"]
        return jnp.ravel(r)

    def parts(self, data: tuple) -> LeastSquaresParts:
        merged = self.frozen.merge(data)
        return LeastSquaresParts(lambda z: self.residual(z, data), merged["prior_mean"], merged["prior_precision"])

    def __call__(self, z: Array, data: tuple) -> Array:
        parts = self.frozen.merge(data)
        r = self.residual(z, data)
        dz = z - parts["prior_mean"]
        n, d = r.shape[0], z.shape[-1]
        log_sd = jnp.sum(jnp.log(jnp.broadcast_to(parts["noise_sd"], jnp.shape(parts["observations"]))))
        const = -0.5 * (n + d) * math.log(2 * math.pi) - log_sd + 0.5 * parts["prior_logdet"]
        return -0.5 * jnp.sum(r**2) - 0.5 * jnp.sum(dz * parts["prior_precision"].matvec(dz)) + const


@dataclass(frozen=True, eq=False)
class _CompressedLeastSquaresDensity(_LeastSquaresDensity):
    """y = A g(θ(z)) + ε with A fixed: the data enter only through b = AᵀΣ⁻¹y ``(m,)``, W = AᵀΣ⁻¹A ``(m, m)``
    and c = yᵀΣ⁻¹y, since ‖(y − A g)/σ‖² = c − 2 bᵀg + gᵀWg; each evaluation costs O(m²), not O(nnz(A))."""

    def latent(self, z: Array, data: tuple) -> Array:
        """g(θ(z)) ``(m,)``."""
        return self.predict(z, data)

    def residual(self, z: Array, data: tuple) -> Array:  # pragma: no cover - guarded in parts()
        raise VBayesError("a least-squares target built with an operator keeps AᵀΣ⁻¹A, not the N residuals")

    def parts(self, data: tuple) -> LeastSquaresParts:
        merged = self.frozen.merge(data)
        return LeastSquaresParts(
            None,
            merged["prior_mean"],
            merged["prior_precision"],
            lambda z: self.latent(z, data),
            merged["gram"],
            merged.get("gram_sqrt"),
        )

    def __call__(self, z: Array, data: tuple) -> Array:
        parts = self.frozen.merge(data)
        g = self.latent(z, data)
        quad = parts["yy"] - 2.0 * jnp.dot(parts["b"], g) + jnp.dot(g, parts["gram"] @ g)
        dz = z - parts["prior_mean"]
        n, d = parts["n_obs"], z.shape[-1]
        const = -0.5 * (n + d) * math.log(2 * math.pi) - parts["log_sd_sum"] + 0.5 * parts["prior_logdet"]
        return -0.5 * quad - 0.5 * jnp.sum(dz * parts["prior_precision"].matvec(dz)) + const


def _as_scipy(operator: Any):
    """A scipy CSR matrix (or a dense NumPy array) for a scipy sparse matrix, a BCOO matrix or an array."""
    import scipy.sparse as sp

    if sp.issparse(operator):
        return operator.tocsr()
    if hasattr(operator, "indices") and hasattr(operator, "data") and hasattr(operator, "todense"):  # BCOO
        idx = np.asarray(operator.indices)
        return sp.csr_matrix((np.asarray(operator.data), (idx[:, 0], idx[:, 1])), shape=operator.shape)
    return np.asarray(operator)


GRAM_SQRT_MAX = 4000  # largest m for which W's square root is formed (for Gauss-Newton diagonal probes)


def _compress(operator: Any, y: np.ndarray, sd: np.ndarray) -> dict[str, Any]:
    """b = AᵀΣ⁻¹y, W = AᵀΣ⁻¹A (dense m×m), c = yᵀΣ⁻¹y, one pass over A; and for m ≤ ``GRAM_SQRT_MAX`` a square
    root S of W (S Sᵀ = W, by eigh)."""
    a = _as_scipy(operator)
    if a.ndim != 2 or a.shape[0] != y.shape[0]:
        raise VBayesError(f"operator must have shape (N, m) with N = {y.shape[0]} observations, got {a.shape}")
    w = 1.0 / np.broadcast_to(sd, y.shape) ** 2
    aw = a.multiply(w[:, None]).tocsr() if not isinstance(a, np.ndarray) else a * w[:, None]
    gram = aw.T @ a
    gram = np.asarray(gram.toarray() if hasattr(gram, "toarray") else gram)
    gram = 0.5 * (gram + gram.T)
    out = {"b": np.asarray(aw.T @ y).ravel(), "gram": gram, "yy": float(np.sum(w * y * y))}
    if gram.shape[0] <= GRAM_SQRT_MAX:  # O(m³): only where it is cheap
        s, u = np.linalg.eigh(gram)
        out["gram_sqrt"] = u * np.sqrt(np.maximum(s, 0.0))
    return out


def from_least_squares(
    forward: Callable,
    observations: Any,
    noise_sd: Any,
    prior_mean: Any,
    prior_precision: Any,
    example_params: Mapping[str, Any],
    constraints: Mapping[str, Any] | None = None,
    data: PyTree = None,
    name: str = "least_squares",
    operator: Any = None,
) -> Target:
    """Target for y = f(θ) + ε, ε ~ N(0, diag(σ²)), with a Gaussian prior z ~ N(m, P⁻¹) on the flat unconstrained z.

    log p̃(z) = −½ Σ ((y − f(θ(z)))/σ)² − ½ (z − m)ᵀ P (z − m) − N/2 log 2π − Σ log σ − d/2 log 2π + ½ log|P|,
    the exact log joint, so Laplace's evidence is that of this model. θ(z) maps z to named parameters
    (``constraints`` as in :func:`from_logdensity`); the prior is on z itself, so there is no Jacobian.

    ``forward(params) -> predictions`` of the shape of ``observations`` (or ``forward(params, data)`` when
    ``data`` is given). ``noise_sd``: scalar or broadcastable to ``observations``. ``prior_mean``: scalar or
    ``(d,)``. ``prior_precision``: scalar or ``(d,)`` (diagonal), ``(d, d)`` (dense), a sparse matrix (BCOO or
    scipy.sparse; factored sparsely, never densified), or a function v ↦ P v (small d). Observations, noise,
    prior and ``data`` arrays are pytree leaves: new values of the same shapes reuse the compiled code.
    :func:`least_squares_parts` exposes the residual and the prior for Gauss-Newton curvature.

    ``operator`` A ``(N, m)`` (scipy sparse, BCOO or dense), optional: the predictions are A g(θ) with
    ``forward`` returning the ``(m,)`` vector g (a field on a mesh seen through a linear instrument, say) and
    ``observations`` flat ``(N,)``. Then the N observations are compressed once, at construction, into
    b = AᵀΣ⁻¹y, W = AᵀΣ⁻¹A and yᵀΣ⁻¹y: the log density, its gradient, Hessian-vector and Gauss-Newton products
    cost O(m²) instead of a pass over A — the same values up to rounding (the quadratic is expanded, so use
    float64). A itself is not kept.
    """
    if not isinstance(example_params, Mapping) or not example_params:
        raise VBayesError("example_params must be a non-empty dict {name: example value}")
    constraints = dict(constraints or {})
    unknown = set(constraints) - set(example_params)
    if unknown:
        raise VBayesError(f"constraints name parameters not in example_params: {sorted(unknown)}")
    specs, cons = [], []
    for k, v in example_params.items():
        shape = tuple(np.shape(v))
        c = as_constraint(constraints.get(k), k)
        specs.append(ParamSpec(str(k), shape, tuple(biject_to(c).inverse_shape(shape))))
        cons.append(c)
    dim = sum(s.size for s in specs)
    dtype = jnp.result_type(float)
    y = jnp.asarray(observations, dtype=dtype)
    sd = jnp.asarray(noise_sd, dtype=dtype)
    check_finite({"observations": y, "noise_sd": sd, "prior_mean": np.asarray(prior_mean)}, what="")
    if data is not None:
        check_finite(data, what="data ")
    if np.any(np.asarray(sd) <= 0):
        raise VBayesError("noise_sd must be positive")
    try:
        jnp.broadcast_shapes(sd.shape, y.shape)
    except ValueError:
        raise VBayesError(f"noise_sd of shape {sd.shape} does not broadcast to observations {y.shape}") from None
    mean = jnp.broadcast_to(jnp.asarray(prior_mean, dtype=dtype), (dim,)) if np.ndim(prior_mean) == 0 else None
    if mean is None:
        mean = jnp.asarray(prior_mean, dtype=dtype)
        if mean.shape != (dim,):
            raise VBayesError(f"prior_mean must be a scalar or have shape ({dim},), got {mean.shape}")
    precision = as_precision(prior_precision, dim)
    bundle = {
        "observations": y,
        "noise_sd": sd,
        "prior_mean": mean,
        "prior_precision": precision,
        "prior_logdet": precision.logdet(),
        "data": data,
    }
    if operator is not None:
        if y.ndim != 1:
            raise VBayesError(f"with an operator the observations must be flat (N,), got shape {y.shape}")
        compressed = _compress(operator, np.asarray(y, np.float64), np.asarray(sd, np.float64))
        log_sd_sum = float(np.sum(np.log(np.broadcast_to(np.asarray(sd, np.float64), y.shape))))
        bundle = {k: v for k, v in bundle.items() if k not in ("observations", "noise_sd")}
        bundle.update({k: jnp.asarray(v, dtype) for k, v in compressed.items()})
        bundle.update(log_sd_sum=jnp.asarray(log_sd_sum, dtype), n_obs=int(y.shape[0]))
    frozen, arrays = split(bundle)
    cls = _LeastSquaresDensity if operator is None else _CompressedLeastSquaresDensity
    density = cls(forward, tuple(specs), tuple(cons), frozen)
    target = Target(density, arrays, name)
    z = jax.ShapeDtypeStruct((dim,), dtype)
    try:
        out = jax.eval_shape(lambda z: target.density.predict(z, target.data), z)
    except Exception:
        check_scalar(target)  # raises the library's message for a forward model that cannot run
        raise
    if operator is not None:
        m = bundle["b"].shape[0]
        if out.shape != (m,):
            raise VBayesError(
                f"with an operator of shape {(y.shape[0], m)} forward must return shape ({m},), got {out.shape}"
            )
    elif out.shape != y.shape:
        raise VBayesError(
            f"forward returns predictions of shape {out.shape}, but the observations have shape {y.shape}"
        )
    check_scalar(target)
    return target


def least_squares_parts(target: Target) -> LeastSquaresParts | None:
    """The residual and prior of a target made by :func:`from_least_squares` (``None`` for other targets)."""
    if isinstance(target.density, _LeastSquaresDensity):
        return target.density.parts(target.data)
    return None
