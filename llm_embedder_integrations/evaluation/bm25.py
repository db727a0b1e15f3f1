"""BM25 over a fixed corpus (bm25s, English stopwords): the lexical baseline of the benchmark.

It scores every document of the corpus for each query, so the benchmark can apply the same
per-query restrictions (filters, exclusions) to BM25 as to the embedding model.

Example:
    >>> index = BM25Index({"d1": "the cat sat", "d2": "dogs bark"})  # doctest: +SKIP
    >>> index.scores(["a cat"]).round(3)  # doctest: +SKIP
    array([[0.288, 0.   ]], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .._imports import require

__all__ = ["BM25Index"]


class BM25Index:
    """A BM25 index (Lucene variant, k1 = 1.5, b = 0.75) of ``corpus``.

    Text is lower-cased and cut into words of two or more word characters; English stopwords are
    dropped; there is no stemming. This is bm25s's default analysis with ``stopwords="en"``.

    Args:
        corpus: Document id -> text; the column order of `scores` is this mapping's order.

    Raises:
        ValueError: If ``corpus`` is empty.
        ImportError: If bm25s is not installed (the message gives the pip line).
    """

    def __init__(self, corpus: Mapping[str, str]) -> None:
        if not corpus:
            raise ValueError("`corpus` is empty: BM25 needs at least one document to index")
        require("eval", "bm25s")
        import bm25s

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

        A query made only of stopwords (or words absent from the corpus) scores 0 everywhere.

        Args:
            queries: Query texts.

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
