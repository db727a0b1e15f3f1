"""Batches of LLM-Embedder training: one task per batch, and the collator that keeps the task.

`HomogeneousBatchSampler` draws every batch from one dataset of the ``DatasetDict`` keyed by task
(the paper's same-task batches, whose in-batch negatives are keys of that task); with several
processes the same task is on every process in a step. `TaskDataCollator` tokenises the text
columns and passes each row's task, key ids and relevant ids through to the loss
(`MultiTaskLoss`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from sentence_transformers.base.sampler import MultiDatasetDefaultBatchSampler
from sentence_transformers.sentence_transformer.data_collator import (
    SentenceTransformerDataCollator,
)

from .._validation import check_positive_int
from .losses import _world

__all__ = ["HomogeneousBatchSampler", "TaskDataCollator"]

_META = "_llm_embedder_"  # prefix of the collated columns that are not model inputs
_META_COLUMNS = ("task", "key_ids", "relevant_ids")


class HomogeneousBatchSampler(MultiDatasetDefaultBatchSampler):
    """Multi-dataset batch sampler whose every batch comes from one dataset (one task).

    Each dataset's batches (from its own batch sampler) are cut into chunks of
    ``num_processes`` consecutive batches, the incomplete last chunk dropped when there are
    several processes, and the chunks of all datasets are shuffled together with the shared
    seed. Accelerate hands batch ``i`` of each chunk to process ``i``, so in a step every process
    trains on the same task. Pass the class as ``multi_dataset_batch_sampler`` of the training
    arguments.

    Args:
        dataset: The ``ConcatDataset`` of the datasets.
        batch_samplers: One batch sampler per dataset.
        generator: Random generator, reseeded with ``seed + epoch`` at each pass.
        seed: The seed shared by every process.
        num_processes: Processes sharing a step; None reads it from torch.distributed.
    """

    def __init__(
        self,
        dataset: Any,
        batch_samplers: list[Any],
        generator: torch.Generator | None = None,
        seed: int = 0,
        num_processes: int | None = None,
    ) -> None:
        super().__init__(dataset, batch_samplers=batch_samplers, generator=generator, seed=seed)
        self.num_processes = _world()[1] if num_processes is None else num_processes
        check_positive_int(self.num_processes, "num_processes")
        self._epoch_was_set = False

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (reseeds the order); called by the trainer at each epoch."""
        super().set_epoch(epoch)
        self._epoch_was_set = True

    def _usable(self, n_batches: int) -> int:
        n = self.num_processes
        return n_batches if n == 1 else n_batches // n * n

    def __iter__(self) -> Iterator[list[int]]:
        if self.generator is not None and self.seed is not None:
            self.generator.manual_seed(self.seed + self.epoch)
        chunks: list[list[list[int]]] = []
        offset = 0
        for dataset, sampler in zip(self.dataset.datasets, self.batch_samplers, strict=True):
            batches = [[offset + i for i in batch] for batch in sampler]
            batches = batches[: self._usable(len(batches))]
            step = self.num_processes
            chunks += [batches[i : i + step] for i in range(0, len(batches), step)]
            offset += len(dataset)
        order = torch.randperm(len(chunks), generator=self.generator).tolist()
        for index in order:
            yield from chunks[index]
        if not self._epoch_was_set:  # accelerate does not forward set_epoch through its shards
            self.epoch += 1
        self._epoch_was_set = False

    def __len__(self) -> int:
        return sum(self._usable(len(sampler)) for sampler in self.batch_samplers)


def _unscored(row: dict[str, Any]) -> bool:
    """Whether a row has no teacher scores (its labels are NaN)."""
    return any(math.isnan(x) for x in row.get("label") or ())


@dataclass
class TaskDataCollator(SentenceTransformerDataCollator):
    """Tokenises the text columns; passes task, key ids and relevant ids through as lists.

    Rows are ordered by task (stable), so that each task's queries are contiguous in a mixed
    batch, and within a task the queries without teacher scores (NaN labels) come last, as
    `MultiTaskLoss` expects. `pop_meta` takes the passed-through lists back out of a collated batch.
    """

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Collate ``features`` (rows of `build_train_dataset`) into one batch."""
        features = sorted(features, key=lambda f: (f["task"], _unscored(f)))
        meta = {c: [f[c] for f in features] for c in _META_COLUMNS}
        texts = [{k: v for k, v in f.items() if k not in _META_COLUMNS} for f in features]
        batch = super().__call__(texts)
        for column, values in meta.items():
            batch[_META + column] = values
        return batch

    @staticmethod
    def pop_meta(batch: dict[str, Any]) -> dict[str, Any]:
        """Remove the passed-through columns from ``batch``; returns them by name (``task``...)."""
        return {k[len(_META) :]: batch.pop(k) for k in list(batch) if k.startswith(_META)}
