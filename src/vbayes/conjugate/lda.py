"""Latent Dirichlet allocation (Blei, Ng & Jordan 2003) as a conjugate-exponential model of the engine.

Model, for D documents over a vocabulary of V words and K topics::

    β_k ~ Dir(η 1_V),   θ_d ~ Dir(α 1_K),   z_di | θ_d ~ Cat(θ_d),   w_di | z_di, β ~ Cat(β_{z_di})

q(β_k) = Dir(λ_k) is the global factor (λ ``(K, V)``, the engine's parameters); q(θ_d) = Dir(γ_d) and
q(z_di) = Cat(φ_dw) are local, found per document by the fixed point of the E step in Hoffman, Blei & Bach (2010)::

    φ_dwk ∝ exp(E log θ_dk + E log β_kw),    γ_d ← α + Σ_w n_dw φ_dw

from γ_d⁰, until the mean absolute change of γ_d is below ``mean_change_tol`` or after ``max_doc_update_iter``
sweeps (scikit-learn's rule, document by document). The statistics are the expected topic-word counts
S_kw = Σ_d n_dw φ_dwk ``(K, V)``; the global step is λ = η + scale · S. The engine's CAVI is batch VB, its SVI
online VB with ρ_t = (τ₀ + t)^−κ (Hoffman et al. 2010), and streaming, Dask and device meshes come with them.

Documents reach the engine as dense rows ``[word ids (L), counts (L), γ⁰ (K)]`` (:func:`document_rows`), L the
most distinct words in any document, the unused places with count 0; γ⁰ is part of the row so that an estimator
can start each document where scikit-learn does (its Gamma(100, 1/100) draws), and is 1 otherwise.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from vbayes.conjugate.model import ConjugateModel
from vbayes.data.sources import Chunks, DataSource, default_threads, in_caller_config, tree_sum, working_dtype
from vbayes.errors import VBayesError

Array = jax.Array


class LDAPrior(NamedTuple):
    """``doc_topic`` α (), ``topic_word`` η (), and the per-document fixed point's ``max_doc_update_iter`` ()
    and ``mean_change_tol`` ()."""

    doc_topic: Array
    topic_word: Array
    max_doc_update_iter: Array
    mean_change_tol: Array


class LDAParams(NamedTuple):
    """q(β_k) = Dir(λ_k): ``topic_word`` λ ``(K, V)``."""

    topic_word: Array


class LDAStats(NamedTuple):
    """Expected topic-word counts Σ_d n_dw φ_dwk ``(K, V)``."""

    topic_word: Array


class LDALocal(NamedTuple):
    """What the per-document step needs from q(β): E log β ``(K, V)`` and exp(E log β) ``(K, V)``."""

    log_topics: Array
    exp_log_topics: Array


def digamma_positive(x: Array) -> Array:
    """ψ(x) for x > 0, any shape: below 8 by ψ(x) = ψ(x + 8) − Σ_{i<8} 1/(x + i), the sum taken as P′(x)/P(x) with
    P = Π_{i<8} (x + i) (one division, not eight); then the asymptotic series ψ(y) = ln y − 1/(2y) − Σ_n B_2n/(2n y^2n)
    to y^−12, whose next term is below 2e-14 for y ≥ 8 (Abramowitz & Stegun 6.3.6, 6.3.18). XLA's digamma (a Lanczos
    sum, with the reflection for x < 0) costs about 5× as much, and the E step evaluates ψ K times per document per
    sweep."""
    small = x < 8.0
    s = jnp.where(small, x, 1.0)  # large x skip the recurrence (and P's overflow)
    a, b, c, e = ((s + i) * (s + i + 1.0) for i in (0.0, 2.0, 4.0, 6.0))  # (x + i)(x + i + 1): slope 2x + 2i + 1
    da, db, dc, de = (2.0 * s + i for i in (1.0, 5.0, 9.0, 13.0))
    product = (a * b) * (c * e)
    derivative = (da * b + a * db) * (c * e) + (a * b) * (dc * e + c * de)
    y = jnp.where(small, x + 8.0, x)
    r = 1.0 / y
    r2 = r * r
    tail = r2 * (1 / 12 - r2 * (1 / 120 - r2 * (1 / 252 - r2 * (1 / 240 - r2 * (1 / 132 - r2 * (691 / 32760))))))
    return jnp.log(y) - 0.5 * r - tail - jnp.where(small, derivative / product, 0.0)


def dirichlet_log_mean(concentration: Array) -> Array:
    """E log x for x ~ Dir(c) along the last axis: ψ(c) − ψ(Σ c), any shape ``(..., K)``, c > 0."""
    return digamma_positive(concentration) - digamma_positive(jnp.sum(concentration, -1, keepdims=True))


def _expect(prior: LDAPrior, params: LDAParams) -> LDALocal:
    log_topics = dirichlet_log_mean(params.topic_word)
    return LDALocal(log_topics, jnp.exp(log_topics))


def _mode(prior: LDAPrior, params: LDAParams) -> LDALocal:
    """At the mode of q(β): β̂_kw ∝ λ_kw − 1, floored at a tiny positive value (the mode is on the boundary where
    λ_kw < 1; with η = 1, a flat prior, EM is maximum likelihood)."""
    tiny = jnp.finfo(params.topic_word.dtype).tiny
    excess = jnp.maximum(params.topic_word - 1.0, tiny)
    log_topics = jnp.log(excess) - jnp.log(jnp.sum(excess, -1, keepdims=True))
    return LDALocal(log_topics, jnp.exp(log_topics))


def _split_rows(rows: Array, n_topics: int) -> tuple[Array, Array, Array]:
    """Rows ``(C, 2L + K)`` as word ids ``(C, L)`` (int), counts ``(C, L)`` and γ⁰ ``(C, K)``."""
    width = (rows.shape[-1] - n_topics) // 2
    gamma0 = rows[:, 2 * width :]
    gamma0 = jnp.where(gamma0 > 0, gamma0, 1.0)  # a block's padding rows are zeros: start them at 1, not at ψ(0)
    return rows[:, :width].astype(jnp.int32), rows[:, width : 2 * width], gamma0


def doc_fixed_point(prior: LDAPrior, topics: Array, counts: Array, gamma0: Array) -> tuple[Array, Array]:
    """Per-document q(θ_d) = Dir(γ_d) by the fixed point γ_d ← α + exp(E log θ_d) ⊙ Σ_w (n_dw / norm_dw) t_dw,
    norm_dw = exp(E log θ_d) · t_dw, where t_dw = exp(E log β_{·w}) ``topics`` ``(C, K, L)``, ``counts`` ``(C, L)``,
    from ``gamma0`` ``(C, K)``. A document stops when its mean absolute change is below the tolerance (its last
    sweep kept); all stop after ``max_doc_update_iter`` sweeps. Returns γ ``(C, K)`` and exp(E log θ) ``(C, K)``."""
    eps = jnp.finfo(topics.dtype).eps
    alpha, tol = prior.doc_topic.astype(topics.dtype), prior.mean_change_tol.astype(topics.dtype)
    gamma0 = gamma0.astype(topics.dtype)

    def sweep(e_theta: Array) -> Array:
        norm = jnp.einsum("ck,ckl->cl", e_theta, topics) + eps
        return alpha + e_theta * jnp.einsum("cl,ckl->ck", counts / norm, topics)

    def cond(state):
        i, _, _, done = state
        return (i < prior.max_doc_update_iter) & ~jnp.all(done)

    def body(state):
        i, gamma, e_theta, done = state
        new = jnp.where(done[:, None], gamma, sweep(e_theta))
        settled = jnp.mean(jnp.abs(new - gamma), -1) < tol
        return i + 1, new, jnp.exp(dirichlet_log_mean(new)), done | settled

    start = (jnp.asarray(0, jnp.int32), gamma0, jnp.exp(dirichlet_log_mean(gamma0)), jnp.zeros(gamma0.shape[0], bool))
    _, gamma, e_theta, _ = jax.lax.while_loop(cond, body, start)
    return gamma, e_theta


def doc_topics(prior: LDAPrior, local: LDALocal, rows: Array) -> Array:
    """Each document's q(θ_d) = Dir(γ_d): γ ``(C, K)`` for rows ``(C, 2L + K)`` (the fixed point from their γ⁰)."""
    ids, counts, gamma0 = _split_rows(rows, local.exp_log_topics.shape[0])
    return doc_fixed_point(prior, jnp.moveaxis(local.exp_log_topics[:, ids], 0, 1), counts, gamma0)[0]


