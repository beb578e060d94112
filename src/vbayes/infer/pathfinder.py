"""Pathfinder (Zhang, Carpenter, Gelman & Vehtari 2022): Gaussians read off an L-BFGS path, with vbayes's verdict.

One path: L-BFGS (BlackJAX's ``minimize_lbfgs``) on −log p̃ from a uniform draw in [−init_radius, init_radius]^d
(Stan's start) records its iterates θ_l, their gradients, and the inverse-Hessian estimate of its last
``history`` curvature pairs, Σ_l = diag(α_l) + β_l γ_l β_lᵀ (BlackJAX's ``lbfgs_inverse_hessian_factors``).
Each iterate gives q_l = N(θ_l + Σ_l ∇log p̃(θ_l), Σ_l) (a quasi-Newton step towards the mode, the paper's
Algorithm 1); its ELBO is estimated from ``num_elbo_draws`` draws, and the path's answer is the q_l with the
highest estimate. (BlackJAX centres q_l at θ_l − Σ_l ∇log p̃(θ_l), the opposite step; vbayes follows the paper.)

Several paths (``num_paths``, multi-path Pathfinder): q = Σ_k w_k q_k, where w_k is path k's share of the
PSIS-smoothed importance weights p̃/q̄ of ``num_draws`` draws from each path, q̄ the equal-weight mixture of the
paths. The paths that found the posterior's mass carry it; a path stuck in a region of little mass fades; two paths
at one mode are not counted twice (the paper's Algorithm 2 resamples the same weights; vbayes keeps the mixture, so
that q has a density the checks can read). q is then checked like every fit (k̂, reweighting).
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.checks import verify
from vbayes.compilation import QUICK
from vbayes.errors import VBayesError, is_count, is_positive, require
from vbayes.families import QuasiNewtonGaussian
from vbayes.fit import Fit, FitInfo
from vbayes.keys import as_key
from vbayes.mixtures import Mixture
from vbayes.psis import psis
from vbayes.targets import Target, check_initial_point

Array = jax.Array


class Path(NamedTuple):
    """One path's answer: ``q`` at the iterate ``best`` with the highest ELBO estimate ``elbo``; ``iterations``
    of L-BFGS (``max_iter`` when its own tests never stopped it); ``elbos`` ``(max_iter + 1,)``: the estimate at
    every iterate (−inf past the last one, or where log p̃ − log q was not finite)."""

    q: QuasiNewtonGaussian
    elbo: Array
    best: Array
    iterations: Array
    elbos: Array


def path(target: Target, key: Array, z0: Array, max_iter: int, history: int, num_elbo_draws: int) -> Path:
    """Single-path Pathfinder from ``z0`` ``(d,)`` (traceable; the key of iterate l is ``split(key, max_iter+1)[l]``
    as in BlackJAX)."""
    from blackjax.optimizers.lbfgs import lbfgs_inverse_hessian_factors, minimize_lbfgs

    last, trail = minimize_lbfgs(lambda z: -target.log_density(z), z0, maxiter=max_iter, maxcor=history)
    iterations = last.state.iter_num
    used = trail.update_mask[1:]
    steps = jnp.pad(jnp.where(used, jnp.diff(trail.x, axis=0), 0.0), ((history, 0), (0, 0)))
    turns = jnp.pad(jnp.where(used, jnp.diff(trail.g, axis=0), 0.0), ((history, 0), (0, 0)))
    keys = jax.random.split(key, max_iter + 1)

    def q_at(i: Array) -> QuasiNewtonGaussian:
        window = i + jnp.arange(history)
        alpha = trail.alpha[i]
        beta, gamma = lbfgs_inverse_hessian_factors(steps[window].T, turns[window].T, alpha)
        minus_grad = trail.g[i]  # the gradient of −log p̃
        newton = alpha * minus_grad + beta @ (gamma @ (beta.T @ minus_grad))
        return QuasiNewtonGaussian(trail.x[i] - newton, alpha, beta, gamma)

    def elbo_at(i: Array) -> Array:
        def estimate():
            q = q_at(i)
            z = q.sample(keys[i], num_elbo_draws)
            value = jnp.mean(jax.vmap(target.log_density)(z) - q.log_prob(z))
            return jnp.where(jnp.isfinite(value), value, -jnp.inf)

        return jax.lax.cond(i <= iterations, estimate, lambda: jnp.asarray(-jnp.inf, z0.dtype))

    elbos = jax.lax.map(elbo_at, jnp.arange(max_iter + 1))
    best = jnp.argmax(elbos)
    return Path(q_at(best), elbos[best], best, iterations, elbos)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6), compiler_options=QUICK)
def _paths(target: Target, key: Array, inits: Array, max_iter: int, history: int, num_elbo_draws: int, draws: int):
    """Every path (one after another: ``lax.map``, so that each stops when its own L-BFGS does), then ``draws``
    draws of each path's q and their log ratios log p̃ − log q̄ ``(K, draws)``, q̄ the equal mixture of the paths
    with a finite ELBO."""
    k_paths, k_draws = jax.random.split(key)
    num = inits.shape[0]
    paths = jax.lax.map(
        lambda a: path(target, a[0], a[1], max_iter, history, num_elbo_draws), (jax.random.split(k_paths, num), inits)
    )
    usable = jnp.isfinite(paths.elbo)
    equal = Mixture(paths.q, jnp.where(usable, -jnp.log(jnp.maximum(jnp.sum(usable), 1)), -jnp.inf))
    z = jax.lax.map(lambda a: a[0].sample(a[1], draws), (paths.q, jax.random.split(k_draws, num)))
    flat = z.reshape(-1, z.shape[-1])
    log_r = target.log_density_rows(flat) - equal.log_prob(flat)
    return paths, log_r.reshape(num, draws)


@functools.partial(jax.jit, static_argnums=(2, 3, 4), compiler_options=QUICK)
def single_path(target: Target, key: Array, max_iter: int, history: int, num_elbo_draws: int) -> Path:
    """One path from z = 0, compiled (ADVI's ``init="pathfinder"``)."""
    return path(target, key, jnp.zeros(target.dim, jnp.result_type(float)), max_iter, history, num_elbo_draws)


def path_cost(iterations: np.ndarray | int, num_elbo_draws: int) -> tuple[int, int]:
    """(evaluations of log p̃ and its gradient, of log p̃ alone) of paths of ``iterations`` L-BFGS iterations: two
    per iteration and one at the start (BlackJAX does not report its line search's extra ones); ``num_elbo_draws``
    per iterate, the start included."""
    n = np.asarray(iterations)
    return int(np.sum(2 * n + 1)), int(np.sum((n + 1) * num_elbo_draws))


def path_weights(log_ratios: np.ndarray) -> tuple[np.ndarray, float]:
    """(log w_k ``(K,)``, k̂): each path's share of the PSIS-smoothed weights of its draws' log ratios
    ``(K, n)`` against the equal mixture; a draw whose ratio is not finite weighs 0."""
    r = np.asarray(log_ratios, dtype=np.float64)
    finite = np.isfinite(r)
    if not finite.any():  # no draw of any path has a finite ratio: nothing to weight by
        return np.full(r.shape[0], -np.log(r.shape[0])), float("inf")
    khat, log_w = psis(r[finite])
    w = np.zeros(r.shape)
    w[finite] = np.exp(log_w)
    with np.errstate(divide="ignore"):
        return np.log(w.sum(1) / w.sum()), float(khat)


def pathfinder(
    target: Target,
    num_paths: int = 4,
    *,
    max_iter: int = 1000,
    history: int = 10,
    num_elbo_draws: int = 25,
    num_draws: int = 500,
    init_radius: float = 2.0,
    key: Array | int | None = 0,
    checks: Any = "default",
) -> Fit:
    """Multi-path Pathfinder (single-path when ``num_paths=1``): q a mixture of the paths' Gaussians (one
    :class:`~vbayes.families.QuasiNewtonGaussian` for a single path), with the verdict of its checks.

    Defaults: Stan's 4 paths, 25 ELBO draws per iterate and at most 1000 L-BFGS iterations; BlackJAX's ``history``
    of 10 curvature pairs (Stan keeps 5: a coarser covariance, which the checks flag more often above d = 5).
    ``info.grad_evals`` counts two evaluations of log p̃ and its gradient per L-BFGS iteration (BlackJAX does not
    report its line search's extra ones) plus every log p̃ the ELBO estimates and the path weights spent (split in
    ``info.extra``); ``info.trace`` holds the heaviest path's ELBO estimate at each iterate.
    """
    t_start = time.perf_counter()
    if not isinstance(target, Target):
        raise VBayesError(f"pathfinder needs a vbayes Target, got {type(target).__name__}")
    require(
        [
            ("num_paths", num_paths, is_count(num_paths) and num_paths <= 10_000, "an integer in [1, 10000]"),
            ("max_iter", max_iter, is_count(max_iter) and max_iter <= 100_000, "an integer in [1, 100000]"),
            ("history", history, is_count(history) and history <= 1000, "an integer in [1, 1000] (curvature pairs)"),
            ("num_elbo_draws", num_elbo_draws, is_count(num_elbo_draws) and num_elbo_draws <= 100_000, "in [1, 1e5]"),
            ("num_draws", num_draws, is_count(num_draws) and num_draws <= 1_000_000, "an integer in [1, 1e6]"),
            ("init_radius", init_radius, is_positive(init_radius), "positive and finite"),
        ],
        "pathfinder",
    )
    k_init, k_run = jax.random.split(as_key(key))
    inits = jax.random.uniform(k_init, (num_paths, target.dim), minval=-init_radius, maxval=init_radius)
    check_initial_point(target, inits[0])
    paths, log_r = _paths(target, k_run, inits, max_iter, history, num_elbo_draws, num_draws)
    elbo, iterations, best = (np.asarray(x) for x in jax.device_get((paths.elbo, paths.iterations, paths.best)))
    if not np.any(np.isfinite(elbo)):
        raise VBayesError(
            f"pathfinder: on every one of the {num_paths} paths, log p̃ − log q of {target.name!r} was not finite at "
            "the draws of every iterate's q: the log density fails along the L-BFGS paths (check the model's support "
            "and overflow), or use another method"
        )
    if num_paths == 1:
        q, log_w, khat = jax.tree_util.tree_map(lambda x: x[0], paths.q), np.zeros(1), float("nan")
    else:
        log_w, khat = path_weights(np.asarray(log_r))
        q = Mixture(paths.q, jnp.asarray(log_w))
    heaviest = int(np.argmax(log_w))
    converged = bool(np.all(iterations < max_iter))
    lbfgs_evals, elbo_evals = path_cost(iterations, num_elbo_draws)
    density_evals = elbo_evals + (num_paths * num_draws if num_paths > 1 else 0)
    weights = np.exp(log_w)
    message = (
        f"{num_paths} path{'s' if num_paths > 1 else ''}: L-BFGS ran {_span(iterations)} iterations"
        f"{'' if converged else f' (the budget of {max_iter} on some)'}; best ELBO per path {_span(elbo, '.2f')}"
        + (
            f"; weights {', '.join(f'{w:.2f}' for w in weights)} (k̂ of the weighting {khat:.2f})"
            if num_paths > 1
            else ""
        )
    )
    info = FitInfo(
        method="pathfinder",
        outcome="converged" if converged else "max_steps",
        message=message,
        steps=int(np.sum(iterations)),
        grad_evals=lbfgs_evals + density_evals,
        skipped_steps=0,
        wall_time=time.perf_counter() - t_start,
        extra={
            "num_paths": num_paths,
            "iterations": iterations.tolist(),
            "best_iterate": best.tolist(),
            "path_elbo": elbo.tolist(),
            "path_weights": weights.tolist(),
            "weighting_khat": khat,
            "lbfgs_evals": lbfgs_evals,
            "density_evals": density_evals,
            **({"elbo": float(elbo[0])} if num_paths == 1 else {}),
        },
        trace_of="the ELBO estimate of q at each L-BFGS iterate of the heaviest path",
    )
    trace = np.asarray(paths.elbos[heaviest])[: int(iterations[heaviest]) + 1]
    options = dict(num_paths=num_paths, max_iter=max_iter, history=history, num_elbo_draws=num_elbo_draws)
    options.update(num_draws=num_draws, init_radius=init_radius, checks="none")
    refit = lambda k: pathfinder(target, key=k, **options)  # noqa: E731 (the restarts check's second fit)
    return verify(
        Fit(target=target, q=q, trace=trace, info=info), checks, refit=refit, key=jax.random.fold_in(k_run, 1)
    )


def _span(values: np.ndarray, fmt: str = "d") -> str:
    """``a`` or ``a–b``: the range of ``values`` (finite ones)."""
    v = np.asarray(values)
    v = v[np.isfinite(v)] if v.dtype.kind == "f" else v
    if v.size == 0:
        return "none"
    lo, hi = format(v.min().item(), fmt), format(v.max().item(), fmt)
    return lo if lo == hi else f"{lo}–{hi}"
