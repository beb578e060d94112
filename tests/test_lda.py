"""LDA on the conjugate engine (vbayes.conjugate.lda) and its scikit-learn estimator (vbayes.estimators.lda): the
same iterates as scikit-learn's, a non-decreasing ELBO, topics recovered from corpora drawn from the model, online
reaching batch's bound, closed forms against Monte Carlo, and bad input."""

from __future__ import annotations

import gzip

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from scipy.special import digamma
from scipy.stats import dirichlet
from sklearn.decomposition import LatentDirichletAllocation as SklearnLDA

from vbayes.conjugate import lda
from vbayes.conjugate.engine.cavi import cavi
from vbayes.data.bag_of_words import read_uci_bow
from vbayes.data.dask import FREE_PORT
from vbayes.errors import VBayesError
from vbayes.estimators.lda import LatentDirichletAllocation
from vbayes.estimators.lda_documents import DocumentBlocks


def _corpus(n_docs: int, n_words: int = 120, n_topics: int = 4, length: int = 60, seed: int = 0):
    """Documents drawn from LDA itself: β_k ~ Dir(0.05), θ_d ~ Dir(0.3), ``length`` words each."""
    rng = np.random.default_rng(seed)
    beta = rng.dirichlet(np.full(n_words, 0.05), n_topics)
    theta = rng.dirichlet(np.full(n_topics, 0.3), n_docs)
    counts = np.stack([rng.multinomial(length, t @ beta) for t in theta])
    return sp.csr_matrix(counts.astype(float)), beta


def _poisson_docs(n_docs=150, n_words=80, seed=0):
    rng = np.random.default_rng(seed)
    return sp.csr_matrix(rng.poisson(0.2, (n_docs, n_words)).astype(float))


@pytest.fixture
def exact_digamma_in_sklearn(monkeypatch):
    """scikit-learn's LDA with an exact digamma: its Cython series is off by up to ~2e-9 (vbayes uses the exact
    function), which is all that separates the two. The 1-d helper's contract, as its call site in scikit-learn
    uses it: add the prior to ``doc_topic`` in place and write exp(E log θ) into ``out``."""
    from sklearn.decomposition import _lda

    def exact_1d(doc_topic, prior, out):
        doc_topic += prior
        out[:] = np.exp(digamma(doc_topic) - digamma(doc_topic.sum()))

    monkeypatch.setattr(_lda, "cy_dirichlet_expectation_1d", {"double": exact_1d, "float": exact_1d})
    monkeypatch.setattr(_lda, "_dirichlet_expectation_2d", lambda a: digamma(a) - digamma(a.sum(1, keepdims=True)))


@pytest.mark.parametrize("method", ["batch", "online"])
def test_the_iterates_are_scikit_learns(method, exact_digamma_in_sklearn):
    """From the same random_state: the same initial topics, document starts, fixed points and steps, so the same
    components_, bound_, transform, score and perplexity, after fit and after a further partial_fit."""
    X = _poisson_docs()
    options = dict(n_components=4, learning_method=method, max_iter=4, batch_size=64, evaluate_every=2, random_state=3)
    ours, theirs = LatentDirichletAllocation(**options).fit(X), SklearnLDA(**options).fit(X)
    np.testing.assert_allclose(ours.components_, theirs.components_, rtol=1e-10)
    np.testing.assert_allclose(ours.exp_dirichlet_component_, theirs.exp_dirichlet_component_, rtol=1e-10)
    assert (ours.n_iter_, ours.n_batch_iter_) == (theirs.n_iter_, theirs.n_batch_iter_)
    np.testing.assert_allclose(ours.bound_, theirs.bound_, rtol=1e-11)
    held_out = _poisson_docs(40, seed=1)
    np.testing.assert_allclose(ours.transform(held_out), theirs.transform(held_out), atol=1e-11)
    np.testing.assert_allclose(ours.score(held_out), theirs.score(held_out), rtol=1e-11)
    np.testing.assert_allclose(ours.perplexity(held_out), theirs.perplexity(held_out), rtol=1e-11)
    np.testing.assert_allclose(
        ours.perplexity(held_out, sub_sampling=True), theirs.perplexity(held_out, sub_sampling=True), rtol=1e-11
    )
    ours.partial_fit(held_out)
    theirs.partial_fit(held_out)
    np.testing.assert_allclose(ours.components_, theirs.components_, rtol=1e-10)


