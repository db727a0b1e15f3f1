from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ranx import Qrels, Run, evaluate

from llm_embedder_integrations.evaluation.metrics import (
    METRICS,
    average_precision,
    evaluate_per_query,
    evaluate_rankings,
    gain_by_group,
    hit_rate,
    mrr,
    ndcg,
    paired_gain,
    precision,
    recall,
)

KS = (1, 3, 5, 10, 20)


def _random_case(seed: int, graded: bool, n_queries: int = 200, n_docs: int = 50):
    """Seeded rankings and judgements; some queries miss the run or retrieve nothing relevant."""
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(n_docs)]
    run: dict[str, list[str]] = {}
    qrels: dict[str, dict[str, int]] = {}
    for q in range(n_queries):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 12))
        grades = {d: (rng.randint(0, 3) if graded else rng.randint(0, 1)) for d in judged}
        grades[judged[0]] = rng.randint(1, 3) if graded else 1  # at least one relevant
        qrels[qid] = grades
        if q % 17 == 0:
            continue  # judged query missing from the run
        pool = [d for d in docs if d not in grades] if q % 7 == 0 else docs
        run[qid] = rng.sample(pool, rng.randint(1, min(30, len(pool))))
    run["unjudged"] = docs[:10]  # in the run only: must be ignored
    return run, qrels


def _ranx(run, qrels, ks, return_mean=True):
    ranx_run = Run(
        {q: {d: float(len(r) - i) for i, d in enumerate(r)} for q, r in run.items() if r}
    )
    names = [f"{m}@{k}" for k in ks for m in METRICS]
    return evaluate(Qrels(qrels), ranx_run, names, make_comparable=True, return_mean=return_mean)


@pytest.mark.parametrize("graded", [False, True], ids=["binary", "graded"])
def test_means_match_ranx(graded):
    run, qrels = _random_case(seed=13 if graded else 7, graded=graded)
    ours = evaluate_rankings(run, qrels, KS)
    expected = _ranx(run, qrels, KS)
    assert set(ours) == set(expected)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key


def test_per_query_scores_match_ranx():
    run, qrels = _random_case(seed=3, graded=True, n_queries=60)
    means, per_query = evaluate_rankings(run, qrels, (5, 10), per_query=True)
    expected = _ranx(run, qrels, (5, 10), return_mean=False)
    qids = sorted(qrels)  # ranx keeps its queries sorted by id
    for key, values in expected.items():
        for qid, value in zip(qids, values, strict=True):
            assert per_query[qid][key] == pytest.approx(value, abs=1e-9), (qid, key)
    assert means["ndcg@10"] == pytest.approx(
        sum(s["ndcg@10"] for s in per_query.values()) / len(per_query)
    )


def test_keys_are_metric_at_k():
    scores = evaluate_rankings({"q": ["a"]}, {"q": {"a": 1}}, ks=(5, 10))
    assert list(scores) == [f"{m}@{k}" for k in (5, 10) for m in METRICS]
    assert {"mrr@10", "hit_rate@5", "ndcg@10", "recall@10", "precision@10", "map@10"} <= set(scores)


# Hand-computed cases -----------------------------------------------------------------------------

RANKING = ["d1", "d2", "d3", "d4", "d5"]
GRADES = {"d2": 3, "d4": 1, "d9": 2, "d1": 0}  # d1 judged non-relevant; d9 never retrieved


def test_hit_rate_by_hand():
    assert hit_rate(RANKING, GRADES, 1) == 0.0
    assert hit_rate(RANKING, GRADES, 2) == 1.0


def test_mrr_by_hand():
    assert mrr(RANKING, GRADES, 1) == 0.0
    assert mrr(RANKING, GRADES, 5) == 0.5


def test_ndcg_by_hand():
    dcg = 3 / math.log2(3) + 1 / math.log2(5)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg(RANKING, GRADES, 5) == pytest.approx(dcg / idcg)
    # ideal truncated at k = 2: grades 3 and 2 only
    assert ndcg(RANKING, GRADES, 2) == pytest.approx((3 / math.log2(3)) / (3 + 2 / math.log2(3)))


def test_recall_and_precision_by_hand():
    assert recall(RANKING, GRADES, 5) == pytest.approx(2 / 3)
    assert precision(RANKING, GRADES, 5) == pytest.approx(2 / 5)
    # precision divides by k even when the ranking is shorter than k
    assert precision(["d2"], GRADES, 10) == pytest.approx(1 / 10)


