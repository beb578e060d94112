"""The 11 posteriordb reference posteriors as vbayes targets, with their reference draws.

The files live outside the package, in ``../shared/posteriordb/`` next to the repository (one folder per
posterior: ``data.json``, ``reference_draws.json``, ``reference_summary.json``, ...; ``MODELS.md`` there
states each model as mathematics). Nothing here reads them at import time: the package installs and
runs without them, and only the functions below need them.

* :func:`load_reference`, :func:`load_data`, :func:`list_posteriors`, :func:`posteriordb_root`: the loader.
* :func:`posteriordb_target`: each posterior as a :class:`~vbayes.targets.Target`, written from ``MODELS.md``
  as a plain JAX log density (``from_logdensity``), with the unconstrained layout of ``MODELS.md`` (so the
  posteriordb noise floors apply to z as is).
* :func:`to_unconstrained` / :func:`to_reference_columns`: reference columns (constrained, sometimes a
  transformed quantity) to the target's flat z and back.

Constants: every density is the value Stan's program puts in ``target`` (the ``≐`` line of ``MODELS.md``:
sampling statements drop the terms free of parameters, ``target +=`` statements keep everything), plus the
log-Jacobian of the transform to z; so ``log_density(z)`` should equal Stan's ``lp__`` at the same point (not
checked against Stan: the reference files hold no ``lp__``; the fully normalised ones, blr, diamonds and the
mixture's likelihood, are checked against scipy in the tests).

Transforms (NumPyro's ``biject_to``, checked against ``MODELS.md``): positive ``x = e^u`` (log-Jacobian
``u``); unit interval ``x = logistic(u)`` (``log x + log(1 − x)``); ordered pair ``x1 = u1, x2 = u1 + e^{u2}``
(``u2``): NumPyro's ``OrderedTransform`` is exactly Stan's ordered transform.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm
from jax.scipy.stats import t as student_t

from vbayes.errors import VBayesError
from vbayes.targets import Target, from_logdensity

Array = jax.Array

POSTERIORS: tuple[str, ...] = (
    "eight_schools-eight_schools_noncentered",
    "eight_schools-eight_schools_centered",
    "kidiq-kidscore_momiq",
    "kilpisjarvi_mod-kilpisjarvi",
    "nes2000-nes",
    "sblri-blr",
    "sblrc-blr",
    "arK-arK",
    "diamonds-diamonds",
    "low_dim_gauss_mix-low_dim_gauss_mix",
    "one_comp_mm_elim_abs-one_comp_mm_elim_abs",
)
"""The 11 posteriors, in the order of ``MODELS.md``."""

ENV_VAR = "VBAYES_POSTERIORDB"
"""Environment variable naming the posteriordb folder; overrides the search for ``../shared/posteriordb``."""

_DATA, _DRAWS, _SUMMARY = "data.json", "reference_draws.json", "reference_summary.json"


# ----------------------------------------------------------------------------------------------
# loader


class Reference(NamedTuple):
    """One posterior's files: ``data`` (numeric lists as float64 arrays, scalars as Python int / float),
    ``columns`` (reference column names, file order), ``draws`` ``(chains, draws, n_columns)`` (10, 1000, n),
    ``pooled`` ``(chains·draws, n_columns)`` (10000, n), ``summary`` (``reference_summary.json``), ``name``."""

    data: dict[str, Any]
    columns: tuple[str, ...]
    draws: np.ndarray
    pooled: np.ndarray
    summary: dict[str, Any]
    name: str


def posteriordb_root(root: str | os.PathLike | None = None) -> Path:
    """The posteriordb folder: ``root`` if given, else ``$VBAYES_POSTERIORDB``, else the first
    ``<ancestor>/shared/posteriordb`` walking up from the working directory, then from this file
    (``<repo>/../shared/posteriordb`` for a clone). Raise :class:`VBayesError` if there is none."""
    if root is None and os.environ.get(ENV_VAR):
        root, origin = os.environ[ENV_VAR], f" (from ${ENV_VAR})"
    else:
        origin = ""
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise VBayesError(f"posteriordb folder {str(path)!r}{origin} does not exist or is not a folder")
        return path
    tried = []
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "posteriordb"
            if candidate.is_dir():
                return candidate
            tried.append(str(candidate))
    raise VBayesError(
        "no posteriordb folder found: looked for shared/posteriordb above the working directory and above "
        f"the vbayes package (e.g. {tried[0]!r}); pass root= or set ${ENV_VAR} to the folder"
    )


def list_posteriors(root: str | os.PathLike | None = None) -> list[str]:
    """Names (sorted) of the posterior folders under the posteriordb root, i.e. those holding a ``data.json``."""
    base = posteriordb_root(root)
    return sorted(p.name for p in base.iterdir() if (p / _DATA).is_file())


def _folder(name: str, root: str | os.PathLike | None) -> Path:
    base = posteriordb_root(root)
    folder = base / name
    if not folder.is_dir():
        known = list_posteriors(base)
        close = difflib.get_close_matches(str(name), known, n=2)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise VBayesError(
            f"no posterior {name!r} in {str(base)!r} (missing folder {str(folder)!r}); {hint}"
            f"found: {', '.join(known) or 'none'}"
        )
    return folder


def _read_json(folder: Path, filename: str) -> Any:
    path = folder / filename
    if not path.is_file():
        raise VBayesError(f"posteriordb file {filename!r} is missing: expected {str(path)!r}")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise VBayesError(f"cannot read {str(path)!r}: {type(e).__name__}: {e}") from e


def _convert(value: Any) -> Any:
    """JSON value → numeric lists as float64 arrays; int and float scalars (sizes, hyperparameters) kept."""
    if isinstance(value, list):
        return np.asarray(value, dtype=np.float64)
    return value


def load_data(name: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """``<root>/<name>/data.json`` as a dict: lists → float64 arrays (matrices (rows, cols)), scalars as is."""
    raw = _read_json(_folder(name, root), _DATA)
    return {k: _convert(v) for k, v in raw.items()}


def load_reference(name: str, root: str | os.PathLike | None = None) -> Reference:
    """Data, reference draws ``(chains, draws, n_columns)`` and their summary for the posterior ``name``."""
    folder = _folder(name, root)
    data = {k: _convert(v) for k, v in _read_json(folder, _DATA).items()}
    chains = _read_json(folder, _DRAWS)
    summary = _read_json(folder, _SUMMARY)
    path = folder / _DRAWS
    if not isinstance(chains, list) or not chains or not all(isinstance(c, dict) and c for c in chains):
        raise VBayesError(f"{str(path)!r} must be a non-empty list of chains, each a dict column -> draws")
    columns = tuple(chains[0])
    for i, chain in enumerate(chains):
        if tuple(chain) != columns:
            raise VBayesError(f"{str(path)!r}: chain {i + 1} has columns {list(chain)}, chain 1 has {list(columns)}")
    try:
        draws = np.array([[chain[c] for c in columns] for chain in chains], dtype=np.float64).transpose(0, 2, 1)
    except ValueError as e:
        raise VBayesError(f"{str(path)!r}: chains or columns differ in length ({e})") from e
    if list(summary.get("params", columns)) != list(columns):
        raise VBayesError(
            f"{str(folder / _SUMMARY)!r} lists params {summary.get('params')}, the draws have {list(columns)}"
        )
    pooled = draws.reshape(-1, draws.shape[-1])
    return Reference(data, columns, draws, pooled, summary, name)


# ----------------------------------------------------------------------------------------------
# log densities (Stan's `target`; params constrained, the Jacobian is added by from_logdensity)


def _normal_kernel(resid: Array, sigma: Array) -> Array:
    """Σ_n log N(r_n | 0, σ) without −½log 2π (a sampling statement with σ a parameter); resid: (N,)."""
    return -resid.size * jnp.log(sigma) - 0.5 * jnp.sum(resid**2) / sigma**2


def eight_schools_noncentered_log_density(params: dict, data: dict) -> Array:
    """−½Σθ̃² − Σ(y − μ − τθ̃)²/(2σ²) − μ²/50 − log(1 + τ²/25); theta_tilde: (8,), mu, tau: ()."""
    tt, mu, tau = params["theta_tilde"], params["mu"], params["tau"]
    theta = mu + tau * tt
    return (
        -0.5 * jnp.sum(tt**2)
        - 0.5 * jnp.sum(((data["y"] - theta) / data["sigma"]) ** 2)
        - mu**2 / 50.0
        - jnp.log1p(tau**2 / 25.0)
    )


def eight_schools_centered_log_density(params: dict, data: dict) -> Array:
    """−log(1 + τ²/25) − J log τ − Σ(θ − μ)²/(2τ²) − Σ(y − θ)²/(2σ²) − μ²/50; theta: (8,), mu, tau: ()."""
    theta, mu, tau = params["theta"], params["mu"], params["tau"]
    return (
        -jnp.log1p(tau**2 / 25.0)
        + _normal_kernel(theta - mu, tau)
        - 0.5 * jnp.sum(((data["y"] - theta) / data["sigma"]) ** 2)
        - mu**2 / 50.0
    )


def kidiq_log_density(params: dict, data: dict) -> Array:
    """−log(1 + σ²/6.25) + Σ log N(kid_score | β₁ + β₂ mom_iq, σ) (no 2π); beta: (2,), sigma: (); data (434,)."""
    beta, sigma = params["beta"], params["sigma"]
    resid = data["kid_score"] - beta[0] - beta[1] * data["mom_iq"]
    return -jnp.log1p(sigma**2 / 6.25) + _normal_kernel(resid, sigma)


def kilpisjarvi_log_density(params: dict, data: dict) -> Array:
    """log N(α | pmualpha, psalpha) + log N(β | pmubeta, psbeta) + Σ log N(y | α + βx, σ), kernels only."""
    alpha, beta, sigma = params["alpha"], params["beta"], params["sigma"]
    prior = (
        -0.5 * ((alpha - data["pmualpha"]) / data["psalpha"]) ** 2
        - 0.5 * ((beta - data["pmubeta"]) / data["psbeta"]) ** 2
    )
    return prior + _normal_kernel(data["y"] - alpha - beta * data["x"], sigma)


def regression_flat_log_density(params: dict, data: dict) -> Array:
    """Σ log N(y | Xβ, σ) (no 2π), flat priors on β and σ > 0 (nes); beta: (K,), X: (N, K), y: (N,)."""
    return _normal_kernel(data["y"] - data["X"] @ params["beta"], params["sigma"])


def blr_log_density(params: dict, data: dict) -> Array:
    """Σ log N(β | 0, 10) + log N(σ | 0, 10) + Σ log N(y | Xβ, σ), all constants; beta: (5,), X: (100, 5)."""
    beta, sigma = params["beta"], params["sigma"]
    prior = jnp.sum(norm.logpdf(beta, 0.0, 10.0)) + norm.logpdf(sigma, 0.0, 10.0)
    return prior + jnp.sum(norm.logpdf(data["y"], data["X"] @ beta, sigma))


def ark_log_density(params: dict, data: dict) -> Array:
    """−α²/200 − Σβ²/200 − log(1 + σ²/6.25) + Σ_{t>K} log N(y_t | α + Σ_k β_k y_{t−k}, σ) (no 2π).

    beta: (K,); data ``lags`` (T − K, K) with ``lags[i, k−1] = y[K + i − k]``, ``y`` (T − K,) = y[K:]."""
    alpha, beta, sigma = params["alpha"], params["beta"], params["sigma"]
    prior = -(alpha**2) / 200.0 - jnp.sum(beta**2) / 200.0 - jnp.log1p(sigma**2 / 6.25)
    return prior + _normal_kernel(data["y"] - alpha - data["lags"] @ beta, sigma)


def diamonds_log_density(params: dict, data: dict) -> Array:
    """Σ log N(b | 0, 1) + log t₃(a | 8, 10) + log t₃(σ | 0, 10) + log 2 + Σ_n log N(Y_n | a + x̃_nᵀb, σ), exact.

    b: (24,), Intercept a: (), sigma: (). The likelihood uses the residual sum of squares through sufficient
    statistics of the centred data (X̃ (N, 24) centred predictors, Y_c = Y − Ȳ, so X̃ᵀ1 = 0):
    Σ(Y − a − X̃b)² = Y_cᵀY_c − 2bᵀX̃ᵀY_c + bᵀ(X̃ᵀX̃)b + N(Ȳ − a)². One (24, 24)·(24,) product per draw instead of
    (5000, 24)·(24,); the cancellation costs ≈ 2 digits (Y_cᵀY_c ≈ 5155 against a residual sum ≈ 75).
    """
    b, a, sigma = params["b"], params["Intercept"], params["sigma"]
    prior = (
        jnp.sum(norm.logpdf(b))
        + student_t.logpdf(a, 3.0, 8.0, 10.0)
        + student_t.logpdf(sigma, 3.0, 0.0, 10.0)
        + jnp.log(2.0)
    )
    if data["prior_only"]:
        return prior
    n = data["N"]
    rss = data["yty"] - 2.0 * b @ data["xty"] + b @ (data["xtx"] @ b) + n * (data["ybar"] - a) ** 2
    return prior - 0.5 * n * jnp.log(2.0 * jnp.pi) - n * jnp.log(sigma) - 0.5 * rss / sigma**2


def gauss_mix_log_density(params: dict, data: dict) -> Array:
    """−Σσ²/8 − Σμ²/8 + 4 log θ + 4 log(1 − θ) + Σ_n log(θ N(y|μ₁,σ₁) + (1 − θ) N(y|μ₂,σ₂)).

    mu: (2,) ordered, sigma: (2,), theta: (); y (N,). The mixture keeps the full normal densities."""
    mu, sigma, theta = params["mu"], params["sigma"], params["theta"]
    prior = -jnp.sum(sigma**2) / 8.0 - jnp.sum(mu**2) / 8.0 + 4.0 * jnp.log(theta) + 4.0 * jnp.log1p(-theta)
    y = data["y"]
    log1 = jnp.log(theta) - jnp.log(sigma[0]) - 0.5 * ((y - mu[0]) / sigma[0]) ** 2
    log2 = jnp.log1p(-theta) - jnp.log(sigma[1]) - 0.5 * ((y - mu[1]) / sigma[1]) ** 2
    return prior + jnp.sum(jnp.logaddexp(log1, log2)) - 0.5 * y.size * jnp.log(2.0 * jnp.pi)


# ----------------------------------------------------------------------------------------------
# one_comp_mm_elim_abs: the ODE

ODE_STEPS = 20
"""Classical Runge–Kutta steps per interval between measurement times (uniform, 0.025 days for these data;
graded as (i/n)³ on the first interval from t0, where the elimination rate switches on within ≈ K_m V/(D k_a))."""


def one_comp_concentrations(
    k_a: Array,
    K_m: Array,
    V_m: Array,
    times: Array,
    D: float = 30.0,
    V: float = 2.0,
    t0: float = 0.0,
    steps: int = ODE_STEPS,
) -> Array:
    """C(times) for dC/dt = (D k_a/V) e^{−k_a t} − (V_m/V) C/(K_m + C), C(t0) = 0; scalars, times: (N_t,) → (N_t,).

    Fixed-step classical RK4, ``steps`` steps per interval between consecutive times (t0 → times[0] first),
    differentiable (one ``lax.scan``; the dose term e^{−k_a t} at every stage is computed up front). Near
    t0, C ≈ 0 and the elimination C/(K_m + C) jumps from 0 to ≈ 1 once C ≫ K_m; for small K_m (the reference
    draws go down to 1.2e-4) uniform steps resolve that only to first order (relative error 1.4e-4 with 50
    steps), so the first interval's nodes are graded as t0 + Δ(i/n)³: relative error ≤ 4e-7 at the most
    extreme reference draws, ≈ 4e-8 typically (against scipy's Radau at rtol 1e-12).

    ``MODELS.md``'s indicator 1[t > 0] on the dose term is dropped: it changes the right-hand side only at
    the single point t = 0, which leaves the solution unchanged, while an RK4 stage evaluated there would
    turn it into an O(h) error of the first step.
    """
    starts = jnp.concatenate([jnp.reshape(jnp.asarray(t0, times.dtype), (1,)), times[:-1]])
    frac = jnp.linspace(0.0, 1.0, steps + 1, dtype=times.dtype)
    grids = jnp.concatenate([(frac**3)[None], jnp.broadcast_to(frac, (times.shape[0] - 1, steps + 1))])
    nodes = starts[:, None] + (times - starts)[:, None] * grids  # (N_t, steps + 1)
    s, h = nodes[:, :-1].reshape(-1), jnp.diff(nodes, axis=1).reshape(-1)  # (N_t · steps,)
    dose = D * k_a / V * jnp.exp(-k_a * jnp.stack([s, s + h / 2, s + h], axis=1))  # at t, t + h/2, t + h
    rate = V_m / V

    def rk4(c, step):
        h, a = step

        def elim(c):
            return rate * c / (K_m + c)

        k1 = a[0] - elim(c)
        k2 = a[1] - elim(c + h / 2 * k1)
        k3 = a[1] - elim(c + h / 2 * k2)
        k4 = a[2] - elim(c + h * k3)
        c = c + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return c, c

    c0 = jnp.zeros((), dose.dtype)
    _, path = jax.lax.scan(rk4, c0, (h, dose))
    return path[steps - 1 :: steps]


def one_comp_log_density(params: dict, data: dict) -> Array:
    """−Σ_{x ∈ {k_a, K_m, V_m, σ}} log(1 + x²) − N_t log σ − Σ_n (log Ĉ_n − log C_n)²/(2σ²); all scalars."""
    k_a, K_m, V_m, sigma = params["k_a"], params["K_m"], params["V_m"], params["sigma"]
    conc = one_comp_concentrations(k_a, K_m, V_m, data["times"], data["D"], data["V"], data["t0"])
    prior = -jnp.log1p(k_a**2) - jnp.log1p(K_m**2) - jnp.log1p(V_m**2) - jnp.log1p(sigma**2)
    return prior + _normal_kernel(jnp.log(data["C_hat"]) - jnp.log(conc), sigma)


# ----------------------------------------------------------------------------------------------
# builders: data.json dict -> Target (derived data computed here, once)


def _eight_schools_data(d: dict) -> dict:
    return {"y": d["y"], "sigma": d["sigma"]}


def _build_eight_schools_noncentered(d: dict, name: str) -> Target:
    """z = (θ̃₁..θ̃₈, μ, log τ)."""
    J = int(d["J"])
    example = {"theta_tilde": np.zeros(J), "mu": 0.0, "tau": 1.0}
    return from_logdensity(
        eight_schools_noncentered_log_density, example, {"tau": "positive"}, data=_eight_schools_data(d), name=name
    )


def _build_eight_schools_centered(d: dict, name: str) -> Target:
    """z = (θ₁..θ₈, μ, log τ)."""
    J = int(d["J"])
    example = {"theta": np.zeros(J), "mu": 0.0, "tau": 1.0}
    return from_logdensity(
        eight_schools_centered_log_density, example, {"tau": "positive"}, data=_eight_schools_data(d), name=name
    )


def _build_kidiq(d: dict, name: str) -> Target:
    """z = (β₁, β₂, log σ); ``mom_hs`` and the ``*_new`` prediction inputs are unused."""
    data = {"kid_score": d["kid_score"], "mom_iq": d["mom_iq"]}
    example = {"beta": np.zeros(2), "sigma": 1.0}
    return from_logdensity(kidiq_log_density, example, {"sigma": "positive"}, data=data, name=name)


def _build_kilpisjarvi(d: dict, name: str) -> Target:
    """z = (α, β, log σ); prior hyperparameters from the data; ``xpred`` unused."""
    data = {"x": d["x"], "y": d["y"]} | {k: float(d[k]) for k in ("pmualpha", "psalpha", "pmubeta", "psbeta")}
    example = {"alpha": 0.0, "beta": 0.0, "sigma": 1.0}
    return from_logdensity(kilpisjarvi_log_density, example, {"sigma": "positive"}, data=data, name=name)


def nes_design(d: dict) -> np.ndarray:
    """(N, 9) design of ``nes``: 1, real_ideo, race_adj, 1[age = 2], 1[age = 3], 1[age = 4], educ1, gender, income."""
    age = d["age_discrete"]
    cols = [np.ones_like(age), d["real_ideo"], d["race_adj"], age == 2, age == 3, age == 4]
    cols += [d["educ1"], d["gender"], d["income"]]
    return np.column_stack(cols).astype(np.float64)


def _build_nes(d: dict, name: str) -> Target:
    """z = (β₁..β₉, log σ); ``year`` unused."""
    data = {"X": nes_design(d), "y": d["partyid7"]}
    example = {"beta": np.zeros(9), "sigma": 1.0}
    return from_logdensity(regression_flat_log_density, example, {"sigma": "positive"}, data=data, name=name)


def _build_blr(d: dict, name: str) -> Target:
    """z = (β₁..β_D, log σ)."""
    data = {"X": d["X"], "y": d["y"]}
    example = {"beta": np.zeros(int(d["D"])), "sigma": 1.0}
    return from_logdensity(blr_log_density, example, {"sigma": "positive"}, data=data, name=name)


def _build_ark(d: dict, name: str) -> Target:
    """z = (α, β₁..β_K, log σ); the first K observations enter only as lags."""
    K, T, y = int(d["K"]), int(d["T"]), d["y"]
    lags = np.stack([y[K - k : T - k] for k in range(1, K + 1)], axis=1)
    example = {"alpha": 0.0, "beta": np.zeros(K), "sigma": 1.0}
    data = {"lags": lags, "y": y[K:]}
    return from_logdensity(ark_log_density, example, {"sigma": "positive"}, data=data, name=name)


def _build_diamonds(d: dict, name: str) -> Target:
    """z = (b₁..b₂₄, a, log σ); X̃ = X[:, 1:] minus its column means (column 1 of X, all ones, dropped);
    the data leaves are the sufficient statistics X̃ᵀX̃ (24, 24), X̃ᵀY_c (24,), Y_cᵀY_c, Ȳ (see the density)."""
    X, Y = d["X"][:, 1:], d["Y"]
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean()
    data = {"xtx": Xc.T @ Xc, "xty": Xc.T @ Yc, "yty": float(Yc @ Yc), "ybar": float(Y.mean()), "N": int(Y.size)}
    data["prior_only"] = int(d["prior_only"])
    example = {"b": np.zeros(X.shape[1]), "Intercept": 0.0, "sigma": 1.0}
    return from_logdensity(diamonds_log_density, example, {"sigma": "positive"}, data=data, name=name)


def _build_gauss_mix(d: dict, name: str) -> Target:
    """z = (μ₁, log(μ₂ − μ₁), log σ₁, log σ₂, logit θ)."""
    example = {"mu": np.array([-1.0, 1.0]), "sigma": np.ones(2), "theta": 0.5}
    constraints = {"mu": "ordered", "sigma": "positive", "theta": "unit_interval"}
    return from_logdensity(gauss_mix_log_density, example, constraints, data={"y": d["y"]}, name=name)


def _build_one_comp(d: dict, name: str) -> Target:
    """z = (log k_a, log K_m, log V_m, log σ)."""
    data = {"times": d["times"], "C_hat": d["C_hat"], "D": float(d["D"]), "V": float(d["V"]), "t0": float(d["t0"])}
    example = {"k_a": 1.0, "K_m": 1.0, "V_m": 1.0, "sigma": 1.0}
    constraints = dict.fromkeys(example, "positive")
    return from_logdensity(one_comp_log_density, example, constraints, data=data, name=name)


# ----------------------------------------------------------------------------------------------
# reference columns <-> z (numpy in, numpy out; jax in, jax out; any leading shape)


def _xp(x: Any):
    return jnp if isinstance(x, jax.Array) else np


def _as_float(x: Any):
    return x if isinstance(x, jax.Array) else np.asarray(x, dtype=np.float64)


def _log_tail_to_z(cols: Array, first: int) -> Array:
    """Columns ``[first:]`` are positive: z = (c[:first], log c[first:])."""
    xp = _xp(cols)
    return xp.concatenate([cols[..., :first], xp.log(cols[..., first:])], axis=-1)


def _log_tail_from_z(z: Array, first: int) -> Array:
    """Inverse of :func:`_log_tail_to_z`: (z[:first], exp z[first:])."""
    xp = _xp(z)
    return xp.concatenate([z[..., :first], xp.exp(z[..., first:])], axis=-1)


def _eight_schools_nc_to_z(cols: Array) -> Array:
    """(θ₁..θ₈, μ, τ) → (θ̃ = (θ − μ)/τ, μ, log τ)."""
    xp = _xp(cols)
    theta, mu, tau = cols[..., :-2], cols[..., -2:-1], cols[..., -1:]
    return xp.concatenate([(theta - mu) / tau, mu, xp.log(tau)], axis=-1)


def _eight_schools_nc_from_z(z: Array) -> Array:
    """(θ̃, μ, log τ) → (θ = μ + τθ̃, μ, τ)."""
    xp = _xp(z)
    tt, mu, tau = z[..., :-2], z[..., -2:-1], xp.exp(z[..., -1:])
    return xp.concatenate([mu + tau * tt, mu, tau], axis=-1)


def _gauss_mix_to_z(cols: Array) -> Array:
    """(μ₁, μ₂, σ₁, σ₂, θ) → (μ₁, log(μ₂ − μ₁), log σ₁, log σ₂, log θ − log(1 − θ))."""
    xp = _xp(cols)
    mu1, mu2, sig, th = cols[..., :1], cols[..., 1:2], cols[..., 2:4], cols[..., 4:5]
    return xp.concatenate([mu1, xp.log(mu2 - mu1), xp.log(sig), xp.log(th) - xp.log1p(-th)], axis=-1)


def _gauss_mix_from_z(z: Array) -> Array:
    """(u₁..u₅) → (u₁, u₁ + e^{u₂}, e^{u₃}, e^{u₄}, logistic(u₅))."""
    xp = _xp(z)
    mu1 = z[..., :1]
    return xp.concatenate([mu1, mu1 + xp.exp(z[..., 1:2]), xp.exp(z[..., 2:4]), 1.0 / (1.0 + xp.exp(-z[..., 4:5]))], -1)


class _Posterior(NamedTuple):
    build: Callable[[dict, str], Target]
    density: Callable  # the module-level log density: identifies a target built here
    to_z: Callable[[Array], Array]
    from_z: Callable[[Array], Array]
    n_columns: int


def _logs_from(first: int) -> tuple[Callable, Callable]:
    """(to_z, from_z) for reference columns that are z but for ``exp`` on columns ``first`` onwards."""
    return partial(_log_tail_to_z, first=first), partial(_log_tail_from_z, first=first)


_SPECS: dict[str, _Posterior] = dict(
    zip(
        POSTERIORS,
        [
            _Posterior(
                _build_eight_schools_noncentered,
                eight_schools_noncentered_log_density,
                _eight_schools_nc_to_z,
                _eight_schools_nc_from_z,
                10,
            ),
            _Posterior(_build_eight_schools_centered, eight_schools_centered_log_density, *_logs_from(9), 10),
            _Posterior(_build_kidiq, kidiq_log_density, *_logs_from(2), 3),
            _Posterior(_build_kilpisjarvi, kilpisjarvi_log_density, *_logs_from(2), 3),
            _Posterior(_build_nes, regression_flat_log_density, *_logs_from(9), 10),
            _Posterior(_build_blr, blr_log_density, *_logs_from(5), 6),
            _Posterior(_build_blr, blr_log_density, *_logs_from(5), 6),
            _Posterior(_build_ark, ark_log_density, *_logs_from(6), 7),
            _Posterior(_build_diamonds, diamonds_log_density, *_logs_from(25), 26),
            _Posterior(_build_gauss_mix, gauss_mix_log_density, _gauss_mix_to_z, _gauss_mix_from_z, 5),
            _Posterior(_build_one_comp, one_comp_log_density, *_logs_from(0), 4),
        ],
        strict=True,
    )
)


def _spec(name: str) -> _Posterior:
    spec = _SPECS.get(name)
    if spec is None:
        close = difflib.get_close_matches(str(name), POSTERIORS, n=2)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise VBayesError(f"unknown posteriordb posterior {name!r}; {hint}known: {', '.join(POSTERIORS)}")
    return spec


def _spec_of(target: Target | str) -> _Posterior:
    """The posterior of a name, or of a target by its name, else by its density function."""
    if isinstance(target, str):
        return _spec(target)
    if target.name in _SPECS:
        return _SPECS[target.name]
    fn = getattr(target.density, "fn", None)
    for spec in _SPECS.values():
        if spec.density is fn:
            return spec
    raise VBayesError(f"target {target.name!r} is not one of the posteriordb targets ({', '.join(POSTERIORS)})")


def posteriordb_target(name: str, root: str | os.PathLike | None = None) -> Target:
    """The posterior ``name`` as a Target on the unconstrained z of ``MODELS.md`` (reads only ``data.json``).

    Dimensions: 10, 10, 3, 3, 10, 6, 6, 7, 26, 5, 4 in the order of :data:`POSTERIORS`. Needs float64
    (``jax_enable_x64``): kilpisjarvi's posterior covariance has condition number ≈ 7e11."""
    spec = _spec(name)
    return spec.build(load_data(name, root), name)


def to_unconstrained(target: Target | str, draws: Any) -> Any:
    """Reference columns ``(..., n_columns)`` (constrained, ``MODELS.md`` order) → the target's z ``(..., d)``.

    NumPy in, float64 NumPy out; a JAX array in, a JAX array out (usable under ``jit``)."""
    spec = _spec_of(target)
    draws = _as_float(draws)
    if draws.shape[-1:] != (spec.n_columns,):
        raise VBayesError(f"expected draws with {spec.n_columns} columns (last axis), got shape {draws.shape}")
    if isinstance(draws, jax.Array):
        return spec.to_z(draws)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = spec.to_z(draws)
    if not np.all(np.isfinite(z)):
        bad = int((~np.isfinite(z)).any(axis=-1).sum())
        raise VBayesError(f"{bad} draw(s) lie outside the support (a scale ≤ 0, θ ∉ (0, 1) or μ₁ ≥ μ₂)")
    return z


def to_reference_columns(target: Target | str, z: Any) -> Any:
    """The target's z ``(..., d)`` → reference columns ``(..., n_columns)``, e.g. θ = μ + τθ̃ for non-centred
    eight schools. NumPy in, NumPy out; a JAX array in, a JAX array out."""
    spec = _spec_of(target)
    z = _as_float(z)
    d = spec.n_columns  # every posterior here has as many columns as unconstrained coordinates
    if z.shape[-1:] != (d,):
        raise VBayesError(f"expected z with {d} coordinates (last axis), got shape {z.shape}")
    return spec.from_z(z)


__all__ = [
    "ENV_VAR",
    "ODE_STEPS",
    "POSTERIORS",
    "Reference",
    "list_posteriors",
    "load_data",
    "load_reference",
    "nes_design",
    "one_comp_concentrations",
    "posteriordb_root",
    "posteriordb_target",
    "to_reference_columns",
    "to_unconstrained",
]
