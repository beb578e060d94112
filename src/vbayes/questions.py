"""Questions people ask about variational Bayes, each answered by a runnable example with real numbers.

A registry: for every question its number, the question, the script in ``examples/`` that answers it
(``python examples/qNN_name.py [--quick] [--out DIR]``), the page in ``docs/`` that explains the answer, and
a one-line answer. Entries whose example is still being written have ``status="planned"`` and placeholder
text; an example slots in by replacing its entry (slug, question, answer, ``status="ready"``) and adding the
script ``examples/qNN_slug.py`` and the page ``docs/NN-slug.md`` (the tests then run and check it).

The scripts share :func:`example_args` (their command line), :func:`save_figure` (small PNGs, Agg canvas)
and :func:`say` (print one number with its label, so that the doc page can quote it verbatim).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vbayes import outputs

REPO = Path(__file__).resolve().parents[2]
"""The source checkout (``examples/`` and ``docs/`` live there, not in the installed package)."""


class Question(NamedTuple):
    """One question: ``number``; ``slug`` (file names ``examples/qNN_slug.py``, ``docs/NN-slug.md``); the
    ``question``; a one-line ``answer``; ``status`` ``"ready"`` or ``"planned"`` (example not written yet)."""

    number: int
    slug: str
    question: str
    answer: str
    status: str = "ready"

    @property
    def script(self) -> str:
        """Path of the example, relative to the repository root."""
        return f"examples/q{self.number:02d}_{self.slug}.py"

    @property
    def doc(self) -> str:
        """Path of the doc page, relative to the repository root."""
        return f"docs/{self.number:02d}-{self.slug.replace('_', '-')}.md"

    @property
    def command(self) -> str:
        """The command that reproduces the page's numbers and figures."""
        return f"python {self.script}"


