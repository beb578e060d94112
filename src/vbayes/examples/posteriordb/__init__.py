"""The 11 posteriordb reference posteriors as vbayes targets, with their reference draws.

The files live outside the package. The folder is ``root=`` when given, else ``$VBAYES_POSTERIORDB``, else
``shared/posteriordb`` above the working directory or the package (``../shared/posteriordb/`` next to this
repository); its layout is told from its contents: vbayes's (one folder per posterior: ``data.json``,
``reference_draws.json``, ``reference_summary.json``, ...; ``MODELS.md`` there states each model as mathematics) or
a clone of ``github.com/stan-dev/posteriordb`` (its root or its ``posterior_database/``: zipped data and draws,
summary computed from the draws). The tests ship a copy of the 11 in ``tests/data/posteriordb`` (posteriordb's
layout). Nothing here reads them at import time: the package installs and runs without them, and only the
functions below need them. Only the 11 :data:`POSTERIORS` have a model here; a posteriordb clone's other
posteriors load as data and draws but have no target.

* :func:`load_reference`, :func:`load_data`, :func:`list_posteriors`, :func:`posteriordb_root`,
  :func:`posteriordb_layout`: the loader.
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

from vbayes.errors import VBayesError as VBayesError  # the error raised here, as before the split
from vbayes.examples.posteriordb.loader import (
    ENV_VAR,
    Reference,
    list_posteriors,
    load_data,
    load_reference,
    posteriordb_layout,
    posteriordb_root,
)
from vbayes.examples.posteriordb.models import ODE_STEPS, nes_design, one_comp_concentrations
from vbayes.examples.posteriordb.observations import OBSERVATION_POSTERIORS, observation_target
from vbayes.examples.posteriordb.targets import (
    POSTERIORS,
    posteriordb_target,
    to_reference_columns,
    to_unconstrained,
)

__all__ = [
    "ENV_VAR",
    "OBSERVATION_POSTERIORS",
    "ODE_STEPS",
    "POSTERIORS",
    "Reference",
    "list_posteriors",
    "load_data",
    "load_reference",
    "nes_design",
    "observation_target",
    "one_comp_concentrations",
    "posteriordb_layout",
    "posteriordb_root",
    "posteriordb_target",
    "to_reference_columns",
    "to_unconstrained",
]
