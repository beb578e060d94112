"""vbayes ADVI against NumPyro SVI (and a hand-written JAX + optax loop) on two models, in one process.

    python benchmarks/advi_vs_numpyro.py [--quick]

Models: (a) non-centred eight schools (``vbayes.examples.eight_schools_noncentered_model``);
(b) Bayesian logistic regression, synthetic data N = 10,000, D = 50, beta_k ~ N(0, 1), no intercept.
Both libraries see the same NumPyro model; vbayes through ``vbayes.from_numpyro``.

Measured (all ratios are vbayes / NumPyro unless said otherwise):

1. compiled time per step, (T(2n) − T(n)) / n with everything compiled, best of several repeats: vbayes
   ``advi`` forced to run a fixed number of steps (``init="zero"``, ``max_decays`` huge, mean-field,
   ``objective="elbo"``, ``optimizer=optax.adam(0.01)``, 1 draw per step); NumPyro ``AutoNormal`` +
   ``Trace_ELBO`` + ``Adam(0.01)``, ``svi.update`` in a jitted ``lax.scan``; a hand-written mean-field
   reparameterised ELBO step with ``optax.adam(0.01)`` in a jitted ``lax.scan`` on vbayes' log density.
   Also shown: vbayes with its own defaults (STL objective, its default whitened Adam, lr 0.1), vbayes'
   functional core (``build_step`` in a jitted scan, no driver) and NumPyro's ``SVI.run`` default path
   (``progress_bar=True``: a Python loop over a jitted step).
2. fixed overhead of a second fit: wall time of a complete second call with a new key, 200 steps, minus
   200 × per-step time; and how many XLA compilations that call triggered.
3. accuracy of each library's *defaults* against NUTS draws: mean over coordinates of W1 / reference sd in
   the unconstrained space, 4,000 draws of q; the noise floor is what 4,000 exact draws score.

The logistic-regression reference (BlackJAX NUTS, window adaptation) is cached in ``benchmarks/.cache/``.
"""

from __future__ import annotations

import os

os.environ.setdefault("VBAYES_CACHE_DIR", "off")  # first calls compile, as they did before the persistent cache

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import blackjax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import optax  # noqa: E402
from numpyro.infer import SVI, Trace_ELBO  # noqa: E402
from numpyro.infer.autoguide import AutoNormal  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    count_compiles,
    fmt_time,
    machine_info,
    markdown_table,
    noise_floor,
    rhat_ess,
    sd_ratio,
    time_steps_interleaved,
    w1_over_sd,
    wall,
)

from vbayes import MeanFieldGaussian, Target, advi, from_numpyro  # noqa: E402
from vbayes.examples import eight_schools_data, eight_schools_noncentered_model, synthetic_logistic_data  # noqa: E402
from vbayes.infer.advi import build_step, init_state  # noqa: E402
from vbayes.objectives import OBJECTIVES  # noqa: E402

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
LR = 0.01
ADAM = optax.adam(LR)  # ONE object: vbayes caches compiled code per optimiser object (by id)
NEVER = 10**9  # max_decays that is never reached: advi runs exactly max_steps steps
S_DRAWS = 4000
SECOND_FIT_STEPS = 200
NUMPYRO_DEFAULT_STEPS = 10_000


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------------
# models


def logistic_model(X, y=None) -> None:
    """beta_k ~ N(0, 1), k < D; y_n ~ Bernoulli(logit⁻¹(X_n · beta)); X: (N, D), y: (N,)."""
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


@dataclass
class Bench:
    name: str
    model: Any
    args: tuple
    kwargs: dict
    n_steps: int  # n for the per-step timing (runs of n and 2n steps)
    target: Target = field(init=False)

    def __post_init__(self):
        self.target = from_numpyro(self.model, *self.args, **self.kwargs)


def eight_schools_reference(target: Target) -> np.ndarray:
    """posteriordb draws (10 × 1000) mapped to vbayes' unconstrained layout (mu, log tau, theta_tilde[8]); the files
    are found as ``vbayes.examples.load_reference`` finds them ($VBAYES_POSTERIORDB or ../shared/posteriordb)."""
    from vbayes.examples import load_reference

    reference = load_reference("eight_schools-eight_schools_noncentered")
    col = {k: reference.pooled[:, i] for i, k in enumerate(reference.columns)}
    mu, tau = col["mu"], col["tau"]
    theta = np.stack([col[f"theta[{j}]"] for j in range(1, 9)], 1)
    blocks = {"mu": mu[:, None], "tau": np.log(tau)[:, None], "theta_tilde": (theta - mu[:, None]) / tau[:, None]}
    assert target.names == ("mu", "tau", "theta_tilde"), target.names
    return np.concatenate([blocks[k] for k in target.names], 1)


