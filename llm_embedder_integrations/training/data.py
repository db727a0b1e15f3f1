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

Records become training examples (`build_examples`: one positive and ``group_size - 1``
negatives each, with their teacher scores and the ids of the false-negative mask) and examples
become the trainer's dataset (`build_train_dataset`: a ``DatasetDict`` keyed by task, with the
instructions as per-task prompts).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._validation import check_int_at_least_zero, check_number, check_positive_int
from ..encoder import LLMEmbedder
from ..evaluation.datasets import RetrievalDataset, load_dataset
from ..instructions import TASKS, get_instruction
from ..lexical import BM25Index
from .losses import TASK_LOSS, TaskLossConfig, contrastive_fallback

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

    from .train import TrainConfig

__all__ = [
    "MiningStats",
    "TrainingDataError",
    "TrainingRecord",
    "build_examples",
    "build_train_dataset",
    "convert_dataset",
    "effective_loss_config",
    "extra_ids",
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
    outputs; ``relevant_ids`` (every judged document, for the in-batch false-negative mask),
    ``group`` (the dataset's grouping, for a dev split) and ``excluded_ids`` go to ``extra``:
    the documents the dataset bars the query from retrieving (an example itself, a chunk and
    those after it) among the keys of all the records mined, so that a dev set pooled from
    them bars them too (`selection.dev_datasets`).

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
    check_int_at_least_zero(negatives, "negatives")
    check_positive_int(max_positives, "max_positives", allow_none=True)
    check_positive_int(max_queries, "max_queries", allow_none=True)
    check_positive_int(depth, "depth")
    check_number(false_negative_margin, "false_negative_margin", low=0, allow_none=True)
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
            extra: dict[str, Any] = {"relevant_ids": sorted(relevant), "source": dataset.name}
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
    _record_exclusions(dataset, records)
    stats.queries = len(records)
    if stats.no_positive:
        logger.warning(
            "%s: %d queries have no relevant document among their candidates and were skipped",
            dataset.name,
            stats.no_positive,
        )
    logger.info("%s: %s", dataset.name, stats)
    return records, stats


def _record_exclusions(dataset: RetrievalDataset, records: list[TrainingRecord]) -> None:
    """Store in each record's ``excluded_ids`` its dataset exclusions that are keys of ``records``.

    Only the ids a pool of these records' keys can hold are kept: the exclusions of a long text
    (every later chunk of a book) would otherwise make the file grow with the square of its
    length.
    """
    if not dataset.exclude:
        return
    keys = {str(d) for r in records for d in (*(r.pos_ids or ()), *(r.neg_ids or ()))}
    for record in records:
        banned = keys.intersection(dataset.exclude.get(str(record.query_id), ()))
        if banned:
            record.extra["excluded_ids"] = sorted(banned)


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


def load_source(
    name: str, *, data_path: str | os.PathLike[str] | None = None, **options: Any
) -> RetrievalDataset:
    """A training source of `load_training_source`, or the train split of `load_dataset`."""
    from .sources import TRAIN_SOURCES, load_training_source

    if name in TRAIN_SOURCES:
        return load_training_source(name, data_path=data_path, **options)
    return load_dataset(name, "train", data_path=data_path, **options)


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
    return records_from_dataset(
        load_source(name, data_path=data_path, **options),
        encoder,
        negatives=negatives,
        max_positives=max_positives,
        max_queries=max_queries,
        answered_only=answered_only,
        bm25=bm25,
        false_negative_margin=false_negative_margin,
    )


# Examples ----------------------------------------------------------------------------------------


def effective_loss_config(task: str, *, distillation: bool = True) -> TaskLossConfig:
    """The loss settings `train` uses for ``task``.

    `TASK_LOSS`'s row; without ``distillation``, its contrastive term alone. A task of your own
    (`register_task`) trains contrastively.
    """
    config = TASK_LOSS.get(task)
    if config is None:
        get_instruction(task)  # unknown task: a clear error
        logger.warning("task %r has no row in TASK_LOSS: trained with the contrastive loss", task)
        config = TaskLossConfig("first", contrastive=True, distillation=None)
    return config if distillation else contrastive_fallback(config)


def _key_ids(record: TrainingRecord) -> list[str]:
    """Identity of each key (for the false-negative mask): the dataset ids, else the texts."""
    if record.history is None and record.pos_ids is not None and record.neg_ids is not None:
        return [*record.pos_ids, *record.neg_ids]
    return record.keys


def extra_ids(record: TrainingRecord, name: str) -> list[str]:
    """The document ids a record carries in ``extra[name]`` (none: an empty list).

    ``relevant_ids``: every document relevant to the query; ``excluded_ids``: those it must not
    retrieve.

    Raises:
        TrainingDataError: If the field is not a list of ids.
    """
    value = record.extra.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise TrainingDataError(f"must be a list of document ids, got {value!r:.80}", field=name)
    return [str(v) for v in value]


def _example(
    record: TrainingRecord, index: int, config: TaskLossConfig, group_size: int, seed: int
) -> dict[str, Any] | None:
    """One training example of ``group_size`` keys, or None when the record has no negative."""
    rng = random.Random(f"{seed}\x00{record.task}\x00{index}\x00{record.query}")
    keys, ids, scores = record.keys, _key_ids(record), record.teacher_scores
    n_pos = 0 if record.history is not None else len(record.pos)
    if scores is not None and (config.positive == "teacher" or n_pos == 0):
        positive = max(range(len(keys)), key=lambda i: (scores[i], -i))
        candidates = [i for i in range(len(keys)) if i != positive]
    elif n_pos == 0:
        raise TrainingDataError(
            f"a {record.task} record needs `pos` or `teacher_scores` to pick its positive",
            field="pos",
        )
    else:
        positive = rng.randrange(n_pos) if config.positive == "random" else 0
        candidates = list(range(n_pos, len(keys)))
    if not candidates:
        return None
    need = group_size - 1
    if len(candidates) >= need:
        chosen = rng.sample(candidates, need)
    else:
        chosen = candidates + rng.choices(candidates, k=need - len(candidates))
    order = [positive, *chosen]
    # never a negative in another query's group: a relevant key, or one the query must not
    # retrieve (an ICL query's own example, a chunk's own text), as its test split bars it
    relevant = {
        *extra_ids(record, "relevant_ids"),
        *extra_ids(record, "excluded_ids"),
        *ids[:n_pos],
        ids[positive],
    }
    example: dict[str, Any] = {"query": record.query}
    for i, k in enumerate(order):
        example[f"key_{i}"] = keys[k]
    example["label"] = (
        [float(scores[k]) for k in order] if scores is not None else [0.0] * len(order)
    )
    example["task"] = record.task
    namespace = f"{record.task}\x00"
    example["key_ids"] = [namespace + str(ids[k]) for k in order]
    example["relevant_ids"] = sorted(namespace + str(r) for r in relevant)
    return example


def _select(
    records: list[TrainingRecord], config: TaskLossConfig, cap: int | None, seed: int
) -> list[TrainingRecord]:
    """Apply the task's teacher-spread filter and its sample cap."""
    task = records[0].task
    if config.min_teacher_spread is not None:
        kept = [
            r
            for r in records
            if r.teacher_scores is None
            or max(r.teacher_scores) - min(r.teacher_scores) >= config.min_teacher_spread
        ]
        if len(kept) < len(records):
            logger.info(
                "%s: dropped %d of %d records whose teacher scores spread less than %s",
                task,
                len(records) - len(kept),
                len(records),
                config.min_teacher_spread,
            )
        records = kept
    caps = [c for c in (config.max_samples, cap) if c is not None]
    if caps and len(records) > min(caps):
        records = random.Random(f"{seed}\x00{task}").sample(records, min(caps))
    return records


def build_examples(
    records: Sequence[TrainingRecord],
    *,
    group_size: int = 8,
    distillation: bool | Mapping[str, bool] = True,
    max_samples_per_task: int | None = None,
    seed: int = 42,
    unscored: Literal["error", "contrastive"] = "error",
) -> dict[str, list[dict[str, Any]]]:
    """Training examples per task: one per record, of ``group_size`` keys.

    Each example holds the record's positive (the first listed, a random one of ``pos`` or the
    teacher's best, as the task's `TASK_LOSS` row says) and ``group_size - 1`` negatives drawn
    from its hard negatives (repeated when it has fewer), with the teacher scores of the chosen
    keys. The draw is seeded per record, so it is the same in every run with the same seed.
    Keys are identified by ``pos_ids``/``neg_ids`` where the record has them, else by their
    text; an optional ``relevant_ids`` field (every document relevant to the query, e.g. all
    documents of the same API call) widens the false-negative mask beyond ``pos``.

    ``distillation`` is one switch for every task, or one per task (a task not named trains
    contrastively). ``unscored`` says what becomes of a distilled task's records without
    ``teacher_scores``: an ``"error"``, or ``"contrastive"`` examples (NaN labels, which
    `MultiTaskLoss` trains with the task's contrastive term alone).

    Raises:
        TrainingDataError: If a task trained by distillation has records without
            ``teacher_scores`` (and ``unscored`` is ``"error"``), or a task has no usable record.
    """
    if unscored not in ("error", "contrastive"):
        raise ValueError(f"`unscored` must be 'error' or 'contrastive', got {unscored!r}")
    by_task: dict[str, list[TrainingRecord]] = {}
    for record in records:
        by_task.setdefault(record.task, []).append(record)
    out: dict[str, list[dict[str, Any]]] = {}
    for task, items in by_task.items():
        distil = distillation if isinstance(distillation, bool) else distillation.get(task, False)
        config = effective_loss_config(task, distillation=distil)
        missing = sum(1 for r in items if r.teacher_scores is None)
        if config.distillation is not None and missing and unscored == "error":
            raise TrainingDataError(
                f"{missing} of {len(items)} {task!r} records have no `teacher_scores`, which "
                f"{config.distillation} distillation needs: score them with `llm-embedder score "
                "IN.jsonl OUT.jsonl`, or train without distillation (--no-distillation)",
                field="teacher_scores",
            )
        items = _select(items, TASK_LOSS.get(task, config), max_samples_per_task, seed)
        examples = []
        skipped = 0
        fallback = contrastive_fallback(config)
        for index, record in enumerate(items):
            unscored_row = record.teacher_scores is None and config.distillation is not None
            example = _example(
                record, index, fallback if unscored_row else config, group_size, seed
            )
            if example is None:
                skipped += 1
                continue
            if unscored_row:
                example["label"] = [math.nan] * group_size
            examples.append(example)
        if skipped:
            logger.warning("%s: %d records have no negative key and were skipped", task, skipped)
        if not examples:
            raise TrainingDataError(f"no usable training record for task {task!r}", field="neg")
        out[task] = examples
    return out


def _prefixed(example: dict[str, Any]) -> dict[str, Any]:
    """The example with its task's instructions written into the texts (mixed batches)."""
    pair = get_instruction(example["task"])
    out = dict(example)
    out["query"] = pair.query + example["query"]
    for name in example:
        if name.startswith("key_") and name != "key_ids":
            out[name] = pair.key + example[name]
    return out


def build_train_dataset(
    records: Sequence[TrainingRecord],
    config: TrainConfig,
    distillation: Mapping[str, bool] | None = None,
) -> tuple[Dataset | DatasetDict, dict[str, str] | dict[str, dict[str, str]] | None]:
    """The training set and the trainer's ``prompts`` for ``records``.

    Homogeneous: a ``DatasetDict`` keyed by task, with the instructions as per-task column
    prompts. Mixed: one ``Dataset`` whose texts already carry their task's instructions (a
    prompt is per column, and a mixed batch has several tasks in a column), and no prompts.

    Columns: ``query``, ``key_0`` (the positive) ... ``key_{G-1}``, ``label`` (teacher scores of
    the keys, zeros when the task has none, NaN for an unscored query of a distilled task),
    ``task``, ``key_ids``, ``relevant_ids``. ``distillation`` gives the switch per task (see
    `distillation_plan`); None takes ``config.distillation`` for every task ("auto" counting as
    on). With ``config.distillation == "auto"``, a distilled task's unscored records train with
    its contrastive term; otherwise they are an error.
    """
    from datasets import Dataset, DatasetDict

    examples = build_examples(
        records,
        group_size=config.group_size,
        distillation=bool(config.distillation) if distillation is None else distillation,
        max_samples_per_task=config.max_samples_per_task,
        seed=config.seed,
        unscored="contrastive" if config.distillation == "auto" else "error",
    )
    if config.homogeneous:
        prompts: dict[str, dict[str, str]] = {}
        for task in examples:
            pair = get_instruction(task)
            prompts[task] = {"query": pair.query}
            prompts[task].update({f"key_{i}": pair.key for i in range(config.group_size)})
        return DatasetDict({t: Dataset.from_list(rows) for t, rows in examples.items()}), prompts
    rows = [_prefixed(e) for items in examples.values() for e in items]
    return Dataset.from_list(rows), None