def dirichlet_elbo_terms(prior_value: Array, concentration: Array) -> Array:
    """E log Dir(x; c₀ 1) − E log Dir(x; c) under x ~ Dir(c), along the last axis ``(..., K) -> (...)``: the
    part of the ELBO of a Dirichlet factor q = Dir(c) with prior Dir(c₀ 1) (= −KL(q ‖ prior))."""
    size = concentration.shape[-1]
    log_mean = dirichlet_log_mean(concentration)
    return (
        jnp.sum((prior_value - concentration) * log_mean, -1)
        + jnp.sum(gammaln(concentration), -1)
        - size * gammaln(prior_value)
        + gammaln(size * prior_value)
        - gammaln(jnp.sum(concentration, -1))
    )


def _local_step(prior: LDAPrior, local: LDALocal, rows: Array, w: Array) -> tuple[LDAStats, Array]:
    """Rows ``(C, 2L + K)``, weights ``(C,)`` → (Σ_d w_d n_dw φ_dw in place w of ``(K, V)``, Σ_d w_d ELBO_d), where
    ELBO_d = Σ_w n_dw log Σ_k exp(E log θ_dk + E log β_kw) + E log p(θ_d) − E log q(θ_d) at the optimal φ."""
    n_topics = local.exp_log_topics.shape[0]
    ids, counts, gamma0 = _split_rows(rows, n_topics)
    topics = jnp.moveaxis(local.exp_log_topics[:, ids], 0, 1)  # (C, K, L)
    gamma, e_theta = doc_fixed_point(prior, topics, counts, gamma0)
    eps = jnp.finfo(topics.dtype).eps
    norm = jnp.einsum("ck,ckl->cl", e_theta, topics) + eps
    ratio = w[:, None] * counts / norm
    expected = e_theta[:, :, None] * ratio[:, None, :] * topics  # (C, K, L): w_d n_dw φ_dwk
    stats = (
        jnp.zeros_like(local.exp_log_topics)
        .at[:, ids.reshape(-1)]
        .add(jnp.moveaxis(expected, 1, 0).reshape(n_topics, -1))
    )
    per_doc = jnp.sum(counts * jnp.log(norm), -1) + dirichlet_elbo_terms(prior.doc_topic, gamma)
    return LDAStats(stats), jnp.sum(w * per_doc)


