"""Ranking metrics over plain rankings and graded relevance judgements.

Pure functions, no framework and no numpy: a *ranking* is a sequence of document ids, best
first; the *relevance judgements* of one query map document ids to grades, and a grade > 0 marks a
relevant document. The definitions are those of trec_eval as implemented by ranx
(https://amenra.github.io/ranx/), and the tests check every metric against ranx to 1e-9:

* ``hit_rate@k``: 1 if any relevant document is in the top k, else 0.
* ``mrr@k``: 1 / rank of the first relevant document in the top k, else 0.
* ``ndcg@k``: DCG@k / IDCG@k with gain = grade and discount 1 / log2(rank + 1) (Järvelin and
  Kekäläinen; ranx ``"ndcg"``, not ``"ndcg_burges"``); the ideal ranking sorts the grades in
  decreasing order.
* ``recall@k``: relevant documents in the top k / all relevant documents.
* ``precision@k``: relevant documents in the top k / k (not / len(ranking): a ranking shorter than k
  is penalised, as in trec_eval).
* ``map@k``: average precision truncated at k: the precisions at the ranks of the relevant documents
  retrieved in the top k, summed and divided by the number of *all* relevant documents, not by
  min(k, number relevant). This is ranx's and trec_eval's normalisation; it means a perfect ranking
  scores map@k < 1 when a query has more than k relevant documents.

ranx counts a document as relevant when its grade is >= 1; here any grade > 0 counts. The two agree
for the usual integer grades.

Example:
    >>> evaluate_rankings({"q1": ["d3", "d1"]}, {"q1": {"d1": 1}}, ks=(1, 10))["mrr@10"]
    0.5
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Literal, overload

import numpy as np

from .._validation import check_k

__all__ = [
    "METRICS",
    "average_precision",
    "evaluate_per_query",
    "evaluate_rankings",
    "gain_by_group",
    "hit_rate",
    "mrr",
    "ndcg",
    "paired_gain",
    "precision",
    "recall",
]

METRICS: tuple[str, ...] = ("hit_rate", "mrr", "ndcg", "recall", "precision", "map")
"""Metric names in the order `evaluate_rankings` reports them; keys read ``f"{name}@{k}"``."""

Relevance = Mapping[str, float] | Collection[str]
"""Judgements of one query: ``{doc_id: grade}`` (grade > 0 relevant) or a collection of ids."""


def _check_ranking(ranking: Sequence[str], qid: str | None = None) -> None:
    """Reject a ranking that is a bare string or repeats a document id."""
    where = f" for query {qid!r}" if qid is not None else ""
    if isinstance(ranking, str):
        raise TypeError(
            f"a ranking must be a sequence of document ids, got the string {ranking!r}{where}; "
            "wrap a single id in a list"
        )
    if len(set(ranking)) != len(ranking):
        dupes = sorted(doc for doc, n in Counter(ranking).items() if n > 1)
        raise ValueError(
            f"ranking{where} repeats document id(s) {dupes}: a ranking lists each document once; "
            "deduplicate it (keep the best rank) before evaluating"
        )


def _grades(relevant: Relevance) -> dict[str, float]:
    """Return the positive grades of ``relevant`` (a collection of ids counts as grade 1)."""
    if isinstance(relevant, Mapping):
        return {doc: float(g) for doc, g in relevant.items() if g > 0}
    if isinstance(relevant, str):
        raise TypeError(
            f"`relevant` must be a mapping or a collection of ids, got the string {relevant!r}"
        )
    return dict.fromkeys(relevant, 1.0)


def _hits(ranking: Sequence[str], grades: Mapping[str, float], k: int) -> list[bool]:
    return [doc in grades for doc in ranking[:k]]


def hit_rate(ranking: Sequence[str], relevant: Relevance, k: int) -> float:
    """Return 1.0 if a relevant document is among the top ``k`` of ``ranking``, else 0.0.

    Args:
        ranking: Document ids, best first, each at most once.
        relevant: ``{doc_id: grade}`` (grade > 0 relevant) or a collection of relevant ids.
        k: Cut-off, a positive int.
    """
    check_k(k)
    _check_ranking(ranking)
    return float(any(_hits(ranking, _grades(relevant), k)))


def mrr(ranking: Sequence[str], relevant: Relevance, k: int) -> float:
    """Return the reciprocal rank of the first relevant document in the top ``k`` (0.0 if none).

    The mean of this over queries is the MRR.

    Args:
        ranking: Document ids, best first, each at most once.
        relevant: ``{doc_id: grade}`` (grade > 0 relevant) or a collection of relevant ids.
        k: Cut-off, a positive int.
    """
    check_k(k)
    _check_ranking(ranking)
    for rank, hit in enumerate(_hits(ranking, _grades(relevant), k), start=1):
        if hit:
            return 1.0 / rank
    return 0.0


def ndcg(ranking: Sequence[str], relevant: Relevance, k: int) -> float:
    """Return nDCG@k with gain = grade and discount 1 / log2(rank + 1).

    The ideal DCG ranks the positive grades in decreasing order. A query without relevant documents
    scores 0.0.

    Args:
        ranking: Document ids, best first, each at most once.
        relevant: ``{doc_id: grade}`` (grade > 0 relevant) or a collection of relevant ids.
        k: Cut-off, a positive int.
    """
    check_k(k)
    _check_ranking(ranking)
    grades = _grades(relevant)
    if not grades:
        return 0.0
    dcg = sum(
        grades[doc] / math.log2(rank + 1)
        for rank, doc in enumerate(ranking[:k], start=1)
        if doc in grades
    )
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg


def recall(ranking: Sequence[str], relevant: Relevance, k: int) -> float:
    """Return the fraction of the relevant documents found in the top ``k`` (0.0 if none exist).

    Args:
        ranking: Document ids, best first, each at most once.
        relevant: ``{doc_id: grade}`` (grade > 0 relevant) or a collection of relevant ids.
        k: Cut-off, a positive int.
    """
    check_k(k)
    _check_ranking(ranking)
    grades = _grades(relevant)
    if not grades:
        return 0.0
    return sum(_hits(ranking, grades, k)) / len(grades)


def precision(ranking: Sequence[str], relevant: Relevance, k: int) -> float:
    """Return the number of relevant documents in the top ``k`` divided by ``k``.

    The denominator is ``k`` even when the ranking is shorter, as in trec_eval and ranx.

    Args:
        ranking: Document ids, best first, each at most once.
        relevant: ``{doc_id: grade}`` (grade > 0 relevant) or a collection of relevant ids.
        k: Cut-off, a positive int.
    """
    check_k(k)
    _check_ranking(ranking)
    return sum(_hits(ranking, _grades(relevant), k)) / k


def average_precision(ranking: Sequence[str], relevant: Relevance, k: int) -> float:
    """Return average precision truncated at ``k`` (the per-query term of ``map@k``).

    The precisions at the ranks of the relevant documents in the top ``k`` are summed and divided by
    the number of all relevant documents (ranx / trec_eval normalisation), so the value is below 1.0
    whenever more than ``k`` documents are relevant.

    Args:
        ranking: Document ids, best first, each at most once.
        relevant: ``{doc_id: grade}`` (grade > 0 relevant) or a collection of relevant ids.
        k: Cut-off, a positive int.
    """
    check_k(k)
    _check_ranking(ranking)
    grades = _grades(relevant)
    if not grades:
        return 0.0
    total, found = 0.0, 0
    for rank, hit in enumerate(_hits(ranking, grades, k), start=1):
        if hit:
            found += 1
            total += found / rank
    return total / len(grades)


_FUNCTIONS = {
    "hit_rate": hit_rate,
    "mrr": mrr,
    "ndcg": ndcg,
    "recall": recall,
    "precision": precision,
    "map": average_precision,
}


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    if isinstance(ks, int):
        raise ValueError(f"`ks` must be a sequence of positive ints such as (1, 5, 10), got {ks!r}")
    checked = tuple(dict.fromkeys(check_k(k) for k in ks))
    if not checked:
        raise ValueError("`ks` must name at least one cut-off, got an empty sequence")
    return checked


def evaluate_per_query(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, float]],
    ks: Iterable[int] = (1, 5, 10),
) -> dict[str, dict[str, float]]:
    """Score every judged query: ``{qid: {"mrr@10": ..., ...}}``.

    The queries are those of ``qrels`` that have at least one grade > 0; a query whose judgements
    are all <= 0 is skipped (no metric is defined for it). A judged query missing from ``run``
    scores 0 everywhere; queries of ``run`` absent from ``qrels`` are ignored.

    Args:
        run: Query id -> document ids ranked best first, each at most once.
        qrels: Query id -> ``{doc_id: grade}``.
        ks: Cut-offs, positive ints.

    Returns:
        Per query, the metrics of `METRICS` at every cut-off, keyed ``f"{metric}@{k}"``.

    Raises:
        ValueError: If ``qrels`` is empty, a cut-off is not a positive int, or a ranking repeats a
            document id.
    """
    cutoffs = _check_ks(ks)
    if not qrels:
        raise ValueError("`qrels` is empty: pass at least one query with a relevant document")
    scores: dict[str, dict[str, float]] = {}
    for qid, judgements in qrels.items():
        grades = _grades(judgements)
        if not grades:
            continue
        ranking = run.get(qid, ())
        _check_ranking(ranking, qid)
        scores[qid] = {
            f"{name}@{k}": _FUNCTIONS[name](ranking, grades, k) for k in cutoffs for name in METRICS
        }
    return scores


@overload
def evaluate_rankings(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, float]],
    ks: Iterable[int] = ...,
    *,
    per_query: Literal[False] = ...,
) -> dict[str, float]: ...


@overload
def evaluate_rankings(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, float]],
    ks: Iterable[int] = ...,
    *,
    per_query: Literal[True],
) -> tuple[dict[str, float], dict[str, dict[str, float]]]: ...


def evaluate_rankings(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, float]],
    ks: Iterable[int] = (1, 5, 10),
    *,
    per_query: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Average the metrics of `METRICS` over the judged queries.

    The mean is taken over the queries of ``qrels`` that have at least one grade > 0; such a query
    absent from ``run`` counts as 0. Queries whose judgements are all <= 0 are skipped, and queries
    only in ``run`` are ignored. ``map@k`` divides by the number of all relevant documents of the
    query, exactly as ranx does (see the module docstring).

    Args:
        run: Query id -> document ids ranked best first, each at most once.
        qrels: Query id -> ``{doc_id: grade}``, grade > 0 relevant.
        ks: Cut-offs, positive ints.
        per_query: Also return the per-query scores of `evaluate_per_query`.

    Returns:
        ``{"hit_rate@1": ..., "mrr@10": ..., "ndcg@10": ..., "recall@10": ..., "precision@10": ...,
        "map@10": ...}`` for every k of ``ks``; with ``per_query=True`` the tuple
        ``(means, {qid: {metric: value}})``.

    Raises:
        ValueError: If ``qrels`` is empty or has no query with a grade > 0, a cut-off is not a
            positive int, or a ranking repeats a document id (the error names the query).
    """
    scores = evaluate_per_query(run, qrels, ks)
    if not scores:
        raise ValueError(
            f"none of the {len(qrels)} queries of `qrels` has a relevant document (grade > 0): "
            "nothing to average"
        )
    keys = next(iter(scores.values())).keys()
    means = {key: math.fsum(s[key] for s in scores.values()) / len(scores) for key in keys}
    return (means, scores) if per_query else means


