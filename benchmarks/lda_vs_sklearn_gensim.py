"""LDA on the UN General Debate corpus: vbayes against scikit-learn and gensim, batch and online, side by side.

    python benchmarks/lda_vs_sklearn_gensim.py [--quick] [--topics 50,100] [--passes 2] [--json FILE]

Data: ``../shared/data/ungdc`` (UCI bag of words, 174,941 passages, 28,285 words): training passages = ids
1–162,574 in a fixed shuffled order, held out = the 12,367 passages of 2019–2024 (the corpus's date split).
``--quick``: the first 20,000 shuffled training passages and the first 3,000 held-out ones.

Every library runs with the same settings: K topics, symmetric priors α = η = 1/K, ``--passes`` passes; online:
minibatches of 1,024 documents, ρ_t = (10 + t)^−0.7; the per-document fixed point to a mean change of 1e-3 or 100
sweeps. Runs:

* vbayes online: ``vbayes.estimators.LatentDirichletAllocation(learning_method="online")`` (float64, scikit-learn's
  iterates: the engine's compiled passes, documents grouped by length);
* vbayes batch: what ``vbayes lda --method batch`` runs, the engine's CAVI on a ``DocumentSource`` (float32 E-steps,
  statistics and λ in float64);
* scikit-learn ``LatentDirichletAllocation``, online and batch, ``n_jobs`` = all cores;
* gensim ``LdaModel`` (one process) and ``LdaMulticore`` (``workers`` = cores), online.

Held-out quality is **one routine applied to every library's topics** (λ, the topic-word Dirichlet parameters):
document completion. Each held-out passage's words are split at random into two halves (binomial thinning, fixed
seed); its topic proportions are inferred from the first half with the topics fixed at E[β] (the E-step's fixed
point from γ = 1, as ``transform``); the score is the log-likelihood per word of the second half,
Σ n_w log Σ_k E[θ_k] E[β_kw] / Σ n_w (higher is better). Each run is a fresh process of this script (one
process for all of them held every library's copy of the corpus and ran out of memory on the full corpus); the
scores are computed here. Wall time is the fit alone, compilation included (persistent cache off). Targets
(issue 26): online vbayes reaches scikit-learn online's best held-out score ≥ 5× faster and gensim
``LdaMulticore``'s ≥ 3× faster, with no worse final score.
"""

from __future__ import annotations

import os

os.environ.setdefault("VBAYES_CACHE_DIR", "off")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, markdown_table  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ungdc"
FIRST_HELD_OUT = 162_575
BATCH = 1024
CORES = os.cpu_count() or 1


def load(quick: bool):
    from vbayes.data.bag_of_words import read_uci_bow

    docs = read_uci_bow(DATA / "docword.txt.gz")
    train = docs[: FIRST_HELD_OUT - 1][np.random.default_rng(0).permutation(FIRST_HELD_OUT - 1)]
    test = docs[FIRST_HELD_OUT - 1 :]
    if quick:
        train, test = train[:20_000], test[:3_000]
    return train, test


def halves(docs, seed: int = 0):
    """Each document's words split at random into two halves: counts n ~ n₁ + n₂, n₁ ~ Binomial(n, 1/2)."""
    first = docs.copy()
    first.data = np.random.default_rng(seed).binomial(docs.data.astype(np.int64), 0.5).astype(np.float64)
    second = docs - first
    first.eliminate_zeros()
    second.eliminate_zeros()
    return first.tocsr(), second.tocsr()


def document_completion(lam: np.ndarray, first, second, k: int) -> float:
    """Log-likelihood per word of the second halves given the first: θ from the first half at topics E[β]."""
    import jax
    import jax.numpy as jnp

    from vbayes.conjugate import lda
    from vbayes.estimators.lda_documents import doc_topic_shares

    lam = np.asarray(lam, np.float64)
    with jax.enable_x64(True):
        theta = doc_topic_shares(lda.lda_model(1.0 / k, 1.0 / k), lda.LDAParams(jnp.asarray(lam)), first, k)
    beta = lam / lam.sum(1, keepdims=True)
    coo = second.tocoo()
    p = np.einsum("nk,kn->n", theta[coo.row], beta[:, coo.col])
    return float(np.sum(coo.data * np.log(p)) / coo.data.sum())