@pytest.mark.parametrize("method", ["batch", "online"])
def test_float32_counts_are_fitted_in_float32_as_by_scikit_learn(method):
    """float32 counts give float32 topics and shares (scikit-learn preserves float32 too), from E-steps run in
    float32: within float32's reach of the float64 fit (≲ 1e-3 relative after three passes, as scikit-learn's two
    precisions differ) and of scikit-learn's float32 fit, but not the float64 fit rounded (the steps ran in float32)."""
    X = _poisson_docs()
    options = dict(n_components=4, learning_method=method, max_iter=3, batch_size=64, random_state=3)
    single = LatentDirichletAllocation(**options).fit(X.astype(np.float32))
    double = LatentDirichletAllocation(**options).fit(X)
    theirs = SklearnLDA(**options).fit(X.astype(np.float32))
    assert single.components_.dtype == single.exp_dirichlet_component_.dtype == np.float32
    assert single.transform(X.astype(np.float32)).dtype == np.float32
    assert single.transform(X).dtype == np.float32  # new counts take the fitted precision, as in scikit-learn
    np.testing.assert_allclose(single.components_, double.components_, rtol=3e-3)
    np.testing.assert_allclose(single.components_, theirs.components_, rtol=3e-3)
    assert not np.array_equal(single.components_, double.components_.astype(np.float32))


def test_digamma_positive_is_exact_to_rounding():
    """ψ by the shifted asymptotic series against SciPy's on x ∈ [1e-4, 1e9], in float64 and float32."""
    x = np.geomspace(1e-4, 1e9, 20_001)
    with jax.enable_x64(True):
        ours = np.asarray(lda.digamma_positive(jnp.asarray(x)))
    scale = np.maximum(1.0, np.abs(digamma(x)))
    assert np.max(np.abs(ours - digamma(x)) / scale) < 5e-14
    single = np.asarray(lda.digamma_positive(jnp.asarray(x[x < 1e7], jnp.float32)), np.float64)
    assert np.max(np.abs(single - digamma(x[x < 1e7])) / scale[x < 1e7]) < 2e-6


def test_scikit_learns_own_digamma_moves_components_by_its_error_only():
    """Without the exact digamma, scikit-learn's truncated series (error ≲ 2.4e-9) is the only difference: after two
    batch passes the components agree to 1e-6 relative, and not to 1e-10 (so the fixture above matters)."""
    X = _poisson_docs()
    options = dict(n_components=4, max_iter=2, random_state=0)
    ours, theirs = LatentDirichletAllocation(**options).fit(X), SklearnLDA(**options).fit(X)
    error = np.max(np.abs(ours.components_ / theirs.components_ - 1))
    assert 1e-10 < error < 1e-6


def test_the_elbo_of_batch_vb_on_the_engine_never_decreases():
    """The engine's CAVI on LDA rows, each document's fixed point run to convergence: every update raises the ELBO
    (coordinate ascent), and the run is trusted."""
    X, _ = _corpus(150)
    model = lda.lda_model(0.25, 0.25, max_doc_update_iter=2000, mean_change_tol=1e-12)
    start = lda.LDAParams(jnp.asarray(lda.initial_topics(4, X.shape[1], np.random.RandomState(0))))
    with jax.enable_x64(True):
        fit = cavi(model, start, lda.document_rows(X, 4), tol=1e-6, max_iter=500)
    trace = np.asarray(fit.trace)
    assert len(trace) > 10 and np.all(np.diff(trace) >= -1e-9 * np.abs(trace[1:])), np.diff(trace).min()
    assert fit.trusted, fit.verdict.summary()


