"""Model selection for fine-tuning: dev split, dev curve, weight interpolation, teacher checks.

A fine-tuned embedder can come out worse than the model it started from: too little data, a weak
teacher, or an instruction that costs a small model more than it brings. The trainer guards
against it with what this module provides:

* `split_dev` carves a dev split out of the training records, per source (the records'
  ``source`` field: a task trained on two datasets is checked on both), whole groups at a time (a
  page, a dialogue, an API, a book: the records' ``group`` field), seeded.
* `dev_datasets` turns the dev records into one small retrieval set per task and source (their
  positives and hard negatives pooled into a corpus), and `dev_scores` ranks it with the
  package's metrics (MRR@10).
* `DevCallback` scores the dev split during training, logs the dev curve and keeps the weights of
  the best step, and of each task's own best step where that is better beyond the noise.
* `select_per_task` interpolates between the base and the fine-tuned weights (WiSE-FT, Wortsman et
  al. 2022: ``theta = (1 - a) * base + a * tuned``) and chooses, per task, the weight ``a`` and
  whether the task's instructions are applied, on the dev split: among the choices that lose on
  none of the task's sources, the simplest (smallest ``a``, then no instructions) whose mean
  over them is within one standard error of the best (the one-standard-error rule of Breiman et
  al. 1984). ``a = 0`` without instructions is the base model itself, so the choice is never
  worse than the base on any source of the dev split, and a gain within the dev split's noise
  keeps the base.
* `teacher_quality` measures how often the LLM teacher, and the student, rank a record's gold
  positive first: distillation is only worth it where the teacher is the better of the two.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from .._sampling import spread
from ..evaluation.datasets import RetrievalDataset
from ..evaluation.metrics import evaluate_rankings, paired_gain
from ..instructions import get_instruction
from .data import TrainingRecord, extra_ids

__all__ = [
    "DEV_METRIC",
    "DevCallback",
    "Selection",
    "TaskChoice",
    "TeacherQuality",
    "cap_per_group",
    "choose_per_task",
    "dev_datasets",
    "dev_query_scores",
    "dev_scores",
    "dev_set_name",
    "dev_unit",
    "held_out_dev",
    "interpolate",
    "query_groups",
    "select_per_task",
    "split_dev",
    "st_encoder",
    "teacher_quality",
]

logger = logging.getLogger(__name__)

DEV_METRIC = "mrr@10"
"""The metric that selects checkpoints, interpolation weights and instructions."""


def _source(record: TrainingRecord) -> str:
    """The dataset a record comes from (its ``source`` field), or ``""`` when unknown."""
    return str(record.extra.get("source") or "")


def dev_unit(record: TrainingRecord) -> tuple[str, str]:
    """What a dev split is drawn from, and scored on, separately: ``(task, source)``."""
    return record.task, _source(record)


def dev_set_name(task: str, source: str) -> str:
    """The key of a dev set in `dev_datasets` and `dev_scores`: ``task`` or ``task/source``."""
    return f"{task}/{source}" if source else task


def _group(record: TrainingRecord) -> str:
    """The unit a dev split keeps whole: the record's ``group``, else its first positive."""
    group = record.extra.get("group")
    if group is not None:
        return str(group)
    if record.pos_ids:
        return str(record.pos_ids[0])
    return record.pos[0] if record.pos else record.query


