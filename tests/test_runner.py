from __future__ import annotations

import json
import math

import numpy as np
import pytest

from llm_embedder_integrations import SHIPPED_MODEL, ChromaStore
from llm_embedder_integrations.cli import build_parser, main
from llm_embedder_integrations.evaluation import RetrievalDataset
from llm_embedder_integrations.evaluation.ranking import (
    add_corpus,
    allowed_mask,
    hnsw_overlap,
    rank_bm25,
    rank_with_store,
)
from llm_embedder_integrations.evaluation.runner import (
    BENCHMARK_TASKS,
    TASK_DATASETS,
    BenchmarkConfig,
    benchmark_dataset,
    cap_corpus,
    cap_queries,
    run_benchmark,
)
from llm_embedder_integrations.lexical import BM25Index

# Hand-made datasets -------------------------------------------------------------------------


def tiny() -> RetrievalDataset:
    """Four documents, two queries, no restriction."""
    return RetrievalDataset(
        name="tiny",
        task="qa",
        corpus={
            "d0": "The Eiffel Tower stands in Paris.",
            "d1": "Photosynthesis turns light into chemical energy in plants.",
            "d2": "The Great Wall of China is very long.",
            "d3": "Volcanoes erupt molten rock called lava.",
        },
        queries={"q0": "Where is the Eiffel Tower?", "q1": "How do plants use light?"},
        qrels={"q0": {"d0": 1}, "q1": {"d1": 1}},
    )


def with_exclusions() -> RetrievalDataset:
    """SNI / long-text style: each query must not retrieve itself (q0) or itself and later (q1)."""
    corpus = {f"c{i}": f"chunk number {i} about the sea and ships" for i in range(6)}
    return RetrievalDataset(
        name="excl",
        task="lrlm",
        corpus=corpus,
        queries={"q0": corpus["c2"], "q1": corpus["c4"]},
        qrels={"q0": {"c1": 1}, "q1": {"c3": 1}},
        exclude={"q0": {"c2"}, "q1": {"c4", "c5"}},
    )


def two_conversations() -> RetrievalDataset:
    """LoCoMo style: the best match of each question sits in the *other* conversation."""
    corpus = {
        "a/1": "Alice: I adopted a puppy named Rex last week.",
        "a/2": "Alice: I started a pottery class on Mondays.",
        "b/1": "Bob: My new puppy is called Rex and he loves the park.",
        "b/2": "Bob: I am learning to play the cello.",
        "b/3": "Bob: We went hiking in the Alps in July.",
    }
    doc_meta = {d: {"conversation": d.split("/")[0], "position": i} for i, d in enumerate(corpus)}
    return RetrievalDataset(
        name="convs",
        task="chat",
        corpus=corpus,
        queries={"qa": "What is the name of Bob's puppy Rex?", "qb": "Who takes a pottery class?"},
        qrels={"qa": {"a/1": 1}, "qb": {"b/2": 1}},
        metadata={
            "qa": {"filter": {"conversation": "a"}},
            "qb": {"filter": {"conversation": "b"}},
        },
        doc_metadata=doc_meta,
    )


# Exact search through the store ------------------------------------------------------------


def rank_exact(encoder, ds: RetrievalDataset, queries: np.ndarray, docs: np.ndarray, **kw) -> dict:
    """Exact ranking of hand-made vectors (zero-padded to the model's width) through the store."""
    pad = ((0, 0), (0, encoder.dim - docs.shape[1]))
    store = ChromaStore(encoder)
    add_corpus(store, ds, np.pad(docs, pad))
    return rank_with_store(ds, store, np.pad(queries, pad), exact=True, **kw)


def test_rank_exact_known_ranking(encoder):
    ds = tiny()
    docs = np.eye(4, dtype=np.float32)
    queries = np.array([[0.1, 0.2, 0.9, 0.5], [0.8, 0.0, 0.1, 0.3]], dtype=np.float32)
    run = rank_exact(encoder, ds, queries, docs, k=3)
    assert run == {"q0": ["d2", "d3", "d1"], "q1": ["d0", "d3", "d2"]}


def test_rank_exact_ties_keep_corpus_order(encoder):
    ds = tiny()
    run = rank_exact(encoder, ds, np.ones((2, 4), np.float32), np.eye(4, dtype=np.float32))
    assert run["q0"] == ["d0", "d1", "d2", "d3"]


