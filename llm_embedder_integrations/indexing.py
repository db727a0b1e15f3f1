"""Index your own files into a persistent store, and search it (the ``llm-embedder`` CLI's core).

Files and folders of ``.txt``, ``.md``, ``.jsonl`` and ``.csv`` are read, long texts cut with the
memory module's chunker, and each chunk stored with its source file, record and chunk number.
Re-indexing skips a file whose content hash is unchanged and replaces the chunks of a changed
one. Every input is read and checked before anything is written, so a bad file leaves the store
as it was.

Example:
    >>> encoder = LLMEmbedder()  # doctest: +SKIP
    >>> store = open_store("my-index", encoder)  # doctest: +SKIP
    >>> report = index_paths(["notes/", "faq.csv"], store, task="qa")  # doctest: +SKIP
    >>> store.search("how do I reset my password?", task="qa", k=5)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .encoder import LLMEmbedder
from .instructions import get_instruction
from .memory import chunk_text
from .store import ChromaStore

__all__ = [
    "SUFFIXES",
    "IndexReport",
    "IndexingError",
    "SourceFile",
    "find_files",
    "index_paths",
    "open_store",
    "read_file",
    "recorded_model",
]

SUFFIXES = (".txt", ".md", ".jsonl", ".csv")
"""File types indexed: plain text and Markdown (one text per file), JSON Lines and CSV (one text
per record, from its ``text`` field or column; the other scalar fields become metadata)."""
STORE_NAME = "llm-embedder"
"""Collection prefix of the stores the CLI builds (collections ``llm-embedder-{task}``)."""
_RESERVED = frozenset({"source", "record", "chunk", "file_sha256"})


class IndexingError(ValueError):
    """An input cannot be indexed (missing, unreadable, or not in a supported format)."""


@dataclass(frozen=True)
class SourceFile:
    """A file read and checked, ready to be chunked."""

    path: Path
    """Absolute path; its string is the ``source`` recorded with each chunk."""
    sha256: str
    """Hash of the file's bytes: an unchanged file is skipped."""
    records: list[tuple[str, dict[str, Any]]]
    """``(text, metadata)`` per record: one for a text file, one per line or row otherwise."""


@dataclass
class IndexReport:
    """What :func:`index_paths` did."""

    added: list[str] = field(default_factory=list)
    """Files indexed for the first time."""
    updated: list[str] = field(default_factory=list)
    """Files whose content changed: their old chunks were replaced."""
    unchanged: list[str] = field(default_factory=list)
    """Files skipped: same content hash as when they were indexed."""
    chunks: int = 0
    """Chunks written."""

    def summary(self) -> str:
        """One line for people."""
        return (
            f"{len(self.added)} files added, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged; {self.chunks} chunks written"
        )