def split_dev(
    records: Sequence[TrainingRecord],
    *,
    fraction: float = 0.1,
    max_queries: int | None = 100,
    min_queries: int | None = None,
    seed: int = 42,
    exclude: Collection[tuple[str, str]] = (),
) -> tuple[list[TrainingRecord], list[TrainingRecord]]:
    """Split ``records`` into training and dev records, per task and source, whole groups at a time.

    Each task's records of one source (their ``source`` field; records without one form one
    source) are split on their own, so a task trained on two datasets is checked on both. Groups
    are shuffled with ``seed`` and moved to the dev side while its share stays within
    ``fraction`` of the source's records, raised to ``min_queries`` for a source of at least
    three times as many records, and capped at ``max_queries``. Where every group of such a
    source is over that budget, the smallest whole group is taken instead if it is at most a
    third of the records. A source with fewer than two groups, or with none small enough, keeps
    all its records for training.
    Chat records made of a ``history`` (no pooled corpus is possible) stay in training too, as
    do the ``(task, source)`` pairs in ``exclude`` (those with a dev set of their own).

    Returns:
        ``(train, dev)``, each in the input order.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"`fraction` must be a number > 0 and < 1, got {fraction!r}")
    for name, value in (("max_queries", max_queries), ("min_queries", min_queries)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"`{name}` must be a positive int or None, got {value!r}")
    excluded = set(exclude)
    by_unit: dict[tuple[str, str], dict[str, list[int]]] = {}
    for i, record in enumerate(records):
        if record.history is None and dev_unit(record) not in excluded:
            by_unit.setdefault(dev_unit(record), {}).setdefault(_group(record), []).append(i)
    dev: set[int] = set()
    for (task, source), groups in by_unit.items():
        total = sum(len(v) for v in groups.values())
        budget = fraction * total
        floor = min_queries is not None and total >= 3 * min_queries
        if floor:
            budget = max(budget, min_queries)
        if max_queries is not None:
            budget = min(budget, max_queries)
        order = sorted(groups)
        random.Random(f"{seed}\x00{task}\x00{source}").shuffle(order)
        taken = 0
        for group in order[:-1]:  # the last group always stays in training
            if taken + len(groups[group]) <= budget:
                dev.update(groups[group])
                taken += len(groups[group])
        # Large groups (long dialogues): the smallest whole group, if it is at most a third;
        # with two groups or more, one is left to train on whichever is taken.
        smallest = min(
            order if len(order) > 1 else [],
            key=lambda g: (len(groups[g]), order.index(g)),
            default=None,
        )
        if not taken and floor and smallest is not None and len(groups[smallest]) <= total / 3:
            dev.update(groups[smallest])
            taken = len(groups[smallest])
        if not taken:
            logger.info(
                "%s: no dev split (too few groups for a %.0f%% share)",
                dev_set_name(task, source),
                100 * fraction,
            )
    train = [r for i, r in enumerate(records) if i not in dev]
    held = [r for i, r in enumerate(records) if i in dev]
    return train, held


def held_out_dev(
    dev_records: Sequence[TrainingRecord],
    train_records: Sequence[TrainingRecord],
    *,
    max_queries: int | None = 100,
    seed: int = 42,
) -> list[TrainingRecord]:
    """A dev split given apart from the training data, made safe to select on.

    A dev record whose group (page, dialogue, API, book) also occurs among the training records
    of its task and source is dropped, so the dev score does not reward memorised groups; then at
    most ``max_queries`` records per task and source are kept (a seeded sample, input order).
    """
    seen = {(*dev_unit(r), _group(r)) for r in train_records}
    kept: dict[tuple[str, str], list[int]] = {}
    dropped = 0
    for i, record in enumerate(dev_records):
        if (*dev_unit(record), _group(record)) in seen or record.history is not None:
            dropped += 1
            continue
        kept.setdefault(dev_unit(record), []).append(i)
    if dropped:
        logger.info("dev records dropped (their group is in the training data): %d", dropped)
    chosen: set[int] = set()
    for (task, source), indices in kept.items():
        if max_queries is not None and len(indices) > max_queries:
            indices = random.Random(f"{seed}\x00{task}\x00{source}").sample(indices, max_queries)
        chosen.update(indices)
    return [r for i, r in enumerate(dev_records) if i in chosen]


def cap_per_group(
    records: Sequence[TrainingRecord], caps: Mapping[str, int]
) -> list[TrainingRecord]:
    """At most ``caps[task]`` records of each group (an API, a page, a dialogue) of a task.

    A group is counted per task and source (the record's ``group``, else its first positive).
    The records kept are spread evenly over the group's records in input order; tasks not in
    ``caps`` keep all theirs. Cap the training records, after the dev split is drawn from all of
    them, so that the cap changes what trains and not what selects.

    A few groups can hold most of a small source (TensorFlow Hub's train split: 230 of 482
    queries on one API), and training on them pulls their documents up for every query.
    """
    by_group: dict[tuple[str, str, str], list[int]] = {}
    for i, record in enumerate(records):
        if record.task in caps:
            by_group.setdefault((*dev_unit(record), _group(record)), []).append(i)
    dropped = {
        i
        for (task, _, _), indices in by_group.items()
        for i in set(indices) - set(spread(indices, caps[task]))
    }
    if dropped:
        counts = Counter(dev_set_name(*dev_unit(records[i])) for i in dropped)
        logger.info("training records over the cap per group, left out: %s", dict(counts))
    return [r for i, r in enumerate(records) if i not in dropped]


def dev_groups(records: Sequence[TrainingRecord]) -> dict[str, dict[str, str]]:
    """The group of each query of `dev_datasets` (of the same records): ``{set: {qid: group}}``.

    The choice rule measures a dev gain's error over these groups (`paired_gain`): the dev
    split is drawn by whole groups, as the test splits are, so a gain must hold across groups.
    """
    out: dict[str, dict[str, str]] = {}
    for n, record in enumerate(records):
        if record.history is None:
            out.setdefault(dev_set_name(*dev_unit(record)), {})[f"dev-{n}"] = _group(record)
    return out


def _key_id(record: TrainingRecord, index: int) -> str:
    ids = [*(record.pos_ids or []), *(record.neg_ids or [])]
    if record.pos_ids is not None and record.neg_ids is not None:
        return str(ids[index])
    return "text:" + record.keys[index]


def dev_datasets(
    records: Sequence[TrainingRecord],
    distractors: Sequence[TrainingRecord] = (),
    *,
    max_distractors: int = 300,
    seed: int = 42,
) -> dict[str, RetrievalDataset]:
    """One retrieval set per task and source: the dev queries against all their keys pooled.

    A query's relevant documents are its positives and its ``relevant_ids``; every other pooled
    key (its own hard negatives and the other queries' keys) competes with them, except its
    ``excluded_ids``, which the set's ``exclude`` bars as the test split bars them (an ICL
    example is not its own demonstration; a long text's chunk does not retrieve itself or what
    follows it). The keys of
    ``distractors`` (the training records) of the same task and source, at most
    ``max_distractors`` of them (a seeded sample), join the pool: the dev queries alone pool a
    few dozen keys, where a test corpus holds thousands and ranking is far harder. The sets are
    keyed by `dev_set_name` (``"tool/gorilla_tensorflow"``; the task alone for records without
    a source), and each set's ``task`` is its task; a query's ``metadata`` holds its ``group``
    (`dev_groups`).
    """
    corpora: dict[str, dict[str, str]] = {}
    queries: dict[str, dict[str, str]] = {}
    wanted: dict[str, dict[str, set[str]]] = {}
    barred: dict[str, dict[str, set[str]]] = {}
    for n, record in enumerate(records):
        if record.history is not None:
            continue
        name = dev_set_name(*dev_unit(record))
        corpus = corpora.setdefault(name, {})
        for i, text in enumerate(record.keys):
            corpus.setdefault(_key_id(record, i), text)
        qid = f"dev-{n}"
        queries.setdefault(name, {})[qid] = record.query
        relevant = {_key_id(record, i) for i in range(len(record.pos))}
        relevant |= set(extra_ids(record, "relevant_ids"))
        wanted.setdefault(name, {})[qid] = relevant
        banned = set(extra_ids(record, "excluded_ids")) - relevant
        if banned:
            barred.setdefault(name, {})[qid] = banned
    extra: dict[str, dict[str, str]] = {}
    for record in distractors:
        name = dev_set_name(*dev_unit(record))
        if name in corpora and record.history is None:
            for i, text in enumerate(record.keys):
                key = _key_id(record, i)
                if key not in corpora[name]:
                    extra.setdefault(name, {}).setdefault(key, text)
    for name, pool in extra.items():
        keys = sorted(pool)
        if len(keys) > max_distractors:
            keys = sorted(random.Random(f"{seed}\x00{name}").sample(keys, max_distractors))
        corpora[name].update((k, pool[k]) for k in keys)
    tasks = {dev_set_name(*dev_unit(r)): r.task for r in records}
    groups = dev_groups(records)
    return {
        name: RetrievalDataset(
            f"dev-{name}",
            tasks[name],
            corpora[name],
            queries[name],
            {
                qid: dict.fromkeys(sorted(r for r in relevant if r in corpora[name]), 1)
                for qid, relevant in wanted[name].items()
            },
            metadata={qid: {"group": group} for qid, group in groups[name].items()},
            exclude={
                qid: banned & corpora[name].keys() for qid, banned in barred.get(name, {}).items()
            },
            split="test",
        )
        for name in sorted(queries)
    }


Encode = Callable[[list[str], str, str], np.ndarray]
"""``encode(texts, task, side)`` -> L2-normalised rows; ``side`` is ``"query"`` or ``"key"``."""


def st_encoder(model: Any, instructions: bool | Mapping[str, bool], batch_size: int = 64) -> Encode:
    """An `Encode` of a sentence-transformers model, with or without each task's instructions.

    The model's own pooling applies (a mean-pooled model trained here leaves the instruction out
    of the mean, as at inference).
    """

    def encode(texts: list[str], task: str, side: str) -> np.ndarray:
        on = instructions if isinstance(instructions, bool) else instructions.get(task, False)
        pair = get_instruction(task)
        prompt = (pair.query if side == "query" else pair.key) if on else None
        vectors = model.encode(
            texts,
            prompt=prompt,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    return encode


def dev_query_scores(
    encode: Encode, datasets: Mapping[str, RetrievalDataset], *, k: int = 10
) -> dict[str, dict[str, float]]:
    """`DEV_METRIC` of each judged query of each dev set: exact search over its pooled corpus.

    A query's ``exclude`` ids are barred from its ranking.
    """
    out = {}
    for name, ds in datasets.items():
        qids, docs = list(ds.queries), list(ds.corpus)
        q = encode([ds.queries[i] for i in qids], ds.task, "query")
        d = encode([ds.corpus[i] for i in docs], ds.task, "key")
        scores = q @ d.T
        column = {doc: j for j, doc in enumerate(docs)}
        for row, qid in enumerate(qids):
            barred = [column[doc] for doc in ds.exclude.get(qid, ()) if doc in column]
            scores[row, barred] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        run = {
            qid: [docs[j] for j in top[r] if np.isfinite(scores[r, j])]
            for r, qid in enumerate(qids)
        }
        _, per_query = evaluate_rankings(run, ds.qrels, ks=(k,), per_query=True)
        out[name] = {qid: values[DEV_METRIC] for qid, values in per_query.items()}
    return out


def dev_scores(
    encode: Encode, datasets: Mapping[str, RetrievalDataset], *, k: int = 10
) -> dict[str, float]:
    """`DEV_METRIC` of each dev set: the mean of `dev_query_scores` over its judged queries."""
    return _set_means(dev_query_scores(encode, datasets, k=k))


def _mean(scores: Mapping[str, float]) -> float:
    return float(np.mean(list(scores.values()))) if scores else 0.0


def _set_means(queries: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Each dev set's mean of its per-query scores."""
    return {name: _mean(values) for name, values in queries.items()}