def nuts_reference(bench: Bench, chains: int = 4, warmup: int = 1000, draws: int = 2000, seed: int = 0) -> dict:
    """BlackJAX NUTS with window adaptation on vbayes' log density; cached to benchmarks/.cache/*.npz."""
    X = bench.args[0]
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"logistic_N{X.shape[0]}_D{X.shape[1]}_nuts_{chains}x{draws}_w{warmup}_s{seed}.npz"
    if path.exists():
        z = np.load(path)
        out = {k: z[k] for k in z.files}
        out["cached"] = True
        return out
    log(f"  computing the NUTS reference ({chains} chains × {draws} draws after {warmup} warm-up); cached to {path}")
    target = bench.target

    def one_chain(key, x0, target):
        logdensity = target.log_density
        k1, k2 = jax.random.split(key)
        adapt = blackjax.window_adaptation(blackjax.nuts, logdensity)
        (state, params), _ = adapt.run(k1, x0, num_steps=warmup)
        nuts = blackjax.nuts(logdensity, **params)

        def body(s, k):
            s, info = nuts.step(k, s)
            return s, (s.position, info.is_divergent, info.num_integration_steps)

        _, (pos, div, nsteps) = jax.lax.scan(body, state, jax.random.split(k2, draws))
        return pos, div, nsteps, params["step_size"]

    run = jax.jit(jax.vmap(one_chain, in_axes=(0, 0, None)))
    key = jax.random.PRNGKey(seed)
    k_init, k_run = jax.random.split(key)
    x0 = jax.random.normal(k_init, (chains, target.dim))
    t, (pos, div, nsteps, step_size) = wall(lambda: run(jax.random.split(k_run, chains), x0, target))
    pos = np.asarray(pos)
    rhat, ess = rhat_ess(pos)
    out = dict(
        chains=pos,
        divergences=np.asarray(div).sum(),
        mean_steps=np.asarray(nsteps).mean(),
        step_size=np.asarray(step_size),
        rhat=rhat,
        ess=ess,
        seconds=t,
    )
    np.savez(path, **out)
    out["cached"] = False
    return out


# ----------------------------------------------------------------------------------------------
# the three step implementations


def _split_args(args: tuple) -> tuple[list[int], list]:
    idx = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
    return idx, [jnp.asarray(args[i]) for i in idx]


def numpyro_svi(bench: Bench) -> SVI:
    guide = AutoNormal(bench.model)
    return SVI(bench.model, guide, numpyro.optim.Adam(LR), Trace_ELBO(num_particles=1))


def numpyro_compiled_runner(bench: Bench):
    """``run(n)``: n ``svi.update`` steps in one jitted ``lax.scan`` (data passed as jit arguments)."""
    svi = numpyro_svi(bench)
    state0 = svi.init(jax.random.PRNGKey(0), *bench.args, **bench.kwargs)
    idx, arrays = _split_args(bench.args)
    kw = {k: jnp.asarray(v) for k, v in bench.kwargs.items()}

    @functools.partial(jax.jit, static_argnums=1)
    def scan(state, n, arrays, kw):
        args = list(bench.args)
        for i, a in zip(idx, arrays, strict=True):
            args[i] = a
        return jax.lax.scan(lambda s, _: svi.update(s, *args, **kw), state, None, length=n)

    return lambda n: scan(state0, n, arrays, kw)


def numpyro_loop_runner(bench: Bench):
    """``run(n)``: what ``SVI.run`` does with its default ``progress_bar=True``: a Python loop calling a
    jitted ``svi.update`` once per step (here compiled once and reused; tqdm itself left out)."""
    svi = numpyro_svi(bench)
    state0 = svi.init(jax.random.PRNGKey(0), *bench.args, **bench.kwargs)
    idx, arrays = _split_args(bench.args)
    kw = {k: jnp.asarray(v) for k, v in bench.kwargs.items()}

    @jax.jit
    def update(state, arrays, kw):
        args = list(bench.args)
        for i, a in zip(idx, arrays, strict=True):
            args[i] = a
        return svi.update(state, *args, **kw)

    def run(n):
        state, losses = state0, []
        for _ in range(n):
            state, loss = update(state, arrays, kw)
            losses.append(loss)
        return state, losses

    return run