QUESTIONS: tuple[Question, ...] = (
    Question(
        1,
        "vi_or_mcmc",
        "Variational inference or MCMC: which should I choose?",
        "Per model: ADVI when its own checks pass (k̂, reweighting from a widened q, restarts), at a fraction of NUTS's "
        "cost; full-rank or NUTS when mean-field is too narrow; NUTS when k̂ flags the fit.",
    ),
    Question(
        2,
        "vb_and_em",
        "How is variational Bayes related to EM?",
        "EM is VB with q(θ) collapsed to a point mass: the same E-step and M-step code, and as N grows the "
        "VB posterior shrinks onto the MAP-EM estimate.",
    ),
    Question(
        3,
        "kl_weighting",
        "How should the KL term be weighted against the reconstruction term in a VAE?",
        "With weight 1 against the log-likelihood summed over pixels (the ELBO); a pixel mean is β = D (64 on the "
        "digits: every latent unit collapsed), and a fixed Gaussian decoder sd σ is a hidden β ∝ σ².",
    ),
    Question(
        4,
        "what_is_a_vae",
        "What is a variational autoencoder, and what is it used for?",
        "A latent-variable model, z ~ N(0, I) decoded by a neural network, fitted by the ELBO with an encoder "
        "network as the approximate posterior; used to generate, estimate densities (log p(x)), compress, interpolate.",
    ),
    Question(
        5,
        "vae_or_autoencoder",
        "When should I use a VAE rather than an autoencoder?",
        "When you need samples, a density or a latent space with a known prior: the VAE's decoded N(0, I) draws "
        "are digits (the AE's are blotches) and its −log p(x) flags unseen 7s with AUC 0.96 (AE: 0.83–0.91).",
    ),
    Question(
        6,
        "model_capacity",
        'What is the "capacity" of a model?',
        "How rich a family it can represent: widening a VAE's decoder raised the training ELBO by 4 nats/image "
        "until it plateaued at 128 units, while an 8-unit decoder (fewer parameters than a linear one) collapsed.",
    ),
    Question(
        7,
        "tractable",
        "What does 'tractable' mean?",
        "Computable at a cost polynomial in the data: the exact evidence of a K-component mixture sums K^N "
        "terms, while ELBO and Laplace cost O(N) per evaluation.",
    ),
    Question(
        8,
        "evidence_by_quadrature",
        "Why is numerical integration of the marginal likelihood expensive?",
        "A tensor grid needs G^d evaluations: exponential in the dimension, where Laplace, importance sampling "
        "and the ELBO cost a few thousand evaluations whatever d.",
    ),
    Question(
        9,
        "kl_without_posterior",
        "Doesn't KL(q‖p) need the true posterior p?",
        "No: the ELBO uses only the unnormalised log p(D|θ)p(θ), and log p(D) − ELBO = KL(q‖p) exactly, "
        "so maximising the ELBO minimises the KL without knowing p(D).",
    ),
    Question(
        10,
        "reparameterisation_vs_score",
        "What is the difference between the VAE and stochastic backpropagation?",
        "None in the gradient: both are the reparameterisation (pathwise) estimator; the contrast is with "
        "score-function (REINFORCE) gradients, whose variance is orders of magnitude larger.",
    ),
    Question(
        11,
        "gaussian_kl",
        "Which KL formula for Gaussian units is right?",
        "Both, each in its own parameterisation: ½Σ(σ²+μ²−1−log σ²) with log σ², ½Σ(σ²+μ²−1)−Σlog σ with "
        "log σ; mixing them up is the bug.",
    ),
    Question(
        12,
        "monte_carlo_vb",
        "Can variational Bayes be combined with Monte Carlo?",
        "Yes: Monte Carlo estimates of the expectations VB needs (score-function or reparameterised "
        "gradients) reach the exact optimal q of a non-conjugate model, with error falling as 1/√S.",
    ),
    Question(
        13,
        "uncertainty_without_sampling",
        "How do I get uncertainties for thousands of parameters without sampling?",
        "Laplace: the curvature at the mode from Hessian-vector products (dense), or prior plus the data-informed "
        "eigenpairs (lowrank/ggn); compress linear observations first. d = 2,055, N = 10⁶: exact sds in seconds.",
    ),
    Question(
        14,
        "svi_gaussian_mixture",
        "How do I apply stochastic VI to a Bayesian Gaussian mixture?",
        "VariationalGaussianMixture(method='svi'): natural-gradient steps on minibatches came within 1.7e-4 "
        "nats/point of CAVI's ELBO on a million points in 0.28 of CAVI's time (8 components to CAVI's 6: two "
        "clusters left split).",
    ),
)


def list_questions(ready_only: bool = False) -> list[Question]:
    """The registry in order; only those with a written example when ``ready_only``."""
    return [q for q in QUESTIONS if q.status == "ready" or not ready_only]


def get(number: int) -> Question:
    """The question numbered ``number`` (KeyError if none)."""
    for q in QUESTIONS:
        if q.number == number:
            return q
    raise KeyError(f"no question {number}; known: {', '.join(str(q.number) for q in QUESTIONS)}")


# ----------------------------------------------------------------------------------------------
# what the example scripts share


def example_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The examples' command line: ``--quick`` (small sizes, for CI) and ``--out DIR`` (default docs/figures)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds; for CI)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "figures", help="folder for the figures")
    return parser.parse_args(argv)


def new_figure(width: float = 9.0, height: float = 3.6) -> Figure:
    """A matplotlib Figure on an Agg canvas (no pyplot state), constrained layout."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out: Path, name: str) -> Path:
    """Write ``fig`` to ``out/name`` (PNG, 100 dpi: small enough to commit) and say where."""
    path = outputs.save_figure(fig, out / name, dpi=100)
    print(f"wrote {path}")
    return path


def say(label: str, value: float | int | str, fmt: str = ".4g") -> None:
    """Print ``label: value`` (numbers formatted by ``fmt``): the lines the doc pages quote."""
    text = value if isinstance(value, str) else format(value, fmt)
    print(f"{label}: {text}", flush=True)
