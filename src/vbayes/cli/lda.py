"""``vbayes lda``: fit a topic model (LDA) to a bag of words in the UCI format by the conjugate engine's batch VB
(CAVI) or online VB (SVI); print each topic's top words and the held-out perplexity per pass; write topics.png,
topics.csv, perplexity.csv and, when the documents have dates, topics_over_time.png. Registered in :mod:`vbayes.cli`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from vbayes.cli.common import FLAGGED_EXIT, enable_x64, print_verdict, safe_name, stdout, user_errors
from vbayes.errors import MAX_SEED, VBayesError
from vbayes.outputs import check_writable, staged

HELP = "Fit a topic model (LDA) to a UCI bag-of-words file by batch or online variational Bayes."
"""Help text of ``vbayes lda``."""
TOL_PER_WORD = 1e-4
"""Batch VB stops when the ELBO changes by less than this many nats per word of the training documents."""


def lda(
    docword: Annotated[
        Path, typer.Argument(help="A UCI bag-of-words file (docword.txt, gzipped or not).", show_default=False)
    ],
    topics: Annotated[int, typer.Option(min=1, help="Number of topics K.")] = 10,
    method: Annotated[str, typer.Option(help="batch (CAVI) or online (SVI).")] = "batch",
    passes: Annotated[int, typer.Option(min=1, help="Passes over the training documents at most.")] = 20,
    vocab: Annotated[Path | None, typer.Option(help="The vocabulary (default: vocab.txt next to DOCWORD).")] = None,
    held_out: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share of the documents held out at random (0: none).")
    ] = 0.05,
    held_out_from: Annotated[
        int | None,
        typer.Option(min=1, help="Hold out the documents with id ≥ this instead (a split by date, say)."),
    ] = None,
    dates: Annotated[
        Path | None,
        typer.Option(
            help="A table (tab- or comma-separated, with a header) with a `year` column, one row per document."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Documents per online step (the engine's SVI default).")
    ] = 4096,  # = vbayes.conjugate.engine.svi.DEFAULT_BATCH (not imported here: the CLI starts without JAX)
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Random seed (initial topics, split, order).")] = 0,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: vbayes-out/lda-<docword>).")] = None,
) -> None:
    """Fit, print the topics and the held-out perplexity per pass, write the pictures and tables."""
    import jax.numpy as jnp

    from vbayes.conjugate import lda as model_lda
    from vbayes.conjugate.engine.cavi import cavi, objective
    from vbayes.conjugate.engine.svi import SVIConfig, svi
    from vbayes.data.bag_of_words import read_uci_bow, read_vocabulary

    with user_errors():
        if method not in ("batch", "online"):
            raise VBayesError(f"unknown method {method!r}; available: batch, online")
        enable_x64()
        console = stdout()
        folder = check_writable(out if out is not None else Path("vbayes-out") / f"lda-{safe_name(docword.stem)}")
        docs = read_uci_bow(docword)
        vocabulary = _vocabulary(docword, vocab, docs.shape[1], read_vocabulary)
        years = _years(dates, docs.shape[0]) if dates is not None else None
        rng = np.random.RandomState(seed)
        test = _held_out(docs.shape[0], held_out, held_out_from, rng)
        train_docs, test_docs = docs[~test], docs[test]
        if train_docs.shape[0] == 0:
            raise VBayesError("no training documents are left after the held-out split")
        console.print(
            f"[bold]{escape(docword.name)}[/bold]  D {docs.shape[0]} ({int(test.sum())} held out)  "
            f"V {docs.shape[1]}  K {topics}  {method}",
            soft_wrap=True,
        )
        model = model_lda.lda_model(1.0 / topics, 1.0 / topics)
        start = model_lda.LDAParams(jnp.asarray(model_lda.initial_topics(topics, docs.shape[1], rng)))
        train = model_lda.DocumentSource(train_docs, topics, dtype=np.float32)
        held = model_lda.DocumentSource(test_docs, topics, dtype=np.float32) if test.any() else None
        curve: list[tuple[float, float]] = []

        def report(passes_done: float, params) -> None:
            if held is None:
                return
            perplexity = math.exp(-objective(model, params, held) / held.n_words)
            curve.append((passes_done, perplexity))
            console.print(f"  pass {passes_done:6.2f}: held-out perplexity {perplexity:.1f}")

        words_per_doc = train.n_words / train.n_samples
        if method == "batch":
            fit = cavi(
                model,
                start,
                train,
                tol=TOL_PER_WORD * words_per_doc,
                max_iter=passes,
                callback=lambda i, _, params: report(float(i), params),
            )
        else:
            rows = model_lda.document_rows(train_docs, topics)
            size = min(batch_size, rows.shape[0])
            config = SVIConfig(
                batch_size=size, learning_decay=0.7, max_epochs=float(passes), tol=TOL_PER_WORD * words_per_doc
            )
            fit = svi(
                model,
                start,
                rows,
                key=seed,
                config=config,
                callback=lambda steps, _, params: report(steps * size / rows.shape[0], params),
            )
        lam = np.asarray(fit.q.params.topic_word)
        words = _top_words(lam, vocabulary)
        shares = lam.sum(1) - docs.shape[1] / topics
        shares = shares / shares.sum()
        info = fit.info
        console.print(
            f"[{'green' if info.outcome == 'converged' else 'yellow'}]{info.outcome}[/]: {escape(info.message)}; "
            f"{info.steps} {'iterations' if method == 'batch' else 'steps'}, {info.wall_time:.1f} s; "
            f"ELBO {info.extra['objective']:.6g}",
            soft_wrap=True,
        )
        print_verdict(console, fit)
        table = Table(title="topics (share of the training words)")
        table.add_column("topic")
        table.add_column("share")
        table.add_column("top words")
        for k, topic in enumerate(words):
            table.add_row(str(k), f"{100 * shares[k]:.1f}%", ", ".join(w for w, _ in topic[:8]))
        console.print(table)
        names = ["topics.csv", "perplexity.csv", "topics.png"] + (["topics_over_time.png"] if years is not None else [])
        with staged(folder, names) as tmp:
            _write_outputs(tmp, words, shares, curve, years, docs, model, fit.q.params, topics)
        console.print(f"wrote {', '.join(names)} to {folder}", soft_wrap=True)
    if fit.verdict.status == "flagged":
        raise typer.Exit(code=FLAGGED_EXIT)


def _vocabulary(docword: Path, vocab: Path | None, n_words: int, read) -> list[str]:
    """The words, from ``vocab`` or vocab.txt next to the documents; ``word<i>`` when there is none."""
    path = vocab if vocab is not None else docword.parent / "vocab.txt"
    if vocab is None and not path.exists():
        return [f"word{i}" for i in range(n_words)]
    words = read(path)
    if len(words) != n_words:
        raise VBayesError(f"{path} has {len(words)} words, the documents' vocabulary {n_words}")
    return words


def _years(path: Path, n_docs: int) -> np.ndarray:
    """The ``year`` column of a table with one row per document."""
    import pandas as pd

    from vbayes.data.files import existing_file

    existing_file(path)
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        header = pd.read_csv(path, sep="\t", nrows=0, compression="gzip" if gzipped else None).columns
        sep = "\t" if len(header) > 1 or "," not in header[0] else ","
        table = pd.read_csv(path, sep=sep, usecols=["year"], compression="gzip" if gzipped else None)
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise VBayesError(f"{path}: no readable `year` column ({type(e).__name__}: {e})") from None
    if len(table) != n_docs:
        raise VBayesError(f"{path} has {len(table)} rows, the documents number {n_docs}")
    years = pd.to_numeric(table["year"], errors="coerce").to_numpy()
    if not np.all(np.isfinite(years)):
        raise VBayesError(
            f"{path}: the `year` column has a value that is not a number (row {np.argmax(~np.isfinite(years)) + 2})"
        )
    return years


def _held_out(n_docs: int, share: float, first: int | None, rng: np.random.RandomState) -> np.ndarray:
    """Which documents are held out: ids ≥ ``first`` (1-based), else a random ``share`` of them."""
    if first is not None:
        if first > n_docs:
            raise VBayesError(f"--held-out-from {first} is beyond the last document ({n_docs})")
        return np.arange(1, n_docs + 1) >= first
    test = np.zeros(n_docs, bool)
    test[rng.permutation(n_docs)[: int(round(share * n_docs))]] = True
    return test


def _top_words(lam: np.ndarray, vocabulary: list[str]) -> list[list[tuple[str, float]]]:
    from vbayes.report import top_words

    return top_words(lam, vocabulary, 10)


def _write_outputs(tmp, words, shares, curve, years, docs, model, params, n_topics) -> None:
    import pandas as pd

    from vbayes.estimators.lda_documents import doc_topic_shares
    from vbayes.report import plot_topics, plot_topics_over_time

    rows = [
        {"topic": k, "rank": r + 1, "word": w, "probability": p}
        for k, topic in enumerate(words)
        for r, (w, p) in enumerate(topic)
    ]
    pd.DataFrame(rows).to_csv(tmp["topics.csv"], index=False)
    pd.DataFrame(curve, columns=["pass", "held_out_perplexity"]).to_csv(tmp["perplexity.csv"], index=False)
    plot_topics(words, tmp["topics.png"], shares)
    if years is not None:
        proportions = doc_topic_shares(model, params, docs, n_topics)
        times = np.unique(years)
        means = np.stack([proportions[years == t].mean(0) for t in times])
        labels = [", ".join(w for w, _ in topic[:3]) for topic in words]
        plot_topics_over_time(times, means, labels, tmp["topics_over_time.png"])
