"""LLM-Embedder's JSON Lines training format: reading, validating, writing, and converting.

One line is one training query with its candidate keys, as in the paper's code
(FlagEmbedding ``research/llm_embedder``, ``data/toy/*.json``)::

    {"query": "...", "pos": ["..."], "neg": ["...", ...], "teacher_scores": [...],
     "answers": ["..."], "task": "qa", "query_id": 7}

* ``pos`` / ``neg``: relevant and non-relevant keys. ``pos`` may be empty when ``teacher_scores``
  are given: the positive is then the key with the highest score (long-range LM data does this).
* ``history``: instead of ``pos``/``neg`` (chat data): every earlier dialogue turn is a key.
* ``teacher_scores``: the LLM reward of each key, for ``pos + neg`` in order (or ``history``).
* ``answers``: the expected LLM output(s); the reward of a key is the LLM's likelihood of one.

Other fields (``pos_index``, ``neg_score``, ``context``, ``qid``...) are kept as they are.
`convert_dataset` turns the train split of an evaluation dataset into this format, with hard
negatives mined by a base encoder.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..encoder import LLMEmbedder
from ..evaluation.datasets import RetrievalDataset, load_dataset
from ..instructions import TASKS
from ..lexical import BM25Index

__all__ = [
    "MiningStats",
    "TrainingDataError",
    "TrainingRecord",
    "convert_dataset",
    "iter_jsonl",
    "mine_records",
    "read_jsonl",
    "records_from_dataset",
    "write_jsonl",
]

logger = logging.getLogger(__name__)

# Fields with a meaning of their own, in the order they are written.
_FIELDS = (
    "query",
    "query_id",
    "task",
    "pos",
    "neg",
    "history",
    "answers",
    "teacher_scores",
    "pos_ids",
    "neg_ids",
)


class TrainingDataError(ValueError):
    """A training record is malformed; names the file, line and field where known.

    Attributes:
        field: The offending field, or None when the line itself is bad (not JSON, not an object).
        path: The file, when the record was read from one.
        line: 1-based line number in ``path``.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        path: str | os.PathLike[str] | None = None,
        line: int | None = None,
    ) -> None:
        self.field = field
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.reason = message
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field `{field}`")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _string_list(name: str, value: Any, *, allow_empty: bool) -> list[str]:
    """Check that ``value`` is a list of non-blank strings (non-empty unless allowed)."""
    if not isinstance(value, list):
        raise TrainingDataError(
            f"must be a list of strings, got {type(value).__name__} {_preview(value)}"
            + ("; wrap a single text in a list" if isinstance(value, str) else ""),
            field=name,
        )
    if not value and not allow_empty:
        raise TrainingDataError("must be a non-empty list of strings, got []", field=name)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise TrainingDataError(
                f"item {i} must be a string, got {type(item).__name__} {_preview(item)}",
                field=name,
            )
        if not item.strip():
            raise TrainingDataError(f"item {i} is empty or only white space; remove it", field=name)
    return value


