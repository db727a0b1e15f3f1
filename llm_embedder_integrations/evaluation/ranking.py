"""Rankings for the benchmark: BM25 as a baseline, and the store's own search for the model.

The model rows rank through `ChromaStore.search_batch`, the search that users run (exact, HNSW or
hybrid), so that the benchmark measures that code. BM25 alone is a baseline with no store
counterpart and ranks here, with numpy. Every ranking respects the dataset's per-query
restrictions: the metadata ``"filter"`` (LoCoMo: a question searches only its own conversation)
and ``exclude`` (SNI: the example itself; Tiny Shakespeare: the query chunk and every later one).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._validation import check_k
from ..lexical import BM25Index, Hybrid
from ..store import ChromaStore
from .datasets import RetrievalDataset

__all__ = [
    "K",
    "add_corpus",
    "allowed_mask",
    "hnsw_overlap",
    "rank_bm25",
    "rank_with_store",
]

K = 10
"""Default depth of every ranking (and of the HNSW-vs-exact overlap)."""


def allowed_mask(ds: RetrievalDataset, qids: Sequence[str]) -> np.ndarray:
    """Which documents each query may retrieve: the vectorised `RetrievalDataset.candidate_ids`.

    Args:
        ds: The dataset.
        qids: Query ids of ``ds``.

    Returns:
        Boolean array ``(len(qids), len(ds.corpus))``, columns in corpus order: True where the
        document matches the query's ``metadata["filter"]`` and is not in its ``exclude``.

    Raises:
        KeyError: If a query id is not in ``ds``.
    """
    doc_ids = list(ds.corpus)
    column = {doc: j for j, doc in enumerate(doc_ids)}
    by_filter: dict[tuple[tuple[str, Any], ...], np.ndarray] = {}
    mask = np.ones((len(qids), len(doc_ids)), dtype=bool)
    for row, qid in enumerate(qids):
        if qid not in ds.queries:
            raise KeyError(f"{qid!r} is not a query of {ds!r}")
        where = ds.metadata.get(qid, {}).get("filter") or {}
        if where:
            key = tuple(sorted(where.items()))
            if key not in by_filter:
                by_filter[key] = np.array(
                    [
                        all(ds.doc_metadata.get(doc, {}).get(k) == v for k, v in where.items())
                        for doc in doc_ids
                    ],
                    dtype=bool,
                )
            mask[row] = by_filter[key]
        banned = [column[doc] for doc in ds.exclude.get(qid, ()) if doc in column]
        mask[row, banned] = False
    return mask


def _top_k(scores: np.ndarray, mask: np.ndarray, doc_ids: Sequence[str], k: int) -> list[list[str]]:
    """The ``k`` best allowed documents of every row, best first; ties keep corpus order."""
    masked = np.where(mask, scores, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    counts = mask.sum(axis=1)
    return [
        [doc_ids[j] for j in order[row, : min(k, int(counts[row]))]] for row in range(len(order))
    ]


def rank_bm25(
    ds: RetrievalDataset,
    *,
    qids: Sequence[str] | None = None,
    k: int = K,
    index: BM25Index | None = None,
) -> dict[str, list[str]]:
    """Rank with BM25 over ``ds.corpus``, within each query's restrictions.

    Args:
        ds: The dataset.
        qids: The queries; default all, in ``ds`` order.
        k: Ranking depth.
        index: A `BM25Index` of ``ds.corpus`` (same ids, same order) to reuse; built if None.

    Returns:
        Query id -> the ``k`` best allowed document ids. Documents scoring 0 may fill the end of
        a ranking, in corpus order.
    """
    check_k(k)
    qids = list(ds.queries) if qids is None else list(qids)
    index = BM25Index(ds.corpus) if index is None else index
    if index.ids != list(ds.corpus):
        raise ValueError("`index` was built on another corpus; build it from `ds.corpus`")
    scores = index.scores([ds.queries[q] for q in qids])
    return dict(zip(qids, _top_k(scores, allowed_mask(ds, qids), index.ids, k), strict=True))


def _filter_keys(ds: RetrievalDataset) -> list[str]:
    return sorted({key for meta in ds.metadata.values() for key in meta.get("filter") or {}})


def add_corpus(store: ChromaStore, ds: RetrievalDataset, doc_vectors: np.ndarray) -> None:
    """Add ``ds.corpus`` with precomputed key vectors to ``store``'s collection for ``ds.task``.

    Each document carries the ``doc_metadata`` fields that the queries' filters name, so that
    `rank_with_store` can pass the filters to Chroma as where-clauses.
    """
    keys = _filter_keys(ds)
    doc_ids = list(ds.corpus)
    metadatas = None
    if keys:
        metadatas = [{k: ds.doc_metadata.get(doc, {}).get(k) for k in keys} for doc in doc_ids]
    store.add(
        [ds.corpus[d] for d in doc_ids],
        task=ds.task,
        ids=doc_ids,
        metadatas=metadatas,
        embeddings=doc_vectors,
    )


def _where(where: Mapping[str, Any]) -> dict[str, Any] | None:
    if not where:
        return None
    if len(where) == 1:
        return dict(where)
    return {"$and": [{k: v} for k, v in sorted(where.items())]}


def rank_with_store(
    ds: RetrievalDataset,
    store: ChromaStore,
    query_vectors: np.ndarray,
    *,
    qids: Sequence[str] | None = None,
    k: int = K,
    exact: bool = False,
    hybrid: Hybrid | None = None,
) -> dict[str, list[str]]:
    """Rank through `ChromaStore.search_batch`; the corpus must have been added with `add_corpus`.

    A query's ``metadata["filter"]`` becomes a Chroma where-clause and its ``exclude`` the
    search's exclusions (the store fetches further to still return ``k``).

    Args:
        ds: The dataset.
        store: A store whose ``ds.task`` collection holds the corpus.
        query_vectors: One row per query of ``qids`` (encoded with the query instruction).
        qids: The queries, in the order of ``query_vectors``; default all, in ``ds`` order.
        k: Ranking depth.
        exact: Brute-force search instead of the HNSW index.
        hybrid: Fuse the dense ranking with BM25 (the query texts are passed along); None for
            dense only.

    Returns:
        Query id -> up to ``k`` document ids, best first.
    """
    check_k(k)
    qids = list(ds.queries) if qids is None else list(qids)
    vectors = np.asarray(query_vectors, dtype=np.float32)
    if len(vectors) != len(qids):
        raise ValueError(f"got {len(vectors)} query vectors for {len(qids)} queries")
    groups: dict[tuple[tuple[str, Any], ...], list[int]] = defaultdict(list)
    for row, qid in enumerate(qids):
        groups[tuple(sorted((ds.metadata.get(qid, {}).get("filter") or {}).items()))].append(row)
    run: dict[str, list[str]] = {}
    for where, rows in groups.items():
        found = store.search_batch(
            [ds.queries[qids[row]] for row in rows],
            task=ds.task,
            k=k,
            vectors=vectors[rows],
            where=_where(dict(where)),
            exclude=[ds.exclude.get(qids[row], set()) for row in rows],
            exact=exact,
            hybrid=hybrid or False,
        )
        for row, hits in zip(rows, found, strict=True):
            run[qids[row]] = [h.id for h in hits]
    return {qid: run[qid] for qid in qids}


def hnsw_overlap(
    approximate: Mapping[str, Sequence[str]], exact: Mapping[str, Sequence[str]], k: int = K
) -> float:
    """Recall@k of approximate search against exact search: mean |top-k ∩ exact top-k| / |exact|.

    Queries whose exact ranking is empty are skipped; NaN if every one is.
    """
    check_k(k)
    shares = [
        len(set(approximate.get(qid, ())[:k]) & set(ranking[:k])) / len(ranking[:k])
        for qid, ranking in exact.items()
        if ranking
    ]
    return math.fsum(shares) / len(shares) if shares else math.nan