def handwritten_runner(target: Target):
    """``run(n)``: mean-field Gaussian, 1-draw reparameterised ELBO (closed-form entropy), optax.adam, in
    one jitted ``lax.scan``; the target (its data) is a jit argument, not a baked-in constant."""
    d = target.dim
    opt = optax.adam(LR)
    params0 = (jnp.zeros(d), jnp.full(d, jnp.log(0.1)))

    @functools.partial(jax.jit, static_argnums=2)
    def scan(params, target, n, key):
        def neg_elbo(p, eps):
            loc, log_scale = p
            return -(target.log_density(loc + jnp.exp(log_scale) * eps) + jnp.sum(log_scale))

        def body(carry, k):
            p, st = carry
            loss, g = jax.value_and_grad(neg_elbo)(p, jax.random.normal(k, (d,)))
            upd, st = opt.update(g, st, p)
            return (optax.apply_updates(p, upd), st), loss

        (p, _), losses = jax.lax.scan(body, (params, opt.init(params)), jax.random.split(key, n))
        return p, losses

    return lambda n: scan(params0, target, n, jax.random.PRNGKey(0))


def vbayes_core_runner(target: Target):
    """``run(n)``: vbayes' own ``build_step`` (ELBO, ADAM, 1 draw) in a jitted scan, without the driver."""
    step = build_step(OBJECTIVES["elbo"], ADAM, 1)
    state0 = init_state(MeanFieldGaussian.init(jnp.zeros(target.dim), 0.1), ADAM)

    @functools.partial(jax.jit, static_argnums=2)
    def scan(state, target, n, key):
        return jax.lax.scan(lambda s, k: step(k, s, target), state, jax.random.split(key, n))

    return lambda n: scan(state0, target, n, jax.random.PRNGKey(0))


def vbayes_fixed(target: Target, n: int, key: int = 0, matched: bool = True):
    """``advi`` forced to run exactly n steps. matched: ELBO + optax.adam(0.01) like the others;
    else vbayes' own defaults (STL, default optimiser, lr 0.1)."""
    kw = dict(objective="elbo", optimizer=ADAM) if matched else {}
    return advi(target, "meanfield", init="zero", max_steps=n, max_decays=NEVER, progress=False, key=key, **kw)


# ----------------------------------------------------------------------------------------------
# counting log-density evaluations of the default fit's L-BFGS mode search

# ----------------------------------------------------------------------------------------------
# sections


def section_timing(b: Bench, repeats: int) -> dict:
    log(f"\n== {b.name}: compiled per-step time (n = {b.n_steps}, best of {repeats}) ==")
    res = {}
    runners = {
        "vbayes": lambda n: vbayes_fixed(b.target, n).q,
        "vbayes_defaults": lambda n: vbayes_fixed(b.target, n, matched=False).q,
        "vbayes_core": vbayes_core_runner(b.target),
        "numpyro": numpyro_compiled_runner(b),
        "numpyro_loop": numpyro_loop_runner(b),
        "hand": handwritten_runner(b.target),
    }
    timings = time_steps_interleaved(runners, b.n_steps, repeats)
    for k, st in timings.items():
        res[k] = {"per_step": st.per_step, "per_call": st.per_call, "t_n": st.t_n, "t_2n": st.t_2n}
        log(f"  {k:16s} {fmt_time(st.per_step):>10s}/step   (run of n: {fmt_time(st.t_n)}, of 2n: {fmt_time(st.t_2n)})")
    h = res["hand"]["per_step"]
    log(
        f"  ratios: vbayes/NumPyro {res['vbayes']['per_step'] / res['numpyro']['per_step']:.2f}, "
        f"vbayes/hand {res['vbayes']['per_step'] / h:.2f}, NumPyro/hand {res['numpyro']['per_step'] / h:.2f}, "
        f"vbayes-core/hand {res['vbayes_core']['per_step'] / h:.2f}, "
        f"vbayes-defaults/hand {res['vbayes_defaults']['per_step'] / h:.2f}, "
        f"NumPyro-loop/hand {res['numpyro_loop']['per_step'] / h:.2f}"
    )
    return res