def _sets_by_task(tasks: Mapping[str, str]) -> dict[str, list[str]]:
    """Task -> the names of its dev sets (``tasks``: dev set name -> task)."""
    sets: dict[str, list[str]] = {}
    for name, task in tasks.items():
        sets.setdefault(task, []).append(name)
    return sets


def _task_means(scores: Mapping[str, float], tasks: Mapping[str, str]) -> dict[str, float]:
    """Each task's mean over its dev sets' scores (``tasks``: dev set name -> task)."""
    by_task: dict[str, list[float]] = {}
    for name, score in scores.items():
        by_task.setdefault(tasks[name], []).append(score)
    return {task: float(np.mean(values)) for task, values in by_task.items()}


class DevCallback(TrainerCallback):
    """Scores the dev split every ``eval_steps`` steps and keeps the best steps' weights.

    The scores go to the trainer's log history (``dev_mrr@10`` and ``dev_mrr@10/<task>``) and to
    `curve`. The best step is the one with the highest mean over tasks; each task's best step is
    the one with the highest mean over its own dev sets (ties: the earlier step). The weights and
    per-query scores of those steps are kept (on the CPU), no others: tasks that learn at
    different rates (a memory task still gaining when a question-answering task has begun to
    lose) can each be taken from their own step.

    Args:
        datasets: The dev sets of `dev_datasets`.
        eval_steps: Score every this many optimizer steps (and after the last one).
        batch_size: Texts per forward pass when encoding.
    """

    def __init__(
        self, datasets: Mapping[str, RetrievalDataset], eval_steps: int, batch_size: int = 64
    ) -> None:
        self.datasets = dict(datasets)
        self.eval_steps = eval_steps
        self.batch_size = batch_size
        self.curve: list[dict[str, Any]] = []
        self.best_step: int | None = None
        self.best_score = -1.0
        self.task_best: dict[str, tuple[float, int]] = {}
        self._states: dict[int, dict[str, torch.Tensor]] = {}
        self._queries: dict[int, dict[str, dict[str, float]]] = {}

    @property
    def task_steps(self) -> dict[str, int]:
        """Task -> the step where its dev score peaked."""
        return {task: step for task, (_, step) in self.task_best.items()}

    def chosen_steps(self, se: float = 1.0) -> dict[str, int]:
        """Task -> its step: its own peak only where that beats the best step by over ``se`` errors.

        A task's own peak is the best of a handful of noisy scores on its dev sets alone, a few
        dozen queries for some; the best step is chosen on every dev query. So, as with the
        interpolation weight (`choose_per_task`), a task keeps the shared best step unless its
        own peak is better there by more than ``se`` standard errors of the paired per-query
        gain over its dev sets (errors over the dev split's groups); ``se=0`` takes each
        task's peak as it is.
        """
        if self.best_step is None:
            return {}
        groups = query_groups(self.datasets)
        names_of = _sets_by_task({name: ds.task for name, ds in self.datasets.items()})
        chosen = {}
        for task, step in self.task_steps.items():
            chosen[task] = step
            if step == self.best_step or se <= 0:
                continue
            own, best = self._queries[step], self._queries[self.best_step]
            gain, error = _gap(own, best, names_of[task], groups)
            if gain <= se * error:
                chosen[task] = self.best_step
                logger.info(
                    "%s: its own best dev step %d gains %.4f on the best step %d, within %.1f "
                    "standard errors (%.4f): it takes step %d",
                    task,
                    step,
                    gain,
                    self.best_step,
                    se,
                    error,
                    self.best_step,
                )
        return chosen

    @property
    def best_state(self) -> dict[str, torch.Tensor] | None:
        """The weights of the best step (best mean over tasks); None before any score."""
        return None if self.best_step is None else self._states[self.best_step]

    @property
    def best_queries(self) -> dict[str, dict[str, float]] | None:
        """The best step's per-query dev scores (with instructions)."""
        return None if self.best_step is None else self._queries[self.best_step]

    def state_at(self, step: int) -> dict[str, torch.Tensor]:
        """The kept weights of ``step`` (the best step or a task's best step)."""
        return self._states[step]

    def queries_at(self, step: int) -> dict[str, dict[str, float]]:
        """The per-query dev scores (with instructions) of a kept step."""
        return self._queries[step]

    def _score(self, model: Any, state: Any) -> None:
        if any(entry["step"] == state.global_step for entry in self.curve):
            return
        step = state.global_step
        was_training = model.training
        with torch.no_grad():
            queries = dev_query_scores(st_encoder(model, True, self.batch_size), self.datasets)
        model.train(was_training)
        scores = _set_means(queries)
        mean = _mean(scores)
        entry = {"step": step, f"dev_{DEV_METRIC}": mean}
        entry.update({f"dev_{DEV_METRIC}/{t}": s for t, s in scores.items()})
        self.curve.append(entry)
        state.log_history.append(dict(entry))
        logger.info("dev %s at step %d: %.4f %s", DEV_METRIC, step, mean, scores)
        if mean > self.best_score:
            self.best_score, self.best_step = mean, step
        tasks = {name: ds.task for name, ds in self.datasets.items()}
        for task, score in _task_means(scores, tasks).items():
            if task not in self.task_best or score > self.task_best[task][0]:
                self.task_best[task] = (score, step)
        kept = {self.best_step, *self.task_steps.values()}
        if step in kept:
            self._states[step] = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
            self._queries[step] = queries
        for old in set(self._states) - kept:
            del self._states[old], self._queries[old]

    def on_step_end(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> None:
        """Score at every ``eval_steps``-th step."""
        if model is not None and self.datasets and state.global_step % self.eval_steps == 0:
            self._score(model, state)

    def on_train_end(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> None:
        """Score the final weights too."""
        if model is not None and self.datasets:
            self._score(model, state)


def interpolate(
    base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * base + alpha * tuned`` for every floating tensor (others from ``tuned``).

    Raises:
        ValueError: If the two state dicts do not hold the same tensors, or ``alpha`` is not in
            [0, 1].
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"`alpha` must be a number in [0, 1], got {alpha!r}")
    if set(base) != set(tuned):
        missing = sorted(set(base) ^ set(tuned))[:5]
        raise ValueError(f"the base and tuned weights differ in their tensors, e.g. {missing}")
    out = {}
    for name, value in tuned.items():
        if value.is_floating_point():
            out[name] = torch.lerp(base[name].to(value.dtype), value, float(alpha))
        else:
            out[name] = value.clone()
    return out


@dataclass(frozen=True)
class TaskChoice:
    """What `select_per_task` chose for one task, with the dev scores behind the choice.

    The dev scores are means over the task's dev sets (one per source), each of which is in
    ``sources``. A task without a dev set keeps the base model as it is used (``alpha = 0``,
    the base's own instruction setting), and its scores are None.

    Attributes:
        alpha: Interpolation weight of the fine-tuned weights (0: the base model).
        instructions: Whether the task's instructions are applied.
        dev: Dev `DEV_METRIC` of the choice.
        base_dev: Dev score of the base model as it is used: without instructions, unless it
            was trained with them (`choose_per_task`'s ``base_instructions``).
        tuned_dev: Dev score of the fine-tuned model (``alpha = 1``) with instructions.
        sources: Dev set name -> ``{"dev", "base_dev", "tuned_dev"}`` on that set alone.
        best_dev: The best dev score of the choices that lose on no source.
        gap_se: Standard error of the paired per-query difference between that best choice and
            this one (0 where the choice is the best, or no per-query scores were given).
        step: The training step of the fine-tuned weights interpolated towards; None for the
            base model (``alpha = 0``) or where the step is not known.
    """

    alpha: float
    instructions: bool
    dev: float | None
    base_dev: float | None
    tuned_dev: float | None
    sources: dict[str, dict[str, float]] = field(default_factory=dict)
    best_dev: float | None = 0.0
    gap_se: float = 0.0
    step: int | None = None

    @property
    def measured(self) -> bool:
        """Whether the task had a dev set to choose on."""
        return self.dev is not None


Grid = Mapping[float, Mapping[str, Mapping[str, Any]]]
"""``{alpha: {"instructions" | "plain": {dev set name: value}}}``: a score, or per-query scores."""


@dataclass
class Selection:
    """The per-task choices and the full grid of dev scores they were chosen from.

    Attributes:
        tasks: Task -> its choice.
        grid: ``{alpha: {"instructions" | "plain": {dev set name: score}}}``.
        queries: The same grid with each dev set's per-query scores, ``{query id: score}``.
        groups: Each dev set's query groups, ``{dev set name: {query id: group}}``.
    """

    tasks: dict[str, TaskChoice] = field(default_factory=dict)
    grid: dict[float, dict[str, dict[str, float]]] = field(default_factory=dict)
    queries: dict[float, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    groups: dict[str, dict[str, str]] = field(default_factory=dict)

    def regressed(self) -> list[str]:
        """Tasks whose fine-tuned model (``alpha = 1``) is below the base on the dev split."""
        return [
            t
            for t, c in self.tasks.items()
            if c.tuned_dev is not None and c.base_dev is not None and c.tuned_dev < c.base_dev
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the run summary (the per-query grid too, to re-run the rule on)."""
        return {
            "metric": DEV_METRIC,
            "tasks": {t: vars(c) for t, c in self.tasks.items()},
            "grid": {f"{a:.2f}": v for a, v in self.grid.items()},
            "queries": {f"{a:.2f}": v for a, v in self.queries.items()},
            "groups": self.groups,
        }


def select_per_task(
    model: Any,
    base_state: Mapping[str, torch.Tensor],
    tuned_state: Mapping[str, torch.Tensor],
    datasets: Mapping[str, RetrievalDataset],
    *,
    alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    se: float = 1.0,
    batch_size: int = 64,
    known: Mapping[tuple[float, str], Mapping[str, Mapping[str, float]]] | None = None,
    tuned_step: int | None = None,
    task_weights: Mapping[str, tuple[int, Mapping[str, torch.Tensor]]] | None = None,
    base_instructions: Mapping[str, bool] | None = None,
    serve: Collection[str] = (),
) -> Selection:
    """Choose, per task, the interpolation weight and the instruction switch on the dev split.

    Every ``alpha`` of ``alphas`` (0 is always added) is scored with and without instructions on
    every query of every dev set, and `choose_per_task` applies the rule: among the pairs that
    score at least the base model (``alpha = 0``, as it is used: see ``base_instructions``) on
    each of the task's dev sets, so a gain on one source never pays for a loss on another, the
    simplest pair (smallest ``alpha``, then the base's own instruction setting) within ``se``
    standard errors of the best (errors over the dev split's groups, `dev_groups`); a task
    whose gain is within the noise of its dev split keeps the base model unchanged. A task of
    ``serve`` without a dev set keeps the base model too.
    ``model`` is the sentence-transformers model to load the weights into; it holds
    ``tuned_state`` on return. ``known`` gives cells already scored, ``{(alpha, mode):
    per-query scores}`` (the dev callback's scores are ``(1.0, "instructions")``), which are
    not encoded again. ``task_weights`` gives a task its own fine-tuned weights, ``{task:
    (step, state)}`` (the step where its dev score peaked); the other tasks interpolate towards
    ``tuned_state``, the weights of step ``tuned_step``. Each choice records its step.
    ``base_instructions`` gives, per task, whether the base model is used with its instructions
    (a model trained with them); by default it is used without.
    """
    known = known or {}
    task_weights = dict(task_weights or {})
    grid_alphas = sorted({0.0, *(float(a) for a in alphas)})
    for a in grid_alphas:
        if not 0 <= a <= 1:
            raise ValueError(f"every interpolation weight must be in [0, 1], got {a}")
    # The dev sets grouped by the fine-tuned weights their task interpolates towards.
    groups: dict[int, tuple[Mapping[str, torch.Tensor], dict[str, RetrievalDataset]]] = {}
    for name, ds in datasets.items():
        weights = task_weights[ds.task][1] if ds.task in task_weights else tuned_state
        groups.setdefault(id(weights), (weights, {}))[1][name] = ds
    selection = Selection(groups=query_groups(datasets))
    was_training = model.training
    model.eval()
    try:
        for alpha in grid_alphas:
            cells: dict[str, dict[str, dict[str, float]]] = {"instructions": {}, "plain": {}}
            # alpha 0 is the base model whichever weights a task interpolates towards
            parts = [(tuned_state, dict(datasets))] if alpha == 0 else list(groups.values())
            for weights, sets in parts:
                loaded = False
                for mode in ("instructions", "plain"):
                    have = known.get((alpha, mode))
                    if have is not None and all(n in have for n in sets):
                        cells[mode].update({n: dict(have[n]) for n in sets})
                        continue
                    if not loaded:
                        model.load_state_dict(interpolate(base_state, weights, alpha))
                        loaded = True
                    with torch.no_grad():
                        encode = st_encoder(model, mode == "instructions", batch_size)
                        cells[mode].update(dev_query_scores(encode, sets))
            selection.queries[alpha] = cells
            selection.grid[alpha] = {mode: _set_means(sets) for mode, sets in cells.items()}
            logger.info("dev %s at alpha %.2f: %s", DEV_METRIC, alpha, selection.grid[alpha])
    finally:
        model.load_state_dict(dict(tuned_state))
        model.train(was_training)
    choices = choose_per_task(
        selection.grid,
        {n: ds.task for n, ds in datasets.items()},
        queries=selection.queries,
        groups=selection.groups,
        se=se,
        base_instructions=base_instructions,
        serve=serve,
    )

    def step_of(task: str, choice: TaskChoice) -> int | None:
        if choice.alpha == 0:  # the base model
            return None
        return task_weights[task][0] if task in task_weights else tuned_step

    selection.tasks = {
        task: dataclasses.replace(choice, step=step_of(task, choice))
        for task, choice in choices.items()
    }
    return selection


def query_groups(datasets: Mapping[str, RetrievalDataset]) -> dict[str, dict[str, str]]:
    """Each dev set's query groups, ``{dev set name: {query id: group}}``, where recorded."""
    return {
        name: {q: str(m["group"]) for q, m in ds.metadata.items() if "group" in m}
        for name, ds in datasets.items()
    }


def _gap(
    better: Mapping[str, Mapping[str, float]],
    other: Mapping[str, Mapping[str, float]],
    names: Sequence[str],
    groups: Mapping[str, Mapping[str, str]],
) -> tuple[float, float]:
    """Mean over ``names`` of ``better - other`` and its standard error, paired by query.

    Both map a dev set's name to its per-query scores. A dev set with its queries' ``groups``
    has the error of a sample of groups (`paired_gain`).
    """
    means, variances = [], []
    for name in names:
        high, low = better[name], other[name]
        if len(high) > 1:
            mean, error = paired_gain(high, low, groups.get(name) or None)
        else:  # one query or none: no spread to measure
            mean, error = sum(high[q] - low[q] for q in high), 0.0
        means.append(mean)
        variances.append(error**2)
    return float(np.mean(means)), float(np.sqrt(np.sum(variances)) / len(names))


def choose_per_task(
    grid: Grid,
    tasks: Mapping[str, str],
    *,
    queries: Grid | None = None,
    groups: Mapping[str, Mapping[str, str]] | None = None,
    se: float = 1.0,
    base_instructions: Mapping[str, bool] | None = None,
    serve: Collection[str] = (),
) -> dict[str, TaskChoice]:
    """The choice rule of `select_per_task`, on a grid of dev scores already measured.

    Args:
        grid: ``{alpha: {"instructions" | "plain": {dev set name: score}}}``; alpha 0 required.
        tasks: Dev set name -> its task.
        queries: The same grid with per-query scores (``{dev set name: {query id: score}}``);
            None (or ``se=0``) takes the best mean as it is.
        groups: Each dev set's query groups (``{dev set name: {query id: group}}``, as
            `dev_groups` gives): the error of a set with groups is that of a sample of groups,
            the larger of the per-query and the cluster-robust one (`paired_gain`). A dev split
            is drawn by whole groups (articles, dialogues, APIs), as the test splits are, and the
            queries of one group tend to gain or lose together. Sets left out: per query.
        se: How many standard errors of the paired per-query difference a simpler choice may
            trail the best by and still be taken.
        base_instructions: Task -> whether the base model is used with its instructions (a
            model trained with them, such as LLM-Embedder): that is the reference every choice
            must reach. Tasks left out are used without.
        serve: Tasks the saved model serves. One without a dev set has nothing to choose on and
            keeps the base model as it is used, with a warning.
    """
    if isinstance(se, bool) or not isinstance(se, (int, float)) or se < 0:
        raise ValueError(f"`se` must be a number >= 0, got {se!r}")
    grid_alphas = sorted(grid)
    if not grid_alphas or grid_alphas[0] != 0.0:
        raise ValueError("the grid must hold alpha 0 (the base model)")
    top = grid_alphas[-1]
    on = dict(base_instructions or {})
    choices = {}
    for task, names in _sets_by_task(tasks).items():
        own = "instructions" if on.get(task, False) else "plain"
        modes = (own, "plain" if own == "instructions" else "instructions")
        base = grid[0.0][own]
        # simplest first: the smaller alpha, then the base's own instruction setting
        options = [
            (a, mode)
            for a in grid_alphas
            for mode in modes
            if all(grid[a][mode][n] >= base[n] for n in names)
        ]  # never empty: alpha 0 in the base's own setting is the base itself

        def mean(option: tuple[float, str], names: list[str] = names) -> float:
            return float(np.mean([grid[option[0]][option[1]][n] for n in names]))

        best = max(options, key=lambda o: (mean(o), -options.index(o)))
        chosen, gap_se = best, 0.0
        if queries is not None and se > 0:
            for option in options:
                gap, error = _gap(
                    queries[best[0]][best[1]],
                    queries[option[0]][option[1]],
                    names,
                    groups or {},
                )
                if gap <= se * error:
                    chosen, gap_se = option, error
                    break
        cell = grid[chosen[0]][chosen[1]]
        tuned = grid[top]["instructions"]
        choices[task] = TaskChoice(
            alpha=chosen[0],
            instructions=chosen[1] == "instructions",
            dev=mean(chosen),
            base_dev=float(np.mean([base[n] for n in names])),
            tuned_dev=float(np.mean([tuned[n] for n in names])),
            sources={
                n: {"dev": cell[n], "base_dev": base[n], "tuned_dev": tuned[n]} for n in names
            },
            best_dev=mean(best),
            gap_se=gap_se,
        )
        if chosen != best:
            logger.info(
                "%s: alpha %.2f%s chosen, within %.1f standard errors (%.4f) of the best dev "
                "%s %.4f (alpha %.2f%s)",
                task,
                chosen[0],
                " with instructions" if chosen[1] == "instructions" else "",
                se,
                gap_se,
                DEV_METRIC,
                mean(best),
                best[0],
                " with instructions" if best[1] == "instructions" else "",
            )
    unmeasured = [t for t in serve if t not in choices]
    for task in unmeasured:
        choices[task] = TaskChoice(
            alpha=0.0,
            instructions=on.get(task, False),
            dev=None,
            base_dev=None,
            tuned_dev=None,
            best_dev=None,
        )
    if unmeasured:
        logger.warning(
            "no dev set for %s: nothing shows that fine-tuning helps them, so they keep the "
            "base model; give them training records (a dev split is drawn from those) or "
            "`dev_data` to have them chosen on",
            ", ".join(unmeasured),
        )
    return choices


@dataclass(frozen=True)
class TeacherQuality:
    """How often the teacher and the student rank a record's gold positive first.

    Attributes:
        records: Records measured (those with teacher scores and a gold positive).
        teacher: Share where the teacher's best-scored key is a positive.
        student: Share where the student's most similar key is a positive.
    """

    records: int
    teacher: float
    student: float

    @property
    def teacher_wins(self) -> bool:
        """The teacher picks the gold positive more often than the student."""
        return self.records > 0 and self.teacher > self.student


def teacher_quality(
    records: Sequence[TrainingRecord],
    encode: Encode,
    *,
    max_records: int | None = 200,
    seed: int = 42,
) -> dict[str, TeacherQuality]:
    """Per task, the teacher's and the student's top-1 accuracy on the records' own candidates.

    Only records with ``teacher_scores``, at least one positive and one negative count (a
    long-range LM record labelled by the teacher alone has no gold to check against). A seeded
    sample of at most ``max_records`` per task is measured.
    """
    by_task: dict[str, list[TrainingRecord]] = {}
    for record in records:
        if (
            record.teacher_scores is not None
            and record.pos
            and record.neg
            and record.history is None
        ):
            by_task.setdefault(record.task, []).append(record)
    out = {}
    for task, items in sorted(by_task.items()):
        if max_records is not None and len(items) > max_records:
            items = random.Random(f"{seed}\x00{task}").sample(items, max_records)
        queries = encode([r.query for r in items], task, "query")
        keys = encode([k for r in items for k in r.keys], task, "key")
        teacher_hits = student_hits = 0
        start = 0
        for row, record in enumerate(items):
            own = keys[start : start + len(record.keys)]
            start += len(record.keys)
            n_pos = len(record.pos)
            teacher_hits += int(np.argmax(record.teacher_scores or [])) < n_pos
            student_hits += int(np.argmax(own @ queries[row])) < n_pos
        out[task] = TeacherQuality(len(items), teacher_hits / len(items), student_hits / len(items))
    return out