def test_rank_exact_never_returns_excluded_ids(encoder):
    ds = with_exclusions()
    docs = np.eye(6, dtype=np.float32)
    # Each query points straight at the documents it must not retrieve.
    queries = np.zeros((2, 6), np.float32)
    queries[0, 2] = 1.0
    queries[1, [4, 5]] = 1.0
    run = rank_exact(encoder, ds, queries, docs)
    assert run["q0"] == ["c0", "c1", "c3", "c4", "c5"]
    assert run["q1"] == ["c0", "c1", "c2", "c3"]


def test_rank_exact_respects_conversation_filter(encoder):
    ds = two_conversations()
    docs = np.eye(5, dtype=np.float32)
    queries = np.zeros((2, 5), np.float32)
    queries[0, 2] = 1.0  # qa points at b/1 (the other conversation), then a/2
    queries[0, 1] = 0.5
    queries[1, 1] = 1.0  # qb points at a/2
    run = rank_exact(encoder, ds, queries, docs)
    assert run == {"qa": ["a/2", "a/1"], "qb": ["b/1", "b/2", "b/3"]}


def test_rank_with_store_rejects_mismatched_shapes(encoder):
    with pytest.raises(ValueError, match="got 2 query vectors for 1 queries"):
        rank_with_store(tiny(), ChromaStore(encoder), np.ones((2, 384)), qids=["q0"])


def test_allowed_mask_matches_candidate_ids():
    for ds in (tiny(), with_exclusions(), two_conversations()):
        mask = allowed_mask(ds, list(ds.queries))
        ids = list(ds.corpus)
        for row, qid in enumerate(ds.queries):
            assert [ids[j] for j in np.flatnonzero(mask[row])] == ds.candidate_ids(qid)


# BM25 ---------------------------------------------------------------------------------------


def test_bm25_ranks_the_document_holding_the_query_words_first():
    run = rank_bm25(tiny())
    assert run["q0"][0] == "d0"
    assert run["q1"][0] == "d1"


def test_bm25_scores_stopword_query_zero():
    index = BM25Index(tiny().corpus)
    scores = index.scores(["the of and", "photosynthesis"])
    assert scores.shape == (2, 4)
    assert not scores[0].any()
    assert scores[1, 1] > 0 and scores[1, [0, 2, 3]].tolist() == [0, 0, 0]


def test_bm25_respects_exclusions_and_filters():
    run = rank_bm25(with_exclusions())
    assert "c2" not in run["q0"] and len(run["q0"]) == 5
    assert not {"c4", "c5"} & set(run["q1"])
    conv = rank_bm25(two_conversations())
    assert conv["qa"][0] == "a/1"  # "puppy", "Rex" also match b/1, which is out of bounds
    assert {d.split("/")[0] for d in conv["qa"]} == {"a"}
    assert {d.split("/")[0] for d in conv["qb"]} == {"b"}


def test_bm25_index_rejects_other_corpus():
    with pytest.raises(ValueError, match="another corpus"):
        rank_bm25(tiny(), index=BM25Index(with_exclusions().corpus))


def test_bm25_rejects_empty_corpus():
    with pytest.raises(ValueError, match="`corpus` is empty"):
        BM25Index({})


# HNSW (real model, real in-memory Chroma) --------------------------------------------------


def hnsw_run(encoder, ds: RetrievalDataset) -> tuple[dict, dict]:
    doc_vectors = encoder.encode_keys(list(ds.corpus.values()), task=ds.task)
    query_vectors = encoder.encode_queries(list(ds.queries.values()), task=ds.task)
    store = ChromaStore(encoder)
    add_corpus(store, ds, doc_vectors)
    return (
        rank_with_store(ds, store, query_vectors),
        rank_with_store(ds, store, query_vectors, exact=True),
    )


def test_hnsw_respects_conversation_filter(encoder):
    ds = two_conversations()
    approx, exact = hnsw_run(encoder, ds)
    # Unfiltered, the real model puts Bob's puppy turn first for "Bob's puppy Rex".
    q = encoder.encode_queries([ds.queries["qa"]], task="chat")
    d = encoder.encode_keys(list(ds.corpus.values()), task="chat")
    assert list(ds.corpus)[int(np.argmax(q @ d.T))] == "b/1"
    assert approx["qa"][0] == "a/1"
    assert {doc.split("/")[0] for doc in approx["qa"]} == {"a"}
    assert {doc.split("/")[0] for doc in approx["qb"]} == {"b"}
    assert approx == exact