@dataclass
class TrainingRecord:
    """One training query of LLM-Embedder with its candidate keys.

    Construction validates every field and raises `TrainingDataError` naming the bad one.

    Attributes:
        query: The query text (no instruction; instructions are added at training time).
        task: One of the registered tasks (``qa``, ``convsearch``, ``chat``, ``lrlm``, ``icl``,
            ``tool`` or one added with `register_task`).
        pos: Relevant keys, the first being the default positive. May be empty only when
            ``teacher_scores`` are given (the positive is then the best-scored key).
        neg: Non-relevant keys (hard negatives).
        history: Chat data: the earlier dialogue turns, all candidate keys; excludes pos/neg.
        answers: Expected LLM outputs, needed to compute LLM rewards.
        teacher_scores: LLM reward of each key of `keys`, in order.
        query_id: Identifier of the query (int or str), if any.
        pos_ids: Document ids of ``pos`` (same length), when known.
        neg_ids: Document ids of ``neg`` (same length), when known.
        extra: Every other field of the JSON object, kept and written back unchanged.
    """

    query: str
    task: str
    pos: list[str] = field(default_factory=list)
    neg: list[str] = field(default_factory=list)
    history: list[str] | None = None
    answers: list[str] | None = None
    teacher_scores: list[float] | None = None
    query_id: int | str | None = None
    pos_ids: list[str] | None = None
    neg_ids: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.query, str) or not self.query.strip():
            raise TrainingDataError(
                f"must be a non-empty string, got {_preview(self.query)}", field="query"
            )
        if not isinstance(self.task, str) or self.task not in TASKS:
            raise TrainingDataError(
                f"unknown task {self.task!r}; known tasks: {', '.join(TASKS)} (register your "
                "own with register_task)",
                field="task",
            )
        if self.history is not None:
            _string_list("history", self.history, allow_empty=False)
            for name in ("pos", "neg"):
                if getattr(self, name):
                    raise TrainingDataError(
                        "a record with `history` (chat data: every turn is a key) cannot also "
                        f"have `{name}`; keep one of them",
                        field=name,
                    )
        else:
            _string_list("neg", self.neg, allow_empty=True)
            if isinstance(self.pos, list) and not self.pos and self.teacher_scores is None:
                raise TrainingDataError(
                    "must be a non-empty list of strings, got []; give the relevant key(s), or "
                    "`teacher_scores` so that the best-scored key becomes the positive",
                    field="pos",
                )
            _string_list("pos", self.pos, allow_empty=True)
            if not self.pos and not self.neg:
                raise TrainingDataError(
                    "the record has no key at all; give `pos` (and `neg`)", field="pos"
                )
        if self.answers is not None:
            _string_list("answers", self.answers, allow_empty=True)
        if self.teacher_scores is not None:
            self._check_scores()
        if self.query_id is not None and (
            isinstance(self.query_id, bool) or not isinstance(self.query_id, (int, str))
        ):
            raise TrainingDataError(
                f"must be an int or a string, got {_preview(self.query_id)}", field="query_id"
            )
        for name, texts in (("pos_ids", self.pos), ("neg_ids", self.neg)):
            ids = getattr(self, name)
            if ids is not None:
                _string_list(name, ids, allow_empty=True)
                if len(ids) != len(texts):
                    raise TrainingDataError(
                        f"has {len(ids)} ids for {len(texts)} texts of `{name[:3]}`",
                        field=name,
                    )
        if not isinstance(self.extra, dict):
            raise TrainingDataError(f"must be a dict, got {_preview(self.extra)}", field="extra")
        clash = sorted(set(self.extra) & set(_FIELDS))
        if clash:
            raise TrainingDataError(
                f"holds the named field(s) {clash}; pass them as arguments", field="extra"
            )

    def _check_scores(self) -> None:
        scores = self.teacher_scores
        if not isinstance(scores, list):
            raise TrainingDataError(
                f"must be a list of numbers, got {_preview(scores)}", field="teacher_scores"
            )
        for i, s in enumerate(scores):
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
                raise TrainingDataError(
                    f"item {i} must be a finite number, got {_preview(s)}", field="teacher_scores"
                )
        keys = "history" if self.history is not None else "pos + neg"
        if len(scores) != len(self.keys):
            raise TrainingDataError(
                f"has {len(scores)} scores for {len(self.keys)} keys ({keys}); give one score "
                f"per key, in the order of {keys}",
                field="teacher_scores",
            )

    @property
    def keys(self) -> list[str]:
        """The candidate keys, in the order of ``teacher_scores``: ``history`` or pos + neg."""
        return list(self.history) if self.history is not None else [*self.pos, *self.neg]

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], *, task: str | None = None) -> TrainingRecord:
        """Build a record from one parsed JSON object.

        Args:
            obj: The object; unknown fields go to `extra`.
            task: Task of a record that has no ``task`` field.

        Raises:
            TrainingDataError: On a missing or malformed field.
        """
        if not isinstance(obj, Mapping):
            raise TrainingDataError(
                f"a record must be a JSON object, got {type(obj).__name__} {_preview(obj)}"
            )
        if "query" not in obj:
            raise TrainingDataError(
                f"is missing (the record has the fields {sorted(obj)})", field="query"
            )
        record_task = obj.get("task", task)
        if record_task is None:
            raise TrainingDataError(
                "is missing; add it to the record or pass the task of the file", field="task"
            )
        known = {k: obj[k] for k in _FIELDS if k in obj and k != "task"}
        if "history" in known and known["history"] is not None:
            known.setdefault("pos", [])
            known.setdefault("neg", [])
        for name in ("pos", "neg"):
            if name in known and known[name] is None:
                raise TrainingDataError("must be a list of strings, got null", field=name)
        extra = {k: v for k, v in obj.items() if k not in _FIELDS}
        return cls(task=record_task, extra=extra, **known)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this record; `from_dict` of it gives an equal record."""
        out: dict[str, Any] = {"query": self.query}
        if self.query_id is not None:
            out["query_id"] = self.query_id
        out["task"] = self.task
        if self.history is not None:
            out["history"] = list(self.history)
        else:
            out["pos"] = list(self.pos)
            out["neg"] = list(self.neg)
        for name in ("answers", "teacher_scores", "pos_ids", "neg_ids"):
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value)
        out.update(self.extra)
        return out


def _parse_line(line: str, *, task: str | None) -> TrainingRecord:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TrainingDataError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    return TrainingRecord.from_dict(obj, task=task)


def iter_jsonl(
    path: str | os.PathLike[str], *, task: str | None = None
) -> Iterator[TrainingRecord]:
    """Read and validate a JSON Lines training file lazily, one record per non-blank line.

    Args:
        path: The file.
        task: Task of records without a ``task`` field.

    Yields:
        The records, in file order.

    Raises:
        TrainingDataError: At the first bad line; the message names the file, the line number
            and the field.
        FileNotFoundError: If ``path`` does not exist.
    """
    for _, record in _numbered_records(path, task=task):
        yield record


def _numbered_records(
    path: str | os.PathLike[str], *, task: str | None = None
) -> Iterator[tuple[int, TrainingRecord]]:
    """``(line number, record)`` of each non-blank line; errors name the file and line."""
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = _parse_line(line, task=task)
            except TrainingDataError as exc:
                raise TrainingDataError(
                    exc.reason, field=exc.field, path=path, line=number
                ) from None
            yield number, record


def read_jsonl(path: str | os.PathLike[str], *, task: str | None = None) -> list[TrainingRecord]:
    """Read and validate a whole JSON Lines training file (see `iter_jsonl`)."""
    return list(iter_jsonl(path, task=task))


def write_jsonl(records: Iterable[TrainingRecord], path: str | os.PathLike[str]) -> int:
    """Write records as JSON Lines (UTF-8, one object per line), replacing ``path``.

    Returns:
        The number of records written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            if not isinstance(record, TrainingRecord):
                raise TypeError(f"record {n} must be a TrainingRecord, got {type(record).__name__}")
            f.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n


