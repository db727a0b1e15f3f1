"""Training-scale sources: the ``train/`` folder of the data directory as retrieval datasets.

Each loader reads one source of ``<data>/train/`` (see its ``README.txt``) and returns a
`RetrievalDataset` (split ``"train"``) in the same shape as the evaluation loaders, so the same
hard-negative mining (`mine_records`) turns it into training records:

* ``nq_qed`` (qa): Natural Questions train questions with their gold Wikipedia paragraph (QED
  subset). Paragraphs are de-duplicated; the page title groups them.
* ``canard`` (convsearch): CANARD turns; the query is the question followed by the dialogue's
  previous questions, most recent first (`conversational_query`, the format of the CAsT
  history row); the positive is the answer passage. Grouped by dialogue.
* ``gorilla_torchhub_train`` (tool): APIBench TorchHub train instructions for their API docs.
  Instructions whose API is held out by the ``gorilla_torchhub`` test split are dropped, so
  those APIs stay unseen in training.
* ``gutenberg`` (lrlm): six novels, Project Gutenberg header and footer stripped, cut into
  chunks as ``tinyshakespeare`` is; a chunk asks for the chunk before it within its book.

Every query carries ``metadata[qid]["group"]``: the unit a dev split must keep together
(page, dialogue, API, book).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..convsearch import conversational_query
from ..evaluation.datasets import RetrievalDataset, data_dir, load_dataset, render_tool

__all__ = ["TRAIN_SOURCES", "load_training_source", "strip_gutenberg"]

logger = logging.getLogger(__name__)


def _train_file(root: Path, *parts: str) -> Path:
    path = root.joinpath("train", *parts)
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is missing: the training data lives in the data folder's train/ "
            f"subfolder (see train/README.txt there); point LLM_EMBEDDER_DATA at a complete copy"
        )
    return path


def _read_lines(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


_DETOKENIZE = (
    (re.compile(r" ([,.;:!?%)\]}])"), r"\1"),
    (re.compile(r"([(\[{$]) "), r"\1"),
    (re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)\b"), r"\1"),
    (re.compile(r"`` | ''"), '"'),
)


def _detokenize(text: str) -> str:
    """Undo Natural Questions' token spacing ("Bowl XV ( played in 1981 ) ," -> "(played...),")."""
    for pattern, repl in _DETOKENIZE:
        text = pattern.sub(repl, text)
    return text


def _load_nq_qed(root: Path) -> RetrievalDataset:
    files = sorted((root / "train" / "nq_qed_train").glob("nq-train-*-qed.jsonlines"))
    if not files:
        _train_file(root, "nq_qed_train", "nq-train-00-qed.jsonlines")  # raises, naming it
    corpus: dict[str, str] = {}
    doc_metadata: dict[str, dict[str, Any]] = {}
    by_text: dict[str, str] = {}
    queries, qrels, metadata = {}, {}, {}
    for path in files:
        for row in _read_lines(path):
            title = row["title_text"]
            text = _detokenize(row["paragraph_text"])
            doc_id = by_text.get(text)
            if doc_id is None:
                doc_id = by_text[text] = f"nq-p{len(by_text)}"
                corpus[doc_id] = text
                doc_metadata[doc_id] = {"title": title}
            qid = f"nq-{row['example_id']}"
            queries[qid] = row["question_text"]
            qrels[qid] = {doc_id: 1}
            metadata[qid] = {"group": title, "answers": list(row["answer_text"])}
    return RetrievalDataset(
        "nq_qed", "qa", corpus, queries, qrels, metadata, doc_metadata=doc_metadata, split="train"
    )


def _load_canard(root: Path) -> RetrievalDataset:
    rows = _read_lines(_train_file(root, "canard_dev", "canard_dev_turns.jsonl"))
    corpus: dict[str, str] = {}
    doc_metadata: dict[str, dict[str, Any]] = {}
    by_text: dict[str, str] = {}
    queries, qrels, metadata = {}, {}, {}
    for row in rows:
        answer = (row.get("answer") or "").strip()
        if not answer:
            continue  # the last turn of a dialogue: its answer is not in the data
        doc_id = by_text.get(answer)
        if doc_id is None:
            doc_id = by_text[answer] = f"canard-a{len(by_text)}"
            corpus[doc_id] = answer
            doc_metadata[doc_id] = {"dialog": row["dialog_id"], "title": row["title"]}
        previous = row["history"][0::2]  # the earlier questions (answers sit between them)
        qid = f"{row['dialog_id']}#{row['turn']}"
        queries[qid] = conversational_query(row["question"], previous)
        qrels[qid] = {doc_id: 1}
        metadata[qid] = {"group": row["dialog_id"], "rewrite": row["rewrite"], "answers": [answer]}
    return RetrievalDataset(
        "canard", "convsearch", corpus, queries, qrels, metadata, doc_metadata, split="train"
    )


def _normalise_call(call: str) -> str:
    return "".join(call.split())