def test_the_estimators_result_carries_the_perplexity_trace_and_its_verdict():
    """``result_``: a batch run's trace is the training perplexity after each pass (pass i's value equals the final
    perplexity of a run of i passes, to the documents' fixed-point tolerance), the last equals ``bound_`` and
    ``perplexity(X)``; it is converged and trusted when the last pass moved the perplexity by less than
    ``perp_tol``, flagged ``max_steps`` when not, and ``unchecked`` when nothing measured convergence."""
    X, _ = _corpus(150)
    common = dict(n_components=4, random_state=0)
    long = LatentDirichletAllocation(max_iter=40, **common).fit(X)
    r = long.result_
    assert len(r.trace) == 41 and r.trace[-1] == long.bound_
    assert abs(long.perplexity(X) / long.bound_ - 1) < 1e-12
    for passes in (2, 5):
        short = LatentDirichletAllocation(max_iter=passes, **common).fit(X)
        assert abs(r.trace[passes] / short.bound_ - 1) < 1e-3, (passes, r.trace[passes], short.bound_)
    assert r.info.outcome == "converged" and r.trusted, r.verdict.summary()
    assert abs(r.trace[-1] - r.trace[-2]) < long.perp_tol
    short = LatentDirichletAllocation(max_iter=2, **common).fit(X)
    assert short.result_.info.outcome == "max_steps" and short.result_.verdict.status == "flagged"
    assert "raise max_iter" in short.result_.info.message
    online = LatentDirichletAllocation(learning_method="online", max_iter=2, batch_size=50, **common).fit(X)
    assert online.result_.info.outcome == "completed" and online.result_.verdict.status == "unchecked"
    online.partial_fit(X)
    assert not hasattr(online, "result_")  # it described the fit before this pass


@pytest.mark.parametrize("method", ["batch", "online"])
def test_the_threads_change_nothing_but_the_time(method):
    """``n_jobs`` threads run a pass's blocks at once; the sums over the blocks keep their order, so the topics and
    the doc-topic shares are the same, bit for bit, on 1 thread and on 3."""
    rng = np.random.default_rng(4)
    rates = np.where(rng.random(1200) < 0.5, 0.1, 2.0)[:, None]  # short and long documents, mixed
    X = sp.csr_matrix(rng.poisson(rates, (1200, 60)).astype(float))
    common = dict(n_components=3, learning_method=method, max_iter=3, batch_size=600, random_state=0)
    one = LatentDirichletAllocation(n_jobs=1, **common).fit(X)
    three = LatentDirichletAllocation(n_jobs=3, **common).fit(X)
    assert len(DocumentBlocks(X[:600], 3).groups) > 1  # a minibatch's pass has more than one block
    np.testing.assert_array_equal(one.components_, three.components_)
    np.testing.assert_array_equal(one.transform(X), three.transform(X))


def _topic_error(components: np.ndarray, beta: np.ndarray) -> float:
    """Mean L1 distance between the fitted topics' means and the true topics, matched by the Hungarian algorithm."""
    fitted = components / components.sum(1, keepdims=True)
    cost = np.abs(fitted[:, None, :] - beta[None, :, :]).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


@pytest.mark.slow
def test_topics_drawn_from_the_model_are_recovered_better_with_more_documents():
    """Corpora from LDA's generative process (4 topics over 120 words): the matched L1 error of the topics falls
    from 200 to 2,000 documents and is below 0.15 at 2,000 (of at most 2)."""
    errors = []
    for n_docs in (200, 2000):
        X, beta = _corpus(n_docs, seed=1)
        est = LatentDirichletAllocation(4, doc_topic_prior=0.3, topic_word_prior=0.05, max_iter=60, random_state=0)
        errors.append(_topic_error(est.fit(X).components_, beta))
    assert errors[1] < errors[0] and errors[1] < 0.15, errors


@pytest.mark.slow
def test_online_vb_reaches_the_bound_of_batch_vb():
    """Online VB (minibatches of 100, κ = 0.7) and batch VB on the same corpus end within 1% of each other's
    training perplexity, after 30 passes each."""
    X, _ = _corpus(1000, seed=2)
    common = dict(n_components=4, doc_topic_prior=0.3, topic_word_prior=0.05, max_iter=30, random_state=0)
    batch = LatentDirichletAllocation(**common).fit(X)
    online = LatentDirichletAllocation(learning_method="online", batch_size=100, **common).fit(X)
    assert abs(online.bound_ / batch.bound_ - 1) < 1e-2, (online.bound_, batch.bound_)


