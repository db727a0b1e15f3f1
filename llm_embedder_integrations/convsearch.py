"""Conversational search: retrieve passages for the current utterance of a conversation.

LLM-Embedder's ``convsearch`` task encodes the conversation (the current utterance and the ones
before it) with the query instruction, and passages with the key instruction. The query text is
the current utterance first, then the previous utterances most recent first, joined with single
spaces: the format measured on TREC CAsT (``load_dataset("trec_cast", history=True)`` builds its
queries with :func:`conversational_query`).

Example:
    >>> search = ConversationalRetriever(ChromaStore(LLMEmbedder()))  # doctest: +SKIP
    >>> search.add(passages)  # doctest: +SKIP
    >>> search.search("what about its taxes?", ["tell me about Norway"], k=3)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._validation import check_int_at_least_zero, check_k
from .encoder import validate_texts
from .instructions import get_instruction
from .store import ChromaStore, Hit, MetadataValue

__all__ = ["ConversationalRetriever", "conversational_query"]


def conversational_query(
    utterance: str, history: Sequence[str] = (), *, max_history: int | None = None
) -> str:
    """The query text of a conversational turn.

    Args:
        utterance: The current user utterance.
        history: The previous utterances of the conversation, oldest first.
        max_history: Keep only this many of the most recent previous utterances (None: all).

    Returns:
        ``utterance`` followed by the previous utterances, most recent first, joined with ``" "``
        (texts are kept as they are).

    Example:
        >>> conversational_query("and its capital?", ["tell me about Peru", "its language?"])
        'and its capital? its language? tell me about Peru'
    """
    validate_texts([utterance], "utterance")
    previous = validate_texts(history, "history")
    check_int_at_least_zero(max_history, "max_history", allow_none=True)
    if max_history is not None:
        previous = previous[len(previous) - max_history :] if max_history else []
    return " ".join([utterance, *reversed(previous)])


@dataclass
class ConversationalRetriever:
    """Search passages for a conversation's current utterance, its history included.

    Args:
        store: Holds the passages (in ``task``'s collection).
        task: Task whose instructions encode queries and passages (``"convsearch"``).
        max_history: Previous utterances used, most recent first (None: all of them; the
            encoder truncates the query, oldest utterances first, beyond its ``max_length``).
        exact: Brute-force search instead of Chroma's HNSW index.
    """

    store: ChromaStore
    task: str = "convsearch"
    max_history: int | None = None
    exact: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.store, ChromaStore):
            raise TypeError(f"`store` must be a ChromaStore, got {type(self.store).__name__}")
        get_instruction(self.task)
        check_int_at_least_zero(self.max_history, "max_history", allow_none=True)

    def add(
        self,
        passages: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, MetadataValue] | None] | None = None,
    ) -> list[str]:
        """Store passages (key instruction of the task); see :meth:`ChromaStore.add`."""
        return self.store.add(passages, task=self.task, ids=ids, metadatas=metadatas)

    def query(self, utterance: str, history: Sequence[str] = ()) -> str:
        """The query text searched for ``utterance`` after ``history`` (oldest first)."""
        return conversational_query(utterance, history, max_history=self.max_history)

    def search(
        self,
        utterance: str,
        history: Sequence[str] = (),
        *,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """The ``k`` passages best matching the conversation, best first.

        Args:
            utterance: The current user utterance.
            history: The previous utterances, oldest first.
            k: Number of passages.
            where: Chroma metadata filter on the passages.
        """
        return self.search_batch([(utterance, history)], k=k, where=where)[0]

    def search_batch(
        self,
        turns: Sequence[tuple[str, Sequence[str]]],
        *,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
    ) -> list[list[Hit]]:
        """:meth:`search` for several ``(utterance, history)`` turns, encoded in one pass."""
        check_k(k)
        if isinstance(turns, (str, tuple)) or not isinstance(turns, Sequence):
            raise TypeError(
                f"`turns` must be a list of (utterance, history) pairs, got "
                f"{type(turns).__name__}; wrap a single turn in a list"
            )
        queries = [self.query(utterance, history) for utterance, history in turns]
        return self.store.search_batch(queries, task=self.task, k=k, where=where, exact=self.exact)
