"""The one table of inference methods: every name that ``vbayes fit --method``, ``vbayes compare --methods``,
:func:`vbayes.compare.compare`, the docs and the examples use, and how each runs on a target.

``fit(target, "advi-fullrank")`` runs a method by name and returns its :class:`~vbayes.fit.Fit`, with the verdict
of its own checks. A method is added by adding a row to :data:`METHODS`.

============== ==================================================================================================
name           what it runs
============== ==================================================================================================
advi-*         :func:`vbayes.advi` with the family named (``meanfield``, ``fullrank``, ``lowrank``, ``pointmass``, and
               the normalizing flows ``flow`` (affine coupling) and ``maf`` (masked autoregressive))
advi           the same with the family chosen by :func:`~vbayes.infer.advi.auto_family`
laplace-*      :func:`vbayes.laplace` with the curvature named (``dense``, ``diag``, ``lowrank``, ``ggn``)
laplace        the same with the curvature chosen from the dimension
advi-is        :func:`vbayes.importance_sampling`: PSIS-weighted draws around a full-rank ADVI fit (half from q
               widened 2×, half from a Student-t with its mean and covariance)
pathfinder     :func:`vbayes.pathfinder`: multi-path Pathfinder, q a mixture of the paths' Gaussians
nuts           :func:`vbayes.nuts`, the reference sampler
neutra         :func:`vbayes.neutra`: NUTS on the target pulled back through a flow fitted by ADVI (coupling, then MAF)
cavi, svi      coordinate ascent and stochastic VI on the target's conjugate form (``target.conjugate``)
em, map-em     the same engine with q(β) a point mass (maximum likelihood, MAP)
============== ==================================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from vbayes.errors import VBayesError
from vbayes.fit import Fit
from vbayes.targets import Target


class Method(NamedTuple):
    """A row of the registry. ``run(target, *, key, checks, **options) -> Fit``; ``kind``: ``vi``, ``laplace``,
    ``mcmc`` or ``conjugate``; ``steps``: the option that a step budget sets (the CLI's ``--steps``); ``rank``: the
    option that a rank sets (None: the method has none)."""

    name: str
    summary: str
    kind: str
    run: Callable[..., Fit]
    steps: str | None = None
    rank: str | None = None


def _advi(family: str | None) -> Callable[..., Fit]:
    def run(target: Target, *, key: Any = 0, checks: Any = "default", progress: bool = False, **options) -> Fit:
        from vbayes.infer.advi import advi

        args = (family,) if family is not None else ()
        return advi(target, *args, key=key, checks=checks, progress=progress, **options)

    return run


def _laplace(curvature: str) -> Callable[..., Fit]:
    def run(target: Target, *, key: Any = 0, checks: Any = "default", **options) -> Fit:
        from vbayes.infer.laplace import laplace

        return laplace(target, curvature, key=key, checks=checks, **options)

    return run


def _pathfinder(target: Target, *, key: Any = 0, checks: Any = "default", progress: bool = False, **options) -> Fit:
    """(``progress`` is ADVI's: Pathfinder is one compiled program, with nothing to report while it runs.)"""
    from vbayes.infer.pathfinder import pathfinder

    return pathfinder(target, key=key, checks=checks, **options)


def _importance(target: Target, *, key: Any = 0, checks: Any = "default", progress: bool = False, **options) -> Fit:
    from vbayes.infer.importance import importance_sampling

    return importance_sampling(target, key=key, checks=checks, progress=progress, **options)


def _nuts(target: Target, *, key: Any = 0, checks: Any = "default", **options) -> Fit:
    from vbayes.infer.nuts import nuts

    return nuts(target, key=key, checks=checks, **options)


def _neutra(target: Target, *, key: Any = 0, checks: Any = "default", progress: bool = False, **options) -> Fit:
    from vbayes.infer.neutra import neutra

    return neutra(target, key=key, checks=checks, progress=progress, **options)


def _conjugate(algorithm: str, mode: str) -> Callable[..., Fit]:
    def run(target: Target, *, key: Any = 0, checks: Any = "default", **options) -> Fit:
        from vbayes.conjugate.engine.cavi import cavi
        from vbayes.conjugate.engine.svi import SVIConfig, svi

        if target.conjugate is None:
            raise VBayesError(unavailable(algorithm, target))
        form = target.conjugate()
        if algorithm == "svi":
            config = SVIConfig()._replace(**options)
            return svi(
                form.model, form.init, form.rows, mode=mode, key=key, config=config, target=target, checks=checks
            )
        return cavi(form.model, form.init, form.rows, mode=mode, target=target, checks=checks, **options)

    return run


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            "advi",
            "ADVI, family chosen for the fit (full rank; a flow if flagged)",
            "vi",
            _advi(None),
            "max_steps",
            "rank",
        ),
        Method("advi-meanfield", "ADVI, mean-field Gaussian q", "vi", _advi("meanfield"), "max_steps"),
        Method("advi-fullrank", "ADVI, full-rank Gaussian q", "vi", _advi("fullrank"), "max_steps"),
        Method("advi-lowrank", "ADVI, diagonal plus low-rank Gaussian q", "vi", _advi("lowrank"), "max_steps", "rank"),
        Method("advi-flow", "ADVI, affine-coupling normalizing flow (RealNVP)", "vi", _advi("flow"), "max_steps"),
        Method("advi-maf", "ADVI, masked autoregressive flow", "vi", _advi("maf"), "max_steps"),
        Method(
            "advi-is",
            "importance sampling around full-rank ADVI (q widened 2× + Student-t, PSIS weights)",
            "vi",
            _importance,
            "max_steps",
        ),
        Method("advi-pointmass", "MAP by stochastic gradients (q a point mass)", "vi", _advi("pointmass"), "max_steps"),
        Method(
            "laplace", "Laplace, curvature chosen from the dimension", "laplace", _laplace("auto"), "max_iter", "rank"
        ),
        Method("laplace-dense", "Laplace, dense Hessian", "laplace", _laplace("dense"), "max_iter"),
        Method("laplace-diag", "Laplace, Hessian diagonal only", "laplace", _laplace("diag"), "max_iter"),
        Method(
            "laplace-lowrank",
            "Laplace, prior + low-rank data Hessian",
            "laplace",
            _laplace("lowrank"),
            "max_iter",
            "rank",
        ),
        Method("laplace-ggn", "Laplace, prior + low-rank Gauss-Newton", "laplace", _laplace("ggn"), "max_iter", "rank"),
        Method("pathfinder", "multi-path Pathfinder (L-BFGS path Gaussians)", "vi", _pathfinder, "max_iter"),
        Method("nuts", "NUTS (BlackJAX), the reference sampler", "mcmc", _nuts, "num_samples"),
        Method(
            "neutra",
            "NUTS in the space of a normalizing flow fitted by ADVI (NeuTra)",
            "mcmc",
            _neutra,
            "num_samples",
        ),
        Method("cavi", "coordinate-ascent VB on the conjugate form", "conjugate", _conjugate("cavi", "vb"), "max_iter"),
        Method("svi", "stochastic VI on the conjugate form", "conjugate", _conjugate("svi", "vb"), "max_epochs"),
        Method(
            "em", "EM on the conjugate form (maximum likelihood)", "conjugate", _conjugate("cavi", "em"), "max_iter"
        ),
        Method("map-em", "MAP-EM on the conjugate form", "conjugate", _conjugate("cavi", "map"), "max_iter"),
    ]
}