def test_the_kl_and_log_q_of_the_topics_match_scipy_and_monte_carlo():
    """KL(Dir(λ_k) ‖ Dir(η)) summed over topics against a Monte Carlo average of log q − log p with scipy's
    Dirichlet densities; log q of the draws is scipy's."""
    rng = np.random.default_rng(0)
    lam = rng.gamma(2.0, 1.0, (2, 5)) + 0.5
    model = lda.lda_model(0.5, 0.7)
    with jax.enable_x64(True):
        params = lda.LDAParams(jnp.asarray(lam))

        @jax.jit
        def sampled(m, p):
            draws = m.sample(p, jax.random.PRNGKey(0), 20_000, False)
            return draws, m.log_q(p, draws), m.kl(p)

        draws, log_q, kl = sampled(model, params)
        log_q, kl = np.asarray(log_q), float(kl)
    topics = np.asarray(draws["topics"])
    scipy_log_q = sum(dirichlet.logpdf(topics[:, k].T, lam[k]) for k in range(2))
    np.testing.assert_allclose(log_q, scipy_log_q, rtol=1e-10)
    log_p = sum(dirichlet.logpdf(topics[:, k].T, np.full(5, 0.7)) for k in range(2))
    mc = np.mean(log_q - log_p)
    assert abs(kl - mc) < 4 * np.std(log_q - log_p) / np.sqrt(len(log_q)), (kl, mc)


def test_document_rows_hold_each_documents_words_and_counts():
    X = sp.csr_matrix(np.array([[0, 2, 0, 1], [3, 0, 0, 0], [0, 0, 0, 0]], float))
    rows = lda.document_rows(X, 2)
    assert rows.shape == (3, 2 * 2 + 2)
    np.testing.assert_array_equal(rows[0], [1, 3, 2, 1, 1, 1])
    np.testing.assert_array_equal(rows[1], [0, 0, 3, 0, 1, 1])
    np.testing.assert_array_equal(rows[2, :4], 0)
    with pytest.raises(VBayesError, match="more than the width"):
        lda.document_rows(X, 2, width=1)


def _write_bow(path, lines, gz=False):
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_the_uci_reader_reads_the_counts(tmp_path, gz):
    path = _write_bow(tmp_path / "docword.txt", ["3", "4", "3", "1 2 5", "1 4 1", "3 1 2"], gz)
    X = read_uci_bow(path)
    np.testing.assert_array_equal(X.toarray(), [[0, 5, 0, 1], [0, 0, 0, 0], [2, 0, 0, 0]])


@pytest.mark.parametrize(
    "lines, message",
    [
        (["3", "4", "5", "1 2 5", "1 4 1", "3 1 2"], "promises 5 entries"),  # truncated
        (["3", "4", "2", "1 2 5", "4 1 2"], "outside the header"),  # document id out of range
        (["3", "4", "2", "1 2 5", "2 1 0"], "count is < 1"),
        (["3", "x", "1", "1 2 5"], "should be W"),
        (["3", "4", "2", "1 2 5", "1 2"], "three integers|promises"),
        (["2", "2", "1", "1 2 1.5"], "three integers"),
    ],
)
def test_a_damaged_bag_of_words_file_is_a_clear_error(tmp_path, lines, message):
    with pytest.raises(VBayesError, match=message):
        read_uci_bow(_write_bow(tmp_path / "docword.txt", lines))


def test_bad_input_to_the_estimator_is_a_clear_error():
    X = _poisson_docs(20, 10)
    with pytest.raises(ValueError, match="Negative values"):
        LatentDirichletAllocation(2, max_iter=1).fit(-X.toarray())
    with pytest.raises(ValueError, match="NaN"):
        LatentDirichletAllocation(2, max_iter=1).fit(np.full((3, 4), np.nan))
    with pytest.raises(VBayesError, match="learning_method must be batch|online"):
        LatentDirichletAllocation(2, learning_method="gibbs").fit(X)
    with pytest.raises(VBayesError, match="doc_topic_prior must be None or > 0"):
        LatentDirichletAllocation(2, doc_topic_prior=0.0).fit(X)
    fitted = LatentDirichletAllocation(2, max_iter=1).fit(X)
    with pytest.raises(ValueError, match="features"):
        fitted.transform(np.ones((2, 11)))
    with pytest.raises(VBayesError, match="topic_word_prior must be a finite number > 0"):
        lda.lda_model(0.1, -1.0)
    with pytest.raises(ValueError, match="features"):  # a vocabulary of another size in partial_fit
        fitted.partial_fit(_poisson_docs(5, 12))
    with pytest.raises(VBayesError, match="counts must be finite and ≥ 0"):
        lda.document_rows(sp.csr_matrix(np.array([[1.0, -2.0]])), 2)