# Conversion of evaluation datasets ---------------------------------------------------------------


def _answers(dataset: RetrievalDataset, qid: str) -> list[str] | None:
    """The expected LLM output(s) of a query, where the dataset has them."""
    meta = dataset.metadata.get(qid, {})
    if dataset.task == "lrlm":
        # The continuation: the chunk right after the query chunk, if the split holds it.
        nxt = meta.get("next_chunk_id")
        if nxt is None and meta.get("position") is not None:
            nxt = f"chunk-{meta['position'] + 1:05d}"
        return [dataset.corpus[nxt]] if nxt in dataset.corpus else None
    answers = [a for a in meta.get("answers") or [] if isinstance(a, str) and a.strip()]
    return answers or None


@dataclass
class MiningStats:
    """What `mine_records` did, for the run's log.

    Attributes:
        queries: Queries converted into a record.
        no_positive: Queries skipped because no relevant document was among their candidates.
        negatives: Hard negatives kept, by miner (``"dense"``, ``"bm25"``).
        dropped: Likely false negatives dropped, by reason: ``"same_text"`` (equal to a
            positive), ``"overlap"`` (contains a positive or is contained in one),
            ``"above_positive"`` (the base model scores it above the best positive by more than
            the margin).
    """

    queries: int = 0
    no_positive: int = 0
    negatives: dict[str, int] = field(default_factory=lambda: {"dense": 0, "bm25": 0})
    dropped: dict[str, int] = field(
        default_factory=lambda: {"same_text": 0, "overlap": 0, "above_positive": 0}
    )

    def __str__(self) -> str:
        kept = ", ".join(f"{k} {v}" for k, v in self.negatives.items())
        dropped = ", ".join(f"{k} {v}" for k, v in self.dropped.items())
        return (
            f"{self.queries} records, negatives kept: {kept}; likely false negatives dropped: "
            f"{dropped} ({sum(self.dropped.values())} in all)"
        )


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def _false_negative(text: str, positives: list[str]) -> str | None:
    """Why ``text`` is likely relevant although not judged so, or None."""
    if text in positives:
        return "same_text"
    if any(p in text or text in p for p in positives):
        return "overlap"
    return None