def _global_step(prior: LDAPrior, stats: LDAStats, scale) -> LDAParams:
    return LDAParams(prior.topic_word + scale * stats.topic_word)


def _expected_log_joint(prior: LDAPrior, local: LDALocal, stats: LDAStats) -> Array:
    """Σ_kw S_kw E log β_kw: the part of Σ_d E log p(w_d, z_d | β) that depends on q(β)."""
    return jnp.sum(stats.topic_word * local.log_topics)


def _kl(prior: LDAPrior, params: LDAParams) -> Array:
    """KL(q(β) ‖ p(β)) = Σ_k KL(Dir(λ_k) ‖ Dir(η 1_V))."""
    return -jnp.sum(dirichlet_elbo_terms(prior.topic_word, params.topic_word))


def _log_prior(prior: LDAPrior, params: LDAParams) -> Array:
    """log p(β̂) at the (floored) mode β̂ of q(β): Σ_k log Dir(β̂_k; η 1_V)."""
    log_topics = _mode(prior, params).log_topics
    size = log_topics.shape[-1]
    per_topic = (prior.topic_word - 1.0) * jnp.sum(log_topics, -1) + gammaln(size * prior.topic_word)
    return jnp.sum(per_topic - size * gammaln(prior.topic_word))


def _counts(prior: LDAPrior, stats: LDAStats) -> Array:
    """Expected words per topic ``(K,)``."""
    return jnp.sum(stats.topic_word, -1)


def _sample(prior: LDAPrior, params: LDAParams, key: Array, n: int, point_mass: bool) -> dict[str, Array]:
    """``n`` draws of the topics β ``(n, K, V)`` from q(β) (``n`` copies of the mode for a point mass)."""
    if point_mass:
        return {"topics": jnp.broadcast_to(_mode(prior, params).exp_log_topics, (n, *params.topic_word.shape))}
    return {"topics": jax.random.dirichlet(key, params.topic_word, (n, params.topic_word.shape[0]))}