def test_empty_documents_get_the_prior_and_change_nothing_else():
    """A document with no words: its topic proportions are the prior's (uniform), and the topics fitted with it are
    those fitted without it (it adds no statistics)."""
    X = _poisson_docs()  # the corpus and settings of the tests above: their compiled passes serve this one
    with_empty = sp.vstack([X, sp.csr_matrix((2, X.shape[1]))]).tocsr()
    plain = LatentDirichletAllocation(n_components=4, max_iter=2, random_state=0).fit(X)
    shares = plain.transform(with_empty)
    np.testing.assert_allclose(shares[-2:], 1 / 4, rtol=1e-12)
    np.testing.assert_allclose(shares[:-2], plain.transform(X), rtol=1e-12)
    model = lda.lda_model(1 / 4, 1 / 4)  # the empty rows' random starts would shift the stream: one pass instead
    with jax.enable_x64(True):
        local = model.expect(lda.LDAParams(jnp.asarray(plain.components_)))
        step = jax.jit(lambda m, loc, rows, w: m.local_step(loc, rows, w))
        a = step(model, local, jnp.asarray(lda.document_rows(X, 4)), jnp.ones(X.shape[0]))
        b = step(model, local, jnp.asarray(lda.document_rows(with_empty, 4)), jnp.ones(X.shape[0] + 2))
    np.testing.assert_allclose(np.asarray(b[0].topic_word), np.asarray(a[0].topic_word), rtol=1e-12)


@pytest.mark.slow
def test_scikit_learns_estimator_checks_pass():
    from sklearn.utils.estimator_checks import check_estimator

    check_estimator(LatentDirichletAllocation(n_components=3, max_iter=5, random_state=0))


def _write_corpus(folder, n_docs=400, seed=3):
    """A corpus from the model in the UCI format, its vocabulary, and one year per document."""
    X, beta = _corpus(n_docs, seed=seed)
    coo = X.tocoo()
    order = np.lexsort((coo.col, coo.row))
    lines = [str(X.shape[0]), str(X.shape[1]), str(X.nnz)]
    lines += [
        f"{r + 1} {c + 1} {int(v)}" for r, c, v in zip(coo.row[order], coo.col[order], coo.data[order], strict=True)
    ]
    _write_bow(folder / "docword.txt", lines, gz=True)
    (folder / "vocab.txt").write_text("\n".join(f"w{i}" for i in range(X.shape[1])) + "\n")
    (folder / "meta.tsv").write_text("year\n" + "\n".join(str(1990 + i % 5) for i in range(n_docs)) + "\n")
    return X, beta