def _check_count(name: str, value: Any, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}")


def mine_records(
    dataset: RetrievalDataset,
    encoder: LLMEmbedder,
    *,
    negatives: int = 7,
    bm25: bool = True,
    false_negative_margin: float | None = 0.2,
    max_positives: int | None = None,
    max_queries: int | None = None,
    answered_only: bool = False,
    depth: int = 30,
) -> tuple[list[TrainingRecord], MiningStats]:
    """Turn a retrieval dataset into training records with mined hard negatives.

    For each query, the documents it may retrieve (`RetrievalDataset.candidate_ids`: its filter
    applied, its ``exclude`` ids removed) are ranked by ``encoder`` with the task's instructions
    and, with ``bm25``, by BM25; the negatives are taken from the two rankings in turn (dense
    first), skipping judged documents and likely false negatives: a text equal to a positive,
    containing one or contained in one, or one the encoder scores above the best positive by
    more than ``false_negative_margin``. ``pos`` holds the relevant documents, best grade first
    and, within a grade, best ranked first. ``answers`` is filled where the dataset has expected
    outputs; ``relevant_ids`` (every judged document, for the in-batch false-negative mask) and
    ``group`` (the dataset's grouping, for a dev split) go to ``extra``.

    Args:
        dataset: A dataset of `load_dataset` (its train split) or `load_training_source`.
        encoder: The base encoder that ranks the candidates.
        negatives: Hard negatives per query (fewer when a query has fewer candidates).
        bm25: Mine from BM25's ranking too (half of the negatives, alternating).
        false_negative_margin: Drop a mined text that the encoder scores above the best
            positive by more than this (cosine); None keeps them.
        max_positives: Keep at most this many positives (the best ranked); None keeps all.
        max_queries: Convert only the first this many queries (in dataset order).
        answered_only: Skip queries without an expected output, so that every record can be
            scored by the LLM reward.
        depth: How deep each ranking is searched for negatives, past the judged documents.

    Returns:
        The records (one per query that has a candidate positive; ``query_id``, ``pos_ids`` and
        ``neg_ids`` hold the dataset's ids) and what was kept and dropped.
    """
    _check_count("negatives", negatives, 0)
    _check_count("max_positives", max_positives, 1, allow_none=True)
    _check_count("max_queries", max_queries, 1, allow_none=True)
    _check_count("depth", depth, 1)
    if false_negative_margin is not None and (
        isinstance(false_negative_margin, bool)
        or not isinstance(false_negative_margin, (int, float))
        or false_negative_margin < 0
    ):
        raise ValueError(
            f"`false_negative_margin` must be a number >= 0 or None, got {false_negative_margin!r}"
        )
    stats = MiningStats()
    qids = list(dataset.queries)[:max_queries]
    answers = {qid: _answers(dataset, qid) for qid in qids}
    if answered_only:
        skipped = sum(1 for qid in qids if answers[qid] is None)
        qids = [qid for qid in qids if answers[qid] is not None]
        if skipped:
            logger.info("%s: skipped %d queries without an expected output", dataset.name, skipped)
    if not qids:
        return [], stats
    restricted = bool(dataset.exclude) or any("filter" in dataset.metadata.get(q, {}) for q in qids)
    docs = list(dataset.corpus)
    column = {doc: i for i, doc in enumerate(docs)}
    query_emb = encoder.encode_queries([dataset.queries[q] for q in qids], task=dataset.task)
    key_emb = encoder.encode_keys([dataset.corpus[d] for d in docs], task=dataset.task)
    lexical = BM25Index(dataset.corpus) if bm25 and negatives else None
    normalised = {d: _norm(dataset.corpus[d]) for d in docs}

    records = []
    batch = 256
    for start in range(0, len(qids), batch):
        chunk = qids[start : start + batch]
        dense = query_emb[start : start + len(chunk)] @ key_emb.T
        sparse = lexical.scores([dataset.queries[q] for q in chunk]) if lexical else None
        for row, qid in enumerate(chunk):
            allowed = None
            if restricted:
                allowed = np.zeros(len(docs), dtype=bool)
                allowed[[column[d] for d in dataset.candidate_ids(qid)]] = True
            grades = dataset.qrels.get(qid, {})
            relevant = [
                d for d, g in grades.items() if g > 0 and (allowed is None or allowed[column[d]])
            ]
            if not relevant:
                stats.no_positive += 1
                continue
            scores = dense[row]
            relevant.sort(key=lambda d: (-grades[d], -scores[column[d]]))
            pos = relevant[:max_positives]
            pos_texts = [normalised[d] for d in relevant]
            best = max(float(scores[column[d]]) for d in relevant)
            reach = depth + len(grades)  # judged documents are skipped: look past them
            rankings = [("dense", _ranked(scores, allowed, reach))]
            if sparse is not None:
                rankings.append(("bm25", _ranked(sparse[row], allowed, reach, positive=True)))
            judged = set(grades)
            neg: list[str] = []
            seen: set[int] = set()
            for miner, j in _interleave(rankings):
                if len(neg) >= negatives:
                    break
                if j in seen or docs[j] in judged:
                    continue
                seen.add(j)
                reason = _false_negative(normalised[docs[j]], pos_texts)
                margin = false_negative_margin
                if reason is None and margin is not None and float(scores[j]) > best + margin:
                    reason = "above_positive"
                if reason is not None:
                    stats.dropped[reason] += 1
                    continue
                stats.negatives[miner] += 1
                neg.append(docs[j])
            meta = dataset.metadata.get(qid, {})
            extra: dict[str, Any] = {"relevant_ids": sorted(relevant)}
            if "group" in meta:
                extra["group"] = str(meta["group"])
            records.append(
                TrainingRecord(
                    query=dataset.queries[qid],
                    task=dataset.task,
                    pos=[dataset.corpus[d] for d in pos],
                    neg=[dataset.corpus[d] for d in neg],
                    answers=answers[qid],
                    query_id=qid,
                    pos_ids=pos,
                    neg_ids=neg,
                    extra=extra,
                )
            )
    stats.queries = len(records)
    if stats.no_positive:
        logger.warning(
            "%s: %d queries have no relevant document among their candidates and were skipped",
            dataset.name,
            stats.no_positive,
        )
    logger.info("%s: %s", dataset.name, stats)
    return records, stats


