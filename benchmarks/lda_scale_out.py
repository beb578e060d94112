"""Scale-out benchmark for LDA (issue 26): one CAVI pass of latent Dirichlet allocation (K = 20 topics, V = 5,000
words) over N synthetic documents through Dask, with 1 and 2 worker processes.

    python benchmarks/lda_scale_out.py [--docs 1e7] [--topics 20] [--vocab 5000] [--partition 65536] [--chunk 32]
                                       [--passes 1] [--workers 1 2] [--quick] [--out FILE]

Target (issue 26): on 10^7 documents through Dask, the per-pass time improves ≥ 1.8× from 1 to 2 workers, with the
memory per worker bounded by the partition. ``--quick``: 2·10^5 documents, a smoke test, not the check (4
partitions, one of them short: 2 workers can gain at most 1.53× there).

The corpus is drawn from LDA's generative process *on the workers*, partition by partition (2^16 documents, 78 MB
of rows by default), never whole in memory and never on disk: fixed true topics β_k ~ Dir(0.05 · 1_V) (seed 0),
θ_d ~ Dir(1/K · 1_K), N_d ~ Poisson(60) tokens (at least 1), z_di ~ Cat(θ_d), w_di ~ Cat(β_{z_di}). A partition is
a pure function of (seed, partition index), built with NumPy alone (:func:`_partition_rows`): the engine's rows
``[word ids (L), counts (L), γ⁰ = 1 (K)]`` with L = 64 distinct words per document; a document with more keeps its
64 most frequent (about 15% of documents reach the cap, about 1% of the tokens are dropped; both are reported).
Every pass draws its partitions again, so the pass time includes the generation; the generation alone is timed
too, as a pass over the same corpus that only draws the rows and sums them (``generate_s``), so the reader can see
how much of a pass it is.

Reported per configuration, as scale_out.py does for the Gaussian mixture: the time of one pass
(``vbayes.conjugate.update``: the statistics of every document, summed in DaskData's fixed tree, and the global
step), documents per second and per core, the peak resident memory of each worker (VmHWM) and its memory after
the warm-up, the CPU seconds each worker used per second of the pass (1.0 = one core kept busy), the load
average before and after, and the speed-up of 2 workers over 1. Fair: both configurations see bit-identical
partitions and start from the same fixed λ (``initial_topics``, RandomState(0)); each worker runs one thread with
XLA's intra-op threading off and is pinned to a core of its own (``vbayes.data.dask.pin_workers``), so workers =
cores; the compiled pass is warmed up on every worker, for every block shape the corpus has, on a small corpus
first (compilation not timed). The updated λ of the configurations is compared (DaskData's fixed tree makes it the
same bit for bit). The pass starts at the random initial topics, where documents need the most fixed-point sweeps:
later passes are faster. Timings need an idle machine: see the load averages.
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
from _common import cpu_seconds, machine_info, markdown_table, peak_rss_mb  # noqa: E402

SINGLE_THREAD = {
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "OMP_NUM_THREADS": "1",
}
TOPIC_WORD_PRIOR = 0.05  # η: the true topics' Dirichlet and the model's prior
MEAN_LENGTH = 60.0  # tokens per document (Poisson)
WIDTH = 64  # L: distinct words per document row
BATCH = 4096  # documents drawn at a time within a partition
BLOCK_CHUNKS = 64  # chunks per block of vbayes.data.InMemory (its default), which reduces each partition
TARGET = 1.8


# ----------------------------------------------------------------------------------------------------
# the synthetic corpus, drawn on the workers


def true_topics(n_topics: int, n_words: int, seed: int) -> np.ndarray:
    """β ``(K, V)``: each topic ~ Dir(η 1_V), a fixed function of ``seed``."""
    return np.random.default_rng([seed, 0]).dirichlet(np.full(n_words, TOPIC_WORD_PRIOR), n_topics)


def _partition_rows(
    seed: int, index: int, n_docs: int, n_topics: int, n_words: int, width: int, doc_topic_prior: float
) -> np.ndarray:
    """Partition ``index``'s ``n_docs`` documents drawn from LDA's generative process, as the engine's rows
    ``(n_docs, 2L + K)`` float64 (:func:`vbayes.conjugate.lda.document_rows`'s layout, γ⁰ = 1); a pure function of
    its arguments, drawn :data:`BATCH` documents at a time (so that the temporaries stay small beside the rows)."""
    beta = true_topics(n_topics, n_words, seed)  # the same on every worker (20 ms at K = 20, V = 5,000)
    rows = np.zeros((n_docs, 2 * width + n_topics))
    rows[:, 2 * width :] = 1.0
    for j, start in enumerate(range(0, n_docs, BATCH)):
        rng = np.random.default_rng([seed, 1, index, j])
        _draw_documents(rng, beta, rows[start : start + BATCH], width, doc_topic_prior)
    return rows


def _draw_documents(rng: np.random.Generator, beta: np.ndarray, rows: np.ndarray, width: int, alpha: float) -> None:
    """Documents drawn into ``rows`` ``(n, 2L + K)`` (word ids and counts): θ_d ~ Dir(α), N_d ~ Poisson (≥ 1),
    topic counts ~ Mult(N_d, θ_d). The T_k tokens of topic k have word counts ~ Mult(T_k, β_k), put in random
    order and dealt to the documents' topic-k tokens: i.i.d. Cat(β_k) tokens, exactly. A document with more than
    L distinct words keeps its L most frequent ones (ties: the smaller word id)."""
    n_docs = rows.shape[0]
    n_topics, n_words = beta.shape
    theta = rng.dirichlet(np.full(n_topics, alpha), n_docs)
    lengths = np.maximum(rng.poisson(MEAN_LENGTH, n_docs), 1)
    per_topic = rng.multinomial(lengths, theta)  # (n_docs, K): each document's tokens of each topic
    docs = np.arange(n_docs, dtype=np.int64)
    keys = []
    for k in range(n_topics):
        words = np.repeat(np.arange(n_words, dtype=np.int64), rng.multinomial(per_topic[:, k].sum(), beta[k]))
        rng.shuffle(words)
        keys.append(np.repeat(docs, per_topic[:, k]) * n_words + words)
    key = np.sort(np.concatenate(keys))  # (document, word) of every token, grouped
    first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    count = np.diff(np.append(first, key.size))
    doc, word = np.divmod(key[first], n_words)
    distinct = np.bincount(doc, minlength=n_docs)
    over = distinct[doc] > width  # the entries of documents with more than L distinct words: most frequent first
    if over.any():
        idx = np.flatnonzero(over)
        idx = idx[np.lexsort((-count[idx], doc[idx]))]
        word[over], count[over] = word[idx], count[idx]
    place = np.arange(doc.size) - np.repeat(np.cumsum(distinct) - distinct, distinct)
    keep = place < width
    doc, place = doc[keep], place[keep]
    rows[doc, place] = word[keep]
    rows[doc, width + place] = count[keep]


def corpus(n_docs: int, partition: int, n_topics: int, n_words: int, seed: int = 0, sizes: list[int] | None = None):
    """A Dask array ``(n_docs, 2L + K)`` of partitions of ``partition`` documents (the last one shorter), or of the
    given ``sizes``, each drawn where it is computed by :func:`_partition_rows`."""
    import dask.array as da
    from dask import delayed

    if sizes is None:
        sizes = [min(partition, n_docs - start) for start in range(0, n_docs, partition)]
    dim = 2 * WIDTH + n_topics
    parts = [
        da.from_delayed(
            delayed(_partition_rows, pure=True)(seed, i, n, n_topics, n_words, WIDTH, 1.0 / n_topics),
            shape=(n, dim),
            dtype=np.float64,
        )
        for i, n in enumerate(sizes)
    ]
    return da.concatenate(parts, axis=0)


def _summarise_rows(rows: np.ndarray, start: int, width: int) -> dict:
    """A partition's documents, tokens kept and documents at the width cap (for the generation-only pass)."""
    counts = rows[:, width : 2 * width]
    return {
        "docs": np.float64(rows.shape[0]),
        "tokens": counts.sum(),
        "at_cap": np.float64(np.count_nonzero(counts[:, -1])),
    }


# ----------------------------------------------------------------------------------------------------
# measurements on the workers


def _model_and_params(n_topics: int, n_words: int):
    """The model (α = 1/K, η = 0.05, the generating values) and the fixed λ⁰ ~ Gamma(100, 1/100), RandomState(0)."""
    import jax.numpy as jnp

    from vbayes.conjugate import lda

    model = lda.lda_model(1.0 / n_topics, TOPIC_WORD_PRIOR)
    start = lda.initial_topics(n_topics, n_words, np.random.RandomState(0))
    return model, lda.LDAParams(jnp.asarray(start))


def _warmup_sizes(sizes: list[int], chunk: int) -> list[int]:
    """Partition sizes whose blocks have every block shape that partitions of ``sizes`` have: a full block of
    ``chunk · BLOCK_CHUNKS`` documents plus each distinct remainder."""
    block = chunk * BLOCK_CHUNKS
    return sorted({block + s % block for s in sizes})


def run_dask(args, workers: int) -> tuple[dict, np.ndarray]:
    import jax
    from distributed import Client, LocalCluster

    from vbayes import conjugate as cj
    from vbayes.data import dask as vd

    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=vd.FREE_PORT, env=SINGLE_THREAD
    )
    client = Client(cluster)
    try:
        vd.pin_workers(client)  # each worker (all its threads) on a core of its own: workers = cores
        k, v = args.topics, args.vocab
        data = vd.DaskData(corpus(args.docs, args.partition, k, v), client, chunk_size=args.chunk)
        with jax.enable_x64(True):
            model, params = _model_and_params(k, v)
            t0 = time.perf_counter()
            for size in _warmup_sizes(data.sizes.tolist(), args.chunk):  # every block shape compiled on every worker
                warm = corpus(0, 0, k, v, seed=1, sizes=[size] * 2 * workers)
                cj.update(model, params, vd.DaskData(warm, client, chunk_size=args.chunk))
            warmup_s = time.perf_counter() - t0
            base = client.run(peak_rss_mb)
            cpu0 = client.run(cpu_seconds)
            t0 = time.perf_counter()
            summary = data.map_reduce(_summarise_rows, WIDTH)  # the generation alone: draw, check, sum
            generate_s = time.perf_counter() - t0
            cpu1 = client.run(cpu_seconds)
            times = []
            for _ in range(args.passes):
                t0 = time.perf_counter()
                new, elbo, _ = cj.update(model, params, data)
                times.append(time.perf_counter() - t0)
            cpu2 = client.run(cpu_seconds)
            peaks = client.run(peak_rss_mb)
        n = int(data.n_samples)
        best = min(times)
        result = {
            "path": f"dask {workers} worker(s)",
            "cores": workers,
            "docs": n,
            "partitions": data.n_partitions,
            "partition_docs": args.partition,
            "partition_mb": round(args.partition * data.dim * 8 / 1e6, 1),
            "chunk": args.chunk,
            "tokens_per_doc": round(float(summary["tokens"]) / n, 2),
            "docs_at_width_cap": round(float(summary["at_cap"]) / n, 4),
            "warmup_s": round(warmup_s, 2),
            "generate_s": round(generate_s, 3),
            "generate_docs_per_s": round(n / generate_s),
            "generate_cpu_per_wall": sorted(round((cpu1[a] - cpu0[a]) / generate_s, 3) for a in cpu0),
            "pass_s": round(best, 3),
            "pass_times_s": [round(t, 3) for t in times],
            "docs_per_s": round(n / best),
            "docs_per_s_per_core": round(n / best / workers),
            "elbo_per_doc": float(elbo) / n,
            "peak_rss_mb_per_worker": sorted(round(p, 1) for p in peaks.values()),
            "rss_after_warmup_mb": sorted(round(b, 1) for b in base.values()),
            "worker_cpu_per_wall": sorted(round((cpu2[a] - cpu1[a]) / sum(times), 3) for a in cpu1),
        }
        return result, np.asarray(new.topic_word)
    finally:
        client.close()
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=float, default=1e7, help="documents in the corpus")
    parser.add_argument("--topics", type=int, default=20, help="K")
    parser.add_argument("--vocab", type=int, default=5000, help="V")
    parser.add_argument("--partition", type=int, default=1 << 16, help="documents per Dask partition")
    parser.add_argument("--chunk", type=int, default=32, help="documents per chunk of the per-document fixed point")
    parser.add_argument("--passes", type=int, default=1, help="timed passes per configuration (the best is kept)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quick", action="store_true", help="2e5 documents")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / ".cache" / "lda_scale_out.json")
    args = parser.parse_args()
    args.docs = int(2e5 if args.quick else args.docs)
    settings = {
        "docs": args.docs,
        "topics": args.topics,
        "vocab": args.vocab,
        "width": WIDTH,
        "doc_topic_prior": 1.0 / args.topics,
        "topic_word_prior": TOPIC_WORD_PRIOR,
        "mean_length": MEAN_LENGTH,
        "partition": args.partition,
        "chunk": args.chunk,
        "passes": args.passes,
    }
    print(json.dumps({"settings": settings}), flush=True)
    record = {"machine": machine_info(), "argv": sys.argv, "settings": settings, "results": []}
    topics = {}
    for workers in args.workers:
        load = os.getloadavg()
        r, topics[workers] = run_dask(args, workers)
        r.update(load_before=[round(x, 2) for x in load], load_after=[round(x, 2) for x in os.getloadavg()])
        record["results"].append(r)
        print(json.dumps(r), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1))

    by_workers = {r["cores"]: r for r in record["results"]}
    if 1 in by_workers and 2 in by_workers:
        one, two = by_workers[1], by_workers[2]
        rel = np.abs(topics[2] - topics[1]) / np.abs(topics[1])
        record["check"] = {
            "speedup_2_over_1": round(one["pass_s"] / two["pass_s"], 3),
            "meets_target": one["pass_s"] / two["pass_s"] >= TARGET,
            "target": TARGET,
            "generate_speedup_2_over_1": round(one["generate_s"] / two["generate_s"], 3),
            "lda_part_speedup_2_over_1": round(
                (one["pass_s"] - one["generate_s"]) / (two["pass_s"] - two["generate_s"]), 3
            ),
            "lambda_max_rel_diff_2_vs_1": float(rel.max()),
            "lambda_bit_identical": bool(np.array_equal(topics[2], topics[1])),
        }
        print(json.dumps(record["check"]), flush=True)
        args.out.write_text(json.dumps(record, indent=1))

    header = [
        "workers",
        "docs",
        "partitions (MB each)",
        "generation-only pass s",
        "pass s",
        "docs/s",
        "docs/s per core",
        "generation share",
        "peak RSS MB / worker",
        "RSS after warm-up MB",
        "worker CPU / wall",
        "load before → after (1 min)",
    ]
    rows = [
        [
            r["cores"],
            f"{r['docs']:,}",
            f"{r['partitions']} ({r['partition_mb']})",
            f"{r['generate_s']:.2f}",
            f"{r['pass_s']:.2f}",
            f"{r['docs_per_s']:,}",
            f"{r['docs_per_s_per_core']:,}",
            f"{r['generate_s'] / r['pass_s']:.0%}",
            ", ".join(f"{p:.0f}" for p in r["peak_rss_mb_per_worker"]),
            ", ".join(f"{b:.0f}" for b in r["rss_after_warmup_mb"]),
            ", ".join(f"{c:.2f}" for c in r["worker_cpu_per_wall"]),
            f"{r['load_before'][0]:.2f} → {r['load_after'][0]:.2f}",
        ]
        for r in record["results"]
    ]
    print()
    print(markdown_table(header, rows))
    if "check" in record:
        c = record["check"]
        print()
        print(
            f"speed-up 2 workers over 1: {c['speedup_2_over_1']:.2f}× (target ≥ {TARGET}×: "
            f"{'met' if c['meets_target'] else 'NOT met'}); generation alone {c['generate_speedup_2_over_1']:.2f}×, "
            f"pass minus generation {c['lda_part_speedup_2_over_1']:.2f}×; updated λ, 2 vs 1 worker(s): max relative "
            f"difference {c['lambda_max_rel_diff_2_vs_1']:.1e}"
            + (" (bit-identical)" if c["lambda_bit_identical"] else "")
        )


if __name__ == "__main__":
    main()