def section_overhead(b: Bench, timing: dict, repeats: int) -> dict:
    n = SECOND_FIT_STEPS
    log(f"\n== {b.name}: second fit with a new key ({n} steps) ==")
    res: dict[str, Any] = {}

    # vbayes: one fit of this configuration first (it may compile), then timed fits with new keys
    with count_compiles() as c_first:
        t_first, _ = wall(lambda: vbayes_fixed(b.target, n, key=1).q)
    times, compiles = [], []
    for r in range(repeats):
        with count_compiles() as c:
            t, _ = wall(lambda r=r: vbayes_fixed(b.target, n, key=100 + r).q)
        times.append(t)
        compiles.append(c)
    t2 = float(np.median(times))
    res["vbayes"] = {
        "first": t_first,
        "first_compiles": c_first.programs,
        "second": t2,
        "overhead": t2 - n * timing["vbayes"]["per_step"],
        "compiles": max(c.programs for c in compiles),
        "compile_names": "; ".join(c.names() for c in compiles if c.programs),
    }
    log(
        f"  vbayes : first call {fmt_time(t_first)} ({c_first.programs} compilations); second call median "
        f"{fmt_time(t2)} -> overhead {fmt_time(res['vbayes']['overhead'])}; compilations in second calls: "
        f"{[c.programs for c in compiles]} "
        f"{res['vbayes']['compile_names']}"
    )

    # NumPyro: SVI.run on the same SVI object, new key each time
    svi = numpyro_svi(b)
    run = lambda k: svi.run(jax.random.PRNGKey(k), n, *b.args, progress_bar=False, **b.kwargs).params
    with count_compiles() as c_first:
        t_first, _ = wall(lambda: run(1))
    times, compiles = [], []
    for r in range(repeats):
        with count_compiles() as c:
            t, _ = wall(lambda r=r: run(100 + r))
        times.append(t)
        compiles.append(c)
    t2 = float(np.median(times))
    res["numpyro"] = {
        "first": t_first,
        "first_compiles": c_first.programs,
        "second": t2,
        "overhead": t2 - n * timing["numpyro"]["per_step"],
        "compiles": max(c.programs for c in compiles),
        "compile_seconds": float(np.median([c.seconds for c in compiles])),
    }
    log(
        f"  NumPyro: first call {fmt_time(t_first)}; second call median {fmt_time(t2)} -> overhead "
        f"{fmt_time(res['numpyro']['overhead'])}; compilations per second call: {[c.programs for c in compiles]} "
        f"({fmt_time(res['numpyro']['compile_seconds'])} of XLA compile)"
    )

    # vbayes diagnostics: which kinds of "second fit" recompile?
    checks = {}
    rebuilt = from_numpyro(b.model, *b.args, **b.kwargs)
    with count_compiles() as c:
        t, _ = wall(lambda: vbayes_fixed(rebuilt, n, key=7).q)
    checks["rebuilt target (same model, same data)"] = (t, c.programs, c.names())
    with count_compiles() as c:
        t, _ = wall(
            lambda: (
                advi(
                    b.target,
                    "meanfield",
                    init="zero",
                    max_steps=n,
                    max_decays=NEVER,
                    progress=False,
                    key=8,
                    objective="elbo",
                    optimizer=optax.adam(LR),
                ).q
            )
        )
    checks["new optax.adam(0.01) object"] = (t, c.programs, c.names())
    for k, (t, nc, names) in checks.items():
        log(f"  vbayes check, {k}: {fmt_time(t)}, {nc} compilations {names}")
    res["checks"] = {k: {"seconds": t, "compiles": nc, "names": names} for k, (t, nc, names) in checks.items()}
    return res


def numpyro_q_draws(bench: Bench, params: dict, key, s: int) -> np.ndarray:
    """Draws of AutoNormal's q on the unconstrained space, in vbayes' coordinate order."""
    loc = jnp.concatenate([jnp.reshape(params[f"{p.name}_auto_loc"], -1) for p in bench.target.params])
    scale = jnp.concatenate([jnp.reshape(params[f"{p.name}_auto_scale"], -1) for p in bench.target.params])
    return np.asarray(loc + scale * jax.random.normal(key, (s, loc.size)))


