"""Synthetic plasma tomography: three fields on a triangular mesh seen by four cameras, a 2,000-parameter
nonlinear inverse problem with 10⁶ Gaussian observations (the ``full`` size).

Geometry. A toroidally symmetric plasma fills a D-shaped poloidal cross-section (major radius R, height Z);
the cross-section is covered by a triangular mesh (a regular grid of R×Z cells, each cut into two
triangles, kept where the triangle's centroid is inside the D). Fields are piecewise linear on the
triangles (one value per vertex). Four pinhole cameras of ``pixels × pixels`` pixels look at the torus from
outside (a tangential and a radial view at the midplane, one from above, one from below); an opaque centre
column at R < 0.25 m blocks rays. Each pixel sees the line integral of the emission along its ray: the chord
inside the plasma's bounding annulus is cut into K equal strata, one uniformly random point per stratum
(stratified sampling, fixed by the seed), and each point spreads (chord length / K) over its triangle's
three vertices by its barycentric weights. Summing duplicates gives the sparse geometry matrix G
(N × V, ``jax.experimental.sparse.BCOO``), built once with NumPy.

Emission. At vertex i, with fields a_i = log n_e (density), b_i = log T_e (temperature) and the fraction
f_i ∈ (0, 1): E_i = R1(a_i, b_i) + f_i · R2(a_i, b_i), where log R1 (excitation-like) and log R2
(recombination-like) are tabulated on a grid and interpolated by tensor-product cubic B-splines with natural
end conditions (C², differentiable in JAX). Observations y = G E + ε, ε ~ N(0, σ²) with σ_j = 2% of the
true signal + 1% of its maximum.

Prior, on z = (a, b, logit f) (each block V values): independent Gaussian Markov random fields,
P_k = α_k (K + ε I), K the graph Laplacian of the mesh edges, ε = (h/ℓ)² for mesh spacing h and correlation
length ℓ = 0.15 m, α_k set so the prior sd at the centre vertex is (1, 1, 1.5). P is sparse, so the target is
a :func:`~vbayes.targets.from_least_squares` target with a sparse prior precision. The observations are linear
in the emission, so the target is built with ``operator=G``: the 10⁶ pixels are compressed once into GᵀΣ⁻¹y and
the V × V matrix GᵀΣ⁻¹G, and every later evaluation costs O(V²) (the exact same density).

The data are simulated from a smooth "true" plasma (peaked core density and temperature, a dense cold
divertor blob, high neutral fraction near the bottom) with seeded random perturbations. The same G
generates and fits the data.

Longer than 400 lines because it is one synthetic problem built end to end (mesh, cameras, emission tables,
priors, truth), whose parts are only ever used together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.errors import VBayesError
from vbayes.targets import Target, from_least_squares

SIZES: dict[str, tuple[int, int]] = {"small": (60, 20), "full": (650, 500), "fine": (6900, 500)}
"""``size`` -> (approximate vertex count, camera pixels per side). ``fine`` gives d ≈ 20,000."""

FIELDS = ("log_ne", "log_te", "fraction")
PRIOR_MEAN = (0.0, 0.5, -1.0)  # a, b, logit f
PRIOR_SD = (1.0, 1.0, 1.5)
CORRELATION_LENGTH = 0.15  # m
SAMPLES_PER_RAY = 8

# D-shaped cross-section: R = R0 + A cos(t + DELTA sin t), Z = KAPPA A sin t
_R0, _A, _KAPPA, _DELTA = 0.9, 0.45, 1.6, 0.3
_BOX = (0.42, 1.38, -0.76, 0.76)  # R_min, R_max, Z_min, Z_max of the mesh grid
_R_COLUMN = 0.25  # opaque centre column


# ----------------------------------------------------------------------------------------------
# mesh


@dataclass(frozen=True)
class Mesh:
    """A triangulation of the D: ``points`` ``(V, 2)`` (R, Z) and ``triangles`` ``(T, 3)`` vertex indices,
    plus the regular grid it came from (for O(1) point location): ``shape`` (nR, nZ) nodes, spacings
    ``step`` (hR, hZ), and ``cell_vertices`` ``(2 (nR−1)(nZ−1), 3)``: each grid triangle's vertices, −1 if not kept."""

    points: np.ndarray
    triangles: np.ndarray
    shape: tuple[int, int]
    step: tuple[float, float]
    cell_vertices: np.ndarray

    @property
    def spacing(self) -> float:
        return float(np.sqrt(self.step[0] * self.step[1]))

    def edges(self) -> np.ndarray:
        """Unique undirected edges ``(E, 2)``."""
        t = self.triangles
        e = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
        return np.unique(np.sort(e, axis=1), axis=0)