def test_map_divides_by_all_relevant_not_min_k():
    # relevant at ranks 2 and 4: (1/2 + 2/4) / 3 relevant
    assert average_precision(RANKING, GRADES, 5) == pytest.approx((1 / 2 + 2 / 4) / 3)
    # k = 2 < 3 relevant: still / 3 (ranx), not / min(2, 3)
    assert average_precision(RANKING, GRADES, 2) == pytest.approx((1 / 2) / 3)


def test_collection_of_ids_counts_as_grade_one():
    assert ndcg(["x", "a"], {"a", "b"}, 2) == pytest.approx(
        (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    )


def test_query_missing_from_run_scores_zero_and_unjudged_queries_are_ignored():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": ["a"], "other": ["b"]}
    assert evaluate_rankings(run, qrels, ks=(1,))["hit_rate@1"] == 0.5


def test_query_without_positive_grade_is_skipped():
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}}
    scores = evaluate_per_query({"q1": ["a"], "q2": ["c"]}, qrels, ks=(1,))
    assert list(scores) == ["q1"]
    assert evaluate_rankings({"q1": ["a"]}, qrels, ks=(1,))["mrr@1"] == 1.0


# Bad inputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10"])
def test_bad_k_is_quoted(bad):
    with pytest.raises(ValueError, match=f"positive int, got {bad!r}"):
        evaluate_rankings({"q": ["a"]}, {"q": {"a": 1}}, ks=(1, bad))


def test_bad_k_in_per_query_function():
    with pytest.raises(ValueError, match="got 0"):
        mrr(["a"], {"a": 1}, 0)


def test_scalar_ks_is_rejected():
    with pytest.raises(ValueError, match="sequence of positive ints"):
        evaluate_rankings({"q": ["a"]}, {"q": {"a": 1}}, ks=10)


def test_empty_ks_is_rejected():
    with pytest.raises(ValueError, match="at least one cut-off"):
        evaluate_rankings({"q": ["a"]}, {"q": {"a": 1}}, ks=())


def test_duplicate_doc_names_the_query():
    with pytest.raises(ValueError, match=r"query 'q7' repeats document id\(s\) \['a'\]"):
        evaluate_rankings({"q7": ["a", "b", "a"]}, {"q7": {"a": 1}})


def test_string_ranking_is_rejected():
    with pytest.raises(TypeError, match="wrap a single id in a list"):
        evaluate_rankings({"q": "abc"}, {"q": {"a": 1}})


def test_empty_qrels_is_rejected():
    with pytest.raises(ValueError, match="`qrels` is empty"):
        evaluate_rankings({"q": ["a"]}, {})


def test_qrels_without_any_relevant_is_rejected():
    with pytest.raises(ValueError, match="has a relevant document"):
        evaluate_rankings({"q": ["a"]}, {"q": {"a": 0}})


# Properties --------------------------------------------------------------------------------------

DOCS = [f"d{i}" for i in range(30)]


@st.composite
def cases(draw):
    ranking = draw(st.lists(st.sampled_from(DOCS), unique=True, max_size=30))
    grades = draw(st.dictionaries(st.sampled_from(DOCS), st.integers(0, 4), min_size=1))
    k = draw(st.integers(1, 40))
    return ranking, grades, k


@settings(max_examples=300, deadline=None)
@given(cases())
def test_every_metric_is_between_zero_and_one(case):
    ranking, grades, k = case
    for fn in (hit_rate, mrr, ndcg, recall, precision, average_precision):
        assert 0.0 <= fn(ranking, grades, k) <= 1.0 + 1e-12


@settings(max_examples=300, deadline=None)
@given(cases())
def test_perfect_ranking_scores_one(case):
    _, grades, k = case
    relevant = sorted((d for d, g in grades.items() if g > 0), key=lambda d: -grades[d])
    if not relevant:
        return
    perfect = relevant + [d for d in DOCS if d not in relevant]
    assert hit_rate(perfect, grades, k) == 1.0
    assert mrr(perfect, grades, k) == 1.0
    assert ndcg(perfect, grades, k) == pytest.approx(1.0)
    assert precision(perfect, grades, k) == pytest.approx(min(k, len(relevant)) / k)
    if k >= len(relevant):
        assert recall(perfect, grades, k) == 1.0
        assert average_precision(perfect, grades, k) == pytest.approx(1.0)
    else:
        assert recall(perfect, grades, k) == pytest.approx(k / len(relevant))
        assert average_precision(perfect, grades, k) == pytest.approx(k / len(relevant))


