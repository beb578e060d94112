"""Built-in example targets, by name: ``load("eight_schools_noncentered")``, ``list_examples()``.

Importing this package builds nothing and loads no data; each target is built when asked for.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import NamedTuple

from vbayes.errors import VBayesError
from vbayes.examples.classic import (
    banana,
    breast_cancer_data,
    eight_schools_centered,
    eight_schools_centered_model,
    eight_schools_data,
    eight_schools_noncentered,
    eight_schools_noncentered_model,
    funnel,
    logistic_regression,
    logistic_regression_model,
    synthetic_logistic_data,
)
from vbayes.examples.conjugate_regression import (
    diabetes_data,
    exact_log_evidence,
    exact_posterior,
    linear_regression,
    linear_regression_exact,
)
from vbayes.examples.posteriordb import (
    POSTERIORS,
    Reference,
    list_posteriors,
    load_reference,
    posteriordb_target,
    to_reference_columns,
    to_unconstrained,
)
from vbayes.examples.tomography import (
    plasma_tomography,
    plasma_tomography_dim,
    plasma_tomography_mesh,
    plasma_tomography_problem,
)
from vbayes.targets import Target


class Example(NamedTuple):
    """A named example: ``build()`` returns a fresh :class:`~vbayes.targets.Target`. Optional: ``dim`` (known
    without building, for examples that take seconds to generate) and ``mesh()`` -> ``(points (V, 2), triangles
    (T, 3))`` for examples whose parameters are fields on a triangular mesh (the CLI draws them)."""

    name: str
    build: Callable[[], Target]
    description: str
    dim: int | None = None
    mesh: Callable[[], tuple] | None = None


EXAMPLES: dict[str, Example] = {
    e.name: e
    for e in [
        Example(
            "eight_schools_noncentered",
            eight_schools_noncentered,
            "eight schools hierarchical model, non-centered (mu, tau, theta_tilde[8]); dim 10",
        ),
        Example(
            "eight_schools_centered",
            eight_schools_centered,
            "eight schools hierarchical model, centered (mu, tau, theta[8]): a funnel; dim 10",
        ),
        Example(
            "logistic_regression",
            logistic_regression,
            "Bayesian logistic regression, sklearn breast cancer data (N=569, 30 features + intercept); dim 31",
        ),
        Example(
            "linear_regression",
            linear_regression,
            "conjugate linear regression, sklearn diabetes data (N=442); exact posterior and evidence known; dim 11",
        ),
        Example("funnel", funnel, "Neal's funnel: v ~ N(0, 3^2), x_i ~ N(0, e^v); dim 10"),
        Example("banana", banana, "twisted Gaussian: x1 ~ N(0, 10^2), x2 ~ N(0.03 (x1^2 - 100), 1); dim 2"),
        Example(
            "plasma_tomography",
            plasma_tomography,
            "synthetic plasma tomography: log n_e, log T_e and a fraction on a 685-vertex triangular mesh, "
            "4 cameras of 500x500 pixels (N=10^6 line integrals), smoothness priors; dim 2055",
            plasma_tomography_dim(),
            plasma_tomography_mesh,
        ),
    ]
}


def list_examples() -> list[Example]:
    """All built-in examples, in registry order."""
    return list(EXAMPLES.values())


def load(name: str) -> Target:
    """Build the example target called ``name`` (``posteriordb:NAME`` for a shared posterior); raise
    :class:`VBayesError` listing the known names if unknown."""
    if str(name).startswith("posteriordb:"):
        return posteriordb_target(name.split(":", 1)[1])
    example = EXAMPLES.get(name)
    if example is None:
        close = difflib.get_close_matches(str(name), list(EXAMPLES), n=2)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise VBayesError(
            f"unknown example {name!r}; {hint}known examples: {', '.join(EXAMPLES)}, "
            "or posteriordb:NAME for a posteriordb posterior (the folder: $VBAYES_POSTERIORDB, a clone of "
            "stan-dev/posteriordb or vbayes's layout, else ../shared/posteriordb)"
        )
    return example.build()


__all__ = [
    "EXAMPLES",
    "POSTERIORS",
    "Example",
    "Reference",
    "list_posteriors",
    "load_reference",
    "posteriordb_target",
    "to_reference_columns",
    "to_unconstrained",
    "banana",
    "breast_cancer_data",
    "diabetes_data",
    "eight_schools_centered",
    "eight_schools_centered_model",
    "eight_schools_data",
    "eight_schools_noncentered",
    "eight_schools_noncentered_model",
    "exact_log_evidence",
    "exact_posterior",
    "funnel",
    "linear_regression",
    "linear_regression_exact",
    "list_examples",
    "load",
    "logistic_regression",
    "logistic_regression_model",
    "plasma_tomography",
    "plasma_tomography_problem",
    "synthetic_logistic_data",
]