@pytest.mark.parametrize("method", ["batch", pytest.param("online", marks=pytest.mark.slow)])
def test_the_lda_command_finds_the_topics_and_writes_its_report(tmp_path, method):
    from typer.testing import CliRunner

    from vbayes.cli import app

    _, beta = _write_corpus(tmp_path)
    out = tmp_path / "out"
    args = ["lda", str(tmp_path / "docword.txt"), "--topics", "4", "--method", method, "--passes", "40"]
    args += ["--dates", str(tmp_path / "meta.tsv"), "--batch-size", "100", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 3), result.output
    assert "held-out perplexity" in result.stdout and "w" in result.stdout
    for name in ("topics.png", "topics_over_time.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    import pandas as pd

    curve = pd.read_csv(out / "perplexity.csv")
    assert len(curve) >= 2 and curve["held_out_perplexity"].iloc[-1] < curve["held_out_perplexity"].iloc[0]
    top = pd.read_csv(out / "topics.csv")
    true_top = {int(np.argmax(b)) for b in beta}  # each true topic's most probable word
    found = {int(g.sort_values("rank")["word"].iloc[0][1:]) for _, g in top.groupby("topic")}
    assert len(true_top & found) >= 3, (true_top, found)


def test_the_lda_commands_default_minibatch_is_the_engines():
    """`vbayes lda --method online` without --batch-size steps on the engine's default minibatch."""
    import inspect

    from vbayes.cli.lda import lda
    from vbayes.conjugate.engine.svi import DEFAULT_BATCH

    assert inspect.signature(lda).parameters["batch_size"].default == DEFAULT_BATCH


def test_the_lda_command_reports_bad_input_without_a_traceback(tmp_path):
    from typer.testing import CliRunner

    from vbayes.cli import app

    runner = CliRunner()
    _write_bow(tmp_path / "cut.txt", ["3", "4", "5", "1 2 5"])
    result = runner.invoke(app, ["lda", str(tmp_path / "cut.txt")])
    assert result.exit_code == 1 and "promises 5 entries" in result.stderr and "Traceback" not in result.output
    _write_corpus(tmp_path)
    result = runner.invoke(app, ["lda", str(tmp_path / "docword.txt"), "--method", "gibbs"])
    assert result.exit_code == 1 and "unknown method" in result.stderr
    (tmp_path / "short.tsv").write_text("year\n1990\n")
    result = runner.invoke(app, ["lda", str(tmp_path / "docword.txt"), "--dates", str(tmp_path / "short.tsv")])
    assert result.exit_code == 1 and "has 1 rows" in result.stderr
    result = runner.invoke(app, ["lda", str(tmp_path / "docword.txt"), "--held-out-from", "9999"])
    assert result.exit_code == 1 and "beyond the last document" in result.stderr


def test_small_width_groups_join_the_next_wider_one():
    """Each width is a compiled program: a group of fewer than ``min_docs`` documents joins the next wider group
    (the widest stays, however small); every document is in one group, at a width that holds its words."""
    rng = np.random.default_rng(2)
    rates = rng.choice([0.05, 0.3, 1.0, 3.0], 400, p=[0.05, 0.6, 0.3, 0.05])[:, None]
    X = sp.csr_matrix(rng.poisson(rates, (400, 120)).astype(float))
    plain, merged = lda.width_groups(X), lda.width_groups(X, min_docs=50)
    assert [len(i) for i, _ in plain][0] < 50 and len(merged) < len(plain)
    words = np.diff(X.indptr)
    for groups in (plain, merged):
        index = np.concatenate([i for i, _ in groups])
        np.testing.assert_array_equal(np.sort(index), np.arange(400))
        assert all(np.all(words[i] <= w) for i, w in groups)
    assert all(len(i) >= 50 for i, _ in merged[:-1])
    assert [w for _, w in merged] == sorted({w for _, w in merged})


def test_a_pass_without_the_elbo_gives_the_same_statistics():
    """``with_elbo=False`` (what an online update needs) leaves the statistics as they were and returns 0."""
    from vbayes.conjugate.model import BlockPass

    X = _poisson_docs(300, 60, seed=1)
    with jax.enable_x64(True):
        model = lda.lda_model(0.3, 0.2)
        local = model.expect(lda.LDAParams(jnp.asarray(lda.initial_topics(3, 60, np.random.RandomState(1)))))
        block = lda.DocumentSource(X, 3).blocks[0]
        stats, elbo = BlockPass(model, local)(block)
        stats_only, zero = BlockPass(model, local, with_elbo=False)(block)
    np.testing.assert_array_equal(np.asarray(stats.topic_word), np.asarray(stats_only.topic_word))
    assert float(zero) == 0.0 and float(elbo) < 0.0


def test_a_corpus_grouped_by_length_gives_the_statistics_of_one_block():
    """DocumentSource (documents grouped by width, each group padded) and the plain rows of one width give the same
    statistics and ELBO: the grouping changes the cost of a pass, not its result."""
    from vbayes.conjugate.engine.cavi import pass_stats
    from vbayes.data import as_source

    long = sp.csr_matrix(np.random.default_rng(5).poisson(3.0, (7, 60)).astype(float))  # a few long documents
    X = sp.vstack([long, _poisson_docs(293, 60)]).tocsr()
    model = lda.lda_model(0.3, 0.2)
    with jax.enable_x64(True):
        params = lda.LDAParams(jnp.asarray(lda.initial_topics(3, 60, np.random.RandomState(1))))
        local = model.expect(params)
        grouped = lda.DocumentSource(X, 3)
        assert len(grouped.blocks) > 1
        stats, elbo = pass_stats(model, local, grouped)
        plain_stats, plain_elbo = pass_stats(model, local, as_source(lda.document_rows(X, 3)))
    np.testing.assert_allclose(np.asarray(stats.topic_word), np.asarray(plain_stats.topic_word), rtol=1e-12)
    np.testing.assert_allclose(float(elbo), float(plain_elbo), rtol=1e-12)
    assert grouped.n_words == X.sum() and grouped.n_samples == 300


@pytest.mark.slow
def test_lda_streamed_from_disk_and_on_dask_equals_in_memory(tmp_path):
    """The engine's data sources, with no LDA code of their own: the same CAVI iterates on document rows in memory,
    read from a .npy file block by block, and reduced by Dask workers partition by partition."""
    import dask.array as da
    from distributed import Client, LocalCluster

    from vbayes.data import dask as vd

    X, _ = _corpus(600, seed=4)
    rows = lda.document_rows(X, 4)
    np.save(tmp_path / "rows.npy", rows)
    model = lda.lda_model(0.25, 0.25)
    start = lda.LDAParams(jnp.asarray(lda.initial_topics(4, X.shape[1], np.random.RandomState(0))))
    with jax.enable_x64(True):
        ref = cavi(model, start, rows, tol=0.0, max_iter=5)
        streamed = cavi(model, start, tmp_path / "rows.npy", tol=0.0, max_iter=5, chunk_size=128)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=FREE_PORT) as cluster:
            with Client(cluster) as client:
                source = vd.DaskData(da.from_array(rows, chunks=(150, rows.shape[1])), client)
                on_dask = cavi(model, start, source, tol=0.0, max_iter=5)
    for fit in (streamed, on_dask):
        np.testing.assert_allclose(np.asarray(fit.q.params.topic_word), np.asarray(ref.q.params.topic_word), rtol=1e-9)
        np.testing.assert_allclose(fit.trace, ref.trace, rtol=1e-10)