def test_hnsw_never_returns_excluded_ids(encoder):
    ds = with_exclusions()
    approx, exact = hnsw_run(encoder, ds)
    assert sorted(approx["q0"]) == ["c0", "c1", "c3", "c4", "c5"]
    assert sorted(approx["q1"]) == ["c0", "c1", "c2", "c3"]
    assert approx == exact


def test_hnsw_overlap():
    exact = {"q0": ["a", "b", "c", "d"], "q1": ["x"], "q2": []}
    approx = {"q0": ["a", "c", "e", "f"], "q1": ["x"]}
    assert hnsw_overlap(approx, exact) == pytest.approx((0.5 + 1.0) / 2)
    assert math.isnan(hnsw_overlap({}, {"q": []}))


# Capping and configuration ------------------------------------------------------------------


def test_cap_queries_spreads_evenly_and_keeps_labels_consistent():
    corpus = {f"d{i}": f"text {i}" for i in range(3)}
    ds = RetrievalDataset(
        name="many",
        task="icl",
        corpus=corpus,
        queries={f"q{i}": f"query {i}" for i in range(10)},
        qrels={f"q{i}": {"d0": 1} for i in range(10)},
        exclude={f"q{i}": {"d1"} for i in range(10)},
    )
    capped = cap_queries(ds, 4)
    assert list(capped.queries) == ["q0", "q3", "q6", "q9"]
    assert set(capped.qrels) == set(capped.exclude) == set(capped.queries)
    assert capped.corpus == ds.corpus
    assert cap_queries(ds, None) is ds and cap_queries(ds, 50) is ds


def test_cap_corpus_keeps_judged_documents_and_spreads_the_rest():
    ds = RetrievalDataset(
        name="docs",
        task="lrlm",
        corpus={f"d{i}": f"text {i}" for i in range(10)},
        queries={"q0": "query"},
        qrels={"q0": {"d8": 1}},
        exclude={"q0": {"d8", "d9"}},
        doc_metadata={f"d{i}": {"position": i} for i in range(10)},
    )
    capped = cap_corpus(ds, 4)
    assert list(capped.corpus) == ["d0", "d4", "d8", "d9"]  # d8 judged; d0, d4, d9 spread
    assert set(capped.doc_metadata) == set(capped.corpus)
    assert capped.exclude == {"q0": {"d8", "d9"}}
    assert cap_corpus(ds, 2).exclude == {"q0": {"d8"}}  # d0 and d8 kept: d9 leaves `exclude`
    assert list(cap_corpus(ds, 1).corpus) == ["d8"]  # judged documents stay beyond the cap
    assert cap_corpus(ds, None) is ds and cap_corpus(ds, 10) is ds


def test_config_expands_all_and_rejects_bad_values():
    assert BenchmarkConfig().tasks == BENCHMARK_TASKS
    assert BenchmarkConfig(tasks=("tool", "qa", "tool")).tasks == ("tool", "qa")
    assert [s.label for _, s in BenchmarkConfig(tasks=("convsearch",)).datasets()] == [
        "trec_cast/raw",
        "trec_cast/history",
        "trec_cast/rewrite",
    ]
    with pytest.raises(ValueError, match="`tasks` must name tasks among .* got \\('memory',\\)"):
        BenchmarkConfig(tasks=("memory",))
    with pytest.raises(ValueError, match="`split` must be one of .* got 'dev'"):
        BenchmarkConfig(split="dev")
    with pytest.raises(ValueError, match="`max_queries` must be a positive int, got 0"):
        BenchmarkConfig(max_queries=0)
    with pytest.raises(ValueError, match="`max_docs` must be a positive int, got -1"):
        BenchmarkConfig(max_docs=-1)


def test_task_datasets_cover_the_six_tasks():
    assert set(TASK_DATASETS) == {"qa", "tool", "chat", "convsearch", "icl", "lrlm"}


# Benchmark on real data ---------------------------------------------------------------------


def test_benchmark_dataset_rows_on_hand_made_data(encoder, encoder_instr):
    rows = benchmark_dataset(two_conversations(), [encoder, encoder_instr], search="hnsw")
    assert [r.system for r in rows] == [
        "bm25",
        "model",
        "model+bm25",
        "model+instr",
        "model+instr+bm25",
    ]
    assert rows[2].search == "hybrid"
    assert rows[0].hnsw_recall is None and rows[0].search == "bm25"
    assert rows[1].hnsw_recall == 1.0 and rows[1].metrics == rows[1].exact_metrics
    assert all(r.corpus_size == 5 and r.queries == 2 for r in rows)
    for row in rows:  # each judged query's MRR@10, whose mean is the row's
        assert len(row.query_mrr) == 2
        assert np.mean(list(row.query_mrr.values())) == pytest.approx(row.metrics["mrr@10"])
        assert "query_mrr" not in row.to_dict()


