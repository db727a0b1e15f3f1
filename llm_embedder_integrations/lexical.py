"""Lexical retrieval (BM25 via ``bm25s``) and reciprocal rank fusion, for hybrid search.

BM25 beats a small dense model on some data (names, rare words: LoCoMo, XQuAD with MiniLM) and
loses on others (paraphrase: tools, conversational search, examples); fusing both rankings keeps
most of the better one's quality on each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._validation import check_int_at_least_zero, check_positive_int

__all__ = ["BM25Index", "Hybrid", "reciprocal_rank_fusion"]


class BM25Index:
    """A BM25 index (bm25s' Lucene variant, k1 = 1.5, b = 0.75) of ``corpus``.

    Text is lower-cased and cut into words of two or more word characters; English stopwords are
    dropped; there is no stemming.

    Args:
        corpus: Document id -> text; the column order of :meth:`scores` is this mapping's order.

    Raises:
        ValueError: If ``corpus`` is empty.
    """

    def __init__(self, corpus: Mapping[str, str]) -> None:
        if not corpus:
            raise ValueError("`corpus` is empty: BM25 needs at least one document to index")
        import bm25s  # with numba and scipy: loaded on first use, not on import

        self.ids: list[str] = list(corpus)
        tokens = bm25s.tokenize([corpus[i] for i in self.ids], stopwords="en", show_progress=False)
        self._index = bm25s.BM25()
        self._index.index(tokens, show_progress=False)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"BM25Index({len(self.ids)} documents)"

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """Score every document for every query.

        A query made only of stopwords (or of words absent from the corpus) scores 0 everywhere.

        Returns:
            Array of shape ``(len(queries), len(corpus))``, float32, columns in corpus order.
        """
        if isinstance(queries, str):
            raise TypeError("`queries` must be a list of strings; wrap a single query in a list")
        import bm25s

        tokenized = bm25s.tokenize(
            list(queries), stopwords="en", return_ids=False, show_progress=False
        )
        out = np.zeros((len(tokenized), len(self.ids)), dtype=np.float32)
        for row, words in enumerate(tokenized):
            if words:
                out[row] = self._index.get_scores(words)
        return out

    def top_k(
        self, queries: Sequence[str], k: int, allowed: set[str] | None = None
    ) -> list[list[tuple[str, float]]]:
        """The ``k`` best ``(id, score)`` of each query, among ``allowed`` ids, scores > 0 only."""
        scores = self.scores(queries)
        if allowed is not None:
            mask = np.array([i not in allowed for i in self.ids])
            scores[:, mask] = 0.0
        out = []
        for row in scores:
            top = min(k, len(row))
            cand = np.argpartition(-row, top - 1)[:top]
            ranked = cand[np.argsort(-row[cand], kind="stable")]
            out.append([(self.ids[j], float(row[j])) for j in ranked if row[j] > 0])
        return out


@dataclass(frozen=True)
class Hybrid:
    """Settings of hybrid (dense + BM25) search, fused by reciprocal rank fusion.

    A document's fused score is ``sum(weight / (rrf_k + rank))`` over the rankings that hold it
    (ranks start at 1).
    """

    dense_weight: float = 1.0
    """Weight of the embedding ranking."""
    lexical_weight: float = 1.0
    """Weight of the BM25 ranking."""
    rrf_k: int = 60
    """RRF constant: larger flattens the gap between top ranks."""
    candidates: int = 50
    """Depth of each ranking before fusion (raised to ``k`` when ``k`` is larger)."""

    def __post_init__(self) -> None:
        for name in ("dense_weight", "lexical_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{name}` must be a number >= 0, got {value!r}")
        if self.dense_weight == 0 and self.lexical_weight == 0:
            raise ValueError("`dense_weight` and `lexical_weight` are both 0: nothing to rank by")
        check_int_at_least_zero(self.rrf_k, "rrf_k")
        check_positive_int(self.candidates, "candidates")


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], weights: Sequence[float], rrf_k: int = 60
) -> list[tuple[str, float]]:
    """Fuse rankings (ids, best first) into one, best first, with weighted RRF scores.

    Ties keep the order in which ids were first seen (earlier rankings first).
    """
    if len(rankings) != len(weights):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, doc_id in enumerate(ranking, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + weight / (rrf_k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])
