"""Online LDA on the UN General Debate corpus: vbayes against scikit-learn and gensim, in one process.

    python benchmarks/lda_vs_sklearn.py [--quick] [--topics 20] [--passes 2] [--json FILE]

Data: ``../shared/data/ungdc`` (UCI bag of words, 174,941 passages, 28,285 words): training passages = ids
1–162,574 in a fixed shuffled order, held out = the 12,367 passages of 2019–2024 (the corpus's date split).
``--quick``: the first 20,000 shuffled training passages and the first 3,000 held-out ones.

Each library runs online variational Bayes (Hoffman, Blei & Bach 2010) with the same settings: K topics, symmetric
priors α = η = 1/K, minibatches of 1,024 documents, ρ_t = (10 + t)^−0.7, per-document fixed point to a mean change
of 1e-3 or 100 sweeps, ``--passes`` passes:

* scikit-learn ``LatentDirichletAllocation(learning_method="online")`` (Cython, one core);
* gensim ``LdaModel`` (``chunksize``, ``decay``, ``offset``, ``iterations``, ``gamma_threshold`` set to the above);
* vbayes ``vbayes.estimators.LatentDirichletAllocation`` with scikit-learn's parameters (float64, the same iterates
  as scikit-learn's: the conjugate engine's compiled passes, documents grouped by length).

And batch VB (every pass over all training documents, then the update): scikit-learn's ``learning_method="batch"``
against what ``vbayes lda --method batch`` runs, the engine's CAVI on a ``DocumentSource`` (float32 E-steps, the
statistics summed in float64). Ratios are to the vbayes run of the same kind.

Held-out perplexity is computed for every library by one function, from its topic-word Dirichlet parameters λ:
exp(−ELBO(held out) / words), the ELBO with each held-out document's own fixed point and the KL of q(β)
(scikit-learn's ``perplexity``). Wall time is the fit alone, compilation included (persistent cache off).
"""

from __future__ import annotations

import os

os.environ.setdefault("VBAYES_CACHE_DIR", "off")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, markdown_table  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ungdc"
FIRST_HELD_OUT = 162_575


def load(quick: bool):
    from vbayes.data.bag_of_words import read_uci_bow

    docs = read_uci_bow(DATA / "docword.txt.gz")
    train = docs[: FIRST_HELD_OUT - 1][np.random.default_rng(0).permutation(FIRST_HELD_OUT - 1)]
    test = docs[FIRST_HELD_OUT - 1 :]
    if quick:
        train, test = train[:20_000], test[:3_000]
    return train, test


def held_out_perplexity(lam: np.ndarray, test, k: int) -> float:
    import jax
    import jax.numpy as jnp

    from vbayes.conjugate import lda
    from vbayes.conjugate.engine.cavi import objective

    with jax.enable_x64(True):
        model = lda.lda_model(1.0 / k, 1.0 / k)
        source = lda.DocumentSource(test, k)
        return float(np.exp(-objective(model, lda.LDAParams(jnp.asarray(lam)), source) / source.n_words))


def run_sklearn(train, k, passes, batch):
    from sklearn.decomposition import LatentDirichletAllocation

    est = LatentDirichletAllocation(
        k, learning_method="online", batch_size=batch, max_iter=passes, learning_decay=0.7, random_state=0
    )
    t = time.perf_counter()
    est.fit(train)
    return time.perf_counter() - t, est.components_


def run_vbayes(train, k, passes, batch):
    from vbayes.estimators.lda import LatentDirichletAllocation

    est = LatentDirichletAllocation(
        k, learning_method="online", batch_size=batch, max_iter=passes, learning_decay=0.7, random_state=0
    )
    t = time.perf_counter()
    est.fit(train)
    return time.perf_counter() - t, est.components_


def run_sklearn_batch(train, k, passes, batch):
    from sklearn.decomposition import LatentDirichletAllocation

    est = LatentDirichletAllocation(k, learning_method="batch", max_iter=passes, random_state=0)
    t = time.perf_counter()
    est.fit(train)
    return time.perf_counter() - t, est.components_


def run_vbayes_engine_batch(train, k, passes, batch):
    """What ``vbayes lda --method batch`` runs: the engine's CAVI on a DocumentSource (float32 E-steps)."""
    import jax
    import jax.numpy as jnp

    from vbayes.conjugate import lda
    from vbayes.conjugate.engine.cavi import cavi

    with jax.enable_x64(True):
        t = time.perf_counter()
        model = lda.lda_model(1.0 / k, 1.0 / k)
        start = lda.LDAParams(jnp.asarray(lda.initial_topics(k, train.shape[1], np.random.RandomState(0))))
        fit = cavi(model, start, lda.DocumentSource(train, k, dtype=np.float32), tol=0.0, max_iter=passes)
        return time.perf_counter() - t, np.asarray(fit.q.params.topic_word)


def run_gensim(train, k, passes, batch):
    from gensim.matutils import Sparse2Corpus
    from gensim.models import LdaModel

    corpus = Sparse2Corpus(train, documents_columns=False)
    t = time.perf_counter()
    model = LdaModel(
        corpus,
        num_topics=k,
        id2word={i: str(i) for i in range(train.shape[1])},
        chunksize=batch,
        passes=passes,
        update_every=1,
        alpha=np.full(k, 1.0 / k),
        eta=1.0 / k,
        decay=0.7,
        offset=10.0,
        iterations=100,
        gamma_threshold=1e-3,
        eval_every=None,
        random_state=0,
    )
    return time.perf_counter() - t, model.state.get_lambda()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 training and 3,000 held-out passages")
    ap.add_argument("--topics", type=int, default=20)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / ".cache" / "lda_vs_sklearn.json")
    args = ap.parse_args()
    train, test = load(args.quick)
    print(f"train {train.shape[0]} docs, held out {test.shape[0]}, V {train.shape[1]}, K {args.topics}")
    results = {}
    runs = {
        "vbayes": run_vbayes,
        "scikit-learn": run_sklearn,
        "gensim": run_gensim,
        "vbayes batch (engine CAVI, float32)": run_vbayes_engine_batch,
        "scikit-learn batch": run_sklearn_batch,
    }
    for name, run in runs.items():
        seconds, lam = run(train, args.topics, args.passes, args.batch)
        perplexity = held_out_perplexity(np.asarray(lam, np.float64), test, args.topics)
        results[name] = {"seconds": seconds, "held_out_perplexity": perplexity}
        print(f"{name:36s} {seconds:8.1f} s   held-out perplexity {perplexity:.1f}", flush=True)
    rows = []
    for name, r in results.items():
        base = results["vbayes batch (engine CAVI, float32)" if "batch" in name else "vbayes"]["seconds"]
        rows.append([name, f"{r['seconds']:.1f}", f"{r['seconds'] / base:.2f}", f"{r['held_out_perplexity']:.1f}"])
    print()
    print(
        markdown_table(
            ["library (online VB unless named)", "fit wall s", "time / vbayes's", "held-out perplexity"], rows
        )
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine_info(), "argv": sys.argv, "results": results}, indent=1))


if __name__ == "__main__":
    main()