def section_accuracy(b: Bench, ref: np.ndarray, seeds: list[int], np_seeds: list[int], optimum: bool) -> dict:
    log(f"\n== {b.name}: accuracy of the defaults vs NUTS ({S_DRAWS} draws of q, unconstrained space) ==")
    res: dict[str, Any] = {"vbayes": [], "numpyro": []}
    floor = noise_floor(ref, S_DRAWS)
    res["floor"] = floor
    res["ref_draws"] = ref.shape[0]
    log(
        f"  noise floor ({S_DRAWS} reference draws vs the other {ref.shape[0] - S_DRAWS}): "
        f"median {floor[0]:.3f}, 95% {floor[1]:.3f}"
    )

    for seed in seeds:
        with count_compiles() as c:
            t, fit = wall(lambda seed=seed: advi(b.target, "meanfield", key=seed, progress=False))
        x = np.asarray(fit.draws_unconstrained(S_DRAWS, key=10_000 + seed))
        w = w1_over_sd(x, ref)
        r = sd_ratio(x, ref)
        row = {
            "seed": seed,
            "w1_mean": float(w.mean()),
            "w1_max": float(w.max()),
            "sd_ratio_min": float(r.min()),
            "sd_ratio_max": float(r.max()),
            "wall": t,
            "compiles": c.programs,
            "compile_s": c.seconds,
            "steps": fit.info.steps,
            "grad_evals": fit.info.grad_evals,
            "init_evals": fit.info.extra.get("init_evals", 0),
            "outcome": fit.info.outcome,
            "init": fit.info.extra.get("init"),
            "halvings": fit.info.extra.get("step_size_halvings"),
        }
        res["vbayes"].append(row)
        log(
            f"  vbayes  advi(target, 'meanfield', key={seed}): W1/sd mean {w.mean():.3f} (max {w.max():.3f}), sd ratio "
            f"[{r.min():.2f}, {r.max():.2f}], {fit.info.outcome} after {fit.info.steps} steps, init {row['init']}, "
            f"wall {fmt_time(t)} ({c.programs} compilations, {fmt_time(c.seconds)})"
        )
    res["lbfgs_evals"] = res["vbayes"][0]["init_evals"]
    log(f"  vbayes initialisation (L-BFGS mode search + Hessian columns): {res['lbfgs_evals']} gradient evaluations")

    if optimum:
        # the best a mean-field Gaussian can do: a long, low-noise run (32 draws per step, 8 halvings)
        t, fit = wall(
            lambda: advi(b.target, "meanfield", key=0, num_samples=32, max_decays=8, max_steps=50_000, progress=False)
        )
        w4 = w1_over_sd(np.asarray(fit.draws_unconstrained(S_DRAWS, key=10_000)), ref)
        w100 = w1_over_sd(np.asarray(fit.draws_unconstrained(100_000, key=10_001)), ref)
        names = b.target.coordinate_names()
        worst = int(np.argmax(w100))
        res["optimum"] = {
            "w1_mean_4000": float(w4.mean()),
            "w1_mean_100k": float(w100.mean()),
            "worst": names[worst],
            "worst_w1": float(w100[worst]),
            "steps": fit.info.steps,
            "wall": t,
        }
        log(
            f"  mean-field optimum (advi, 32 draws/step, 8 halvings, {fit.info.steps} steps, {fmt_time(t)}): "
            "W1/sd mean "
            f"{w4.mean():.3f} with {S_DRAWS} draws, {w100.mean():.3f} with 100,000 draws; worst coordinate "
            f"{names[worst]} alone {w100[worst]:.3f} (contributes {w100[worst] / w100.size:.3f} to the mean)"
        )

    svi = numpyro_svi(b)
    for seed in np_seeds:
        with count_compiles() as c:
            t, result = wall(
                lambda seed=seed: (
                    svi.run(
                        jax.random.PRNGKey(seed), NUMPYRO_DEFAULT_STEPS, *b.args, progress_bar=False, **b.kwargs
                    ).params
                )
            )
        x = numpyro_q_draws(b, result, jax.random.PRNGKey(10_000 + seed), S_DRAWS)
        w = w1_over_sd(x, ref)
        r = sd_ratio(x, ref)
        res["numpyro"].append(
            {
                "seed": seed,
                "w1_mean": float(w.mean()),
                "w1_max": float(w.max()),
                "sd_ratio_min": float(r.min()),
                "sd_ratio_max": float(r.max()),
                "wall": t,
                "compiles": c.programs,
                "grad_evals": NUMPYRO_DEFAULT_STEPS,
            }
        )
        log(
            f"  NumPyro AutoNormal+Adam(0.01) {NUMPYRO_DEFAULT_STEPS} steps, key={seed}: W1/sd mean {w.mean():.3f} "
            f"(max {w.max():.3f}), sd ratio [{r.min():.2f}, {r.max():.2f}], wall {fmt_time(t)}"
        )
    return res


