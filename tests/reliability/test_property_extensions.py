"""Properties that tests/test_metrics.py and tests/test_memory.py do not already check.

Already there: every per-query metric in [0, 1], a perfect ranking scores 1, documents after k
are ignored (test_metrics.py); chunks cover short texts in order within small token limits
(test_memory.py). Added here: the aggregate `evaluate_rankings`, monotonicity in k and under
improvements of a ranking, and chunking of long texts at the memory's real chunk sizes.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_embedder_integrations.evaluation.metrics import (
    METRICS,
    average_precision,
    evaluate_rankings,
    hit_rate,
    mrr,
    ndcg,
    precision,
    recall,
)
from llm_embedder_integrations.memory import chunk_spans

DOCS = [f"d{i}" for i in range(25)]
PER_QUERY = {
    "hit_rate": hit_rate,
    "mrr": mrr,
    "ndcg": ndcg,
    "recall": recall,
    "precision": precision,
    "map": average_precision,
}


@st.composite
def judged_query(draw):
    grades = draw(st.dictionaries(st.sampled_from(DOCS), st.integers(0, 3), min_size=1))
    if not any(g > 0 for g in grades.values()):
        grades[draw(st.sampled_from(sorted(grades)))] = draw(st.integers(1, 3))
    ranking = draw(st.permutations(DOCS).map(lambda p: p[: draw(st.integers(0, len(DOCS)))]))
    return ranking, grades


@st.composite
def runs(draw):
    queries = draw(st.lists(judged_query(), min_size=1, max_size=8))
    run = {f"q{i}": ranking for i, (ranking, _) in enumerate(queries)}
    qrels = {f"q{i}": grades for i, (_, grades) in enumerate(queries)}
    ks = tuple(sorted(draw(st.sets(st.integers(1, 30), min_size=1, max_size=4))))
    return run, qrels, ks


def _perfect(grades: dict[str, int]) -> list[str]:
    relevant = sorted((d for d, g in grades.items() if g > 0), key=lambda d: -grades[d])
    return relevant + [d for d in DOCS if d not in relevant]


@settings(max_examples=200, deadline=None)
@given(runs())
def test_aggregate_scores_are_means_within_zero_and_one(case):
    run, qrels, ks = case
    scores = evaluate_rankings(run, qrels, ks)
    assert list(scores) == [f"{m}@{k}" for k in ks for m in METRICS]
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in scores.values())
    for k in ks:
        for name, fn in PER_QUERY.items():
            mean = sum(fn(run[q], qrels[q], k) for q in qrels) / len(qrels)
            assert scores[f"{name}@{k}"] == pytest.approx(mean, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(runs())
def test_a_perfect_run_scores_one_at_every_k(case):
    _, qrels, ks = case
    perfect = {q: _perfect(grades) for q, grades in qrels.items()}
    scores = evaluate_rankings(perfect, qrels, ks)
    for k in ks:
        assert scores[f"hit_rate@{k}"] == scores[f"mrr@{k}"] == 1.0
        assert scores[f"ndcg@{k}"] == pytest.approx(1.0)
        if all(sum(g > 0 for g in grades.values()) <= k for grades in qrels.values()):
            assert scores[f"recall@{k}"] == 1.0
            assert scores[f"map@{k}"] == pytest.approx(1.0)


@settings(max_examples=300, deadline=None)
@given(judged_query(), st.integers(1, 29))
def test_cumulative_metrics_never_decrease_with_k(query, k):
    ranking, grades = query
    for fn in (hit_rate, mrr, recall, average_precision):
        assert fn(ranking, grades, k) <= fn(ranking, grades, k + 1)


@settings(max_examples=300, deadline=None)
@given(judged_query(), st.integers(1, 30), st.data())
def test_moving_a_relevant_document_above_a_non_relevant_one_never_hurts(query, k, data):
    ranking, grades = query
    swaps = [
        (i, j)
        for j, doc in enumerate(ranking)
        if grades.get(doc, 0) > 0
        for i in range(j)
        if grades.get(ranking[i], 0) <= 0
    ]
    if not swaps:
        return
    i, j = data.draw(st.sampled_from(swaps))
    better = list(ranking)
    better[i], better[j] = better[j], better[i]
    for name, fn in PER_QUERY.items():
        assert fn(better, grades, k) >= fn(ranking, grades, k) - 1e-12, name


@settings(max_examples=200, deadline=None)
@given(judged_query(), st.integers(1, 30))
def test_appending_a_non_relevant_document_changes_nothing(query, k):
    ranking, grades = query
    extra = next((d for d in DOCS if d not in ranking and grades.get(d, 0) <= 0), None)
    if extra is None:
        return
    for name, fn in PER_QUERY.items():
        assert fn([*ranking, extra], grades, k) == fn(ranking, grades, k), name


# -- chunking long texts at the memory's chunk sizes ----------------------------------------------

_WORDS = st.sampled_from(
    [
        "memory",
        "the",
        "retrieval",
        "unbelievably",
        "Hamlet,",
        "Ophelia's",
        "naïve",
        "東京",
        "e=mc^2",
        "2024-05-01",
        "(see",
        "above).",
        "—",
        "antidisestablishmentarianism",
        "https://example.org/a/very/long/path?query=1",
    ]
)
_SEPARATORS = st.sampled_from([" ", " ", " ", "\n", "\n\n", "  ", "\t"])
_LONG_TEXTS = st.lists(st.tuples(_WORDS, _SEPARATORS), min_size=300, max_size=1500).map(
    lambda pairs: "".join(w + s for w, s in pairs)
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_LONG_TEXTS, limit=st.sampled_from([64, 128]))
def test_long_texts_are_cut_into_full_chunks_that_cover_them(encoder, text, limit):
    tokenizer = encoder.tokenizer
    spans = chunk_spans(text, tokenizer, limit)
    previous = 0
    for start, end in spans:
        assert end > start and not text[previous:start].strip()  # in order, only space between
        previous = end
    assert not text[previous:].strip()
    assert re.sub(r"\s", "", "".join(text[s:e] for s, e in spans)) == re.sub(r"\s", "", text)
    counts = [len(tokenizer(text[s:e], add_special_tokens=False)["input_ids"]) for s, e in spans]
    assert max(counts) <= limit
    total = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    # Cuts fall between words, so a chunk ends early by less than its next word (the longest
    # here, the URL, has 19 tokens): the chunk count stays close to the minimum.
    assert len(spans) <= -(-total // (limit - 19)) + 1