def _check_pairs(
    system: Mapping[str, float], base: Mapping[str, float], groups: Mapping[str, str] | None
) -> None:
    """Raise unless every query of ``base`` has a score in ``system`` and a group in ``groups``."""
    missing = [q for q in base if q not in system]
    if missing:
        raise ValueError(f"{len(missing)} queries have no score to pair with, e.g. {missing[0]!r}")
    if groups is not None:
        ungrouped = [q for q in base if q not in groups]
        if ungrouped:
            raise ValueError(
                f"{len(ungrouped)} queries have no group in `groups`, e.g. {ungrouped[0]!r}"
            )


def paired_gain(
    system: Mapping[str, float],
    base: Mapping[str, float],
    groups: Mapping[str, str] | None = None,
) -> tuple[float, float]:
    """Mean and standard error of ``system - base`` over ``base``'s queries, paired by query.

    Both map query ids to a per-query score (such as `BenchmarkRow.query_mrr`). The error is that of
    the mean of the per-query differences, so a gain is judged against how much the queries
    disagree, not against the spread of either system's scores.

    ``groups`` (query id -> its group: an article, a dialogue, an API) makes the error that of
    a sample of groups: queries of one group tend to gain or lose together, so a split drawn
    by whole groups knows less than its query count says. The error is then the larger of the
    per-query one and the cluster-robust one (the differences summed within each group, with
    the small-sample factor ``G / (G - 1)``); with one group it is the per-query one.

    Raises:
        ValueError: If ``system`` lacks a query of ``base``, there are fewer than two, or
            ``groups`` lacks one.
    """
    _check_pairs(system, base, groups)
    if len(base) < 2:
        raise ValueError(f"a paired standard error needs at least 2 queries, got {len(base)}")
    diff = np.array([system[q] - base[q] for q in base], dtype=np.float64)
    mean, error = float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))
    if groups is None:
        return mean, error
    sums: dict[str, float] = {}
    for q, d in zip(base, diff, strict=True):
        sums[groups[q]] = sums.get(groups[q], 0.0) + d - mean
    if len(sums) > 1:
        g = len(sums)
        clustered = np.sqrt(g / (g - 1) * sum(v * v for v in sums.values())) / len(diff)
        error = max(error, float(clustered))
    return mean, error


def gain_by_group(
    system: Mapping[str, float],
    base: Mapping[str, float],
    groups: Mapping[str, str] | None = None,
) -> dict[str, tuple[float, int]]:
    """Each group's share of the mean of ``system - base``: ``{group: (share, queries)}``.

    A group's share is the sum of its queries' differences divided by the number of all queries,
    so the shares add up to `paired_gain`'s mean: they say which articles, dialogues or APIs
    carry a gain or a loss, and whether it is spread or held by a few. Without ``groups`` every
    query is its own group. Groups come in the order of their first query in ``base``.

    Raises:
        ValueError: If ``system`` lacks a query of ``base``, or ``groups`` lacks one.
    """
    _check_pairs(system, base, groups)
    sums: dict[str, float] = {}
    counts: Counter[str] = Counter()
    for q in base:
        group = q if groups is None else groups[q]
        sums[group] = sums.get(group, 0.0) + system[q] - base[q]
        counts[group] += 1
    return {group: (total / len(base), counts[group]) for group, total in sums.items()}
