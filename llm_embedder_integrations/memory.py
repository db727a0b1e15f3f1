"""Memory retrieval: chunked history with positions, and neighbour expansion.

LLM-Embedder's memory augmentation (tasks ``lrlm`` and ``chat``): the history is cut into chunks of
128 tokens (a conversation into pairs of consecutive utterances), each chunk is encoded with the
key instruction and stored with its ``(source_id, position)``; the current context, encoded with
the query instruction, retrieves chunks, and each retrieved chunk_i comes back together with
chunk_i+1, its continuation.

Example:
    >>> memory = MemoryRetriever(ChromaStore(LLMEmbedder(), path="memory"), task="chat")
    ... # doctest: +SKIP
    >>> memory.add_messages([("Ann", "I adopted a cat"), ("Bob", "What is its name?"),
    ...                      ("Ann", "Miso")], source_id="ann-bob")  # doctest: +SKIP
    >>> print(memory.search("what is the name of Ann's pet?", k=1)[0].text)  # doctest: +SKIP
    Ann: I adopted a cat
    Bob: What is its name?
    Ann: Miso
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from ._validation import check_int_at_least_zero, check_positive_int, check_text
from .encoder import validate_texts
from .instructions import get_instruction
from .store import ChromaStore, Hit, MetadataValue

__all__ = [
    "DEFAULT_SPEAKERS",
    "MemoryHit",
    "MemoryRetriever",
    "MergedWindow",
    "Message",
    "chunk_spans",
    "chunk_text",
    "format_pair",
    "merge_windows",
]


K = TypeVar("K", bound=Hashable)

Message = str | tuple[str, str] | Mapping[str, str]
"""One utterance: ``"text"`` (speaker named ``Speaker 1``/``Speaker 2`` by turn),
``(speaker, text)``, or a mapping with ``speaker`` (or ``role``) and ``text`` (or ``content``)."""

DEFAULT_SPEAKERS = ("Speaker 1", "Speaker 2")
"""Names given to utterances passed as plain strings: even turns, odd turns (the paper's format)."""

_RESERVED = ("source_id", "position", "first_utterance", "utterances")
"""Metadata keys written by :class:`MemoryRetriever` on every chunk."""


# -- chunking -------------------------------------------------------------------------------------


def _count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def chunk_spans(text: str, tokenizer: Any, chunk_tokens: int = 128) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the chunks :func:`chunk_text` returns.

    The text is tokenised once (no special tokens) and cut between tokens, so that each chunk
    holds at most ``chunk_tokens`` tokens: after white space where possible, else at the start of
    a word (e.g. before punctuation), else inside a word. Chunks are slices
    of the original string: nothing is rewritten, and between two consecutive spans (and before
    the first, after the last) there is only white space.

    A word longer than ``chunk_tokens`` tokens is cut between two of its tokens. Each chunk is
    tokenised again on its own and shortened while it exceeds the limit; only a single token
    whose text alone takes more than ``chunk_tokens`` tokens can stay over it.

    Args:
        text: The text to cut.
        tokenizer: A Hugging Face *fast* tokenizer (offsets are needed), e.g. ``encoder.tokenizer``.
        chunk_tokens: Most tokens per chunk.

    Raises:
        TypeError: ``text`` is not a string, or the tokenizer gives no offsets.
        ValueError: ``text`` is empty or only white space, or ``chunk_tokens`` is not positive.
    """
    check_text(text)
    check_positive_int(chunk_tokens, "chunk_tokens")
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"chunking needs a fast (Rust) tokenizer for its character offsets, got "
            f"{type(tokenizer).__name__}; load it with AutoTokenizer.from_pretrained(..., "
            "use_fast=True)"
        )
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = encoding["offset_mapping"]
    words = encoding.word_ids()
    n = len(offsets)
    if n == 0:  # only characters the tokenizer drops: one chunk of the stripped text
        start, end = _strip_span(text, 0, len(text))
        return [(start, end)] if end > start else []

    def char_start(token: int) -> int:
        return len(text) if token >= n else offsets[token][0]

    def spaced(token: int) -> bool:
        start = offsets[token][0]
        return start > offsets[token - 1][1] and text[start - 1].isspace()

    spans: list[tuple[int, int]] = []
    first = 0
    previous_end = 0
    while first < n:
        cut = min(first + chunk_tokens, n)
        if cut < n:  # move back to a token after white space, else to the start of a word
            after_space = next((j for j in range(cut, first, -1) if spaced(j)), None)
            word_start = next((j for j in range(cut, first, -1) if words[j] != words[j - 1]), cut)
            cut = after_space if after_space is not None else word_start
        while True:
            start, end = _strip_span(text, previous_end, char_start(cut))
            if cut - first == 1 or _count(tokenizer, text[start:end]) <= chunk_tokens:
                break
            cut -= 1  # re-tokenised alone, the chunk takes more tokens: shorten it
        if end > start:
            spans.append((start, end))
        previous_end = char_start(cut)
        first = cut
    return spans


def chunk_text(text: str, tokenizer: Any, chunk_tokens: int = 128) -> list[str]:
    """Cut ``text`` into consecutive chunks of at most ``chunk_tokens`` tokens.

    The chunks cover the text in order; joined with the white space between them they give the
    text back (see :func:`chunk_spans` for the rules).

    Example:
        >>> chunk_text(play, encoder.tokenizer, chunk_tokens=128)  # doctest: +SKIP
    """
    return [text[start:end] for start, end in chunk_spans(text, tokenizer, chunk_tokens)]


def format_pair(first: tuple[str, str], second: tuple[str, str] | None = None) -> str:
    r"""One conversation chunk: ``"{speaker}: {text}\n{speaker}: {text}"`` (one line if alone)."""
    pairs = [first] if second is None else [first, second]
    return "\n".join(f"{speaker}: {text}" for speaker, text in pairs)


def _utterance(message: object, index: int, turn: int) -> tuple[str, str]:
    """``(speaker, text)`` of one message; ``turn`` is its index in the whole conversation."""
    if isinstance(message, str):
        speaker, text = DEFAULT_SPEAKERS[turn % 2], message
    elif isinstance(message, tuple) and len(message) == 2:
        speaker, text = message
    elif isinstance(message, Mapping):
        speaker = message.get("speaker", message.get("role"))
        text = message.get("text", message.get("content"))
    else:
        raise TypeError(
            f"`messages[{index}]` must be a string, a (speaker, text) pair or a mapping with "
            f"'speaker'/'role' and 'text'/'content', got {type(message).__name__}: {message!r}"
        )
    if not isinstance(speaker, str) or not speaker.strip():
        raise ValueError(f"`messages[{index}]` has no speaker name: {message!r}")
    check_text(text, f"messages[{index}] text")
    return speaker, text


# -- merging neighbour windows --------------------------------------------------------------------


@dataclass(frozen=True)
class MergedWindow(Generic[K]):
    """Hits whose neighbour windows overlap, merged into one run of consecutive keys."""

    hits: tuple[int, ...]
    """Indices (in the input order, i.e. by rank) of the hits merged here, ascending."""
    keys: tuple[K, ...]
    """The union of their windows, in sequence order, each key once."""


def _ordered_union(a: Sequence[K], b: Sequence[K]) -> list[K]:
    """Union of two overlapping runs of one sequence, in sequence order."""
    in_a = set(a)
    common = [i for i, key in enumerate(b) if key in in_a]
    return [*b[: common[0]], *a, *b[common[-1] + 1 :]]


def merge_windows(
    windows: Iterable[Sequence[K]], limit: int | None = None
) -> list[MergedWindow[K]]:
    """Merge the neighbour windows of ranked hits so that every key appears once.

    Windows are taken in rank order. A window that shares a key with earlier results is merged
    into the earliest of them (which keeps its rank; any other result it touches is merged in
    too); otherwise it starts a new result. Each window must be a run of consecutive keys of one
    sequence, in sequence order (e.g. ``[chunk_i, chunk_i+1]``), so that a union stays a run.

    Args:
        windows: One window per hit, best hit first.
        limit: Stop as soon as this many results exist (the remaining hits are not used).

    Returns:
        The merged results, best first.

    Example:
        >>> [w.keys for w in merge_windows([[5, 6], [6, 7], [1, 2]])]
        [(5, 6, 7), (1, 2)]
    """
    if limit is not None:
        check_positive_int(limit, "limit")
    groups: list[tuple[list[int], list[K]]] = []
    for index, window in enumerate(windows):
        keys = list(dict.fromkeys(window))
        touching = [g for g in groups if not set(g[1]).isdisjoint(keys)]
        if not touching:
            groups.append(([index], keys))
        else:
            hits, merged = touching[0]
            merged[:] = _ordered_union(merged, keys)
            hits.append(index)
            for other in touching[1:]:
                merged[:] = _ordered_union(merged, other[1])
                hits.extend(other[0])
                groups.remove(other)
            hits.sort()
        if limit is not None and len(groups) >= limit:
            break
    return [MergedWindow(tuple(hits), tuple(keys)) for hits, keys in groups]


# -- the retriever --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryHit:
    """One result of :meth:`MemoryRetriever.search`: a hit chunk merged with its neighbours."""

    text: str
    """The chunks' texts in position order, joined with ``"\\n"``."""
    source_id: str
    """The history (document or conversation) the chunks come from."""
    positions: tuple[int, ...]
    """Positions of the chunks in their source, ascending."""
    score: float
    """Score of the best hit merged here: cosine similarity, or the fused score on a hybrid
    store."""
    hit_position: int
    """Position of the best hit."""
    hit_positions: tuple[int, ...]
    """Positions of every hit merged here, best first."""
    chunks: tuple[Hit, ...] = field(repr=False)
    """The stored chunks (with their metadata), in position order."""

    @property
    def id(self) -> str:
        """``"{source_id}:{first}-{last}"``."""
        return f"{self.source_id}:{self.positions[0]}-{self.positions[-1]}"

    @property
    def metadata(self) -> dict[str, MetadataValue]:
        """Scalar metadata (what Chroma, LangChain and LlamaIndex can store and filter on)."""
        return {
            "source_id": self.source_id,
            "first_position": self.positions[0],
            "last_position": self.positions[-1],
            "positions": ",".join(map(str, self.positions)),
            "score": self.score,
            "hit_position": self.hit_position,
            "hit_positions": ",".join(map(str, self.hit_positions)),
        }


def _source_and_position(hit: Hit) -> tuple[str, int]:
    source, position = hit.metadata.get("source_id"), hit.metadata.get("position")
    if not isinstance(source, str) or isinstance(position, bool) or not isinstance(position, int):
        raise ValueError(
            f"stored entry {hit.id!r} has no `source_id`/`position` metadata (got "
            f"{hit.metadata!r}); the memory's collection must only hold chunks added with "
            "MemoryRetriever.add_text or add_messages: keep other texts in another task or store"
        )
    return source, position


@dataclass
class MemoryRetriever:
    """A memory of long texts and conversations, searched with neighbour expansion.

    Chunks are stored in ``store``'s collection of ``task`` with the metadata ``source_id``,
    ``position`` (0, 1, ... within the source) and, for conversations, ``first_utterance`` and
    ``utterances``; their ids are ``"{source_id}:{position}"``. A search returns each hit chunk
    with ``previous_chunks`` chunks before it and ``next_chunks`` after it (fetched by metadata,
    ordered by position; the last chunk of a source has no next).

    Overlapping windows are merged, not dropped: a later hit whose window shares a chunk with an
    earlier result joins that result (which keeps the earlier, better rank and score), so every
    chunk appears once. When merging leaves fewer than ``k`` results, more hits are fetched, so
    that exactly ``min(k, possible)`` results come back.

    Args:
        store: Where chunks live; a persistent ``ChromaStore(path=...)`` keeps the memory.
        task: ``"lrlm"`` (long texts) or ``"chat"`` (conversations); any registered task works.
        chunk_tokens: Most tokens (of the encoder's tokenizer) per chunk of :meth:`add_text`.
        next_chunks: Chunks returned after each hit (the paper: 1).
        previous_chunks: Chunks returned before each hit.
        exact: Brute-force search instead of Chroma's HNSW index.
    """

    store: ChromaStore
    task: str = "lrlm"
    chunk_tokens: int = 128
    next_chunks: int = 1
    previous_chunks: int = 0
    exact: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.store, ChromaStore):
            raise TypeError(f"`store` must be a ChromaStore, got {type(self.store).__name__}")
        get_instruction(self.task)
        check_positive_int(self.chunk_tokens, "chunk_tokens")
        check_int_at_least_zero(self.next_chunks, "next_chunks")
        check_int_at_least_zero(self.previous_chunks, "previous_chunks")
        encoder = self.store.encoder
        instruction = encoder.instruction(self.task, "key")
        overhead = (_count(encoder.tokenizer, instruction) if instruction else 0) + 2
        if self.chunk_tokens + overhead > encoder.max_length:
            raise ValueError(
                f"`chunk_tokens` ({self.chunk_tokens}) plus the key instruction and special "
                f"tokens ({overhead}) exceed the encoder's max_length ({encoder.max_length}): "
                f"chunks would be truncated; use chunk_tokens <= {encoder.max_length - overhead}"
            )

    # -- writing ----------------------------------------------------------------------------

    def _collection(self) -> Any:
        return self.store.collection(self.task)

    def _last(self, source_id: str) -> dict[str, Any] | None:
        """Metadata of the source's last stored chunk, or None for a new source."""
        got = self._collection().get(where={"source_id": source_id}, include=["metadatas"])
        metas = [m for m in got["metadatas"] if m and isinstance(m.get("position"), int)]
        return max(metas, key=lambda m: m["position"]) if metas else None

    def _store(
        self,
        texts: list[str],
        source_id: str,
        first_position: int,
        extra: list[dict[str, MetadataValue]],
        metadata: Mapping[str, MetadataValue] | None,
    ) -> list[str]:
        ids = [f"{source_id}:{first_position + i}" for i in range(len(texts))]
        metadatas = [
            {**(metadata or {}), **more, "source_id": source_id, "position": first_position + i}
            for i, more in enumerate(extra)
        ]
        return self.store.add(texts, task=self.task, ids=ids, metadatas=metadatas)

    @staticmethod
    def _check_source(source_id: object, metadata: Mapping[str, Any] | None) -> str:
        if not isinstance(source_id, str) or not source_id:
            raise ValueError(f"`source_id` must be a non-empty string, got {source_id!r}")
        reserved = sorted(set(metadata or {}) & set(_RESERVED))
        if reserved:
            raise ValueError(
                f"`metadata` keys {reserved} are written by the memory itself; rename them"
            )
        return source_id

    def add_text(
        self,
        text: str,
        *,
        source_id: str = "default",
        metadata: Mapping[str, MetadataValue] | None = None,
    ) -> list[str]:
        """Chunk ``text`` and append the chunks to ``source_id``'s history.

        Positions continue after the source's last stored chunk, so a long text can be added
        piece by piece. (A piece is chunked on its own: chunks do not straddle two calls.)

        Args:
            text: The history to store.
            source_id: Which history it continues (a document, a book, a conversation).
            metadata: Scalar metadata stored on every chunk of this call.

        Returns:
            The ids of the stored chunks.
        """
        self._check_source(source_id, metadata)
        chunks = chunk_text(text, self.store.encoder.tokenizer, self.chunk_tokens)
        last = self._last(source_id)
        start = 0 if last is None else int(last["position"]) + 1
        return self._store(chunks, source_id, start, [{} for _ in chunks], metadata)

    def add_messages(
        self,
        messages: Sequence[Message],
        *,
        source_id: str = "default",
        metadata: Mapping[str, MetadataValue] | None = None,
    ) -> list[str]:
        r"""Append utterances to a conversation, one chunk per pair of consecutive utterances.

        A chunk reads ``"{speaker}: {text}\n{speaker}: {text}"``. Pairs are formed within one
        call: with an odd number of messages, the last utterance is stored as a chunk of its own
        (it is searchable at once, and the next call starts a new pair), so adding each
        exchange as it happens gives the same chunks as adding the conversation at once.
        A pair is one chunk whatever its length (the paper's format); the encoder truncates, with
        a warning, a pair longer than its ``max_length``.

        Args:
            messages: Utterances in order (see :data:`Message`); plain strings are named
                ``Speaker 1`` and ``Speaker 2`` by their turn in the whole conversation.
            source_id: The conversation they continue.
            metadata: Scalar metadata stored on every chunk of this call (e.g. a session date).

        Returns:
            The ids of the stored chunks.
        """
        self._check_source(source_id, metadata)
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
            raise TypeError(
                f"`messages` must be a list of messages, got {type(messages).__name__}; "
                "wrap a single message in a list"
            )
        if not messages:
            raise ValueError("`messages` is empty; give at least one utterance")
        last = self._last(source_id)
        turn = 0
        if last is not None:
            turn = int(last.get("first_utterance", 0)) + int(last.get("utterances", 0))
        utterances = [_utterance(m, i, turn + i) for i, m in enumerate(messages)]
        texts, extra = [], []
        for i in range(0, len(utterances), 2):
            pair = utterances[i : i + 2]
            texts.append(format_pair(pair[0], pair[1] if len(pair) == 2 else None))
            extra.append({"first_utterance": turn + i, "utterances": len(pair)})
        start = 0 if last is None else int(last["position"]) + 1
        return self._store(texts, source_id, start, extra, metadata)

    def count(self) -> int:
        """Number of chunks stored (all sources)."""
        return int(self._collection().count())

    # -- reading ----------------------------------------------------------------------------

    def _window(self, hit: Hit) -> list[tuple[str, int]]:
        source, position = _source_and_position(hit)
        first = max(0, position - self.previous_chunks)
        return [(source, p) for p in range(first, position + self.next_chunks + 1)]

    def _fetch(self, wanted: Mapping[str, set[int]]) -> dict[tuple[str, int], Hit]:
        """Stored chunks by ``(source_id, position)``, fetched with metadata filters."""
        found: dict[tuple[str, int], Hit] = {}
        collection = self._collection()
        for source, positions in wanted.items():
            got = collection.get(
                where={"$and": [{"source_id": source}, {"position": {"$in": sorted(positions)}}]},
                include=["documents", "metadatas"],
            )
            for id_, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
                found[(source, int(meta["position"]))] = Hit(id_, doc, math.nan, dict(meta))
        return found

    def search(
        self, query: str, k: int = 4, *, where: Mapping[str, Any] | None = None
    ) -> list[MemoryHit]:
        """The ``k`` best chunks for ``query``, each with its neighbours, merged where they overlap.

        Args:
            query: The current context (encoded with the task's query instruction).
            k: Number of results; exactly ``min(k, possible)`` come back.
            where: Chroma metadata filter on the hit chunks, e.g. ``{"source_id": "conv-1"}``.
                Neighbours are fetched by source and position, whatever the filter.

        Returns:
            Results best first; an empty list for an empty memory.

        Raises:
            ValueError: ``k`` is not a positive int, or ``query`` is empty.
        """
        return self.search_batch([query], k, where=where)[0]

    def search_batch(
        self, queries: Sequence[str], k: int = 4, *, where: Mapping[str, Any] | None = None
    ) -> list[list[MemoryHit]]:
        """:meth:`search` for several queries, encoded in one pass."""
        items = validate_texts(queries, "query")
        return self._search(items, None, k, where)

    def search_by_vectors(
        self, vectors: np.ndarray, k: int = 4, *, where: Mapping[str, Any] | None = None
    ) -> list[list[MemoryHit]]:
        """:meth:`search` with query embeddings already computed (rows L2-normalised).

        Dense search only: on a hybrid store, use :meth:`search_batch` (BM25 needs the texts).
        """
        return self._search(None, vectors, k, where)

    def _search(
        self,
        queries: list[str] | None,
        vectors: np.ndarray | None,
        k: int,
        where: Mapping[str, Any] | None,
    ) -> list[list[MemoryHit]]:
        def enough(_row: int, hits: list[Hit]) -> bool:
            return len(merge_windows([self._window(h) for h in hits], limit=k)) >= k

        found = self.store.search_batch(
            queries,
            task=self.task,
            k=k,
            vectors=vectors,
            where=where,
            enough=enough,
            exact=self.exact,
        )
        return [self._results(hits, k) for hits in found]

    def _results(self, hits: list[Hit], k: int) -> list[MemoryHit]:
        """The hits merged with their neighbours into at most ``k`` results."""
        groups = merge_windows([self._window(h) for h in hits], limit=k)
        wanted: dict[str, set[int]] = defaultdict(set)
        known = {_source_and_position(h): h for h in hits}
        for group in groups:
            for key in group.keys:
                if key not in known:
                    wanted[key[0]].add(key[1])
        known.update(self._fetch(wanted))
        results = []
        for group in groups:
            chunks = sorted(
                (known[key] for key in group.keys if key in known),
                key=lambda h: int(h.metadata["position"]),
            )
            best = hits[group.hits[0]]
            source, position = _source_and_position(best)
            results.append(
                MemoryHit(
                    text="\n".join(c.text for c in chunks),
                    source_id=source,
                    positions=tuple(int(c.metadata["position"]) for c in chunks),
                    score=best.score,
                    hit_position=position,
                    hit_positions=tuple(_source_and_position(hits[i])[1] for i in group.hits),
                    chunks=tuple(chunks),
                )
            )
        return results