def _log_q(prior: LDAPrior, params: LDAParams, draws: dict[str, Array]) -> Array:
    """log q(β) of draws ``(n, K, V)`` → ``(n,)``."""
    lam = params.topic_word
    log_norm = jnp.sum(gammaln(jnp.sum(lam, -1)) - jnp.sum(gammaln(lam), -1))
    return log_norm + jnp.sum((lam - 1.0) * jnp.log(draws["topics"]), (-2, -1))


@functools.lru_cache(maxsize=1)
def _functions() -> tuple:
    return (_expect, _mode, _local_step, _global_step, _expected_log_joint, _kl, _log_prior, _counts, _sample, _log_q)


def lda_model(
    doc_topic_prior: float,
    topic_word_prior: float,
    max_doc_update_iter: int = 100,
    mean_change_tol: float = 1e-3,
    dtype: Any = None,
) -> ConjugateModel:
    """The LDA model with symmetric priors α = ``doc_topic_prior`` and η = ``topic_word_prior`` (both > 0) and the
    per-document fixed point's limits. The number of topics and words comes from the parameters λ ``(K, V)``."""
    for name, value in (("doc_topic_prior", doc_topic_prior), ("topic_word_prior", topic_word_prior)):
        if not (np.isfinite(value) and value > 0):
            raise VBayesError(f"{name} must be a finite number > 0, got {value!r}")
    if int(max_doc_update_iter) < 1:
        raise VBayesError(f"max_doc_update_iter must be an integer ≥ 1, got {max_doc_update_iter!r}")
    if not (np.isfinite(mean_change_tol) and mean_change_tol >= 0):
        raise VBayesError(f"mean_change_tol must be a finite number ≥ 0, got {mean_change_tol!r}")
    dtype = dtype or jnp.result_type(float)
    prior = LDAPrior(
        jnp.asarray(doc_topic_prior, dtype),
        jnp.asarray(topic_word_prior, dtype),
        jnp.asarray(int(max_doc_update_iter), jnp.int32),
        jnp.asarray(mean_change_tol, dtype),
    )
    expect, mode, local_step, global_step, elj, kl, log_prior, counts, sample, log_q = _functions()
    P = jax.tree_util.Partial
    return ConjugateModel(
        expect=P(expect, prior),
        mode=P(mode, prior),
        local_step=P(local_step, prior),
        global_step=P(global_step, prior),
        expected_log_joint=P(elj, prior),
        kl=P(kl, prior),
        log_prior=P(log_prior, prior),
        counts=P(counts, prior),
        sample=P(sample, prior),
        log_q=P(log_q, prior),
    )


def model_prior(model: ConjugateModel) -> LDAPrior:
    """The :class:`LDAPrior` an :func:`lda_model` holds."""
    return model.expect.args[0]


def document_width(docs: Any) -> int:
    """L: the most distinct words in any document of a scipy sparse document-term matrix ``(D, V)``."""
    counts = np.diff(docs.tocsr().indptr)
    return int(counts.max()) if counts.size else 0


def document_rows(docs: Any, n_topics: int, gamma0: np.ndarray | None = None, width: int | None = None) -> np.ndarray:
    """The engine's rows ``(D, 2L + K)`` float64 of a scipy sparse document-term matrix ``docs`` ``(D, V)`` of
    counts: each document's word ids and counts in its first 2L places (count 0 where it has fewer than L words),
    then γ⁰ ``(D, K)`` (1 when not given). ``width`` L ≥ :func:`document_width` (to share rows' shapes)."""
    csr = docs.tocsr()
    csr.sum_duplicates()
    if csr.nnz and not (np.all(np.isfinite(csr.data)) and csr.data.min() >= 0):
        raise VBayesError("word counts must be finite and ≥ 0 (a negative, NaN or infinite count was found)")
    n_docs = csr.shape[0]
    lengths = np.diff(csr.indptr)
    width = document_width(csr) if width is None else int(width)
    if lengths.size and lengths.max() > width:
        raise VBayesError(f"a document has {lengths.max()} distinct words, more than the width {width}")
    width = max(width, 1)
    rows = np.zeros((n_docs, 2 * width + n_topics))
    place = np.arange(csr.nnz) - np.repeat(csr.indptr[:-1], lengths)
    doc = np.repeat(np.arange(n_docs), lengths)
    rows[doc, place] = csr.indices
    rows[doc, width + place] = csr.data
    rows[:, 2 * width :] = 1.0 if gamma0 is None else gamma0
    return rows