@pytest.mark.slow
def test_run_benchmark_on_capped_trec_cast(data_path, tmp_path):
    config = BenchmarkConfig(
        tasks=("convsearch",),
        model=SHIPPED_MODEL,
        max_queries=12,
        search="hnsw",
        data_path=str(data_path),
    )
    result = run_benchmark(config)
    labels = [(r.dataset, r.system) for r in result.rows]
    assert labels == [
        (d, s)
        for d in ("trec_cast/raw", "trec_cast/history", "trec_cast/rewrite")
        for s in ("bm25", "model", "model+bm25", "model+instr", "model+instr+bm25")
    ]
    for row in result.rows:
        assert row.queries == 12 and row.corpus_size > 12
        assert all(0.0 <= v <= 1.0 for v in row.metrics.values()), row
        m = row.metrics
        assert m["hit_rate@1"] <= m["mrr@10"] <= m["hit_rate@10"]
        assert m["hit_rate@1"] <= m["hit_rate@5"] <= m["hit_rate@10"]
    model_rows = [r for r in result.rows if r.system in ("model", "model+instr")]
    assert all(r.hnsw_recall is not None and r.hnsw_recall >= 0.9 for r in model_rows)
    for row in model_rows:
        if row.hnsw_recall == 1.0:
            assert row.metrics == row.exact_metrics
    # 12 queries: every hit rate is a multiple of 1/12.
    assert all(
        math.isclose(r.metrics[f"hit_rate@{k}"] * 12, round(r.metrics[f"hit_rate@{k}"] * 12))
        for r in result.rows
        for k in (1, 5, 10)
    )

    path = result.save_json(tmp_path / "out" / "bench.json")
    data = json.loads(path.read_text())
    assert set(data) == {"model", "config", "seconds", "environment", "rows"}
    assert data["model"] == SHIPPED_MODEL
    assert data["config"]["tasks"] == ["convsearch"] and data["config"]["max_queries"] == 12
    expected_metrics = {
        f"{m}@{k}"
        for m in ("hit_rate", "mrr", "ndcg", "recall", "precision", "map")
        for k in (1, 5, 10)
    }
    for row in data["rows"]:
        assert set(row) == {
            "dataset",
            "task",
            "system",
            "search",
            "metrics",
            "corpus_size",
            "queries",
            "seconds",
            "hnsw_recall",
            "exact_metrics",
        }
        assert set(row["metrics"]) == expected_metrics
    table = result.table()
    assert table.splitlines()[0].startswith("| dataset | system | MRR@10 |")
    assert len(table.splitlines()) == 2 + 15


# CLI ----------------------------------------------------------------------------------------


def test_cli_eval_defaults():
    args = build_parser().parse_args(["eval"])
    assert (args.task, args.instructions, args.split, args.search) == (
        ["all"],
        "both",
        "test",
        "exact",
    )
    assert args.bm25 and args.json is None and args.max_queries is None


def test_cli_eval_options():
    args = build_parser().parse_args(
        ["eval", "--task", "qa", "tool", "--hnsw", "--instructions", "off", "--no-bm25"]
    )
    assert (args.task, args.search, args.instructions, args.bm25) == (
        ["qa", "tool"],
        "hnsw",
        "off",
        False,
    )


def test_cli_eval_rejects_unknown_task_and_both_search_modes(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--task", "memory"])
    assert "invalid choice: 'memory'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--exact", "--hnsw"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_eval_runs_and_writes_json(data_path, tmp_path, capsys):
    out = tmp_path / "sni.json"
    code = main(
        [
            "eval",
            "--task",
            "icl",
            "--model",
            SHIPPED_MODEL,
            "--instructions",
            "off",
            "--max-queries",
            "5",
            "--json",
            str(out),
            "--data",
            str(data_path),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| sni | bm25 |" in printed and "| sni | model |" in printed
    rows = json.loads(out.read_text())["rows"]
    assert [(r["dataset"], r["system"], r["queries"]) for r in rows] == [
        ("sni", "bm25", 5),
        ("sni", "model", 5),
        ("sni", "model+bm25", 5),
    ]