def find_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The files to index: each file given, and the supported files under each folder.

    Raises:
        IndexingError: a path does not exist, a file given by name has an unsupported type,
            or nothing to index was found.
    """
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("`paths` must be a list of paths; wrap a single path in a list")
    found: dict[Path, None] = {}
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise IndexingError(f"{os.fspath(given)}: no such file or folder")
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in SUFFIXES:
                    found.setdefault(child.resolve())
        elif path.suffix.lower() in SUFFIXES:
            found.setdefault(path.resolve())
        else:
            raise IndexingError(
                f"{os.fspath(given)}: unsupported file type {path.suffix or '(none)'!r}; "
                f"index {', '.join(SUFFIXES)} files"
            )
    if not found:
        raise IndexingError(
            f"no {', '.join(SUFFIXES)} files under {', '.join(os.fspath(p) for p in paths)}"
        )
    return list(found)


def _scalar_metadata(fields: dict[str, Any], where: str) -> dict[str, Any]:
    out = {}
    for key, value in fields.items():
        if key in _RESERVED:
            raise IndexingError(
                f"{where}: field {key!r} is reserved for the index's own metadata; rename it"
            )
        if isinstance(value, float) and not math.isfinite(value):
            continue
        if isinstance(value, (str, int, float, bool)) and value != "":
            out[key] = value
    return out


def _jsonl_records(text: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IndexingError(f"{where}: not valid JSON ({exc.msg})") from exc
        if isinstance(value, str):
            value = {"text": value}
        if not isinstance(value, dict) or not isinstance(value.get("text"), str):
            raise IndexingError(
                f'{where}: each line must be a JSON string or an object with a "text" string'
            )
        fields = {k: v for k, v in value.items() if k != "text"}
        records.append((value["text"], {**_scalar_metadata(fields, where), "record": number}))
    return records


def _csv_records(text: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "text" not in reader.fieldnames:
        raise IndexingError(
            f"{path}: a CSV file needs a 'text' column (found {reader.fieldnames or 'no header'})"
        )
    records = []
    for number, row in enumerate(reader, 2):  # line 1 is the header
        fields = {k: v for k, v in row.items() if k != "text" and k is not None}
        text = row.get("text") or ""
        records.append((text, {**_scalar_metadata(fields, f"{path}:{number}"), "record": number}))
    return records


def read_file(path: str | os.PathLike[str]) -> SourceFile:
    """Read and parse one file (UTF-8).

    Raises:
        IndexingError: the file cannot be read, is not UTF-8, or is malformed.
    """
    path = Path(path).resolve()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IndexingError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IndexingError(
            f"{path}: not UTF-8 text (byte {exc.start}); convert it to UTF-8"
        ) from exc
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        records = _jsonl_records(text, path)
    elif suffix == ".csv":
        records = _csv_records(text, path)
    else:
        records = [(text, {"record": 1})]
    records = [(t, m) for t, m in records if t.strip()]
    return SourceFile(path, hashlib.sha256(data).hexdigest(), records)


def recorded_model(client: Any, task: str, name: str = STORE_NAME) -> str | None:
    """The model recorded in an existing collection of ``task``; None when there is none."""
    get_instruction(task)
    collection_name = f"{name}-{task}"
    if collection_name not in {c.name for c in client.list_collections()}:
        return None
    metadata = client.get_collection(collection_name).metadata or {}
    model = metadata.get("llm_embedder:model")
    return str(model) if model else None


def open_store(
    path: str | os.PathLike[str], encoder: LLMEmbedder, *, client: Any | None = None
) -> ChromaStore:
    """The persistent store the CLI uses at ``path`` (collections ``llm-embedder-{task}``)."""
    if client is not None:
        return ChromaStore(encoder, client=client, name=STORE_NAME)
    return ChromaStore(encoder, path=path, name=STORE_NAME)


def _stored_ids(store: ChromaStore, task: str, source: str) -> set[str]:
    """Ids of the chunks stored for ``source``."""
    return set(store.collection(task).get(where={"source": source}, include=[])["ids"])


def index_paths(
    paths: Sequence[str | os.PathLike[str]],
    store: ChromaStore,
    *,
    task: str = "qa",
    chunk_tokens: int = 128,
    progress: Callable[[Iterable[SourceFile]], Iterable[SourceFile]] | None = None,
) -> IndexReport:
    """Index files and folders into ``store``'s collection for ``task``.

    Every file is found, read and parsed first, and the collection is opened (checking that it
    was built with this encoder), before anything is written: a missing path, an unreadable or
    malformed file, or another model leaves the store unchanged.

    Each chunk is stored with ``source`` (the absolute file path), ``record`` (1 for a text
    file, the line of a JSON Lines or CSV record), ``chunk`` (its number in the record) and
    ``file_sha256``, plus the record's other scalar fields. Chunk ids start with the file's
    hash, so a file indexed completely with the same content and chunk size is skipped; a
    changed file gets its new chunks written first and its old ones deleted after, so an
    interruption never leaves it without chunks (re-running completes it).

    Args:
        paths: Files and folders (searched recursively for ``.txt``, ``.md``, ``.jsonl``,
            ``.csv``).
        store: Where to write.
        task: The task whose key instruction and collection are used.
        chunk_tokens: Most tokens per chunk (the paper's memory chunks hold 128).
        progress: Wraps the iteration over files (e.g. a tqdm bar); None for none.

    Raises:
        IndexingError: a bad input; nothing was written.
        StoreMismatchError: the collection was built with another model; nothing was written.
    """
    get_instruction(task)
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 8:
        raise ValueError(f"`chunk_tokens` must be an int >= 8, got {chunk_tokens!r}")
    files = [read_file(p) for p in find_files(paths)]
    store.collection(task)  # creates it, or raises StoreMismatchError before any write
    report = IndexReport()
    tokenizer = store.encoder.tokenizer
    for source in progress(files) if progress else files:
        key = str(source.path)
        stored = _stored_ids(store, task, key)
        prefix = source.sha256[:16]
        texts, ids, metas = [], [], []
        for text, meta in source.records:
            for number, chunk in enumerate(chunk_text(text, tokenizer, chunk_tokens)):
                texts.append(chunk)
                ids.append(f"{prefix}:{key}#{meta['record']}:{number}")
                metas.append({**meta, "source": key, "chunk": number, "file_sha256": source.sha256})
        new_ids = set(ids)
        if stored == new_ids:  # ids carry the content hash: same file, same chunking
            report.unchanged.append(key)
            continue
        if texts:
            store.add(texts, task=task, ids=ids, metadatas=metas)
        stale = sorted(stored - new_ids)
        if stale:
            store.delete(stale, task=task)
        (report.updated if stored else report.added).append(key)
        report.chunks += len(texts)
    return report
