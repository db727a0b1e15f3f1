"""A Chroma-backed store of keys, one collection per task.

Keys are encoded with their task's key instruction and stored in a cosine-space collection named
``"{name}-{task}"``. Each collection records the model that filled it (name, dimension,
instructions), so reopening it with another model is a clear error rather than silent garbage.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._validation import check_k
from .encoder import LLMEmbedder, validate_texts
from .instructions import get_instruction
from .lexical import BM25Index, Hybrid, reciprocal_rank_fusion

__all__ = ["ChromaStore", "Hit", "Hybrid", "StoreMismatchError", "text_id"]

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,400}[a-zA-Z0-9]$")
_ADD_CHUNK = 512
"""Texts encoded and committed together: an interrupted add keeps every finished chunk."""

MetadataValue = str | int | float | bool | None


class StoreMismatchError(ValueError):
    """A collection was built with another model, dimension or instruction setting."""


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    text: str
    score: float
    """Cosine similarity to the query (1 is identical direction)."""
    metadata: dict[str, Any] = field(default_factory=dict)


def text_id(text: str) -> str:
    """Default id of a text: a hash of its content (the same text added twice is one entry)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _hybrid_setting(value: bool | Hybrid | None, default: Hybrid | None) -> Hybrid | None:
    if value is None:
        return default
    if isinstance(value, Hybrid):
        return value
    if value is True:
        return default or Hybrid()
    if value is False:
        return None
    raise TypeError(f"`hybrid` must be True, False, None or a Hybrid, got {value!r}")


def _check_vectors(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"`{what}` must have shape (n, {dim}), got {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise ValueError(
            f"`{what}[{int(bad[0])}]` contains NaN or infinity ({bad.size} rows in all); "
            "nothing was stored"
        )
    return array


def _check_metadatas(
    metadatas: Sequence[Mapping[str, Any] | None] | None, n: int
) -> list[dict[str, Any] | None]:
    if metadatas is None:
        return [None] * n
    if isinstance(metadatas, Mapping) or len(metadatas) != n:
        raise ValueError(
            f"`metadatas` must be a list with one dict per text ({n}), got "
            f"{type(metadatas).__name__} of length {len(metadatas)}"
        )
    out: list[dict[str, Any] | None] = []
    for i, meta in enumerate(metadatas):
        if meta is None or len(meta) == 0:
            out.append(None)
            continue
        if not isinstance(meta, Mapping):
            raise TypeError(f"`metadatas[{i}]` must be a dict, got {type(meta).__name__}")
        for key, value in meta.items():
            if not isinstance(key, str):
                raise TypeError(f"`metadatas[{i}]` has a non-string key {key!r}")
            if not isinstance(value, (str, int, float, bool)) and value is not None:
                raise TypeError(
                    f"`metadatas[{i}][{key!r}]` is {type(value).__name__}; Chroma stores only "
                    "str, int, float, bool or None: convert it (e.g. json.dumps)"
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"`metadatas[{i}][{key!r}]` is {value}; store a finite number")
        out.append(dict(meta))
    return out


def _check_ids(ids: Sequence[str] | None, texts: list[str]) -> list[str]:
    if ids is None:
        first: dict[str, int] = {}
        for i, text in enumerate(texts):
            j = first.setdefault(text, i)
            if j != i:
                raise ValueError(
                    f"`texts[{i}]` repeats `texts[{j}]`; the default id is a hash of the text, "
                    "so a text may appear once per call: drop the repeat or pass `ids`"
                )
        return [text_id(t) for t in texts]
    if isinstance(ids, str) or len(ids) != len(texts):
        raise ValueError(f"`ids` must be a list with one id per text ({len(texts)}), got {ids!r}")
    seen: dict[str, int] = {}
    for i, id_ in enumerate(ids):
        if not isinstance(id_, str) or not id_:
            raise TypeError(f"`ids[{i}]` must be a non-empty string, got {id_!r}")
        if id_ in seen:
            raise ValueError(
                f"`ids[{i}]` repeats `ids[{seen[id_]}]` ({id_!r}); ids in one call must be unique"
            )
        seen[id_] = i
    return list(ids)