def _ranked(
    scores: np.ndarray, allowed: np.ndarray | None, depth: int, *, positive: bool = False
) -> list[int]:
    """Columns of the ``depth`` best scores among ``allowed`` (BM25: scores > 0 only)."""
    row = scores.astype(np.float32, copy=True)
    if allowed is not None:
        row[~allowed] = -np.inf
    ranked = np.argsort(-row, kind="stable")[:depth]  # stable: ties keep the corpus order
    floor = 0.0 if positive else -np.inf
    return [int(j) for j in ranked if row[j] > floor]


def _interleave(rankings: list[tuple[str, list[int]]]) -> Iterator[tuple[str, int]]:
    """``(miner, column)`` taking the rankings' entries in turn."""
    for depth in range(max(len(r) for _, r in rankings)):
        for miner, ranked in rankings:
            if depth < len(ranked):
                yield miner, ranked[depth]


def records_from_dataset(
    dataset: RetrievalDataset,
    encoder: LLMEmbedder,
    *,
    negatives: int = 7,
    max_positives: int | None = None,
    max_queries: int | None = None,
    answered_only: bool = False,
    bm25: bool = False,
    false_negative_margin: float | None = None,
) -> list[TrainingRecord]:
    """`mine_records` without its statistics; by default dense mining with no filtering.

    Example:
        >>> enc = LLMEmbedder("all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> ds = load_dataset("xquad", "train")  # doctest: +SKIP
        >>> write_jsonl(records_from_dataset(ds, enc), "xquad.train.jsonl")  # doctest: +SKIP
    """
    records, _ = mine_records(
        dataset,
        encoder,
        negatives=negatives,
        bm25=bm25,
        false_negative_margin=false_negative_margin,
        max_positives=max_positives,
        max_queries=max_queries,
        answered_only=answered_only,
    )
    return records


