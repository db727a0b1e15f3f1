from __future__ import annotations

import math
import os

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda

from llm_embedder_integrations import ChromaStore
from llm_embedder_integrations.evaluation import load_dataset
from llm_embedder_integrations.evaluation.ragas import (
    METRICS,
    RagReport,
    RagSample,
    evaluate_rag,
    rag_samples,
)
from llm_embedder_integrations.langchain import LLMEmbedderEmbeddings, LLMEmbedderRetriever

OFFLINE = [
    "id_based_context_precision",
    "id_based_context_recall",
    "non_llm_context_precision_with_reference",
    "non_llm_context_recall",
]


class GoldRetriever(BaseRetriever):
    """Fake retriever for plumbing tests: returns each question's gold paragraph, or a fixed one.

    It reads the answer key, so it is perfect by construction; the tests that use it check that
    the metrics score a known retrieval as they should, not retrieval quality.
    """

    gold: dict[str, Document]
    fixed: Document | None = None
    """When set, returned for every question instead of the gold paragraph."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [self.fixed or self.gold[query]]


@pytest.fixture(scope="module")
def xquad(data_path):
    return load_dataset("xquad", "test", data_path=data_path)


@pytest.fixture(scope="module")
def samples(xquad):
    return rag_samples(xquad, limit=20)


@pytest.fixture(scope="module")
def retriever(xquad, encoder, tmp_path_factory):
    store = ChromaStore(encoder, path=tmp_path_factory.mktemp("chroma"))
    store.add(list(xquad.corpus.values()), task="qa", ids=list(xquad.corpus))
    return LLMEmbedderRetriever(store=store, task="qa", k=3)


@pytest.fixture(scope="module")
def gold(xquad, samples):
    by_text = {text: doc_id for doc_id, text in xquad.corpus.items()}
    return {
        s.question: Document(
            page_content=s.reference_contexts[0], id=by_text[s.reference_contexts[0]]
        )
        for s in samples
    }


@pytest.fixture(scope="module")
def offline_report(retriever, samples):
    return evaluate_rag(retriever, samples)


# Samples -----------------------------------------------------------------------------------------


def test_rag_samples_take_gold_paragraph_and_first_answer(xquad):
    samples = rag_samples(xquad, limit=5)
    assert len(samples) == 5
    qids = list(xquad.queries)
    picked = [qids[i * len(qids) // 5] for i in range(5)]
    for sample, qid in zip(samples, picked, strict=True):
        (doc_id,) = xquad.qrels[qid]
        assert sample.question == xquad.queries[qid]
        assert sample.reference_context_ids == (doc_id,)
        assert sample.reference_contexts == (xquad.corpus[doc_id],)
        assert sample.reference == xquad.metadata[qid]["answers"][0]
    # evenly spaced: the five come from more than one article
    assert len({s.reference_context_ids[0].split("#")[0] for s in samples}) > 1


def test_rag_samples_rejects_bad_limit(xquad):
    with pytest.raises(ValueError, match="`limit` must be > 0"):
        rag_samples(xquad, limit=0)


def test_sample_without_reference_is_rejected():
    with pytest.raises(ValueError, match="has no reference: give `reference_contexts`"):
        RagSample("Who wrote Hamlet?", reference="Shakespeare")


def test_sample_with_one_string_as_ids_is_rejected():
    with pytest.raises(TypeError, match="sequence of strings, not one string"):
        RagSample("Who wrote Hamlet?", reference_context_ids="doc-1")


def test_sample_with_empty_question_is_rejected():
    with pytest.raises(ValueError, match="`question` must be a non-empty string"):
        RagSample("  ", reference_context_ids=["doc-1"])


# Offline metrics ---------------------------------------------------------------------------------


def test_offline_metrics_on_xquad_are_numbers_in_unit_interval(offline_report):
    assert isinstance(offline_report, RagReport)
    assert offline_report.n == 20
    assert list(offline_report.scores) == OFFLINE
    assert offline_report.failures == dict.fromkeys(OFFLINE, 0)
    for name, score in offline_report.scores.items():
        assert 0.0 <= score <= 1.0, (name, score)
    assert len(offline_report.per_sample) == 20
    assert set(offline_report.timings) == {"retrieval", "scoring"}


def test_id_based_scores_match_the_retrieved_ids(offline_report, samples):
    # one gold paragraph per question, three retrieved: recall is the hit rate at 3, precision
    # is a third of it
    hits = [
        s.reference_context_ids[0] in row["retrieved_context_ids"]
        for s, row in zip(samples, offline_report.per_sample, strict=True)
    ]
    assert all(len(row["retrieved_context_ids"]) == 3 for row in offline_report.per_sample)
    assert offline_report.scores["id_based_context_recall"] == pytest.approx(sum(hits) / 20)
    assert offline_report.scores["id_based_context_precision"] == pytest.approx(sum(hits) / 60)
    # MiniLM finds the gold paragraph for most XQuAD questions (MRR@10 0.93 on the full set)
    assert sum(hits) >= 16


def test_k_overrides_the_retriever(retriever, samples):
    report = evaluate_rag(retriever, samples[:4], k=1, metrics=["id_based_context_precision"])
    assert all(len(row["retrieved_context_ids"]) == 1 for row in report.per_sample)


def test_perfect_retriever_scores_one(gold, samples):
    report = evaluate_rag(GoldRetriever(gold=gold), samples)
    assert report.scores["id_based_context_precision"] == 1.0
    assert report.scores["id_based_context_recall"] == 1.0
    assert report.scores["non_llm_context_precision_with_reference"] == pytest.approx(1.0)
    assert report.scores["non_llm_context_recall"] == 1.0


def test_wrong_retriever_scores_zero(gold, samples):
    wrong = Document(page_content="Nothing to do with any question here.", id="nowhere")
    report = evaluate_rag(GoldRetriever(gold=gold, fixed=wrong), samples)
    assert report.scores == dict.fromkeys(OFFLINE, 0.0)


def test_semantic_similarity_of_answers_with_our_embeddings(gold, samples, encoder):
    """Fake chains (the reference answer, or one fixed wrong answer): the test is the plumbing."""
    answers = {s.question: s.reference for s in samples}
    embeddings = LLMEmbedderEmbeddings(encoder=encoder, task="qa")
    exact = evaluate_rag(
        GoldRetriever(gold=gold),
        samples,
        chain=RunnableLambda(lambda q: answers[q]),
        embeddings=embeddings,
    )
    assert list(exact.scores) == [*OFFLINE, "semantic_similarity"]
    assert exact.scores["semantic_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert exact.per_sample[0]["response"] == samples[0].reference
    assert "generation" in exact.timings
    wrong = evaluate_rag(
        GoldRetriever(gold=gold),
        samples,
        chain=RunnableLambda(lambda q: "a recipe for banana bread"),
        embeddings=embeddings,
        metrics=["semantic_similarity"],
    )
    assert wrong.scores["semantic_similarity"] < 0.5


def test_to_markdown_lists_each_metric_with_failures():
    report = RagReport(
        scores={"faithfulness": 0.5, "context_recall": math.nan},
        failures={"faithfulness": 1, "context_recall": 3},
        per_sample=[],
        n=3,
        timings={"scoring": 2.0},
    )
    assert report.to_markdown().splitlines() == [
        "| metric | mean | scored | NaN / failed |",
        "|---|---|---|---|",
        "| faithfulness | 0.500 | 2/3 | 1 |",
        "| context_recall | n/a | 0/3 | 3 |",
        "",
        "3 samples; scoring 2.0 s.",
    ]


# Telemetry ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("before", [None, "false"])
def test_telemetry_is_off_during_the_call_and_restored(gold, samples, monkeypatch, before):
    from ragas import _analytics

    if before is None:
        monkeypatch.delenv("RAGAS_DO_NOT_TRACK", raising=False)
    else:
        monkeypatch.setenv("RAGAS_DO_NOT_TRACK", before)
    posted, seen = [], []
    monkeypatch.setattr(_analytics.requests, "post", lambda *a, **kw: posted.append(a))
    real_flush = _analytics._analytics_batcher.flush

    def flush():
        seen.append(os.environ.get("RAGAS_DO_NOT_TRACK"))
        real_flush()

    monkeypatch.setattr(_analytics._analytics_batcher, "flush", flush)
    evaluate_rag(GoldRetriever(gold=gold), samples[:2], metrics=["id_based_context_recall"])
    assert seen and set(seen) == {"true"}
    assert posted == []
    assert os.environ.get("RAGAS_DO_NOT_TRACK") == before
    assert _analytics.do_not_track() is (before == "true")


# Bad input ---------------------------------------------------------------------------------------


def test_empty_samples_are_rejected(retriever):
    with pytest.raises(ValueError, match="`samples` is empty"):
        evaluate_rag(retriever, [])


def test_non_sample_is_rejected(retriever):
    with pytest.raises(TypeError, match=r"samples\[0\] must be a RagSample, got tuple"):
        evaluate_rag(retriever, [("q", ["id"], "a")])


def test_unknown_metric_is_rejected(retriever, samples):
    with pytest.raises(ValueError, match="unknown metrics \\['mrr'\\]; known: id_based"):
        evaluate_rag(retriever, samples, metrics=["mrr"])


def test_metric_without_its_reference_answer_is_rejected(retriever):
    no_answer = [RagSample("Who wrote Hamlet?", reference_context_ids=["doc-1"])]
    with pytest.raises(ValueError, match="'semantic_similarity' needs .*reference.*`reference`"):
        evaluate_rag(retriever, no_answer, metrics=["semantic_similarity"])


def test_llm_metric_without_llm_is_rejected(retriever, samples):
    with pytest.raises(ValueError, match="'context_recall' needs llm: pass `llm=`"):
        evaluate_rag(retriever, samples, metrics=["context_recall"])


def test_documents_without_id_are_rejected(samples):
    anonymous = GoldRetriever(gold={}, fixed=Document(page_content="some text"))
    with pytest.raises(ValueError, match="Document without `id`"):
        evaluate_rag(anonymous, samples[:1], metrics=["id_based_context_precision"])


def test_chain_must_return_a_string(gold, samples):
    chain = RunnableLambda(lambda q: {"answer": q})
    with pytest.raises(TypeError, match="must return the answer as a string, got dict"):
        evaluate_rag(GoldRetriever(gold=gold), samples[:1], chain=chain)


def test_bad_k_is_rejected(retriever, samples):
    with pytest.raises(ValueError, match="`k` must be > 0"):
        evaluate_rag(retriever, samples, k=0)


def test_metric_names_are_ragas_names():
    assert "faithfulness" in METRICS and "answer_relevancy" in METRICS
    assert set(OFFLINE) < set(METRICS)


# A real LLM as judge -----------------------------------------------------------------------------


@pytest.mark.slow
def test_faithfulness_with_local_llm_judge(gold, samples):
    """SmolLM2-135M judges two answers; a small model often emits invalid JSON, counted as NaN."""
    from ragas.run_config import RunConfig

    from llm_embedder_integrations.langchain import LocalChatModel

    two = samples[:2]
    answers = {s.question: s.reference for s in two}
    judge = LocalChatModel(max_new_tokens=192)
    report = evaluate_rag(
        GoldRetriever(gold=gold),
        two,
        chain=RunnableLambda(lambda q: answers[q]),
        llm=judge,
        metrics=["faithfulness"],
        run_config=RunConfig(max_workers=1, timeout=600, max_retries=1),
    )
    assert report.n == 2
    assert list(report.scores) == ["faithfulness"]
    values = [row["faithfulness"] for row in report.per_sample]
    assert report.failures["faithfulness"] == sum(math.isnan(v) for v in values)
    assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in values)
    valid = [v for v in values if not math.isnan(v)]
    if valid:
        assert report.scores["faithfulness"] == pytest.approx(sum(valid) / len(valid))
    else:
        assert math.isnan(report.scores["faithfulness"])
    assert judge.temperature == 0.0  # ragas' per-call temperature is undone