def vbayes_online(train, k, passes):
    from vbayes.estimators.lda import LatentDirichletAllocation

    est = LatentDirichletAllocation(
        k, learning_method="online", batch_size=BATCH, max_iter=passes, learning_decay=0.7, random_state=0
    )
    t = time.perf_counter()
    est.fit(train)
    return time.perf_counter() - t, est.components_


def vbayes_batch(train, k, passes):
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


def sklearn_run(method: str):
    def run(train, k, passes):
        from sklearn.decomposition import LatentDirichletAllocation

        est = LatentDirichletAllocation(
            k,
            learning_method=method,
            batch_size=BATCH,
            max_iter=passes,
            learning_decay=0.7,
            n_jobs=CORES,
            random_state=0,
        )
        t = time.perf_counter()
        est.fit(train)
        return time.perf_counter() - t, est.components_

    return run


def gensim_run(multicore: bool):
    def run(train, k, passes):
        from gensim.matutils import Sparse2Corpus
        from gensim.models import LdaModel, LdaMulticore

        corpus = Sparse2Corpus(train, documents_columns=False)
        common = dict(
            num_topics=k,
            id2word={i: str(i) for i in range(train.shape[1])},
            chunksize=BATCH,
            passes=passes,
            eta=1.0 / k,
            decay=0.7,
            offset=10.0,
            iterations=100,
            gamma_threshold=1e-3,
            eval_every=None,
            random_state=0,
        )
        t = time.perf_counter()
        if multicore:
            model = LdaMulticore(corpus, workers=CORES, alpha=np.full(k, 1.0 / k), **common)
        else:
            model = LdaModel(corpus, update_every=1, alpha=np.full(k, 1.0 / k), **common)
        return time.perf_counter() - t, model.state.get_lambda()

    return run


RUNS = {
    "vbayes online": vbayes_online,
    "scikit-learn online": sklearn_run("online"),
    "gensim LdaModel": gensim_run(False),
    "gensim LdaMulticore": gensim_run(True),
    "vbayes batch": vbayes_batch,
    "scikit-learn batch": sklearn_run("batch"),
}


def child(name: str, k: int, passes: int, quick: bool, out: Path) -> None:
    """One run in this process: its topics λ to ``out`` (.npy), its fit time on stdout."""
    train, _ = load(quick)
    seconds, lam = RUNS[name](train, k, passes)
    np.save(out, np.asarray(lam, np.float64))
    print(json.dumps({"seconds": seconds}), flush=True)


def in_fresh_process(name: str, k: int, args) -> tuple[float, np.ndarray]:
    """A run in a fresh process: one process for every run held every library's copies of the corpus and ran out
    of memory (19 GB) on the full corpus at K = 100."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "lam.npy"
        command = [sys.executable, __file__, "--child", name, "--topics", str(k), "--passes", str(args.passes)]
        done = subprocess.run(
            command + ["--lam", str(out)] + (["--quick"] if args.quick else []),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"{name} at K = {k} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])["seconds"], np.load(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 training and 3,000 held-out passages")
    ap.add_argument("--topics", default="50,100", help="comma-separated K values")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of: " + ", ".join(RUNS))
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / ".cache" / "lda_vs_sklearn_gensim.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--lam", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, int(args.topics), args.passes, args.quick, args.lam)
    _, test = load(args.quick)
    first, second = halves(test)
    print(f"held out {test.shape[0]} docs, V {test.shape[1]}, cores {CORES}; each run in a fresh process")
    results = []
    for k in (int(v) for v in args.topics.split(",")):
        for name in args.runs.split(","):
            seconds, lam = in_fresh_process(name, k, args)
            score = document_completion(lam, first, second, k)
            results.append({"K": k, "run": name, "seconds": seconds, "completion": score})
            print(f"K {k:4d}  {name:22s} {seconds:8.1f} s   held-out log-lik/word {score:.4f}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine_info(), "argv": sys.argv, "results": results}, indent=1))
    rows = []
    for r in results:
        kind = "batch" if "batch" in r["run"] else "online"
        base = [x["seconds"] for x in results if x["K"] == r["K"] and x["run"] == f"vbayes {kind}"]
        ratio = f"{r['seconds'] / base[0]:.2f}" if base else "(vbayes not run)"
        rows.append([r["K"], r["run"], f"{r['seconds']:.1f}", ratio, f"{r['completion']:.4f}"])
    print()
    print(markdown_table(["K", "run", "fit wall s", "time / vbayes's (same kind)", "held-out log-lik/word"], rows))


if __name__ == "__main__":
    main()