def _inside_d(r: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Whether (R, Z) lies inside the D-shaped boundary."""
    t = np.arcsin(np.clip(z / (_KAPPA * _A), -1.0, 1.0))
    r_out = _R0 + _A * np.cos(t + _DELTA * np.sin(t))
    r_in = _R0 + _A * np.cos(np.pi - t + _DELTA * np.sin(np.pi - t))
    return (np.abs(z) < _KAPPA * _A) & (r > r_in) & (r < r_out)


def make_mesh(vertices: int) -> Mesh:
    """The regular-grid triangulation of the D with about ``vertices`` vertices."""
    r_lo, r_hi, z_lo, z_hi = _BOX
    h = math.sqrt((r_hi - r_lo) * (z_hi - z_lo) * 0.73 / vertices)
    nr, nz = round((r_hi - r_lo) / h) + 1, round((z_hi - z_lo) / h) + 1
    rr, zz = np.meshgrid(np.linspace(r_lo, r_hi, nr), np.linspace(z_lo, z_hi, nz), indexing="ij")
    i, j = np.meshgrid(np.arange(nr - 1), np.arange(nz - 1), indexing="ij")
    n00, n10, n11, n01 = i * nz + j, (i + 1) * nz + j, (i + 1) * nz + j + 1, i * nz + j + 1
    cells = np.stack([np.stack([n00, n10, n11], -1), np.stack([n00, n11, n01], -1)], 2).reshape(-1, 3)
    rr, zz = rr.ravel(), zz.ravel()
    keep = _inside_d(rr[cells].mean(1), zz[cells].mean(1))
    used = np.zeros(nr * nz, bool)
    used[cells[keep].ravel()] = True
    index = np.full(nr * nz, -1, np.int64)
    index[used] = np.arange(int(used.sum()))
    cell_vertices = np.where(keep[:, None], index[cells], -1)
    step = ((r_hi - r_lo) / (nr - 1), (z_hi - z_lo) / (nz - 1))
    return Mesh(np.stack([rr[used], zz[used]], 1), index[cells[keep]], (nr, nz), step, cell_vertices)


def locate(mesh: Mesh, r: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Containing triangle of each point: vertex indices ``(n, 3)``, barycentric weights ``(n, 3)``, inside ``(n,)``."""
    nr, nz = mesh.shape
    u, v = (r - _BOX[0]) / mesh.step[0], (z - _BOX[2]) / mesh.step[1]
    i, j = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    inside = (i >= 0) & (i < nr - 1) & (j >= 0) & (j < nz - 1)
    i, j = np.clip(i, 0, nr - 2), np.clip(j, 0, nz - 2)
    s, t = u - i, v - j
    upper = s < t  # cell split along its diagonal: lower (00, 10, 11), upper (00, 11, 01)
    verts = mesh.cell_vertices[2 * (i * (nz - 1) + j) + upper]
    w = np.where(upper[:, None], np.stack([1 - t, s, t - s], 1), np.stack([1 - s, s - t, t], 1))
    return verts, w, inside & (verts[:, 0] >= 0)


# ----------------------------------------------------------------------------------------------
# cameras and the geometry matrix


_CAMERAS = (  # pinhole (x, y, z), aim point, half field of view (rad)
    ((1.75, 0.0, 0.0), (0.9 * math.cos(0.6), 0.9 * math.sin(0.6), 0.0), 0.70),  # tangential, midplane
    ((1.75, 0.0, 0.1), (0.9, 0.0, 0.0), 0.55),  # radial, midplane
    ((1.3, 0.0, 1.2), (0.9 * math.cos(0.3), 0.9 * math.sin(0.3), -0.2), 0.60),  # from above
    ((1.3, 0.0, -1.2), (0.9 * math.cos(-0.3), 0.9 * math.sin(-0.3), 0.2), 0.60),  # from below
)


def camera_rays(position, aim, half_fov: float, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole ``(3,)`` and unit ray directions ``(pixels², 3)`` of a square image (rows top to bottom)."""
    p, forward = np.asarray(position, float), np.asarray(aim, float) - np.asarray(position, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    g = math.tan(half_fov) * ((np.arange(pixels) + 0.5) / pixels * 2.0 - 1.0)
    gx, gy = np.meshgrid(g, -g, indexing="xy")
    d = forward + gx.reshape(-1, 1) * right + gy.reshape(-1, 1) * up
    return p, d / np.linalg.norm(d, axis=1, keepdims=True)


def _cylinder(p: np.ndarray, d: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crossings t1 < t2 of the rays p + t d with the cylinder x² + y² = radius² (and whether they cross)."""
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2.0 * (p[0] * d[:, 0] + p[1] * d[:, 1])
    c = p[0] ** 2 + p[1] ** 2 - radius**2
    disc = b * b - 4 * a * c
    hit = (disc > 0) & (a > 1e-12)
    root, a = np.sqrt(np.where(hit, disc, 0.0)), np.where(hit, a, 1.0)
    return hit, (-b - root) / (2 * a), (-b + root) / (2 * a)


def _chords(p: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, ...]:
    """The ray's path through the annulus R_min ≤ R ≤ R_max, |Z| ≤ Z_max before the centre column: up to two
    intervals, as (start1, length1, start2, length2), each ``(n,)``. The pinholes are outside the annulus."""
    r_lo, r_hi, z_lo, z_hi = _BOX
    _, a1, a2 = _cylinder(p, d, r_hi)
    dz = np.where(np.abs(d[:, 2]) > 1e-12, d[:, 2], 1e-12)
    b1, b2 = np.minimum((z_lo - p[2]) / dz, (z_hi - p[2]) / dz), np.maximum((z_lo - p[2]) / dz, (z_hi - p[2]) / dz)
    lo, hi = np.maximum(np.maximum(a1, b1), 0.0), np.minimum(a2, b2)
    hole, c1, c2 = _cylinder(p, d, r_lo)
    hole &= c2 > lo
    column, e1, _ = _cylinder(p, d, _R_COLUMN)
    blocked = column & (e1 > 0)
    end1 = np.where(hole, np.minimum(hi, np.maximum(c1, lo)), hi)
    start2 = np.where(hole & ~blocked, np.maximum(c2, lo), 0.0)
    end2 = np.where(hole & ~blocked, hi, 0.0)
    return lo, np.clip(end1 - lo, 0.0, None), start2, np.clip(end2 - start2, 0.0, None)


def camera_matrix(mesh: Mesh, p: np.ndarray, d: np.ndarray, k: int, rng: np.random.Generator):
    """COO ``(rows, cols, values)`` of one camera's geometry matrix, duplicates summed (rows sorted)."""
    start1, len1, start2, len2 = _chords(p, d)
    length = len1 + len2
    n, nv = d.shape[0], mesh.points.shape[0]
    s = (np.arange(k) + rng.random((n, k))) / k * length[:, None]  # stratified points along the chord
    t = np.where(s < len1[:, None], start1[:, None] + s, start2[:, None] + s - len1[:, None])
    x = p + t[..., None] * d[:, None, :]
    verts, w, inside = locate(mesh, np.hypot(x[..., 0], x[..., 1]).ravel(), x[..., 2].ravel())
    cols = np.where(inside[:, None], verts, nv).reshape(n, 3 * k)
    vals = (w * np.repeat(length / k, k)[:, None]).reshape(n, 3 * k)
    order = np.argsort(cols, axis=1, kind="stable")
    cols, vals = np.take_along_axis(cols, order, 1), np.take_along_axis(vals, order, 1)
    first = np.ones_like(cols, bool)
    first[:, 1:] = cols[:, 1:] != cols[:, :-1]
    valid = (cols < nv).ravel()
    starts = first.ravel() & valid
    group = np.cumsum(starts) - 1
    values = np.bincount(group[valid], weights=vals.ravel()[valid], minlength=int(starts.sum()))
    rows = np.repeat(np.arange(n), 3 * k)[starts]
    return rows, cols.ravel()[starts], values


def geometry_matrix(mesh: Mesh, pixels: int, seed: int, samples_per_ray: int = SAMPLES_PER_RAY):
    """G ``(4 pixels², V)`` as ``(rows int32, cols int32, values float64)``, rows sorted, no duplicates."""
    rng = np.random.default_rng([seed, 1])
    rows, cols, vals = [], [], []
    for c, (position, aim, fov) in enumerate(_CAMERAS):
        p, d = camera_rays(position, aim, fov, pixels)
        r, col, v = camera_matrix(mesh, p, d, samples_per_ray, rng)
        rows.append((r + c * pixels * pixels).astype(np.int32))
        cols.append(col.astype(np.int32))
        vals.append(v)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


# ----------------------------------------------------------------------------------------------
# rate functions: tabulated log-rates, cubic B-spline interpolation in JAX

_TABLE_A = (-3.0, 3.0, 31)  # log n_e grid: start, stop, count
_TABLE_B = (-3.0, 3.5, 27)  # log T_e grid


def _log_rates(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tabulated functions: log R1 (excitation-like) and log R2 (recombination-like) on (a, b) = (log n, log T)."""
    log_r1 = 2.0 * a - np.exp(-b) - 0.5 * b + 1.0 + 0.1 * np.tanh(a)
    log_r2 = 2.0 * a - 0.75 * b - 1.0 + 0.05 * a * b
    return log_r1, log_r2


def _natural_spline_matrix(n: int) -> np.ndarray:
    """(n+2)×(n+2) system for uniform cubic B-spline coefficients: s''=0 at both ends, s(x_j) = f_j."""
    m = np.zeros((n + 2, n + 2))
    m[0, :3] = (1.0, -2.0, 1.0)
    m[-1, -3:] = (1.0, -2.0, 1.0)
    for j in range(n):
        m[j + 1, j : j + 3] = (1 / 6, 4 / 6, 1 / 6)
    return m


def spline_coefficients(table: np.ndarray) -> np.ndarray:
    """Coefficients ``(na+2, nb+2)`` of the natural tensor-product cubic spline through ``table`` ``(na, nb)``."""
    ma, mb = _natural_spline_matrix(table.shape[0]), _natural_spline_matrix(table.shape[1])
    padded = np.zeros((table.shape[0] + 2, table.shape[1] + 2))
    padded[1:-1, 1:-1] = table
    return np.linalg.solve(ma, np.linalg.solve(mb, padded.T).T)


def _bspline_weights(t: jax.Array) -> jax.Array:
    """The four uniform cubic B-spline weights at offset t in a cell, ``(n,) -> (n, 4)``."""
    return jnp.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3], -1) / 6.0


def spline_eval(coef: jax.Array, a: jax.Array, b: jax.Array, grid_a=_TABLE_A, grid_b=_TABLE_B) -> jax.Array:
    """s(a, b) for points ``(n,)``; beyond the table the edge cells' cubics continue (smooth, no clamping)."""

    def cell(x, grid):
        lo, hi, n = grid
        u = (x - lo) / ((hi - lo) / (n - 1))
        i = jnp.clip(jnp.floor(u), 0, n - 2).astype(jnp.int32)
        return i, _bspline_weights(u - i)

    i, wa = cell(a, grid_a)
    j, wb = cell(b, grid_b)
    offs = jnp.arange(4)
    block = coef[(i[:, None] + offs)[:, :, None], (j[:, None] + offs)[:, None, :]]  # (n, 4, 4)
    return jnp.einsum("na,nab,nb->n", wa, block, wb)


def emission(params: dict, data: dict) -> jax.Array:
    """E = R1(a, b) + f R2(a, b) per vertex ``(V,)``, R_k = exp(spline of the tabulated log R_k)."""
    a, b, f = params["log_ne"], params["log_te"], params["fraction"]
    r1 = jnp.exp(spline_eval(data["rate1"], a, b))
    r2 = jnp.exp(spline_eval(data["rate2"], a, b))
    return r1 + f * r2


def forward(params: dict, data: dict) -> jax.Array:
    """Camera signals G E ``(N,)``: line integrals of the emission through the sparse geometry matrix."""
    return data["geometry"] @ emission(params, data)


# ----------------------------------------------------------------------------------------------
# prior, truth, and the problem


def prior_precision(mesh: Mesh, sds=PRIOR_SD, length: float = CORRELATION_LENGTH):
    """Block-diagonal sparse precision (3V × 3V, scipy CSC): α_k (K + εI) per field, ε = (h/ℓ)², α_k for
    prior sd ``sds[k]`` at the vertex nearest the centre of the D."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    nv = mesh.points.shape[0]
    e = mesh.edges()
    adj = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(nv, nv))
    adj = (adj + adj.T).tocsr()
    base = (sp.diags(np.asarray(adj.sum(1)).ravel()) - adj + (mesh.spacing / length) ** 2 * sp.eye(nv)).tocsc()
    centre = int(np.argmin(np.hypot(mesh.points[:, 0] - _R0, mesh.points[:, 1])))
    unit = np.zeros(nv)
    unit[centre] = 1.0
    var_centre = float(spsolve(base, unit)[centre])
    return sp.block_diag([base * (var_centre / s**2) for s in sds], format="csc")


def true_fields(mesh: Mesh, seed: int) -> dict[str, np.ndarray]:
    """A smooth synthetic plasma on the mesh vertices: {log_ne, log_te, fraction}, each ``(V,)``."""
    rng = np.random.default_rng([seed, 0])
    r, z = mesh.points[:, 0], mesh.points[:, 1]
    rho2 = ((r - _R0) / _A) ** 2 + (z / (_KAPPA * _A)) ** 2
    blob = np.exp(-((r - 0.65) ** 2 + (z + 0.55) ** 2) / 0.01)

    def bumps(scale):
        out = np.zeros_like(r)
        for _ in range(3):
            cr, cz = rng.uniform(0.55, 1.25), rng.uniform(-0.6, 0.6)
            out += scale * rng.normal() * np.exp(-((r - cr) ** 2 + (z - cz) ** 2) / (2 * 0.12**2))
        return out

    log_ne = 0.9 * np.exp(-rho2 / 0.6) - 0.4 + 0.8 * blob + bumps(0.2)
    log_te = 1.8 * np.exp(-rho2 / 0.5) - 0.6 - 1.0 * blob + bumps(0.2)
    logit_f = -2.0 + 3.0 * np.exp(-((z + 0.6) ** 2) / 0.02) + bumps(0.3)
    return {"log_ne": log_ne, "log_te": log_te, "fraction": 1.0 / (1.0 + np.exp(-logit_f))}


@dataclass(frozen=True)
class TomographyProblem:
    """Everything about one generated problem: the target, the mesh, the true fields and the set-up."""

    target: Target
    mesh: Mesh
    truth: dict[str, np.ndarray]
    pixels: int
    nnz: int

    @property
    def true_z(self) -> np.ndarray:
        """The truth as the flat unconstrained vector z = (a, b, logit f)."""
        f = self.truth["fraction"]
        return np.concatenate([self.truth["log_ne"], self.truth["log_te"], np.log(f) - np.log1p(-f)])


def plasma_tomography_problem(
    size: str = "full",
    seed: int = 0,
    *,
    vertices: int | None = None,
    pixels: int | None = None,
    compress: bool = True,
) -> TomographyProblem:
    """Generate the problem: ``size`` ``small`` (~60 vertices, 4 cameras of 20×20), ``full`` (~650 vertices,
    4 × 500×500 = 10⁶ observations, d ≈ 2,000) or ``fine`` (~6,700 vertices, d ≈ 20,000); ``vertices`` and
    ``pixels`` override the size's. Deterministic given the seed; nothing is cached to disk.

    ``compress`` (default): the target is built with ``operator=G`` (:func:`~vbayes.targets.from_least_squares`),
    so the 10⁶ pixels enter only through GᵀΣ⁻¹y and the V×V matrix GᵀΣ⁻¹G, computed once; ``False`` keeps the
    forward model y ≈ G E(θ) with G applied at every evaluation (the same density, O(nnz(G)) per call)."""
    from jax.experimental import sparse as jsparse

    if size not in SIZES:
        raise VBayesError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    nv_target, npix = SIZES[size]
    nv_target, npix = vertices or nv_target, pixels or npix
    if nv_target < 10 or npix < 2:
        raise VBayesError(f"need at least 10 vertices and 2 pixels per side, got {nv_target} and {npix}")
    mesh = make_mesh(nv_target)
    nv = mesh.points.shape[0]
    rows, cols, vals = geometry_matrix(mesh, npix, seed)
    n_obs = 4 * npix * npix
    dtype = jnp.result_type(float)
    geometry = jsparse.BCOO(
        (jnp.asarray(vals, dtype), jnp.asarray(np.stack([rows, cols], 1))),
        shape=(n_obs, nv),
        indices_sorted=True,
        unique_indices=True,
    )
    la, lb = np.linspace(*_TABLE_A), np.linspace(*_TABLE_B)
    table1, table2 = _log_rates(*np.meshgrid(la, lb, indexing="ij"))
    data = {
        "geometry": geometry,
        "rate1": jnp.asarray(spline_coefficients(table1), dtype),
        "rate2": jnp.asarray(spline_coefficients(table2), dtype),
    }
    truth = true_fields(mesh, seed)
    signal = np.asarray(forward({k: jnp.asarray(v, dtype) for k, v in truth.items()}, data))
    noise_sd = 0.02 * signal + 0.01 * signal.max()
    y = signal + noise_sd * np.random.default_rng([seed, 2]).normal(size=n_obs)
    mean = np.repeat(np.asarray(PRIOR_MEAN), nv)
    example = {k: np.zeros(nv) for k in FIELDS}
    default = size == "full" and vertices is None and pixels is None
    name = "plasma_tomography" if default else f"plasma_tomography_{size}"
    common = dict(constraints={"fraction": "unit_interval"}, name=name)
    if compress:
        rates = {k: v for k, v in data.items() if k != "geometry"}
        target = from_least_squares(
            emission, y, noise_sd, mean, prior_precision(mesh), example, data=rates, operator=geometry, **common
        )
    else:
        target = from_least_squares(forward, y, noise_sd, mean, prior_precision(mesh), example, data=data, **common)
    return TomographyProblem(target, mesh, truth, npix, int(vals.size))


def plasma_tomography(size: str = "full", seed: int = 0) -> Target:
    """The tomography target (see the module docstring); ``size`` ``small`` | ``full`` | ``fine``."""
    return plasma_tomography_problem(size, seed).target


def plasma_tomography_mesh(size: str = "full") -> tuple[np.ndarray, np.ndarray]:
    """``(points (V, 2), triangles (T, 3))`` of the example's mesh, without generating the cameras."""
    mesh = make_mesh(SIZES[size][0])
    return mesh.points, mesh.triangles


def plasma_tomography_dim(size: str = "full") -> int:
    """d = 3 V without generating the problem."""
    return 3 * make_mesh(SIZES[size][0]).points.shape[0]
