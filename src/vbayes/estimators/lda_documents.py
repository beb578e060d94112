"""A corpus as the conjugate engine's blocks, for the LDA estimator (:mod:`vbayes.estimators.lda`) and the topic
shares of ``vbayes lda``: documents grouped by length (:func:`vbayes.conjugate.lda.width_groups`), each group in
blocks of :data:`BLOCK_CHUNKS` chunks of :data:`CHUNK` documents, the blocks of a pass run on threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np

from vbayes.conjugate import lda
from vbayes.conjugate.model import BlockPass, ConjugateModel, call
from vbayes.data.sources import Chunks, default_threads, in_caller_config, tree_sum

CHUNK = 8
"""Documents per chunk (their fixed points run together, until the slowest has settled: small chunks waste
fewer sweeps; 8 was fastest of 4–256 on the UN debates at K = 20 and 50, batch and online)."""
BLOCK_CHUNKS = 32
"""Chunks per block (a compiled pass is a ``lax.scan`` over the chunks of one block)."""


class DocumentBlocks:
    """A document-term matrix as the engine's rows, in groups of documents of similar length
    (:func:`vbayes.conjugate.lda.width_groups`), each padded to chunks of :data:`CHUNK` documents, with the starts
    γ⁰ of the E-step in progress."""

    def __init__(self, X, n_topics: int, n_threads: int = 1):
        self.X, self.n_topics, self.n_threads = X, n_topics, n_threads
        self.n_docs = X.shape[0]
        self.n_words = float(X.sum())
        self.groups = lda.width_groups(X, min_docs=BLOCK_CHUNKS * CHUNK)  # a smaller group fills no block

    def subset(self, rows: slice) -> DocumentBlocks:
        return DocumentBlocks(self.X[rows], self.n_topics, self.n_threads)

    def _map(self, fn, blocks: list) -> list:
        """``[fn(b) for b in blocks]``, on ``n_threads`` threads (each block's compiled pass runs on its own core),
        in order, so sums over the blocks do not depend on the threads."""
        if self.n_threads <= 1 or len(blocks) <= 1:
            return [fn(b) for b in blocks]
        run = in_caller_config(lambda b: jax.block_until_ready(fn(b)))
        with ThreadPoolExecutor(min(self.n_threads, len(blocks))) as pool:
            return list(pool.map(run, blocks))

    def _blocks(self, index: np.ndarray, width: int, gamma0: np.ndarray | None) -> list[Chunks]:
        """Rows of documents ``index`` at ``width`` in blocks of :data:`BLOCK_CHUNKS` chunks of :data:`CHUNK`
        documents, the last padded (weight 0): one block shape per width, so one compiled pass each."""
        size = BLOCK_CHUNKS * CHUNK
        n_blocks = max(1, -(-len(index) // size))
        x = np.zeros((n_blocks * size, 2 * width + self.n_topics))
        x[: len(index)] = lda.document_rows(
            self.X[index], self.n_topics, None if gamma0 is None else gamma0[index], width
        )
        w = np.zeros(n_blocks * size)
        w[: len(index)] = 1.0
        x, w = x.reshape(n_blocks, BLOCK_CHUNKS, CHUNK, -1), w.reshape(n_blocks, BLOCK_CHUNKS, CHUNK)
        dtype = self.X.dtype  # float32 counts: the E-steps run in float32 (the sums over blocks are float64)
        return [Chunks(jnp.asarray(x[b], dtype), jnp.asarray(w[b], dtype)) for b in range(n_blocks)]

    def pass_stats(
        self, model: ConjugateModel, local: lda.LDALocal, gamma0: np.ndarray | None, with_elbo: bool = True
    ) -> tuple[lda.LDAStats, jax.Array]:
        """(Σ_d S_d, Σ_d ELBO_d) over the documents, each started at ``gamma0`` ``(D, K)`` (None: 1);
        ``with_elbo=False``: the ELBO is not computed (returned as 0)."""
        blocks = [b for index, width in self.groups for b in self._blocks(index, width, gamma0)]
        return tree_sum(self._map(BlockPass(model, local, with_elbo), blocks))

    def doc_topics(self, model: ConjugateModel, local: lda.LDALocal) -> np.ndarray:
        """γ ``(D, K)``: each document's q(θ_d) from γ⁰ = 1."""
        blocks = [(index, self._blocks(index, width, None)) for index, width in self.groups]
        out = iter(self._map(lambda b: _doc_topics(model, local, b.x), [b for _, group in blocks for b in group]))
        gamma = np.empty((self.n_docs, self.n_topics))
        for index, group in blocks:  # the blocks of all groups run together; their rows go back group by group
            rows = np.concatenate([np.asarray(next(out)) for _ in group]).reshape(-1, self.n_topics)
            gamma[index] = rows[: len(index)]
        return gamma


def doc_topic_shares(
    model: ConjugateModel, params: lda.LDAParams, docs, n_topics: int, n_threads: int | None = None
) -> np.ndarray:
    """Each document's topic proportions E_q[θ_d] ``(D, K)`` at q(β) = Dir(λ): its E-step from γ⁰ = 1, γ_d / Σ γ_d.
    ``docs``: a scipy sparse document-term matrix ``(D, V)``; ``n_threads``: blocks run at once (None: every core)."""
    blocks = DocumentBlocks(docs.tocsr(), n_topics, n_threads or default_threads())
    gamma = blocks.doc_topics(model, call(model, "expect", params))
    return gamma / gamma.sum(1, keepdims=True)


@jax.jit
def _doc_topics(model: ConjugateModel, local: lda.LDALocal, xs: jax.Array) -> jax.Array:
    prior = lda.model_prior(model)
    return jax.lax.map(lambda rows: lda.doc_topics(prior, local, rows), xs)