def _unreachable(exc: Exception) -> bool:
    """Whether ``exc`` is a Chroma HTTP client failing to reach its server."""
    try:
        import httpx
    except ImportError:  # no HTTP client installed: not a server error
        return False
    return isinstance(exc, httpx.TransportError)


class ChromaStore:
    """Task-aware vector store on Chroma: one cosine collection per task.

    Args:
        encoder: Encodes keys (key instruction) and queries (query instruction).
        path: Directory of an embedded persistent Chroma; None keeps everything in memory.
        client: An existing Chroma client (e.g. ``chromadb.HttpClient``); excludes ``path``.
        name: Collection prefix; collections are named ``"{name}-{task}"``. In-memory stores get
            a unique prefix by default, since Chroma shares in-memory data within a process.
        hnsw: HNSW settings for new collections (``ef_search``, ``ef_construction``,
            ``max_neighbors``); they take effect only when a collection is created.
        hybrid: Default search mode: False for dense only, True (or a :class:`Hybrid`) to fuse
            dense and BM25 rankings. Every component built on this store inherits it; each
            search call can override it. The BM25 index is derived from the stored texts: it
            is rebuilt after this store adds or deletes, and on first use after reopening, so it
            always matches what Chroma holds.
    """

    def __init__(
        self,
        encoder: LLMEmbedder,
        *,
        path: str | os.PathLike[str] | None = None,
        client: Any | None = None,
        name: str | None = None,
        hnsw: Mapping[str, int] | None = None,
        hybrid: bool | Hybrid = False,
    ) -> None:
        import chromadb

        if path is not None and client is not None:
            raise ValueError("pass either `path` or `client`, not both")
        if client is None:
            settings = chromadb.Settings(anonymized_telemetry=False)
            if path is None:
                client = chromadb.EphemeralClient(settings=settings)
                name = name or f"mem-{uuid.uuid4().hex[:12]}"
            else:
                os.makedirs(path, exist_ok=True)
                client = chromadb.PersistentClient(path=os.fspath(path), settings=settings)
        name = name or "llm-embedder"
        if not _NAME_RE.match(f"{name}-qa"):
            raise ValueError(
                f"`name` must be letters, digits, '.', '_' or '-', starting and ending with a "
                f"letter or digit; got {name!r}"
            )
        allowed = {"ef_search", "ef_construction", "max_neighbors"}
        if hnsw is not None and not set(hnsw) <= allowed:
            raise ValueError(f"unknown `hnsw` keys {sorted(set(hnsw) - allowed)}; use {allowed}")
        self.encoder = encoder
        self.client = client
        self.name = name
        self.path = None if path is None else os.fspath(path)
        self._hnsw = dict(hnsw or {})
        self.hybrid = _hybrid_setting(hybrid, None)
        self._collections: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._lexical_cache: dict[str, tuple[int, int, BM25Index | None]] = {}

    @classmethod
    def http(
        cls,
        encoder: LLMEmbedder,
        host: str = "localhost",
        port: int = 8000,
        *,
        ssl: bool = False,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        hnsw: Mapping[str, int] | None = None,
        hybrid: bool | Hybrid = False,
    ) -> ChromaStore:
        """A store on a Chroma server (``chroma run --path DIR``), to scale past one machine.

        ``name``, ``hnsw`` and ``hybrid`` are as in the constructor.
        """
        import chromadb

        client = chromadb.HttpClient(
            host=host,
            port=port,
            ssl=ssl,
            headers=dict(headers or {}),
            settings=chromadb.Settings(anonymized_telemetry=False),
        )
        return cls(encoder, client=client, name=name, hnsw=hnsw, hybrid=hybrid)

    def __repr__(self) -> str:
        where = self.path or type(self.client).__name__
        return f"ChromaStore(name={self.name!r}, at={where!r}, encoder={self.encoder!r})"

    # -- collections ----------------------------------------------------------------------

    def collection_name(self, task: str) -> str:
        """Name of ``task``'s collection."""
        get_instruction(task)
        return f"{self.name}-{task}"

    def _record(self, task: str) -> dict[str, Any]:
        return {
            "llm_embedder:model": self.encoder.model_id,
            "llm_embedder:dim": self.encoder.dim,
            "llm_embedder:task": task,
            "llm_embedder:key_instruction": self.encoder.instruction(task, "key"),
        }

    def collection(self, task: str) -> Any:
        """``task``'s Chroma collection, created on first use and checked against the encoder.

        Raises:
            StoreMismatchError: the collection was filled by another model or setting.
        """
        with self._lock:
            cached = self._collections.get(task)
            if cached is not None:
                return cached
            name = self.collection_name(task)
            record = self._record(task)
            configuration = {"hnsw": {"space": "cosine", **self._hnsw}}
            collection = self.client.get_or_create_collection(
                name, configuration=configuration, metadata=record, embedding_function=None
            )
            self._check_record(collection, record)
            self._collections[task] = collection
            return collection

    def _check_record(self, collection: Any, record: dict[str, Any]) -> None:
        found = dict(collection.metadata or {})
        differs = [k for k in record if found.get(k) != record[k]]
        if not differs:
            return
        if "llm_embedder:model" not in found and collection.count() == 0:
            collection.modify(metadata={**found, **record})  # an empty foreign collection: adopt
            return

        def describe(meta: Mapping[str, Any]) -> str:
            instr = meta.get("llm_embedder:key_instruction")
            return (
                f"model {meta.get('llm_embedder:model')!r} (dim {meta.get('llm_embedder:dim')}, "
                f"key instruction {instr!r})"
            )

        raise StoreMismatchError(
            f"collection {collection.name!r} was built with {describe(found)}, but this store's "
            f"encoder is {describe(record)}; their vectors are not comparable. Open it with the "
            "same model and instruction setting, use another `name` or path, or drop it with "
            "store.reset(task) and re-add the texts."
        )

    def reset(self, task: str) -> None:
        """Delete ``task``'s collection and everything in it."""
        name = self.collection_name(task)
        with self._lock:
            self._collections.pop(task, None)
            self._changed(task)
            if name in {c.name for c in self.client.list_collections()}:
                self.client.delete_collection(name)

    def _changed(self, task: str) -> None:
        self._versions[task] = self._versions.get(task, 0) + 1

    # -- writing ----------------------------------------------------------------------------

    def add(
        self,
        texts: Sequence[str],
        *,
        task: str,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, MetadataValue] | None] | None = None,
        embeddings: np.ndarray | None = None,
    ) -> list[str]:
        """Encode ``texts`` with ``task``'s key instruction and upsert them.

        Args:
            texts: Texts to store.
            task: Task whose collection receives them.
            ids: One id per text; by default a hash of the text. An id already stored is
                replaced (upsert), so adding the same id twice keeps one entry, the latest.
            metadatas: One dict (or None) per text; values str, int, float, bool or None.
            embeddings: Precomputed key embeddings (n, dim); skips encoding.

        Returns:
            The ids, in input order.

        Raises:
            TypeError, ValueError: on bad input, before anything is written.
        """
        items = validate_texts(texts, "texts")
        id_list = _check_ids(ids, items)
        metas = _check_metadatas(metadatas, len(items))
        if embeddings is not None:
            vectors = _check_vectors(embeddings, self.encoder.dim, "embeddings")
            if len(vectors) != len(items):
                raise ValueError(f"`embeddings` has {len(vectors)} rows for {len(items)} texts")
        collection = self.collection(task)
        step = min(_ADD_CHUNK, self.client.get_max_batch_size())
        for start in range(0, len(items), step):
            chunk = slice(start, start + step)
            if embeddings is None:
                chunk_vectors = self.encoder.encode_keys(items[chunk], task=task)
            else:
                chunk_vectors = vectors[chunk]
            _check_vectors(chunk_vectors, self.encoder.dim, "embeddings")
            try:
                collection.upsert(
                    ids=id_list[chunk],
                    embeddings=chunk_vectors,
                    documents=items[chunk],
                    metadatas=metas[chunk] if any(m is not None for m in metas[chunk]) else None,
                )
            except Exception as exc:
                if not _unreachable(exc):
                    raise
                raise ConnectionError(
                    f"the Chroma server did not answer while adding to {collection.name!r} "
                    f"({exc}); the first {start} of {len(items)} texts were stored and are kept, "
                    "the rest were not. Add them again once it is back: ids already stored are "
                    "replaced, not duplicated"
                ) from exc
            self._changed(task)
        return id_list

    def delete(
        self,
        ids: Sequence[str] | None = None,
        *,
        task: str,
        where: Mapping[str, Any] | None = None,
    ) -> None:
        """Delete entries by id and/or metadata filter; ids that are not stored are ignored."""
        if ids is None and where is None:
            raise ValueError("pass `ids` or `where`; to drop a whole task use store.reset(task)")
        if isinstance(ids, str):
            raise TypeError("`ids` must be a list of ids; wrap a single id in a list")
        if ids is not None and len(ids) == 0 and where is None:
            return
        self.collection(task).delete(ids=list(ids) if ids else None, where=where or None)
        self._changed(task)

    # -- reading ----------------------------------------------------------------------------

    def count(self, task: str) -> int:
        """Number of entries stored for ``task``."""
        return int(self.collection(task).count())

    def get(self, ids: Sequence[str], *, task: str) -> list[Hit]:
        """Stored entries by id, in the order asked; missing ids are left out. Scores are NaN."""
        if isinstance(ids, str):
            raise TypeError("`ids` must be a list of ids; wrap a single id in a list")
        if not ids:
            return []
        got = self.collection(task).get(ids=list(ids), include=["documents", "metadatas"])
        found = {
            i: Hit(i, d, math.nan, dict(m or {}))
            for i, d, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        }
        return [found[i] for i in ids if i in found]

    def search(
        self,
        query: str,
        *,
        task: str,
        k: int = 4,
        where: Mapping[str, Any] | None = None,
        exclude: Collection[str] = (),
        exact: bool = False,
        hybrid: bool | Hybrid | None = None,
    ) -> list[Hit]:
        """The ``k`` entries of ``task`` closest to ``query`` (encoded with the query instruction).

        Args:
            query: The text to search with.
            task: The task whose instructions and collection to use.
            k: Number of results (fewer when fewer are stored).
            where: Chroma metadata filter, e.g. ``{"source": "a.txt"}``.
            exclude: Ids never to return; the search fetches further to still return ``k``.
            exact: Brute-force cosine search instead of Chroma's HNSW index.
            hybrid: Fuse dense and BM25 rankings (None: the store's default). Scores are then
                reciprocal-rank-fusion scores, not cosine similarities.
        """
        return self.search_batch(
            [query],
            task=task,
            k=k,
            where=where,
            exclude=[exclude],
            exact=exact,
            hybrid=hybrid,
        )[0]

    def search_batch(
        self,
        queries: Sequence[str] | None = None,
        *,
        task: str,
        k: int = 4,
        vectors: np.ndarray | None = None,
        where: Mapping[str, Any] | None = None,
        exclude: Sequence[Collection[str]] | None = None,
        enough: Callable[[int, list[Hit]], bool] | None = None,
        exact: bool = False,
        hybrid: bool | Hybrid | None = None,
    ) -> list[list[Hit]]:
        """Search for several queries at once: the one search path of the package.

        Every component (memory, examples, tools, conversational search, the benchmark) searches
        through here, so that exact, HNSW and hybrid search, filters and exclusions behave the
        same everywhere.

        Args:
            queries: The query texts, encoded in one pass (query instruction of ``task``).
                Needed for hybrid search (BM25 reads the text); may be None with ``vectors``.
            task: The task whose instructions and collection to use.
            k: Results per query (fewer when fewer are stored or allowed).
            vectors: The queries' embeddings, already computed (rows L2-normalised); with
                ``queries`` as well, they must be the same queries in the same order.
            where: Chroma metadata filter for every query, e.g. ``{"source": "a.txt"}``.
            exclude: One collection of ids per query that the query must never return.
            enough: The over-fetch rule: ``enough(i, hits)`` says whether the hits of query
                ``i`` (best first, exclusions removed) make its ``k`` results. The store fetches
                more (twice as many each time) until the rule holds or nothing more is stored,
                and returns every hit it fetched, for the caller to build its results from.
                Default: at least ``k`` hits, of which the first ``k`` are returned.
            exact: Brute-force cosine search instead of Chroma's HNSW index.
            hybrid: Fuse dense and BM25 rankings (None: the store's default). Each ranking is
                cut to ``max(k, candidates)`` allowed entries before fusion; scores are then
                reciprocal-rank-fusion scores, not cosine similarities.

        Returns:
            One list of hits per query, best first.

        Raises:
            TypeError: Neither ``queries`` nor ``vectors`` is given.
            ValueError: ``k`` is not a positive int; ``queries`` and ``vectors`` disagree;
                hybrid search without the query texts.
        """
        check_k(k)
        setting = _hybrid_setting(hybrid, self.hybrid)
        items = None if queries is None else validate_texts(queries, "queries")
        if vectors is not None:
            vectors = _check_vectors(vectors, self.encoder.dim, "vectors")
            if items is not None and len(items) != len(vectors):
                raise ValueError(
                    f"got {len(items)} queries and {len(vectors)} query vectors; pass one "
                    "vector per query, in the same order"
                )
        if items is None:
            if vectors is None:
                raise TypeError(
                    "`queries` must be a list of strings, got NoneType: pass the query texts, "
                    "their `vectors`, or both"
                )
            if setting is not None:
                raise ValueError(
                    "hybrid search needs the query texts for BM25: pass `queries` along with "
                    "`vectors`, or hybrid=False for a dense-only search"
                )
        n_queries = len(vectors) if vectors is not None else len(items or ())
        banned = _check_exclude(exclude, n_queries)
        if n_queries == 0:
            return []
        if vectors is None:
            vectors = self.encoder.encode_queries(items or [], task=task)
        dense = _DenseRanking(self.collection(task), vectors, where, exact)
        lexical = None if setting is None else self._lexical(task, where)
        depth = k if setting is None else max(k, setting.candidates)
        fetch = [depth + len(b) for b in banned]
        results: list[list[Hit]] = [[] for _ in range(n_queries)]
        pending = list(range(n_queries))
        while pending:
            groups: dict[int, list[int]] = defaultdict(list)
            for row in pending:
                groups[fetch[row]].append(row)
            pending = []
            for size, rows in groups.items():
                found = dense.top(rows, size)
                words = None
                if lexical is not None and items is not None:
                    words = lexical.top([items[r] for r in rows], size)
                for i, row in enumerate(rows):
                    keep = size - len(banned[row])
                    hits = [h for h in found[i] if h.id not in banned[row]][:keep]
                    if setting is not None and words is not None:
                        ranked = [d for d in words[i] if d not in banned[row]][:keep]
                        hits = self._fuse(task, hits, ranked, setting)
                    exhausted = len(found[i]) < size
                    if exhausted or (len(hits) >= k if enough is None else enough(row, hits)):
                        results[row] = hits if enough is not None else hits[:k]
                    else:
                        fetch[row] = 2 * size
                        pending.append(row)
        return results

    def search_by_vectors(
        self,
        vectors: np.ndarray,
        *,
        task: str,
        k: int = 4,
        where: Mapping[str, Any] | None = None,
        exact: bool = False,
        hybrid: bool | Hybrid | None = None,
    ) -> list[list[Hit]]:
        """Search with query embeddings already computed (rows L2-normalised).

        Dense search only: hybrid search needs the texts, so on a hybrid store pass
        ``hybrid=False`` here, or call :meth:`search_batch` with ``queries`` and ``vectors``.
        """
        return self.search_batch(
            None, task=task, k=k, vectors=vectors, where=where, exact=exact, hybrid=hybrid
        )

    def _lexical(self, task: str, where: Mapping[str, Any] | None) -> _LexicalRanking:
        """BM25 over the task's stored texts (rebuilt when they changed), within ``where``."""
        collection = self.collection(task)
        version, count = self._versions.get(task, 0), collection.count()
        cached = self._lexical_cache.get(task)
        if cached is not None and cached[:2] == (version, count):
            index = cached[2]
        else:
            got = collection.get(include=["documents"])
            index = (
                BM25Index(dict(zip(got["ids"], got["documents"], strict=True))) if count else None
            )
            self._lexical_cache[task] = (version, count, index)
        allowed = None
        if where and index is not None:
            allowed = set(collection.get(where=where, include=[])["ids"])
        return _LexicalRanking(index, allowed)

    def _fuse(self, task: str, dense: list[Hit], lexical: list[str], setting: Hybrid) -> list[Hit]:
        fused = reciprocal_rank_fusion(
            [[h.id for h in dense], lexical],
            [setting.dense_weight, setting.lexical_weight],
            setting.rrf_k,
        )
        known = {h.id: h for h in dense}
        missing = [i for i, _ in fused if i not in known]
        known.update({h.id: h for h in self.get(missing, task=task)})
        return [Hit(i, known[i].text, score, known[i].metadata) for i, score in fused if i in known]