@settings(max_examples=200, deadline=None)
@given(cases())
def test_metrics_ignore_documents_after_k(case):
    ranking, grades, k = case
    truncated = ranking[:k]
    for fn in (hit_rate, mrr, ndcg, recall, precision, average_precision):
        assert fn(ranking, grades, k) == fn(truncated, grades, k)


def test_paired_gain_is_the_mean_difference_and_its_standard_error():
    base = {"a": 0.5, "b": 1.0, "c": 0.0, "d": 0.25}
    system = {"a": 1.0, "b": 1.0, "c": 0.5, "d": 0.25, "extra": 1.0}  # "extra": not paired
    mean, error = paired_gain(system, base)
    diff = np.array([0.5, 0.0, 0.5, 0.0])
    assert mean == pytest.approx(0.25)
    assert error == pytest.approx(diff.std(ddof=1) / 2)  # sqrt(4) queries
    assert paired_gain(base, base) == (0.0, 0.0)
    with pytest.raises(ValueError, match="1 queries have no score to pair with, e.g. 'd'"):
        paired_gain({"a": 1.0, "b": 1.0, "c": 1.0}, base)
    with pytest.raises(ValueError, match="at least 2 queries"):
        paired_gain({"a": 1.0}, {"a": 0.5})


def test_the_groups_shares_add_up_to_the_mean_gain():
    # three articles: "a" loses one question from rank 1 to unranked, "b" gains half of one
    base = {"a-1": 1.0, "a-2": 1.0, "b-1": 0.5, "b-2": 1.0, "c-1": 1.0}
    system = {"a-1": 0.0, "a-2": 1.0, "b-1": 1.0, "b-2": 1.0, "c-1": 1.0}
    groups = {q: q[0] for q in base}
    shares = gain_by_group(system, base, groups)
    assert list(shares) == ["a", "b", "c"]
    assert shares == {"a": (-0.2, 2), "b": (pytest.approx(0.1), 2), "c": (0.0, 1)}
    mean, _ = paired_gain(system, base)
    assert sum(share for share, _ in shares.values()) == pytest.approx(mean)
    # without groups every query is its own
    assert gain_by_group(system, base)["a-1"] == (-0.2, 1)
    with pytest.raises(ValueError, match="1 queries have no score to pair with, e.g. 'c-1'"):
        gain_by_group({q: v for q, v in system.items() if q != "c-1"}, base)
    with pytest.raises(ValueError, match="1 queries have no group in `groups`, e.g. 'c-1'"):
        gain_by_group(system, base, {q: g for q, g in groups.items() if q != "c-1"})


def test_a_gain_of_whole_groups_is_judged_by_its_groups():
    # four articles of ten questions: two gain 0.3 on every question, two lose 0.1
    base = {f"{g}-{i}": 0.5 for g in "abcd" for i in range(10)}
    system = {q: 0.5 + (0.3 if q[0] in "ab" else -0.1) for q in base}
    groups = {q: q[0] for q in base}
    mean, per_query = paired_gain(system, base)
    diff = np.array([0.3] * 20 + [-0.1] * 20)
    assert mean == pytest.approx(0.1)
    assert per_query == pytest.approx(diff.std(ddof=1) / np.sqrt(40))
    same, grouped = paired_gain(system, base, groups)
    assert same == pytest.approx(mean)
    # 4 groups: sums of the centred differences are +2, +2, -2, -2
    assert grouped == pytest.approx(np.sqrt(4 / 3 * 16) / 40)
    assert grouped > 3 * per_query
    # the same differences spread over the groups: the per-query error stands
    mixed = {q: "abcd"[int(q.split("-")[1]) % 4] for q in base}
    assert paired_gain(system, base, mixed)[1] == pytest.approx(per_query)
    # one group: nothing to measure between groups
    assert paired_gain(system, base, dict.fromkeys(base, "all"))[1] == per_query
    with pytest.raises(ValueError, match="1 queries have no group in `groups`, e.g. 'd-9'"):
        paired_gain(system, base, {q: "x" for q in base if q != "d-9"})