MIN_WIDTH = 16
"""The narrowest rows: documents are grouped by their number of distinct words rounded up to a power of two at
least this (:func:`padded_width`)."""


def padded_width(n_words: Any) -> Any:
    """A document's row width L for ``n_words`` distinct words: the next power of two ≥ :data:`MIN_WIDTH` (a handful
    of widths, each one compiled pass, at most twice the words' cost)."""
    n = np.maximum(np.asarray(n_words), 1)
    return np.maximum(MIN_WIDTH, 2 ** np.ceil(np.log2(n)).astype(np.int64))


def width_groups(docs: Any, min_docs: int = 1) -> list[tuple[np.ndarray, int]]:
    """The documents of ``docs`` ``(D, V)`` grouped by :func:`padded_width`: (indices, L), so that a pass costs what
    the words cost, not D times the longest document's. A group of fewer than ``min_docs`` documents joins the next
    wider one (each width is a program to compile: a few documents padded wider cost less than compiling one)."""
    widths = padded_width(np.diff(docs.tocsr().indptr))
    groups, held = [], np.zeros(0, np.int64)
    distinct = np.unique(widths)
    for i, w in enumerate(distinct):
        held = np.concatenate([held, np.flatnonzero(widths == w)])
        if len(held) >= min_docs or i == len(distinct) - 1:
            groups.append((np.sort(held), int(w)))
            held = np.zeros(0, np.int64)
    return groups


class DocumentSource(DataSource):
    """A document-term matrix as the engine's data source: one block per width group (:func:`width_groups`), its
    rows padded to whole chunks of ``chunk_size`` documents (weight 0; a chunk's fixed points run until its slowest
    document settles, so small chunks waste fewer sweeps: 32 was fastest of 8–256 for a batch pass on the UN
    debates) and held on the device in ``dtype`` (default: the working precision); ``n_threads`` groups are passed
    at once (None: every core, :func:`~vbayes.data.sources.default_threads`). CAVI's passes and the objective read
    it like any other source."""

    def __init__(self, docs: Any, n_topics: int, chunk_size: int = 32, dtype=None, n_threads: int | None = None):
        docs = docs.tocsr()
        self.n_samples = float(docs.shape[0])
        self.n_words = float(docs.sum())
        self.blocks = []
        for index, width in width_groups(docs):
            n_chunks = -(-len(index) // chunk_size)
            x = np.zeros((n_chunks * chunk_size, 2 * width + n_topics))
            x[: len(index)] = document_rows(docs[index], n_topics, None, width)
            w = np.zeros(n_chunks * chunk_size)
            w[: len(index)] = 1.0
            dt = dtype or working_dtype()
            self.blocks.append(
                Chunks(jnp.asarray(x.reshape(n_chunks, chunk_size, -1), dt), jnp.asarray(w.reshape(n_chunks, -1), dt))
            )
        self.dim = max(b.x.shape[-1] for b in self.blocks)
        self.n_threads = max(1, min(n_threads or default_threads(), len(self.blocks)))

    def reduce(self, fn, pool=None):
        """Σ over the width groups of ``fn(block)``."""
        if pool is None or len(self.blocks) == 1:
            return tree_sum([fn(b) for b in self.blocks])
        fn = in_caller_config(fn)
        return tree_sum([f.result() for f in [pool.submit(fn, b) for b in self.blocks]])


def initial_topics(n_topics: int, n_words: int, random_state: np.random.RandomState) -> np.ndarray:
    """λ⁰ ``(K, V)`` ~ Gamma(100, 1/100) elementwise (mean 1, sd 0.1): Hoffman et al.'s start, and
    scikit-learn's (the same draws from the same ``random_state``)."""
    return random_state.gamma(100.0, 1.0 / 100.0, (n_topics, n_words))