def _load_gorilla_torchhub_train(root: Path) -> RetrievalDataset:
    folder = "gorilla_apibench_train"
    docs = _read_lines(_train_file(root, folder, "api", "torchhub_api.jsonl"))
    pairs = _read_lines(_train_file(root, folder, "torchhub_train_pairs.jsonl"))
    held_out = {
        _normalise_call(meta["api_call"])
        for meta in load_dataset("gorilla_torchhub", "test", data_path=root).metadata.values()
    }
    corpus = {f"torchhub-{i}": render_tool(doc) for i, doc in enumerate(docs)}
    doc_metadata = {
        f"torchhub-{i}": {"api_call": _normalise_call(doc["api_call"])}
        for i, doc in enumerate(docs)
    }
    queries, qrels, metadata = {}, {}, {}
    dropped = 0
    for pair in pairs:
        call = _normalise_call(pair["api_call"])
        if call in held_out:
            dropped += 1
            continue
        qid = f"torchhub-train-q{pair['row']}"
        queries[qid] = pair["query"]
        qrels[qid] = {f"torchhub-{line}": 1 for line in pair["doc_lines"]}
        metadata[qid] = {"group": call, "api_call": call}
    logger.info(
        "gorilla_torchhub_train: dropped %d of %d instructions whose API is held out by the "
        "gorilla_torchhub test split",
        dropped,
        len(pairs),
    )
    return RetrievalDataset(
        "gorilla_torchhub_train",
        "tool",
        corpus,
        queries,
        qrels,
        metadata,
        doc_metadata=doc_metadata,
        split="train",
    )


_PG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.M)
_PG_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.M)


def strip_gutenberg(text: str) -> str:
    """The book's own text, Project Gutenberg's header and footer removed.

    Everything up to the ``*** START OF ...`` line and from the ``*** END OF ...`` line goes,
    and so do the byte-order mark and carriage returns.

    Raises:
        ValueError: If the text has no START or END marker.
    """
    text = text.lstrip("\ufeff").replace("\r\n", "\n")
    start, end = _PG_START.search(text), _PG_END.search(text)
    if start is None or end is None or end.start() < start.end():
        raise ValueError(
            "not a Project Gutenberg text: no '*** START OF ... ***' / '*** END OF ... ***' "
            "markers around the book"
        )
    return text[start.end() : end.start()].strip()


def _load_gutenberg(
    root: Path, *, chunk_words: int = 96, queries_per_book: int = 150
) -> RetrievalDataset:
    for option, value in (("chunk_words", chunk_words), ("queries_per_book", queries_per_book)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{option}` must be a positive int, got {value!r}")
    folder = root / "train" / "gutenberg_books"
    books = sorted(p for p in folder.glob("*.txt") if re.fullmatch(r"\d+(-\d+)?\.txt", p.name))
    if not books:
        _train_file(root, "gutenberg_books", "98-0.txt")  # raises, naming the folder
    corpus: dict[str, str] = {}
    doc_metadata: dict[str, dict[str, Any]] = {}
    queries, qrels, metadata, exclude = {}, {}, {}, {}
    for path in books:
        book = path.stem.split("-")[0]
        text = strip_gutenberg(path.read_text(encoding="utf-8"))
        words = [m.span() for m in re.finditer(r"\S+", text)]
        chunks = [
            text[words[i][0] : words[min(i + chunk_words, len(words)) - 1][1]]
            for i in range(0, len(words), chunk_words)
        ]
        ids = [f"{book}/chunk-{i:05d}" for i in range(len(chunks))]
        for i, (doc_id, chunk) in enumerate(zip(ids, chunks, strict=True)):
            corpus[doc_id] = chunk
            doc_metadata[doc_id] = {"book": book, "position": i}
        eligible = list(range(2, len(chunks) - 1))  # two earlier chunks, and a continuation
        n = min(queries_per_book, len(eligible))
        for j in range(n):
            i = eligible[j * (len(eligible) - 1) // max(n - 1, 1)]
            qid = f"{book}/query-{i:05d}"
            queries[qid] = chunks[i]
            qrels[qid] = {ids[i - 1]: 1}
            metadata[qid] = {
                "group": book,
                "position": i,
                "filter": {"book": book},
                "next_chunk_id": ids[i + 1],
            }
            exclude[qid] = set(ids[i:])
    return RetrievalDataset(
        "gutenberg", "lrlm", corpus, queries, qrels, metadata, exclude, doc_metadata, split="train"
    )


_SOURCES: dict[str, Callable[..., RetrievalDataset]] = {
    "nq_qed": _load_nq_qed,
    "canard": _load_canard,
    "gorilla_torchhub_train": _load_gorilla_torchhub_train,
    "gutenberg": _load_gutenberg,
}

TRAIN_SOURCES: tuple[str, ...] = tuple(_SOURCES)
"""Names accepted by `load_training_source`."""


def load_training_source(
    name: str, *, data_path: str | os.PathLike[str] | None = None, **options: Any
) -> RetrievalDataset:
    """Load one training-scale source of ``<data>/train/`` as a retrieval dataset.

    Args:
        name: One of `TRAIN_SOURCES`.
        data_path: Data folder (holding ``train/``); defaults to `data_dir`'s choice.
        **options: ``gutenberg`` takes ``chunk_words=96`` and ``queries_per_book=150``.

    Raises:
        ValueError: For an unknown name or option.
        FileNotFoundError: If the data folder or one of the source's files is missing.
    """
    if name not in _SOURCES:
        raise ValueError(
            f"unknown training source {name!r}; known sources: {', '.join(TRAIN_SOURCES)}"
        )
    if options and name != "gutenberg":
        raise ValueError(f"training source {name!r} takes no options, got {sorted(options)}")
    return _SOURCES[name](data_dir(data_path), **options)
