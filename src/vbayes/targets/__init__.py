"""What we approximate: an unnormalised log density on a flat unconstrained vector.

A :class:`Target` holds ``log p(data, θ(z)) + log|det ∂θ/∂z|`` for ``z ∈ R^d`` and the map ``z ↦ θ``
back to named, constrained parameters. It is a JAX pytree whose *leaves are the data arrays*: the
density function and the parameter layout are static, so a jitted algorithm compiled for one target is
reused, without recompiling, for another built from the same model with new data of the same shapes.

Constraints are NumPyro's (``numpyro.distributions.constraints``) and so are the bijections to
unconstrained space (``biject_to``): we do not re-derive Jacobians that NumPyro already gets right.

Modules: :mod:`~vbayes.targets.core` (:class:`Target`, :class:`ParamSpec`, the static/dynamic split of the
data and the checks), :mod:`~vbayes.targets.builders` (:func:`from_logdensity`, :func:`from_loglik`,
:func:`from_numpyro`) and :mod:`~vbayes.targets.least_squares` (:func:`from_least_squares`). The Gaussian
prior precisions of least-squares targets are in :mod:`vbayes.linalg.precision`.
"""

from vbayes.targets.builders import from_logdensity, from_loglik, from_numpyro
from vbayes.targets.core import (
    ParamSpec,
    Target,
    check_finite,
    check_initial_point,
    raise_if_not_finite,
    value_and_grad,
)
from vbayes.targets.least_squares import LeastSquaresParts, from_least_squares, least_squares_parts

__all__ = [
    "LeastSquaresParts",
    "ParamSpec",
    "Target",
    "check_finite",
    "check_initial_point",
    "raise_if_not_finite",
    "from_least_squares",
    "from_logdensity",
    "from_loglik",
    "from_numpyro",
    "least_squares_parts",
    "value_and_grad",
]