LDA_ON_FOUR_DEVICES = """
import json, sys
import jax, jax.numpy as jnp, numpy as np, scipy.sparse as sp
jax.config.update("jax_enable_x64", True)
from vbayes import conjugate as cj
from vbayes.conjugate import lda
from vbayes.conjugate.engine.svi import SVIConfig
from vbayes.data import devices as sh
assert jax.local_device_count() == 4
rng = np.random.default_rng(0)
beta = rng.dirichlet(np.full(80, 0.05), 3)
theta = rng.dirichlet(np.full(3, 0.3), 512)
X = sp.csr_matrix(np.stack([rng.multinomial(40, t @ beta) for t in theta]).astype(float))
rows = lda.document_rows(X, 3)
model = lda.lda_model(1 / 3, 1 / 3)
start = lda.LDAParams(jnp.asarray(lda.initial_topics(3, 80, np.random.RandomState(0))))
rel = lambda a, b: float(jnp.max(jnp.abs(a.topic_word - b.topic_word) / b.topic_word))
a = cj.cavi(model, start, rows, tol=0.0, max_iter=10)
b = cj.cavi(model, start, sh.ShardedData(rows, "all", chunk_size=64), tol=0.0, max_iter=10)
config = SVIConfig(batch_size=64, steps_per_block=8, max_epochs=2.0, eval_size=256, minibatch_dtype=np.float64)
c = cj.svi(model, start, rows, key=1, final_pass=False, config=config)
d = cj.svi(model, start, rows, key=1, final_pass=False, config=config, devices="all")
print("RESULT" + json.dumps({"cavi": rel(b.q.params, a.q.params), "svi": rel(d.q.params, c.q.params),
                             "steps": [c.info.steps, d.info.steps]}))
"""


@pytest.mark.slow
def test_lda_over_a_device_mesh_equals_one_device():
    """The engine's device meshes, with no LDA code of their own (4 simulated CPU devices, a subprocess): CAVI on
    ``ShardedData`` and SVI with every minibatch split over the devices equal their one-device runs in float64 (only
    the order of the sums differs)."""
    import json
    import os
    import subprocess
    import sys

    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", LDA_ON_FOUR_DEVICES], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads([x for x in done.stdout.splitlines() if x.startswith("RESULT")][-1][len("RESULT") :])
    assert out["cavi"] < 1e-9 and out["svi"] < 1e-9 and out["steps"][0] == out["steps"][1], out