def convert_dataset(
    name: str,
    encoder: LLMEmbedder,
    *,
    data_path: str | os.PathLike[str] | None = None,
    negatives: int = 7,
    max_positives: int | None = None,
    max_queries: int | None = None,
    answered_only: bool = False,
    bm25: bool = True,
    false_negative_margin: float | None = 0.2,
    **options: Any,
) -> list[TrainingRecord]:
    """Convert a training source or the train split of an evaluation dataset into records.

    Only train data is converted: the test splits stay unseen for evaluation. Hard negatives
    come from the base encoder and BM25, likely false negatives dropped (see `mine_records`).

    Args:
        name: A training source of `load_training_source` (``nq_qed``, ``canard``,
            ``gorilla_torchhub_train``, ``gutenberg``) or a dataset of `load_dataset`
            (``xquad``, ``gorilla_torchhub``, ``gorilla_tensorflow``, ``trec_cast``,
            ``locomo``, ``sni``, ``tinyshakespeare``), whose train split is used.
        encoder: The base encoder that mines the hard negatives.
        data_path: Data folder; defaults to `data_dir`'s choice.
        negatives: Hard negatives per query.
        max_positives: Keep at most this many positives per query (Gorilla TensorFlow has up to
            220 documents per API call); None keeps all.
        max_queries: Convert only the first this many queries.
        answered_only: Skip queries without an expected output (see `mine_records`).
        bm25: Mine half of the negatives with BM25.
        false_negative_margin: See `mine_records`.
        **options: Options of the dataset's loader (``history=True`` for ``trec_cast``,
            ``chunk_words`` for ``tinyshakespeare`` and ``gutenberg``...).

    Example:
        >>> enc = LLMEmbedder("all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> write_jsonl(convert_dataset("nq_qed", enc), "nq.train.jsonl")  # doctest: +SKIP
    """
    from .sources import TRAIN_SOURCES, load_training_source

    if name in TRAIN_SOURCES:
        dataset = load_training_source(name, data_path=data_path, **options)
    else:
        dataset = load_dataset(name, "train", data_path=data_path, **options)
    records, _ = mine_records(
        dataset,
        encoder,
        negatives=negatives,
        bm25=bm25,
        false_negative_margin=false_negative_margin,
        max_positives=max_positives,
        max_queries=max_queries,
        answered_only=answered_only,
    )
    return records