def get(name: str) -> Method:
    """The method called ``name``; a :class:`VBayesError` listing the names otherwise."""
    if name not in METHODS:
        raise VBayesError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    return METHODS[name]


def unavailable(name: str, target: Target) -> str | None:
    """Why method ``name`` cannot fit ``target`` (None: it can)."""
    method = get(name)
    if method.kind == "conjugate" and target.conjugate is None:
        return f"{name} needs a model with a conjugate form, and {target.name!r} has none"
    if name == "laplace-ggn":
        from vbayes.targets import least_squares_parts

        if least_squares_parts(target) is None:
            return "laplace-ggn needs a least-squares target (vbayes.from_least_squares)"
    return None


def fit(target: Target, method: str, *, key: Any = 0, checks: Any = "default", **options: Any) -> Fit:
    """Fit ``target`` by the method called ``method`` with its ``options``; the :class:`Fit` carries its verdict."""
    reason = unavailable(method, target)
    if reason:
        raise VBayesError(reason)
    try:
        return get(method).run(target, key=key, checks=checks, **options)
    except TypeError as e:  # an option the method does not take
        if "unexpected keyword" not in str(e) and "_replace" not in str(e):
            raise
        raise VBayesError(f"{method} does not take the option(s) given ({', '.join(options)}): {e}") from None


def available(target: Target) -> list[str]:
    """The names of the methods that can fit ``target``."""
    return [name for name in METHODS if unavailable(name, target) is None]