def _check_exclude(exclude: Sequence[Collection[str]] | None, n: int) -> list[Collection[str]]:
    if exclude is None:
        return [() for _ in range(n)]
    if isinstance(exclude, (str, Mapping)) or len(exclude) != n:
        raise ValueError(
            f"`exclude` must be a list with one collection of ids per query ({n}), got {exclude!r}"
        )
    for i, ids in enumerate(exclude):
        if isinstance(ids, str):
            raise TypeError(
                f"`exclude[{i}]` is the string {ids!r}; give a list of ids (wrap one id in a list)"
            )
    return [ids if isinstance(ids, (set, frozenset)) else set(ids) for ids in exclude]


class _DenseRanking:
    """The dense ranking of some query vectors, fetched as deep as asked."""

    def __init__(
        self, collection: Any, vectors: np.ndarray, where: Mapping[str, Any] | None, exact: bool
    ) -> None:
        self.collection = collection
        self.vectors = vectors
        self.where = where or None
        self.exact = exact
        self._keys: tuple[dict[str, Any], np.ndarray] | None = None

    def top(self, rows: list[int], n: int) -> list[list[Hit]]:
        """The ``n`` best hits of each query of ``rows`` (fewer when fewer are stored)."""
        if self.exact:
            return self._exact(self.vectors[rows], n)
        # Chroma returns fewer than n hits from a smaller (or empty) collection by itself. A
        # count() first cost more than the search at 100k vectors (SQLite counts by scanning).
        result = self.collection.query(
            query_embeddings=self.vectors[rows],
            n_results=n,
            where=self.where,
            include=["documents", "metadatas", "distances"],
        )
        return [
            [
                Hit(i, d, 1.0 - float(dist), dict(m or {}))
                for i, d, m, dist in zip(ids, docs, metas, dists, strict=True)
            ]
            for ids, docs, metas, dists in zip(
                result["ids"],
                result["documents"],
                result["metadatas"],
                result["distances"],
                strict=True,
            )
        ]

    def _exact(self, vectors: np.ndarray, n: int) -> list[list[Hit]]:
        if self._keys is None:  # read once per search, however often it fetches more
            got = self.collection.get(
                where=self.where, include=["documents", "metadatas", "embeddings"]
            )
            if not got["ids"]:  # an empty task, or a filter that matches nothing
                self._keys = (got, np.zeros((0, self.vectors.shape[1]), dtype=np.float32))
            else:
                keys = np.asarray(got["embeddings"], dtype=np.float32)
                keys /= np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), 1e-12)
                self._keys = (got, keys)
        got, keys = self._keys
        if not got["ids"]:
            return [[] for _ in vectors]
        scores = vectors @ keys.T
        top = min(n, len(got["ids"]))
        kth = -np.partition(-scores, top - 1, axis=1)[:, top - 1]
        out = []
        for row, bound in zip(scores, kth, strict=True):
            cand = np.flatnonzero(row >= bound)  # every entry tied with the n-th too
            ranked = cand[np.lexsort((cand, -row[cand]))][:top]  # ties: storage order
            out.append(
                [
                    Hit(
                        got["ids"][j],
                        got["documents"][j],
                        float(row[j]),
                        dict(got["metadatas"][j] or {}),
                    )
                    for j in ranked
                ]
            )
        return out


@dataclass(frozen=True)
class _LexicalRanking:
    """The BM25 ranking of one search: the task's index and the ids its filter allows."""

    index: BM25Index | None
    allowed: set[str] | None

    def top(self, queries: list[str], n: int) -> list[list[str]]:
        if self.index is None:
            return [[] for _ in queries]
        return [[i for i, _ in row] for row in self.index.top_k(queries, n, self.allowed)]
