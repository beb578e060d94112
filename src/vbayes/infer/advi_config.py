"""ADVI's settings (:class:`ADVIConfig`) and their defaults, which differ between the Gaussian families and the flows:
a flow learns with plain Adam at a smaller rate, from several draws per step, and its stopping rule compares longer
chunks on more common draws (its ELBO rises slowly and steadily for thousands of steps)."""

from __future__ import annotations

from typing import NamedTuple

from vbayes.errors import VBayesError, is_count, is_positive, is_real, require
from vbayes.flows import FLOWS
from vbayes.objectives import OBJECTIVES, RENYI_ALPHA

LEARNING_RATE = 0.02
"""The default optimiser's learning rate for the Gaussian families (a step of 0.02 sd in q's whitened coordinates)."""
FLOW_LEARNING_RATE = 0.002
"""Plain Adam's learning rate for the flows (their weights have no posterior scale to whiten by)."""
CHUNK, FLOW_CHUNK = 250, 500
"""Steps per compiled chunk (the stopping rule decides between chunks): Gaussians, flows."""
NUM_CHECK, FLOW_NUM_CHECK = 64, 256
"""Common draws on which successive chunks' ELBOs are compared: Gaussians, flows."""
FLOW_FIRST_STAGE = {"chunk_size": 125, "num_samples": 4, "learning_rate": 0.005}
"""A flow's first, short schedule (:func:`vbayes.infer.advi.advi`): chunks of 125 steps of 4 draws at Adam 0.005.
Where q is nearly Gaussian its objective levels off within a few hundred steps; where the fit is flagged, it goes
on with the full schedule (the defaults above)."""


class ADVIConfig(NamedTuple):
    """ADVI's settings. ``rank``: columns of the ``lowrank`` family's factor. ``objective`` (None: ``stl`` for the
    Gaussians, ``renyi`` with α = 0.5 for the flows, whose extra freedom the ELBO spends on fitting the bulk ever
    more tightly, leaving the tails too light): ``stl`` (sticking the landing) | ``elbo`` | ``score`` | ``iwelbo`` |
    ``renyi`` (:mod:`vbayes.objectives`); ``num_samples`` draws per step (None: 1, or 8 for ``score``, ``iwelbo``,
    ``renyi`` and the flows). ``renyi_alpha`` ∈ [0, 1], used only by ``objective="renyi"``: the α of the Rényi
    bound (Li & Turner 2016), 1/(1−α)·log mean_k (p̃(z_k)/q(z_k))^{1−α} over the K = ``num_samples`` draws; α = 1
    is the ELBO (``stl``), α = 0 the IWELBO, and a smaller α gives a more mass-covering q (wider mean-field
    marginals); with K = 1 every α is the ELBO. ``max_steps``; ``learning_rate`` of the default optimiser (None:
    :data:`LEARNING_RATE` for the Gaussians' whitened Adam, :func:`~vbayes.infer.preconditioner.default_optimizer`;
    :data:`FLOW_LEARNING_RATE` for the flows' plain Adam). ``chunk_size``, ``num_check`` (None: 250 and 64 for the
    Gaussians, 500 and 256 for the flows, whose ELBO rises slowly for thousands of steps).
    Stopping: steps run in compiled chunks of ``chunk_size``; after each chunk the ELBO of the chunk-averaged q is
    compared with the previous chunk's on ``num_check`` common draws; a rise below ``max(2 se, tol)`` nats halves
    the step size, and after ``max_decays`` halvings ends the run as converged; ``max_bad_in_row`` non-finite steps
    in a row end it as diverged. ``batch_size``: doubly stochastic ADVI on a target with a minibatch form
    (:func:`vbayes.from_loglik`): each step's objective uses B rows drawn with replacement, the log-likelihood
    scaled by N/B (Titsias & Lázaro-Gredilla 2014); the stopping rule's check still uses all the data."""

    rank: int = 2
    objective: str | None = None
    num_samples: int | None = None
    max_steps: int = 20_000
    learning_rate: float | None = None
    chunk_size: int | None = None
    max_decays: int = 4
    tol: float = 1e-3
    num_check: int | None = None
    max_bad_in_row: int = 20
    batch_size: int | None = None
    renyi_alpha: float = RENYI_ALPHA

    def checked(self, family: str, dim: int) -> ADVIConfig:
        """The settings validated for ``family`` on a target of dimension ``dim`` (a :class:`VBayesError` naming
        the first that is wrong), with ``num_samples`` filled in."""
        flow = family in FLOWS
        objective = self.objective or ("renyi" if flow else "stl")
        if objective not in OBJECTIVES:
            raise VBayesError(f"unknown objective {self.objective!r}; choose one of {sorted(OBJECTIVES)}")
        rules = [
            ("max_steps", self.max_steps, is_count(self.max_steps), "an integer ≥ 1"),
            (
                "learning_rate",
                self.learning_rate,
                self.learning_rate is None or is_positive(self.learning_rate),
                "None or positive and finite",
            ),
            ("chunk_size", self.chunk_size, self.chunk_size is None or is_count(self.chunk_size), "None or ≥ 1"),
            ("max_decays", self.max_decays, is_count(self.max_decays, 0), "an integer ≥ 0"),
            ("tol", self.tol, is_real(self.tol) and self.tol >= 0, "≥ 0 and finite"),
            ("num_check", self.num_check, self.num_check is None or is_count(self.num_check, 4), "None or ≥ 4"),
            ("max_bad_in_row", self.max_bad_in_row, is_count(self.max_bad_in_row), "an integer ≥ 1"),
            ("num_samples", self.num_samples, self.num_samples is None or is_count(self.num_samples), "None or ≥ 1"),
            ("batch_size", self.batch_size, self.batch_size is None or is_count(self.batch_size), "None or ≥ 1"),
            ("renyi_alpha", self.renyi_alpha, is_real(self.renyi_alpha) and 0 <= self.renyi_alpha <= 1, "in [0, 1]"),
        ]
        if family == "lowrank":
            rules.append(("rank", self.rank, is_count(self.rank) and self.rank <= dim, f"between 1 and {dim} (d)"))
        require(rules, "advi")
        if flow and objective == "elbo":
            raise VBayesError(
                "advi: objective 'elbo' needs q's entropy in closed form, which a flow has not; use 'renyi' (the "
                "flows' default), 'stl', 'iwelbo' or 'score'"
            )
        samples = self.num_samples or (8 if objective in ("score", "iwelbo", "renyi") or flow else 1)
        return self._replace(
            objective=objective,
            num_samples=samples,
            learning_rate=self.learning_rate or (FLOW_LEARNING_RATE if flow else LEARNING_RATE),
            chunk_size=self.chunk_size or (FLOW_CHUNK if flow else CHUNK),
            num_check=self.num_check or (FLOW_NUM_CHECK if flow else NUM_CHECK),
        )
