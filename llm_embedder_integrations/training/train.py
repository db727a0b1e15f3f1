"""Fine-tuning with LLM-Embedder's recipe, on sentence-transformers' trainer.

This module holds the run's settings (`TrainConfig`), the model loading and the trainer wiring
(`build_trainer`, `train`, `save_selected`); the parts it wires live beside it, as in
sentence-transformers: records -> examples -> dataset in `.data`, the batch sampler and the
collator in `.sampler`, the losses in `.losses`, model selection in `.selection`.

What the recipe adds to `SentenceTransformerTrainer`:

* **Instructions as prompts.** Each task's query and key instructions are the training prompts of
  its columns (``args.prompts = {task: {"query": ..., "key_0": ..., ...}}``) and are saved in the
  model's ``config_sentence_transformers.json`` as ``"{task}_query"`` / ``"{task}_key"``, so
  ``LLMEmbedder(path, instructions="auto")`` turns them on for the trained model.
* **The paper's losses per task** (`TASK_LOSS`): InfoNCE over in-batch and hard negatives at
  temperature 0.01, stabilized distillation (qa, icl) and KL distillation (chat, lrlm) with the
  teacher scores as labels. In-batch keys that are also relevant to a query (same document, same
  API call...) are masked out of its softmax.
* **Homogeneous batches.** The training set is a ``DatasetDict`` keyed by task and
  `HomogeneousBatchSampler` draws every batch from one task; with several processes the same task
  is on every process in a step (each process takes its slice of a chunk of
  ``batch_size x processes`` examples, the order seeded identically everywhere) and keys are
  gathered across processes for in-batch negatives. ``homogeneous=False`` mixes tasks in a batch
  (the paper's ablation).

Each training record gives one example of ``group_size`` keys (`build_examples`).

Example:
    >>> config = TrainConfig(data=("qa.jsonl", "tool.jsonl"), output="my-model")  # doctest: +SKIP
    >>> result = train(config)  # doctest: +SKIP
    >>> LLMEmbedder(result.output).instructions  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from torch import Tensor
from transformers import TrainerCallback

from .. import _cpu
from .._imports import require
from .._model import build_sentence_transformer, pools_instructions, tokens_left_out
from .._sampling import spread
from .._validation import check_int_at_least_zero, check_number, check_positive_int
from ..encoder import SHIPPED_MODEL, resolve_model, task_prompts, trained_with_instructions
from ..instructions import TASKS, get_instruction, prompt_name, prompts_for
from .data import (
    TrainingRecord,
    build_examples,
    build_train_dataset,
    effective_loss_config,
    read_jsonl,
)
from .losses import TEMPERATURE, MultiTaskLoss
from .sampler import HomogeneousBatchSampler, TaskDataCollator
from .selection import (
    DEV_METRIC,
    DevCallback,
    Selection,
    TeacherQuality,
    cap_per_group,
    dev_datasets,
    dev_set_name,
    dev_unit,
    held_out_dev,
    interpolate,
    select_per_task,
    split_dev,
    st_encoder,
    teacher_quality,
)

__all__ = [
    "TASK_SETTINGS",
    "LLMEmbedderTrainer",
    "TrainConfig",
    "TrainResult",
    "build_trainer",
    "distillation_plan",
    "save_selected",
    "train",
    # Re-exported from the modules they live in (.data, .losses, .sampler).
    "HomogeneousBatchSampler",
    "MultiTaskLoss",
    "TaskDataCollator",
    "build_examples",
    "build_train_dataset",
    "effective_loss_config",
]

logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Device = Literal["auto", "cpu", "cuda"]


# Configuration -----------------------------------------------------------------------------------


def _paths(value: Any, name: str) -> tuple[str, ...]:
    """A path or a list of paths as a tuple of strings; a clear error for anything else."""
    if isinstance(value, (str, os.PathLike)):
        value = (value,)
    if not isinstance(value, Sequence) or not all(isinstance(p, (str, os.PathLike)) for p in value):
        raise ValueError(f"`{name}` must be a list of JSON Lines file paths, got {value!r}")
    return tuple(os.fspath(p) for p in value)


@dataclass
class TrainConfig:
    """Everything `train` needs; load it with `from_yaml` or build it from flags.

    The defaults suit a small run (a few thousand queries, one GPU or a CPU). The paper trains
    BERT-base with lr 5e-6, 100 queries per GPU on 8 GPUs, 8 keys per query, fp16, gradient
    checkpointing and 10,000 steps: raise ``batch_size`` and lower ``lr`` towards that on large
    data. For the shipped MiniLM on a CPU, lr 2e-5 with batch 32 and 1-2 epochs works.

    Attributes:
        data: JSON Lines training files (`read_jsonl` format); their records may mix tasks.
        sources: Training data converted at the start of the run, hard negatives mined by the
            base model and BM25 (`convert_dataset`): training-scale sources of the data folder's
            ``train/`` (`TRAIN_SOURCES`: ``nq_qed``, ``canard``, ``gorilla_torchhub_train``,
            ``gutenberg``) and the train split of evaluation datasets (``xquad``, ``locomo``,
            ``trec_cast`` in its history format...). Used beside ``data``; no teacher scores.
        source_queries: At most this many queries per source (spread over it); None for all.
        source_docs: At most this many documents per source searched for hard negatives, the
            judged ones always kept (`cap_corpus`); None (the default) searches all. For quick
            trials: negatives drawn from fewer documents are easier.
        teacher_queries: Training records per source of each distilled task (qa, icl, chat,
            lrlm: `TASK_LOSS`) that the teacher ``llm`` scores before training, spread over the
            source, the dev split held out first (`teacher_scored`); 0 (the default) scores
            none. With ``distillation: auto`` the run then measures the teacher against the
            base model on them and distils only the tasks where it is better; every other
            record trains with the contrastive loss. The scores are kept in ``teacher_cache``,
            so a rerun or a resumed run does not score again.
        llm: The teacher of ``teacher_queries``: a Hugging Face causal LM, hub id or folder;
            None is the shipped SmolLM2-135M.
        teacher_dtype: The teacher's dtype, ``"fp32"`` or ``"bf16"``; None is bf16 where the
            device computes it natively and fp32 elsewhere (`teacher_dtype`).
        teacher_cache: Folder of the teacher's kept scores (``<llm>/<source>.jsonl`` in it);
            None is ``<output>/teacher-scores``. Runs on the same records that share one (with
            other settings, say) have them scored once.
        data_path: The data folder of ``sources``; None takes `data_dir`'s choice.
        output: Directory of the trained model (checkpoints go to ``checkpoint-<step>`` in it).
        model: Model to fine-tune: hub id, local directory, or the shipped
            ``sentence-transformers/all-MiniLM-L6-v2``. A plain transformers checkpoint gets CLS
            pooling and normalisation, as LLM-Embedder.
        epochs: Passes over the data (fractions allowed).
        max_steps: Stop after this many optimizer steps (overrides ``epochs``); None for epochs.
        batch_size: Queries per batch and process.
        group_size: Keys per query: 1 positive + ``group_size - 1`` negatives.
        lr: Peak learning rate (linear warm-up then linear decay).
        temperature: Temperature of the student's similarities in every task's loss (cosine /
            temperature). The paper's 0.01 (the default) is the temperature LLM-Embedder and BGE
            were trained at; a sentence-transformers model trained with
            ``MultipleNegativesRankingLoss`` at its default scale of 20 was trained at 0.05.
        warmup_ratio: Share of the steps spent warming up.
        weight_decay: AdamW weight decay.
        max_length: Token limit of queries and keys in training, instruction included (the
            saved model keeps the base model's own limit for inference).
        homogeneous: Draw every batch from one task (False: mixed-task batches, the ablation).
        distillation: ``"auto"`` (the default) uses a task's distillation term of `TASK_LOSS`
            only where its records carry teacher scores and the teacher ranks the gold positive
            first more often than the base model does (`teacher_quality`, logged); other tasks,
            and the records without teacher scores of a distilled task, train with the
            contrastive loss. True uses `TASK_LOSS` as it is (teacher scores
            required); False trains every task with the contrastive loss alone.
        mask_false_negatives: Remove in-batch keys relevant to a query from its softmax.
        gather_across_devices: With several processes, use every process's keys as in-batch
            negatives.
        pool_instructions: For a mean-pooled model, average the instruction tokens into the
            embedding too. False (the default) leaves them out of the mean, in training and in
            the saved model (sentence-transformers' ``Pooling(include_prompt=False)``): the
            instruction then steers the text through attention only, as with LLM-Embedder's CLS
            pooling. A CLS-pooled model is unaffected.
        max_samples_per_task: At most this many records per task (a seeded sample); None for
            all, within the task's own cap (`TaskLossConfig.max_samples`).
        precision: ``"auto"`` is bf16 autocast on a CUDA device that supports it (else fp16),
            bf16 on a CPU that computes it natively (AVX512-BF16 or AMX), and fp32 elsewhere
            (`training_precision`). The loss itself is always computed in fp32.
        device: ``"auto"`` trains on CUDA when available, else on the CPU.
        gradient_checkpointing: Recompute activations in backward (less memory, ~30% slower).
        gradient_accumulation_steps: Batches per optimizer step.
        save_steps: Save a checkpoint every this many steps (and at the end).
        save_total_limit: Keep at most this many checkpoints; None keeps all.
        logging_steps: Log the mean loss every this many steps.
        seed: Seed of the model initialisation, the batch order and the negatives drawn.
        resume: True continues from the last checkpoint in ``output``; a path, from that one.
        show_progress: Show a progress bar.
        dataloader_num_workers: Worker processes that collate (tokenise) batches while the model
            trains on the last one; 0 collates in the main process. ``"auto"`` is 0 on the CPU,
            where workers would take cores from the model, and on CUDA half the CPU cores, at
            most 8: there the main process collating a batch of 32 queries x 9 keys x 256
            tokens took as long as the GPU's bf16 step (`dataloader_workers`).
        dev_fraction: Share of each task's records of each source held out as a dev split
            (whole groups: the records' ``group`` field, else their positive), at least
            ``dev_min_queries`` and at most ``dev_max_queries`` per source; 0 trains on
            everything and turns model selection off.
        dev_min_queries: Dev queries per source at least, for a source of three times as many
            records or more (a small source's ``dev_fraction`` is too few queries to select on).
        dev_max_queries: Dev queries per source at most, unless every group of the source is
            larger: its smallest whole group (a book, a long dialogue) is then held out, if
            it is at most a third of the source's records.
        dev_distractors: Training keys of the same source pooled into each dev set, at most:
            a few dozen dev keys alone make ranking far easier than a test corpus does.
        dev_data: JSON Lines files of dev records given apart from the training data (records
            left over when only part of a source is scored by the teacher, say). Their sources
            are not split from ``data``; a record whose group is in the training data is
            dropped.
        max_group_queries: Per task, at most this many training queries of one group (an API,
            a page, a dialogue, a book: the records' ``group``), spread over it; the dev split
            is drawn first, from all the records (`cap_per_group`). ``{"tool": 30}`` keeps a
            few heavily asked APIs from pulling their documents up for every query. None (the
            default) trains on every record.
        eval_steps: Score the dev split every this many steps (and at the end); the best
            step's weights are the fine-tuned model.
        interpolate: Choose per task, on the dev split, the interpolation weight between the base
            and the fine-tuned weights (WiSE-FT) and whether its instructions are applied; the
            saved model then never scores below its base on the dev split (`select_per_task`).
            False saves the best step's weights as they are.
        step_per_task: Each task interpolates towards the weights of the step where its own
            dev score peaked (a memory task may still gain when question answering has begun
            to lose), where that peak beats the step with the best mean over tasks by more
            than ``selection_se`` standard errors on the task's dev sets, else towards that
            best step; False: every task towards the best step.
        alphas: The interpolation weights tried (0, the base model, is always among them).
        selection_se: The one-standard-error rule of the choice: the simplest choice (smaller
            weight, then no instructions) whose dev score is within this many standard errors
            (of the paired per-query difference) of the best is taken, so a gain smaller than
            the dev split's noise keeps the base model; 0 takes the best dev score as it is.
        instruction_warmup_steps: Steps at the start that train the instructions alone: only
            the token-embedding rows of the instructions' tokens learn, the rest of the model is
            frozen (`InstructionWarmup`), so that the text instructions are fitted to the model
            before its body moves. 0 (the default) trains everything from the first step.
        instruction_warmup_lr: The constant learning rate of those rows during the warm-up
            (prompt tuning trains its embeddings at rates of this order; the run's own
            schedule starts after the warm-up's steps at the rate it has reached by then).
        layer_lr_decay: Layer-wise learning-rate decay: the top transformer layer trains at
            ``lr``, each one below at this factor times the one above, the embeddings lowest
            (1, the default, is one rate for all).
    """

    data: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    source_queries: int | None = 600
    source_docs: int | None = None
    teacher_queries: int = 0
    llm: str | None = None
    teacher_dtype: str | None = None
    teacher_cache: str | None = None
    data_path: str | None = None
    output: str = "llm-embedder-finetuned"
    model: str = SHIPPED_MODEL
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 32
    group_size: int = 8
    lr: float = 2e-5
    temperature: float = TEMPERATURE
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 256
    homogeneous: bool = True
    distillation: bool | Literal["auto"] = "auto"
    mask_false_negatives: bool = True
    gather_across_devices: bool = True
    pool_instructions: bool = False
    max_samples_per_task: int | None = None
    precision: Precision = "auto"
    device: Device = "auto"
    gradient_checkpointing: bool = False
    gradient_accumulation_steps: int = 1
    save_steps: int = 500
    save_total_limit: int | None = 2
    logging_steps: int = 10
    seed: int = 42
    resume: bool | str = False
    show_progress: bool = True
    dataloader_num_workers: int | Literal["auto"] = "auto"
    dev_fraction: float = 0.1
    dev_min_queries: int | None = 20
    dev_max_queries: int = 100
    dev_distractors: int = 300
    dev_data: tuple[str, ...] = ()
    max_group_queries: Mapping[str, int] | None = None
    layer_lr_decay: float = 1.0
    instruction_warmup_steps: int = 0
    instruction_warmup_lr: float = 1e-3
    eval_steps: int = 50
    interpolate: bool = True
    step_per_task: bool = True
    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    selection_se: float = 1.0

    def __post_init__(self) -> None:
        self.data = _paths(self.data, "data")
        self.dev_data = _paths(self.dev_data, "dev_data")
        if isinstance(self.sources, str) or not all(isinstance(n, str) for n in self.sources):
            raise ValueError(f"`sources` must be a list of source names, got {self.sources!r}")
        self.sources = tuple(self.sources)
        _check_sources(self.sources)
        check_positive_int(self.source_queries, "source_queries", allow_none=True)
        check_positive_int(self.source_docs, "source_docs", allow_none=True)
        check_int_at_least_zero(self.teacher_queries, "teacher_queries")
        if isinstance(self.llm, os.PathLike):
            self.llm = os.fspath(self.llm)
        if self.llm is not None and (not isinstance(self.llm, str) or not self.llm.strip()):
            raise ValueError(
                f"`llm` must be a causal LM's hub id or folder, or null for the shipped "
                f"SmolLM2, got {self.llm!r}"
            )
        if self.teacher_dtype not in (None, "fp32", "bf16"):
            raise ValueError(
                f"`teacher_dtype` must be 'fp32', 'bf16' or null (chosen for the device), "
                f"got {self.teacher_dtype!r}"
            )
        if isinstance(self.data_path, os.PathLike):
            self.data_path = os.fspath(self.data_path)
        for name in ("output", "model"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))
            elif not isinstance(value, str) or not value.strip():
                raise ValueError(f"`{name}` must be a non-empty string, got {value!r}")
        check_number(self.epochs, "epochs", low=0, strict=True)
        check_number(self.lr, "lr", low=0, strict=True)
        check_number(self.temperature, "temperature", low=0, strict=True)
        check_number(self.warmup_ratio, "warmup_ratio", low=0, high=1)
        check_number(self.weight_decay, "weight_decay", low=0)
        check_positive_int(self.max_steps, "max_steps", allow_none=True)
        check_positive_int(self.max_samples_per_task, "max_samples_per_task", allow_none=True)
        check_positive_int(self.save_total_limit, "save_total_limit", allow_none=True)
        check_number(self.dev_fraction, "dev_fraction", low=0, high=0.5)
        check_number(self.layer_lr_decay, "layer_lr_decay", low=0, high=1, strict=True)
        check_int_at_least_zero(self.instruction_warmup_steps, "instruction_warmup_steps")
        check_number(self.instruction_warmup_lr, "instruction_warmup_lr", low=0, strict=True)
        check_number(self.selection_se, "selection_se", low=0)
        check_positive_int(self.dev_min_queries, "dev_min_queries", allow_none=True)
        check_positive_int(self.dev_max_queries, "dev_max_queries")
        check_int_at_least_zero(self.dev_distractors, "dev_distractors")
        check_positive_int(self.eval_steps, "eval_steps")
        self.max_group_queries = _group_caps(self.max_group_queries)
        if isinstance(self.alphas, (int, float)) or not isinstance(self.alphas, Sequence):
            raise ValueError(f"`alphas` must be a list of numbers in [0, 1], got {self.alphas!r}")
        for alpha in self.alphas:
            check_number(alpha, "alphas", low=0, high=1)
        self.alphas = tuple(float(a) for a in self.alphas)
        if self.distillation not in (True, False, "auto"):
            raise ValueError(
                f"`distillation` must be true, false or 'auto', got {self.distillation!r}"
            )
        for name in (
            "batch_size",
            "gradient_accumulation_steps",
            "save_steps",
            "logging_steps",
        ):
            check_positive_int(getattr(self, name), name)
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
            raise ValueError(f"`group_size` must be an int >= 2, got {self.group_size!r}")
        if self.group_size < 2:
            raise ValueError(
                f"`group_size` must be >= 2 (a positive and at least one negative), got "
                f"{self.group_size}"
            )
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int):
            raise ValueError(f"`max_length` must be an int > 8, got {self.max_length!r}")
        if self.max_length <= 8:
            raise ValueError(f"`max_length` must be > 8 tokens, got {self.max_length}")
        check_int_at_least_zero(self.seed, "seed")
        workers = self.dataloader_num_workers
        if workers != "auto" and (
            isinstance(workers, bool) or not isinstance(workers, int) or workers < 0
        ):
            raise ValueError(
                f"`dataloader_num_workers` must be an int >= 0 or 'auto', got {workers!r}"
            )
        for name, allowed in (("precision", get_args(Precision)), ("device", get_args(Device))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}")
        for name in (
            "homogeneous",
            "mask_false_negatives",
            "gather_across_devices",
            "gradient_checkpointing",
            "show_progress",
            "pool_instructions",
            "interpolate",
            "step_per_task",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.resume, os.PathLike):
            self.resume = os.fspath(self.resume)
        if not isinstance(self.resume, (bool, str)) or self.resume == "":
            raise ValueError(
                f"`resume` must be true, false or a checkpoint directory, got {self.resume!r}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], **overrides: Any) -> TrainConfig:
        """Build a config from a mapping (a parsed YAML file), ``overrides`` winning.

        Raises:
            ValueError: On an unknown key (the message lists the known ones) or a bad value.
        """
        if not isinstance(values, Mapping):
            raise ValueError(f"a training config must be a mapping of settings, got {values!r}")
        merged = {**values, **{k: v for k, v in overrides.items() if v is not None}}
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(merged) - set(known))
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; known: {', '.join(known)}")
        for name in ("data", "dev_data", "alphas", "sources"):
            if isinstance(merged.get(name), list):
                merged[name] = tuple(merged[name])
        return cls(**merged)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
        """Load a YAML config (see ``examples/train.yaml``); ``overrides`` that are not None win.

        Relative ``data`` and ``output`` paths are taken relative to the YAML file's folder.

        Raises:
            ImportError: Without PyYAML (the ``train`` extra), naming the ``pip install`` line.
        """
        yaml = require("train", "yaml")
        path = Path(path)
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a training config must be a mapping, got {values!r}")
        base = path.resolve().parent
        floats = {f.name for f in dataclasses.fields(cls) if f.type in ("float", "float | None")}
        for name in floats & set(values):
            if isinstance(values[name], str):  # PyYAML reads 2e-5 (no dot) as a string
                with contextlib.suppress(ValueError):  # else __post_init__ quotes it
                    values[name] = float(values[name])
        for name in ("data", "dev_data"):
            if isinstance(values.get(name), str):
                values[name] = [values[name]]
            if isinstance(values.get(name), list):
                values[name] = [str(base / p) for p in values[name]]
        for name in ("output", "data_path", "teacher_cache"):
            if isinstance(values.get(name), str):
                values[name] = str(base / values[name])
        try:
            return cls.from_dict(values, **overrides)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data (YAML/JSON ready)."""
        out = dataclasses.asdict(self)
        out["data"] = list(self.data)
        out["dev_data"] = list(self.dev_data)
        out["alphas"] = list(self.alphas)
        out["sources"] = list(self.sources)
        return out


def _group_caps(value: Any) -> dict[str, int] | None:
    """``max_group_queries`` checked: None, or a mapping of known tasks to positive ints."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(
            f"`max_group_queries` must map tasks to a number of queries, such as "
            f"{{tool: 30}}, got {value!r}"
        )
    for task, cap in value.items():
        if task not in TASKS:
            raise ValueError(f"`max_group_queries`: unknown task {task!r}; tasks: {TASKS}")
        check_positive_int(cap, f"max_group_queries[{task!r}]")
    return dict(value)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes:
        output: Directory of the trained model.
        global_step: Optimizer steps done in all (a resumed run counts the earlier ones).
        epochs: Epochs done.
        train_loss: Mean training loss of this call's steps.
        seconds: Wall time of the training loop of this call.
        samples_per_second: Training queries per second (each with ``group_size`` keys).
        examples: Training examples per task.
        log_history: The trainer's log entries (``{"loss": ..., "step": ...}``...).
        summary: The run summary also written to ``llm_embedder_training.json``: examples, dev
            queries, the distillation plan and teacher measurements, the dev curve, the best
            step, the per-task selection and the tasks whose fine-tuned weights regressed.
    """

    output: Path
    global_step: int
    epochs: float
    train_loss: float
    seconds: float
    samples_per_second: float
    examples: dict[str, int]
    log_history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


# Trainer -----------------------------------------------------------------------------------------


class LLMEmbedderTrainer(SentenceTransformerTrainer):
    """`SentenceTransformerTrainer` whose ``compute_loss`` hands tasks and key ids to the loss.

    Use it with a dataset of `build_train_dataset`, a `MultiTaskLoss` and a `TaskDataCollator`
    (or call `train`, which sets all this up).
    """

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """The `MultiTaskLoss` of one collated batch."""
        meta = TaskDataCollator.pop_meta(inputs)
        inputs.pop("dataset_name", None)
        features, labels = self.collect_features(inputs)
        loss_fn = self.loss
        if model == self.model_wrapped and loss_fn.model != model:
            loss_fn = self.override_model_in_loss(loss_fn, model)
        # transformers 5 leaves autocast to accelerate, which wraps the model's forward; the loss
        # runs the model's modules itself (instructions left out of the pooling), so bf16/fp16
        # are applied here or not at all. The loss casts the embeddings back to fp32.
        with self.accelerator.autocast(), training_attention(self.args.device.type):
            loss = loss_fn(
                features,
                labels,
                tasks=meta["task"],
                key_ids=meta.get("key_ids"),
                relevant_ids=meta.get("relevant_ids"),
            )
        return (loss, {}) if return_outputs else loss


@contextlib.contextmanager
def training_attention(device_type: str) -> Iterator[None]:
    """Attention kernels for training on ``device_type``: on CUDA, any but cuDNN's.

    In bf16 on a Hopper GPU, PyTorch picks cuDNN's attention, which builds an execution plan for
    every new sequence length; batches padded to their longest text bring new lengths for
    hundreds of steps, and each costs up to 2 s (measured on an H200: a median step of 236 ms
    with cuDNN, 118 ms without, MiniLM at 16 queries x 4 keys x 128 tokens). The other kernels
    need no plan. Elsewhere nothing changes.
    """
    if device_type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        yield


@contextlib.contextmanager
def _model_card_bars(show: bool) -> Iterator[None]:
    """Hide sentence-transformers' "Computing widget examples" bar unless ``show``.

    Building a trainer fills the model card's widget examples behind a tqdm bar that follows
    neither the trainer's ``disable_tqdm`` nor our ``show_progress``, so a log redirected from
    ``llm-embedder train --no-progress`` would hold a bar. Where the model-card module is not
    where this version keeps it, nothing changes.
    """
    name = "sentence_transformers.base.model_card"
    module = importlib.import_module(name) if importlib.util.find_spec(name) else None
    bar = getattr(module, "tqdm", None)
    if show or bar is None:
        yield
        return

    def hidden(*args: Any, **kwargs: Any) -> Any:
        return bar(*args, **{**kwargs, "disable": True})

    module.tqdm = hidden
    try:
        yield
    finally:
        module.tqdm = bar


_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def _depths(names: Sequence[str]) -> dict[str, int]:
    """Transformer layer of each parameter, counted from 1; 0 for the embeddings, -1 above."""
    depth = {}
    for name in names:
        match = _LAYER.search(name)
        depth[name] = int(match.group(1)) + 1 if match else 0 if ".embeddings." in name else -1
    return depth


def layer_lr_scales(names: Sequence[str], decay: float) -> dict[str, float]:
    """Learning-rate factor of each parameter under layer-wise decay (Clark et al. 2020).

    The top transformer layer and anything above it (pooler, dense heads) train at the full
    rate; each layer below at ``decay`` times the one above; the embeddings at ``decay`` times
    the lowest layer. ``decay = 1`` is one rate for all.
    """
    depth = _depths(names)
    top = max(depth.values(), default=0)
    return {n: 1.0 if d < 0 else float(decay ** (top - d)) for n, d in depth.items()}


def layer_lr_mapping(model: Any, lr: float, decay: float) -> dict[str, float]:
    """sentence-transformers' ``learning_rate_mapping`` (pattern -> rate) for `layer_lr_scales`."""
    if decay == 1.0:
        return {}
    names = [n for n, _ in model.named_parameters()]
    scales = layer_lr_scales(names, decay)
    depth = _depths(names)
    mapping = {}
    for name, d in depth.items():
        if d >= 0 and scales[name] != 1.0:
            pattern = r"\.embeddings\." if d == 0 else rf"\.layers?\.{d - 1}\."
            mapping[pattern] = lr * scales[name]
    return mapping


def instruction_token_counts(model: Any, tasks: Sequence[str]) -> dict[tuple[str, str], int]:
    """Leading tokens of each task's query and key texts that ``model``'s pooling leaves out.

    [CLS] and the instruction for a model that pools over the text alone, 0 otherwise (the
    encoder's rule, `tokens_left_out`): the ``prompt_lengths`` of `MultiTaskLoss`, which leaves
    them out of the pooling row by row.
    """
    counts = {}
    for task in tasks:
        pair = get_instruction(task)
        counts[(task, "query")] = tokens_left_out(model, pair.query)
        counts[(task, "key")] = tokens_left_out(model, pair.key)
    return counts


def _load_model(config: TrainConfig, device: str) -> SentenceTransformer:
    """A fresh, trainable copy of the model (never the encoder's shared cached instance)."""
    return _load_base(config, device)[0]


def _load_base(config: TrainConfig, device: str) -> tuple[SentenceTransformer, dict[str, bool]]:
    """A fresh, trainable copy of the model, and per task whether it is used with instructions.

    Built as the encoder builds it (`build_sentence_transformer`), with the instructions as
    prompts and, unless ``config.pool_instructions``, a mean pooling over the text alone. The
    second value is what ``instructions="auto"`` does with the model as it was before training
    (on for LLM-Embedder or a model trained with them, but for a task saved without).
    """
    from sentence_transformers.sentence_transformer.modules import Pooling

    resolved = resolve_model(config.model)
    model = build_sentence_transformer(resolved, device)
    saved = task_prompts(model.prompts)
    used = trained_with_instructions(saved, resolved.model_id)
    base_instructions = {
        task: used and saved.get(prompt_name(task, "query")) != "" for task in TASKS
    }
    # The instructions the model is trained with travel in its config (`LLMEmbedder` "auto").
    model.prompts = {**(model.prompts or {}), **prompts_for(TASKS)}
    if not config.pool_instructions:
        for module in model:
            if isinstance(module, Pooling) and module.pooling_mode != "cls":
                module.include_prompt = False  # saved in its config, read back at inference
    return model, base_instructions


def _precision_flags(config: TrainConfig, on_cuda: bool) -> dict[str, bool]:
    precision = config.precision
    if precision == "auto":
        precision = _cpu.training_precision("cuda" if on_cuda else "cpu")
    if precision == "fp16" and not on_cuda:
        raise ValueError("`precision` 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def dataloader_workers(config: TrainConfig, device: str) -> int:
    """The collating processes of a run: ``config.dataloader_num_workers``, "auto" resolved."""
    if config.dataloader_num_workers != "auto":
        return config.dataloader_num_workers
    return min(8, (os.cpu_count() or 1) // 2) if device == "cuda" else 0


def last_complete_checkpoint(output: str | os.PathLike[str]) -> Path | None:
    """The ``checkpoint-<step>`` folder of ``output`` with the highest step that was fully saved.

    The trainer writes ``trainer_state.json`` last: a folder without it is what a process killed
    while saving leaves behind, and resuming from it would fail. Such folders are skipped with a
    warning (and left in place, for the user to inspect).
    """
    folder = Path(output)
    if not folder.is_dir():
        return None
    steps = {}
    for path in folder.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and path.is_dir():
            steps[int(match.group(1))] = path
    for step in sorted(steps, reverse=True):
        if (steps[step] / "trainer_state.json").is_file():
            return steps[step]
        logger.warning(
            "skipping %s: it holds no trainer_state.json (its save was interrupted)", steps[step]
        )
    return None


def _resume_path(config: TrainConfig) -> str | None:
    if config.resume is False:
        return None
    if config.resume is True:
        last = last_complete_checkpoint(config.output)
        if last is None:
            raise FileNotFoundError(
                f"`resume` is true but {config.output!r} holds no complete checkpoint-<step> "
                "folder; train without resume first, or pass a checkpoint path"
            )
        return str(last)
    if not Path(config.resume).is_dir():
        raise FileNotFoundError(f"checkpoint {config.resume!r} does not exist")
    return config.resume


def _checkpointing_args(enabled: bool) -> dict[str, Any]:
    """Activation checkpointing, under the name this transformers version uses."""
    if not enabled:
        return {}
    names = {f.name for f in dataclasses.fields(SentenceTransformerTrainingArguments)}
    name = "activation_checkpointing" if "activation_checkpointing" in names else None
    name = name or "gradient_checkpointing"
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}


def _warmup_args(ratio: float) -> dict[str, Any]:
    """The warm-up share: ``warmup_steps`` as a float on transformers 5, else ``warmup_ratio``."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"warmup_steps": float(ratio)} if major >= 5 else {"warmup_ratio": ratio}


def _examples_per_task(dataset: Any) -> dict[str, int]:
    if hasattr(dataset, "keys"):  # DatasetDict: one dataset per task
        return {task: len(dataset[task]) for task in dataset}
    return dict(sorted(Counter(dataset["task"]).items()))


_SOURCE_OPTIONS: dict[str, dict[str, Any]] = {"trec_cast": {"history": True}}
"""Loader options of a source converted for training: CAsT as it is searched, with history."""


def _check_sources(names: Sequence[str]) -> None:
    from ..evaluation.datasets import DATASETS
    from .sources import TRAIN_SOURCES

    unknown = [n for n in names if n not in (*TRAIN_SOURCES, *DATASETS)]
    if unknown:
        raise ValueError(
            f"unknown source(s) {unknown} in `sources`; known: {', '.join(TRAIN_SOURCES)} "
            f"(training-scale) and {', '.join(DATASETS)} (their train split)"
        )


def source_records(
    config: TrainConfig,
) -> tuple[list[TrainingRecord], dict[str, dict[str, Any]]]:
    """The records of ``config.sources``, mined with the base model (``config.model``).

    Returns the records and, per source, what mining did (`MiningStats` as a dict: records,
    queries without a positive, hard negatives kept per miner, likely false negatives dropped
    per reason; `mine_records` logs them) and the seconds it took, for the run summary.
    """
    if not config.sources:
        return [], {}
    from ..encoder import LLMEmbedder
    from ..evaluation.runner import cap_corpus, cap_queries
    from .data import load_source, mine_records

    encoder = LLMEmbedder(config.model, instructions=False, show_progress=config.show_progress)
    records: list[TrainingRecord] = []
    mining: dict[str, dict[str, Any]] = {}
    for name in config.sources:
        # Spread the cap over the source before mining: only the kept queries are encoded.
        started = time.perf_counter()
        dataset = load_source(name, data_path=config.data_path, **_SOURCE_OPTIONS.get(name, {}))
        found, stats = mine_records(
            cap_corpus(cap_queries(dataset, config.source_queries), config.source_docs),
            encoder,
            negatives=config.group_size - 1,
            max_positives=1,
            bm25=True,
            false_negative_margin=0.2,
        )
        mining[name] = {**dataclasses.asdict(stats), "seconds": time.perf_counter() - started}
        records += found
    return records, mining


def read_records(path: str | os.PathLike[str]) -> list[TrainingRecord]:
    """`read_jsonl`, with each record's ``source`` defaulting to the file's name.

    The source is what the dev split is drawn and scored by: the name before the first dot
    (``nq_qed.scored.jsonl`` -> ``nq_qed``) for records that do not name their own.
    """
    stem = Path(path).name.split(".", 1)[0]
    records = read_jsonl(path)
    for record in records:
        record.extra.setdefault("source", stem)
    return records


def _dev_counts(records: Sequence[TrainingRecord]) -> dict[str, int]:
    """Dev queries per dev set (`dev_set_name`)."""
    return dict(sorted(Counter(dev_set_name(*dev_unit(r)) for r in records).items()))


def distillation_plan(
    config: TrainConfig, records: Sequence[TrainingRecord], model: SentenceTransformer
) -> tuple[dict[str, bool], dict[str, TeacherQuality]]:
    """Which tasks train with their distillation term, and the teacher measurements behind it.

    With ``config.distillation == "auto"``, a task of `TASK_LOSS` with a distillation term is
    distilled when some of its records carry teacher scores and the teacher ranks the gold
    positive first more often than ``model`` does on them, with or without instructions
    (`teacher_quality`); its unscored records then train with the contrastive term alone. A task
    whose records have no gold positive to check (long-range LM records labelled by the teacher
    alone) trusts the teacher. Each decision is logged.
    """
    tasks = sorted({r.task for r in records})
    if isinstance(config.distillation, bool):
        return dict.fromkeys(tasks, config.distillation), {}
    plan: dict[str, bool] = {}
    needs = [t for t in tasks if effective_loss_config(t).distillation is not None]
    scored = [r for r in records if r.task in needs and r.teacher_scores is not None]
    quality: dict[str, TeacherQuality] = {}
    if scored:
        plain = teacher_quality(scored, st_encoder(model, False), seed=config.seed)
        instructed = teacher_quality(scored, st_encoder(model, True), seed=config.seed)
        quality = {
            t: TeacherQuality(q.records, q.teacher, max(q.student, instructed[t].student))
            for t, q in plain.items()
        }
    for task in tasks:
        if task not in needs:
            plan[task] = False
            continue
        items = [r for r in records if r.task == task]
        missing = sum(1 for r in items if r.teacher_scores is None)
        if missing == len(items):
            plan[task] = False
            logger.info("%s: contrastive loss (no record has teacher scores)", task)
            continue
        if missing:
            logger.info(
                "%s: %d of %d records have no teacher scores: they train with the contrastive loss",
                task,
                missing,
                len(items),
            )
        if task not in quality:
            plan[task] = True
            logger.info("%s: distilled (no gold positive to check the teacher against)", task)
        else:
            q = quality[task]
            plan[task] = q.teacher_wins
            logger.info(
                "%s: teacher ranks the gold positive first in %.1f%% of %d records, the base "
                "model in %.1f%%: %s",
                task,
                100 * q.teacher,
                q.records,
                100 * q.student,
                "distilled" if q.teacher_wins else "contrastive loss (the teacher is no better)",
            )
    return plan, quality


def teacher_scored(
    config: TrainConfig, records: Sequence[TrainingRecord], device: str = "cpu"
) -> list[TrainingRecord]:
    """``records`` with ``config.teacher_queries`` of each distilled source scored by the teacher.

    For each source (the records' ``source``) of a task with a distillation term in
    `TASK_LOSS`, that many of its records with an expected answer and no teacher scores yet,
    spread over the source, get LLM rewards from ``config.llm`` (`LLMReward`); the others are
    returned as they are. Pass the training records only (the dev split held out), so that every
    score trains. The scored records are kept in ``<teacher_cache>/<llm>/<source>.jsonl``
    (valid training files) and reused by a rerun while their query and keys are unchanged; an
    interrupted run keeps what it scored.

    Raises:
        ValueError: If records are left to score under several processes (torchrun): score them
            in one process first (the same command without torchrun, or `llm-embedder score`).
    """
    if not config.teacher_queries or config.distillation is False:
        return list(records)
    from ..llm import LocalLLM
    from .reward import LLMReward, _completed_lines

    by_source: dict[str, list[TrainingRecord]] = {}
    for record in records:
        if effective_loss_config(record.task).distillation is None:
            continue
        if record.teacher_scores is None and record.answers:
            by_source.setdefault(str(record.extra.get("source", record.task)), []).append(record)
    cache = config.teacher_cache or Path(config.output) / "teacher-scores"
    folder = Path(cache) / _slug(config.llm or "smollm2-135m-instruct")
    teacher: LocalLLM | None = None
    reward: LLMReward | None = None
    scored: dict[int, TrainingRecord] = {}
    for source, items in sorted(by_source.items()):
        picked = spread(items, config.teacher_queries)
        path = folder / f"{_slug(source)}.jsonl"
        known = {
            _question(r): r.teacher_scores
            for r in map(TrainingRecord.from_dict, _completed_lines(path))
        }
        missing = []
        for record in picked:
            if _question(record) in known:
                scores = known[_question(record)]
                scored[id(record)] = dataclasses.replace(record, teacher_scores=scores)
            else:
                missing.append(record)
        if not missing:
            logger.info("teacher scores of %s: %d records, kept from %s", source, len(picked), path)
            continue
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(
                f"{len(missing)} records of {source} are left for the teacher to score, and "
                "scoring runs in one process: run the same command once without torchrun "
                "(with max_steps: 1, say) to fill teacher-scores/, then under torchrun"
            )
        if reward is None:
            dtype = config.teacher_dtype or _cpu.teacher_dtype(device)
            logger.info("teacher %s in %s", config.llm or "SmolLM2-135M (shipped)", dtype)
            try:
                teacher = LocalLLM(config.llm, dtype=dtype)
            except (OSError, ValueError) as exc:  # transformers raises both for a bad folder
                raise ValueError(f"{_TEACHER_HELP.format(llm=config.llm)} ({exc})") from exc
            reward = LLMReward(teacher, batch_size=8)
        started = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        from tqdm.auto import tqdm

        with path.open("a", encoding="utf-8") as out:
            for record in tqdm(
                missing, desc=f"teacher: {source}", disable=not config.show_progress
            ):
                done = dataclasses.replace(record, teacher_scores=reward.score_record(record))
                out.write(json.dumps(done.to_dict(), ensure_ascii=False) + "\n")
                out.flush()
                scored[id(record)] = done
        logger.info(
            "teacher scores of %s: %d records (%d kept), %.1f s",
            source,
            len(picked),
            len(picked) - len(missing),
            time.perf_counter() - started,
        )
    if teacher is not None:
        reward = None  # the weights go before training starts
        teacher.unload()
    return [scored.get(id(r), r) for r in records]


_TEACHER_HELP = (
    "`llm` {llm!r}: the teacher could not be loaded; give a causal LM's hub id (in the cache, "
    "or with the hub reachable) or a folder holding its config and weights, or leave `llm` "
    "unset for the shipped SmolLM2"
)


def _check_teacher(config: TrainConfig) -> None:
    """Fail before mining when ``llm`` is a folder that is not there (not a hub id)."""
    name = config.llm
    if not config.teacher_queries or config.distillation is False or name is None:
        return
    looks_local = os.path.isabs(name) or name.startswith(".") or name.count("/") > 1
    if looks_local and not os.path.isdir(name):
        raise ValueError(_TEACHER_HELP.format(llm=name) + ": no such folder")


def _question(record: TrainingRecord) -> str:
    """What the teacher is asked of a record (query, candidates, history, answers), as a key."""
    fields = (record.query_id, record.task, record.query, record.pos, record.neg)
    return json.dumps([*fields, record.history, record.answers], ensure_ascii=False)


def _slug(name: str) -> str:
    """A file name for a model or source name (``org/model`` -> ``org--model``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("/", "--")).strip("-.") or "default"


class InstructionWarmup(TrainerCallback):
    """Train only the instructions' token embeddings for the first ``steps`` optimizer steps.

    Every other parameter is frozen (no gradient, so AdamW leaves it as it is), the gradient of
    the token-embedding matrix is kept on the rows of ``token_ids`` alone, and they learn at the
    constant rate ``lr``; after ``steps`` steps the model trains as a whole, on the run's
    schedule. A text instruction has no weights of its own: its tokens'
    embeddings are what can fit it to the model without moving the encoder body.
    """

    def __init__(self, model: Any, token_ids: Collection[int], steps: int, lr: float) -> None:
        self.steps = steps
        self.lr = lr
        self.embeddings = _word_embeddings(model)
        self.rows = torch.zeros(self.embeddings.weight.shape[0], 1, dtype=torch.bool)
        self.rows[sorted(token_ids)] = True
        self.frozen: list[torch.nn.Parameter] = []
        self.hook: Any = None
        self.model = model

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.steps:
            return  # resumed past the warm-up
        weight = self.embeddings.weight
        self.frozen = [p for p in self.model.parameters() if p.requires_grad and p is not weight]
        for parameter in self.frozen:
            parameter.requires_grad_(False)
        rows = self.rows.to(weight.device)
        self.hook = weight.register_hook(lambda grad: grad * rows)
        logger.info(
            "instruction warm-up: %d steps train %d token embeddings alone",
            self.steps - state.global_step,
            int(self.rows.sum()),
        )

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # Only the embedding rows have gradients now, so each group's rate is theirs alone;
        # the scheduler sets it back after the step.
        if self.hook is not None and kwargs.get("optimizer") is not None:
            for group in kwargs["optimizer"].param_groups:
                group["lr"] = self.lr

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.hook is not None and state.global_step >= self.steps:
            self._release()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._release()

    def _release(self) -> None:
        if self.hook is not None:
            self.hook.remove()
            self.hook = None
        for parameter in self.frozen:
            parameter.requires_grad_(True)
        self.frozen = []


def _word_embeddings(model: Any) -> torch.nn.Embedding:
    embeddings = model[0].auto_model.get_input_embeddings()
    if not isinstance(embeddings, torch.nn.Embedding):
        raise ValueError(
            "`instruction_warmup_steps` needs a model whose input embeddings are a token "
            f"embedding matrix, got {type(embeddings).__name__}; set it to 0"
        )
    return embeddings


def instruction_token_ids(model: Any, tasks: Sequence[str]) -> set[int]:
    """The vocabulary ids of the tokens of ``tasks``' query and key instructions."""
    ids: set[int] = set()
    for task in tasks:
        pair = get_instruction(task)
        for text in (pair.query, pair.key):
            if text:
                ids.update(model.tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids


def _device(config: TrainConfig) -> str:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("`device` is 'cuda' but torch sees no CUDA device; use 'cpu' or 'auto'")
    on_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    return "cuda" if on_cuda else "cpu"


def split_off_dev(
    config: TrainConfig, records: Sequence[TrainingRecord]
) -> tuple[list[TrainingRecord], list[TrainingRecord]]:
    """The run's training and dev records: ``config.dev_data`` and a split of the rest.

    The dev records of ``config.dev_data`` of a group that is trained on are dropped
    (`held_out_dev`); each task and source without them has its dev split drawn from
    ``records`` (`split_dev`). Seeded: the same records give the same split.
    """
    if config.dev_fraction <= 0:
        return list(records), []
    given = held_out_dev(
        [r for path in config.dev_data for r in read_records(path)],
        records,
        max_queries=config.dev_max_queries,
        seed=config.seed,
    )
    kept, dev_records = split_dev(
        records,
        fraction=config.dev_fraction,
        max_queries=config.dev_max_queries,
        min_queries=config.dev_min_queries,
        seed=config.seed,
        exclude={dev_unit(r) for r in given},
    )
    dev_records += given
    logger.info("dev split: %s", _dev_counts(dev_records) or "none")
    return kept, dev_records


def build_trainer(
    config: TrainConfig, records: Sequence[TrainingRecord] | None = None
) -> LLMEmbedderTrainer:
    """Set up the trainer of `train` without running it (to inspect its batches, say).

    The dev split (``config.dev_fraction``) is taken out of the records here; the trainer then
    carries ``dev_records``, ``dev_callback`` (None without a dev split), ``base_state`` (the
    weights before training, on the CPU), ``base_instructions`` (per task, whether the base
    is used with its instructions), ``distillation`` (the per-task plan), ``teacher_quality``,
    ``mining`` (per source of ``config.sources``, what mining did; empty for given records) and
    ``teacher_seconds`` (loading the teacher and scoring; next to nothing where every score was
    kept).

    Args:
        config: The run's settings.
        records: Training records; None reads ``config.data``.

    Raises:
        ValueError: If there is no training data, or the device or precision is unavailable.
        TrainingDataError: On a bad record (file and line named) or missing teacher scores.
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    _check_teacher(config)
    mining: dict[str, dict[str, Any]] = {}
    if records is None:
        if not config.data and not config.sources:
            raise ValueError(
                "no training data: set `data` (--data FILE.jsonl ...) or `sources` (--sources ...)"
            )
        records = [r for path in config.data for r in read_records(path)]
        mined, mining = source_records(config)
        records += mined
    if not records:
        raise ValueError("no training records: the data files are empty")
    device = _device(config)
    precision = _precision_flags(config, device == "cuda")
    records, dev_records = split_off_dev(config, records)
    if config.max_group_queries:
        records = cap_per_group(records, config.max_group_queries)
    started = time.perf_counter()
    records = teacher_scored(config, records, device)
    teacher_seconds = time.perf_counter() - started
    model, base_instructions = _load_base(config, device)
    plan, quality = distillation_plan(config, records, model)

    dataset, prompts = build_train_dataset(records, config, plan)
    counts = _examples_per_task(dataset)
    logger.info("training examples per task: %s", counts)
    args = SentenceTransformerTrainingArguments(
        output_dir=config.output,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        use_cpu=device != "cuda",
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=not config.show_progress,
        dataloader_num_workers=dataloader_workers(config, device),
        prompts=prompts,
        multi_dataset_batch_sampler=HomogeneousBatchSampler,
        learning_rate_mapping=layer_lr_mapping(model, config.lr, config.layer_lr_decay),
        ddp_find_unused_parameters=True,
        **_warmup_args(config.warmup_ratio),
        **_checkpointing_args(config.gradient_checkpointing),
        **precision,
    )
    loss = MultiTaskLoss(
        model,
        {
            t: dataclasses.replace(
                effective_loss_config(t, distillation=plan.get(t, False)),
                temperature=config.temperature,
            )
            for t in counts
        },
        gather_across_devices=config.gather_across_devices,
        mask_false_negatives=config.mask_false_negatives,
        prompt_lengths=None
        if pools_instructions(model)
        else instruction_token_counts(model, list(counts)),
    )
    # Training texts are cut to config.max_length; the saved model keeps its own limit.
    collator = TaskDataCollator(
        preprocess_fn=model.preprocess, prompts=prompts, max_length=config.max_length
    )
    dev_sets = (
        dev_datasets(dev_records, records, max_distractors=config.dev_distractors, seed=config.seed)
        if dev_records
        else {}
    )
    callback = DevCallback(dev_sets, config.eval_steps) if dev_sets else None
    callbacks: list[TrainerCallback] = [callback] if callback else []
    if config.instruction_warmup_steps:
        token_ids = instruction_token_ids(model, list(counts))
        callbacks.append(
            InstructionWarmup(
                model, token_ids, config.instruction_warmup_steps, config.instruction_warmup_lr
            )
        )
    with _model_card_bars(config.show_progress):
        trainer = LLMEmbedderTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            loss=loss,
            data_collator=collator,
            callbacks=callbacks or None,
        )
    if not config.show_progress:
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
    trainer.dev_records = dev_records
    trainer.dev_callback = callback
    trainer.base_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    trainer.base_instructions = base_instructions
    trainer.distillation = plan
    trainer.teacher_quality = quality
    trainer.mining = mining
    trainer.teacher_seconds = teacher_seconds
    return trainer


TASK_SETTINGS = "llm_embedder.json"
"""File of a trained model's folder holding its per-task settings (see `save_selected`)."""


def _variant_dir(alpha: float, step: int | None) -> str:
    name = f"alpha-{alpha:.2f}" if step is None else f"step-{step}-alpha-{alpha:.2f}"
    return f"variants/{name}"


def save_selected(
    model: SentenceTransformer,
    output: str | os.PathLike[str],
    base_state: Mapping[str, Tensor],
    tuned_state: Mapping[str, Tensor],
    selection: Selection,
    *,
    base_model: str,
    task_weights: Mapping[str, tuple[int, Mapping[str, Tensor]]] | None = None,
) -> dict[str, Any]:
    """Save the per-task choices of `select_per_task` as one loadable model folder.

    A task's weights are its interpolation between the base and its fine-tuned weights (those of
    ``task_weights``, else ``tuned_state``). The folder's own weights are those most tasks use
    (ties: the larger weight); a task with others gets its own copy under
    ``variants/alpha-<a>/`` (``variants/step-<s>-alpha-<a>/`` for a task's own step), which
    `LLMEmbedder` loads for that task alone. A task whose instructions are off has empty prompts
    saved, so ``instructions="auto"`` leaves it without. ``llm_embedder.json`` records it all.

    Returns:
        The settings written to ``llm_embedder.json``.
    """
    output = Path(output)
    states = {step: state for step, state in (task_weights or {}).values()}

    def weights(step: int | None) -> Mapping[str, Tensor]:
        return tuned_state if step is None else states[step]

    # (alpha, step): the step only where tasks have weights of their own (None for alpha 0)
    keys = {
        task: (choice.alpha, choice.step if states and choice.alpha > 0 else None)
        for task, choice in selection.tasks.items()
    }
    counts = Counter(keys.values())
    main = max(counts, key=lambda k: (counts[k], k[0], -(k[1] or 0))) if counts else (1.0, None)
    prompts = dict(model.prompts or {})
    for task, choice in selection.tasks.items():
        if not choice.instructions:
            prompts[prompt_name(task, "query")] = ""
            prompts[prompt_name(task, "key")] = ""
    tasks: dict[str, Any] = {}
    saved = model.prompts
    try:
        model.prompts = prompts
        for alpha, step in sorted(counts, key=lambda k: k != main):
            folder = output if (alpha, step) == main else output / _variant_dir(alpha, step)
            model.load_state_dict(interpolate(base_state, weights(step), alpha))
            model.save(str(folder))
        for task, choice in selection.tasks.items():
            tasks[task] = {
                "alpha": choice.alpha,
                "step": choice.step,
                "instructions": choice.instructions,
                "model": "." if keys[task] == main else _variant_dir(*keys[task]),
                f"dev_{DEV_METRIC}": choice.dev,
                f"base_dev_{DEV_METRIC}": choice.base_dev,
                f"tuned_dev_{DEV_METRIC}": choice.tuned_dev,
                "dev_sets": choice.sources,
            }
    finally:
        model.prompts = saved
        model.load_state_dict(dict(tuned_state))
    settings = {"base_model": base_model, "default_alpha": main[0], "tasks": tasks}
    (output / TASK_SETTINGS).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return settings


def _warn_regressions(selection: Selection) -> None:
    regressed = selection.regressed()
    if not regressed:
        return
    lines = [
        f"  {t}: fine-tuned {selection.tasks[t].tuned_dev:.4f} < base "
        f"{selection.tasks[t].base_dev:.4f} -> saved with alpha {selection.tasks[t].alpha:.2f}, "
        f"instructions {'on' if selection.tasks[t].instructions else 'off'}"
        for t in regressed
    ]
    logger.warning(
        "\n%s\nFINE-TUNING DID NOT BEAT THE BASE MODEL on the dev split (%s) for: %s\n%s\n"
        "The saved model falls back towards the base for these tasks; more or better training "
        "data, a lower learning rate or a stronger teacher may help.\n%s",
        "=" * 78,
        DEV_METRIC,
        ", ".join(regressed),
        "\n".join(lines),
        "=" * 78,
    )


def _task_weights(callback: DevCallback, se: float) -> dict[str, tuple[int, Mapping[str, Tensor]]]:
    """Each task's step and its weights (`TrainConfig.step_per_task`, `DevCallback.chosen_steps`).

    A task whose own dev peak is not better than the best step by over ``se`` standard errors
    takes the best step. Logged.
    """
    if callback.task_steps:
        logger.info("best dev step per task: %s", callback.task_steps)
    steps = callback.chosen_steps(se)
    if steps != callback.task_steps:
        logger.info("step per task: %s", steps)
    return {task: (step, callback.state_at(step)) for task, step in steps.items()}


def _known_cells(
    callback: DevCallback, task_weights: Mapping[str, tuple[int, Mapping[str, Tensor]]]
) -> dict[tuple[float, str], dict[str, dict[str, float]]] | None:
    """The dev scores the callback measured, as the grid's alpha-1-with-instructions cell.

    Each dev set's scores are those of the step its task interpolates towards (its own, else the
    best step).
    """
    if callback.best_step is None:
        return None
    steps = _steps_taken(callback, task_weights)
    cells = {
        name: callback.queries_at(steps[ds.task])[name] for name, ds in callback.datasets.items()
    }
    return {(1.0, "instructions"): cells}


def _steps_taken(
    callback: DevCallback | None, task_weights: Mapping[str, tuple[int, Mapping[str, Tensor]]]
) -> dict[str, int]:
    """The step each task with a dev set fine-tuned to: its own (``task_weights``) or the best."""
    if callback is None or callback.best_step is None:
        return {}
    tasks = sorted({ds.task for ds in callback.datasets.values()})
    return {t: task_weights[t][0] if t in task_weights else callback.best_step for t in tasks}


def train(config: TrainConfig, records: Sequence[TrainingRecord] | None = None) -> TrainResult:
    """Fine-tune ``config.model`` with LLM-Embedder's recipe and save it to ``config.output``.

    With a dev split (``config.dev_fraction > 0``) the dev score is logged every
    ``config.eval_steps`` steps and the best step's weights are kept; with ``interpolate`` the
    saved model holds, per task, the interpolation weight and instruction switch chosen on the
    dev split (`select_per_task`, `save_selected`); a task without a dev set (one too small
    to split, or one not trained) keeps the base model. A run whose fine-tuned weights score
    below the base model on the dev split says so in a warning and in the summary
    (``llm_embedder_training.json``).

    Args:
        config: The run's settings.
        records: Training records; None reads ``config.data``.

    Returns:
        Where the model is and how the run went. The saved model holds the instructions as
        prompts: ``LLMEmbedder(result.output)`` loads with instructions on.

    Raises:
        ValueError: If there is no training data, or the device or precision is unavailable.
        FileNotFoundError: If ``resume`` names no checkpoint.
        TrainingDataError: On a bad record (file and line named) or missing teacher scores.
    """
    resume = _resume_path(config)
    trainer = build_trainer(config, records)
    counts = _examples_per_task(trainer.train_dataset)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    callback: DevCallback | None = trainer.dev_callback
    selection: Selection | None = None
    model = trainer.model
    if callback is not None and callback.best_state is not None:
        tuned = callback.best_state
        logger.info(
            "best dev %s %.4f at step %d", DEV_METRIC, callback.best_score, callback.best_step
        )
    else:
        tuned = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    select_started = time.perf_counter()
    task_weights: dict[str, tuple[int, Mapping[str, Tensor]]] = {}
    if trainer.is_world_process_zero():
        if callback is not None and config.interpolate:
            if config.step_per_task:
                task_weights = _task_weights(callback, config.selection_se)
            selection = select_per_task(
                model,
                trainer.base_state,
                tuned,
                callback.datasets,
                alphas=config.alphas,
                se=config.selection_se,
                known=_known_cells(callback, task_weights),
                tuned_step=callback.best_step,
                task_weights=task_weights,
                base_instructions=trainer.base_instructions,
                serve=[*TASKS, *(t for t in counts if t not in TASKS)],
            )
            _warn_regressions(selection)
            save_selected(
                model,
                config.output,
                trainer.base_state,
                tuned,
                selection,
                base_model=config.model,
                task_weights=task_weights,
            )
        else:
            model.load_state_dict(tuned)
            model.save(config.output)
    select_seconds = time.perf_counter() - select_started
    summary = {
        "config": config.to_dict(),
        "mining": trainer.mining,
        "examples": counts,
        "dev_queries": _dev_counts(trainer.dev_records),
        "distillation": trainer.distillation,
        "teacher_quality": {t: vars(q) for t, q in trainer.teacher_quality.items()},
        "teacher_seconds": trainer.teacher_seconds,
        "dev_curve": callback.curve if callback else [],
        "best_step": callback.best_step if callback else None,
        "task_best_steps": callback.task_steps if callback else {},
        "task_steps": _steps_taken(callback, task_weights),
        "selection": selection.to_dict() if selection else None,
        "regressed_tasks": selection.regressed() if selection else [],
        "train_seconds": seconds,
        "selection_seconds": select_seconds,
    }
    if trainer.is_world_process_zero():
        settings = Path(config.output) / "llm_embedder_training.json"
        settings.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    metrics = output.metrics
    return TrainResult(
        output=Path(config.output),
        global_step=int(output.global_step),
        epochs=float(trainer.state.epoch or 0.0),
        train_loss=float(output.training_loss),
        seconds=seconds,
        samples_per_second=float(metrics.get("train_samples_per_second", 0.0)),
        examples=counts,
        log_history=list(trainer.state.log_history),
        summary=summary,
    )