# ----------------------------------------------------------------------------------------------
# report


def _span(rows: list[dict], key: str, f: str = "{:.3f}") -> str:
    v = [r[key] for r in rows]
    s = f.format(v[0])
    return s if len(v) == 1 else f"{s} ({f.format(min(v))}–{f.format(max(v))})"


# fmt: off
def report(results: dict, info: dict, seeds: list[int], np_seeds: list[int]) -> str:
    rows: list[list[str]] = []
    ok = lambda c: "yes" if c else "**no**"

    def add(*cells: Any) -> None:  # model, quantity, vbayes, NumPyro, hand, v/N, v/h, N/h, target, met
        rows.append([str(c) for c in cells] + [""] * (10 - len(cells)))

    for name, r in results.items():
        tm, ov, acc = r["timing"], r["overhead"], r["accuracy"]
        vb, nb, h = (tm[k]["per_step"] for k in ("vbayes", "numpyro", "hand"))
        vd, vc, nl = (tm[k]["per_step"] for k in ("vbayes_defaults", "vbayes_core", "numpyro_loop"))
        add(name, "per-step time, compiled (Adam 0.01, ELBO, 1 draw)", fmt_time(vb), fmt_time(nb), fmt_time(h),
            f"{vb / nb:.2f}", f"{vb / h:.2f}", f"{nb / h:.2f}", "vbayes/hand ≤ 1.3", ok(vb / h <= 1.3))
        add(name, "per-step, vbayes own defaults (STL, whitened Adam 0.02)", fmt_time(vd), "", "",
            f"{vd / nb:.2f}", f"{vd / h:.2f}")
        add(name, "per-step, vbayes `build_step` in a jitted scan (no driver)", fmt_time(vc), "", "",
            f"{vc / nb:.2f}", f"{vc / h:.2f}")
        add(name, "per-step, NumPyro `SVI.run` default path (Python loop of jitted steps)", "", fmt_time(nl), "",
            f"{vb / nl:.2f}", "", f"{nl / h:.2f}")
        vo, no = ov["vbayes"]["overhead"], ov["numpyro"]["overhead"]
        add(name, f"fixed overhead of a 2nd fit, new key ({SECOND_FIT_STEPS} steps)", fmt_time(vo), fmt_time(no), "",
            f"{vo / no:.3f}", "", "", "vbayes < 50 ms", ok(vo < 0.05))
        add(name, "XLA compilations in that 2nd call", ov["vbayes"]["compiles"], ov["numpyro"]["compiles"],
            "", "", "", "", "0", ok(ov["vbayes"]["compiles"] == 0))
        va, na = acc["vbayes"], acc["numpyro"]
        add(name, f"accuracy of defaults: mean W1/sd, {S_DRAWS} draws (noise floor {acc['floor'][0]:.3f})",
            _span(va, "w1_mean"), _span(na, "w1_mean"), "", f"{va[0]['w1_mean'] / na[0]['w1_mean']:.2f}", "", "",
            "vbayes ≤ 0.05", ok(max(x["w1_mean"] for x in va) <= 0.05))
        if "optimum" in acc:
            o = acc["optimum"]
            add(name, "best possible mean-field q (long low-noise run): mean W1/sd, 4000 / 100,000 draws",
                f"{o['w1_mean_4000']:.3f} / {o['w1_mean_100k']:.3f}")
        add(name, "sd ratio q/reference, min–max", f"{va[0]['sd_ratio_min']:.2f}–{va[0]['sd_ratio_max']:.2f}",
            f"{na[0]['sd_ratio_min']:.2f}–{na[0]['sd_ratio_max']:.2f}")
        warm_v = fmt_time(np.median([x["wall"] for x in va[1:]])) if len(va) > 1 else "n/a"
        wall_n = float(np.median([x["wall"] for x in na]))
        add(name, "wall time of the default fit (vbayes: 1st call incl. compile / later calls)",
            f"{fmt_time(va[0]['wall'])} / {warm_v}", fmt_time(wall_n), "", f"{va[0]['wall'] / wall_n:.2f}")
        ge = va[0]["grad_evals"]  # FitInfo.grad_evals counts the initialisation too
        add(name, "gradient evaluations of the default fit (vbayes: SVI steps + mode search and Hessian)",
            f"{ge - acc['lbfgs_evals']} + {acc['lbfgs_evals']} = {ge}", na[0]["grad_evals"], "",
            f"{ge / na[0]['grad_evals']:.2f}")
    header = ["model", "quantity", "vbayes", "NumPyro", "hand-written", "vbayes/NumPyro", "vbayes/hand",
              "NumPyro/hand", "target", "met"]
    machine = (
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['device']}; Python {info['python']}, "
        f"jax {info['jax']}, numpyro {info['numpyro']}, blackjax {info['blackjax']}, optax {info['optax']}, "
        f"vbayes {info['vbayes']} (git {info['git']}), scipy {info['scipy']}; float64. "
        f"Accuracy: vbayes seeds {seeds}, NumPyro seeds {np_seeds} "
        "(first value is seed 0, range over seeds in brackets)."
    )
    return machine + "\n\n" + markdown_table(header, rows)
# fmt: on


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and shorter timing runs (~2 min)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    warnings.filterwarnings("ignore", category=FutureWarning)
    repeats = 2 if a.quick else 7
    seeds = [0, 1] if a.quick else [0, 1, 2]
    np_seeds = [0] if a.quick else [0, 1, 2]
    info = machine_info()
    log("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))

    J, sigma, y = eight_schools_data()
    X, yl = synthetic_logistic_data(10_000, 50, seed=0)
    benches = [
        Bench(
            "eight_schools_noncentered",
            eight_schools_noncentered_model,
            (J, sigma),
            {"y": y},
            n_steps=4000 if a.quick else 10_000,
        ),
        Bench("logistic_N10000_D50", logistic_model, (X,), {"y": yl}, n_steps=500 if a.quick else 1000),
    ]
    refs = {benches[0].name: eight_schools_reference(benches[0].target)}
    ref = nuts_reference(benches[1])
    refs[benches[1].name] = ref["chains"].reshape(-1, ref["chains"].shape[-1])
    how = "cached" if ref["cached"] else f"computed in {float(ref['seconds']):.1f} s"
    log(
        f"logistic NUTS reference: {ref['chains'].shape[0]} chains × {ref['chains'].shape[1]} draws, max R-hat "
        f"{float(ref['rhat']):.4f}, min bulk ESS {float(ref['ess']):.0f}, divergences {int(ref['divergences'])}, "
        f"mean leapfrog steps {float(ref['mean_steps']):.1f}, {how}"
    )

    results = {}
    for b in benches:
        timing = section_timing(b, repeats)
        overhead = section_overhead(b, timing, repeats=3 if a.quick else 5)
        accuracy = section_accuracy(b, refs[b.name], seeds, np_seeds, optimum=b.name.startswith("eight"))
        results[b.name] = {"timing": timing, "overhead": overhead, "accuracy": accuracy}

    log("\n== ratios (vbayes / NumPyro) ==")
    for name, r in results.items():
        tm, ov, acc = r["timing"], r["overhead"], r["accuracy"]
        log(
            f"  {name}: per-step {tm['vbayes']['per_step'] / tm['numpyro']['per_step']:.2f} "
            f"(vbayes/hand {tm['vbayes']['per_step'] / tm['hand']['per_step']:.2f}, "
            f"NumPyro/hand {tm['numpyro']['per_step'] / tm['hand']['per_step']:.2f}); "
            f"2nd-fit overhead {ov['vbayes']['overhead'] / ov['numpyro']['overhead']:.3f}; "
            f"default accuracy W1/sd {acc['vbayes'][0]['w1_mean'] / acc['numpyro'][0]['w1_mean']:.2f}"
        )
    table = report(results, info, seeds, np_seeds)
    log("\n" + table)
    log(f"\ntotal wall time {time.perf_counter() - t0:.0f} s ({'--quick' if a.quick else 'full'})")
    CACHE.mkdir(exist_ok=True)
    out = CACHE / f"advi_vs_numpyro{'_quick' if a.quick else ''}.json"
    out.write_text(json.dumps({"info": info, "results": results}, indent=1, default=float))
    log(f"raw numbers: {out}")


if __name__ == "__main__":
    main()
