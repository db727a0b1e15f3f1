"""LLM-Embedder's training losses: contrastive, KL distillation and stabilized distillation.

Each loss is a pure function of embeddings (testable against a naive reference, gradients
included) and an ``nn.Module`` in the sentence-transformers style whose ``forward`` embeds the
columns and hands off to ``compute_loss_from_embeddings``. `MultiTaskLoss` is the trainer's:
each task's block of a batch gets that task's terms (`task_loss`); `LLMEmbedderLoss` is its
one-task case.

Layout of a batch: ``B`` queries, each with ``G`` keys (its group), key ``j * G + i`` being key
``i`` of query ``j``; for contrastive learning key 0 of each group is the positive. With several
processes, the keys of every process are gathered (`gather_with_grad`) and the local queries
start at ``query_offset = rank * B`` in the gathered batch. Similarities are dot products divided
by the temperature 0.01 (cosine similarities for L2-normalised embeddings, as in the paper).

`TASK_LOSS` holds the paper's per-task settings (FlagEmbedding ``research/llm_embedder``,
``TASK_CONFIG["llm-embedder"]["training"]``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from types import MappingProxyType
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._model import embed_with_pooling_mask, pooling_mask
from .._validation import check_int_at_least_zero, check_positive_int

__all__ = [
    "TASK_LOSS",
    "TEMPERATURE",
    "ContrastiveLoss",
    "KLDistillationLoss",
    "LLMEmbedderLoss",
    "MultiTaskLoss",
    "StabilizedDistillationLoss",
    "TaskLossConfig",
    "contrastive_fallback",
    "contrastive_loss",
    "gather_with_grad",
    "in_batch_false_negatives",
    "kl_distillation_loss",
    "stabilized_distillation_loss",
    "task_loss",
]

TEMPERATURE = 0.01
"""Temperature of the student similarities (cosine / 0.01)."""


# Checks ------------------------------------------------------------------------------------------


def _check_embeddings(query_emb: Tensor, key_emb: Tensor) -> None:
    if query_emb.dim() != 2 or key_emb.dim() != 2:
        raise ValueError(
            "embeddings must be 2-D (rows, dim); got query "
            f"{tuple(query_emb.shape)} and key {tuple(key_emb.shape)}"
        )
    if query_emb.shape[1] != key_emb.shape[1]:
        raise ValueError(
            f"query and key embeddings differ in dimension: {query_emb.shape[1]} vs "
            f"{key_emb.shape[1]}"
        )


def _check_groups(n_queries: int, n_keys: int, group_size: int, query_offset: int) -> None:
    check_positive_int(group_size, "group_size")
    check_int_at_least_zero(query_offset, "query_offset")
    if n_keys % group_size:
        raise ValueError(
            f"{n_keys} keys are not a whole number of groups of {group_size}; every query needs "
            "the same number of keys"
        )
    if (query_offset + n_queries) * group_size > n_keys:
        raise ValueError(
            f"{n_queries} queries from offset {query_offset} need "
            f"{(query_offset + n_queries) * group_size} keys (groups of {group_size}), got "
            f"{n_keys}"
        )


def _check_temperature(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"`{name}` must be > 0, got {value!r}")


def _check_mask(mask: Tensor, shape: tuple[int, int]) -> None:
    if mask.dtype != torch.bool:
        raise TypeError(f"`false_negatives` must be a bool tensor, got {mask.dtype}")
    if tuple(mask.shape) != shape:
        raise ValueError(
            f"`false_negatives` must have shape (queries, keys) = {shape}, got {tuple(mask.shape)}"
        )


def _check_teacher(teacher_scores: Tensor, n_queries: int) -> int:
    if teacher_scores.dim() != 2 or teacher_scores.shape[0] != n_queries:
        raise ValueError(
            f"`teacher_scores` must have shape (queries, keys per query) with {n_queries} rows, "
            f"got {tuple(teacher_scores.shape)}"
        )
    if not torch.isfinite(teacher_scores).all():
        raise ValueError("`teacher_scores` holds NaN or infinite values")
    return int(teacher_scores.shape[1])


def _upcast(x: Tensor) -> Tensor:
    """At least float32 (half-precision similarities lose too much at temperature 0.01)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


# Pure functions ----------------------------------------------------------------------------------


def contrastive_loss(
    query_emb: Tensor,
    key_emb: Tensor,
    *,
    group_size: int,
    temperature: float = TEMPERATURE,
    query_offset: int = 0,
    false_negatives: Tensor | None = None,
) -> Tensor:
    """InfoNCE over in-batch and hard negatives.

    Scores are ``query_emb @ key_emb.T / temperature`` over every key of the batch; the target
    of local query ``j`` is key 0 of its group, ``(query_offset + j) * group_size``; every other
    key is a negative, except those marked in ``false_negatives``, which are removed from that
    query's softmax.

    Args:
        query_emb: ``(B, D)`` local queries.
        key_emb: ``(K, D)`` keys of the whole (gathered) batch, in groups of ``group_size``.
        group_size: Keys per query (1 positive + hard negatives).
        temperature: Divides the similarities.
        query_offset: Index of the first local query in the gathered batch.
        false_negatives: Optional ``(B, K)`` bool mask of keys that are also relevant to the
            query (same document as a positive...). The query's own positive cannot be masked.

    Returns:
        The mean over queries of the cross-entropy, a scalar.
    """
    _check_embeddings(query_emb, key_emb)
    _check_temperature("temperature", temperature)
    n, k = query_emb.shape[0], key_emb.shape[0]
    _check_groups(n, k, group_size, query_offset)
    scores = _upcast(query_emb @ key_emb.T) / temperature
    target = (torch.arange(n, device=scores.device) + query_offset) * group_size
    if false_negatives is not None:
        _check_mask(false_negatives, (n, k))
        rows = torch.arange(n, device=scores.device)
        hit = false_negatives[rows, target]
        if hit.any():
            raise ValueError(
                "`false_negatives` masks the positive of local queries "
                f"{rows[hit].tolist()}; mark only other keys"
            )
        scores = scores.masked_fill(false_negatives, float("-inf"))
    return F.cross_entropy(scores, target)


def kl_distillation_loss(
    query_emb: Tensor,
    key_emb: Tensor,
    teacher_scores: Tensor,
    *,
    temperature: float = TEMPERATURE,
    teacher_temperature: float = 1.0,
) -> Tensor:
    """KL(softmax(teacher / T_t) || softmax(student / T)) over each query's own keys, batch mean.

    Args:
        query_emb: ``(B, D)`` queries.
        key_emb: ``(B * G, D)`` the queries' own keys, group by group (no in-batch keys).
        teacher_scores: ``(B, G)`` LLM rewards of the keys.
        temperature: Student temperature (similarity / 0.01).
        teacher_temperature: Teacher temperature (0.1 for chat and long-range LM).

    Returns:
        ``sum_j KL_j / B``, a scalar.
    """
    _check_embeddings(query_emb, key_emb)
    _check_temperature("temperature", temperature)
    _check_temperature("teacher_temperature", teacher_temperature)
    n = query_emb.shape[0]
    g = _check_teacher(teacher_scores, n)
    if key_emb.shape[0] != n * g:
        raise ValueError(
            f"KL distillation uses each query's own keys only: expected {n} x {g} = {n * g} "
            f"keys, got {key_emb.shape[0]}"
        )
    keys = key_emb.reshape(n, g, -1)
    student = _upcast(torch.einsum("bd,bgd->bg", query_emb, keys)) / temperature
    log_student = F.log_softmax(student, dim=-1)
    teacher = F.softmax(_upcast(teacher_scores.detach()) / teacher_temperature, dim=-1)
    return F.kl_div(log_student, teacher, reduction="batchmean")


def stabilized_distillation_loss(
    query_emb: Tensor,
    key_emb: Tensor,
    teacher_scores: Tensor,
    *,
    temperature: float = TEMPERATURE,
    query_offset: int = 0,
    false_negatives: Tensor | None = None,
) -> Tensor:
    """LLM-Embedder's stabilized distillation.

    Each query's keys are sorted by teacher score, highest first, and ``w = softmax(teacher)``.
    For each rank ``i``, ``CE_i`` is the cross-entropy whose target is the rank-``i`` key, over
    that key, the keys ranked below it and the in-batch keys of other queries (higher-ranked
    keys masked out). The loss is ``sum_i mean_j(w_ji * CE_ji)``. When ``w`` is one-hot this is
    contrastive learning with that key as the positive.

    Args:
        query_emb: ``(B, D)`` local queries.
        key_emb: ``(K, D)`` keys of the whole (gathered) batch, in groups of ``G``.
        teacher_scores: ``(B, G)`` LLM rewards of each local query's own keys.
        temperature: Divides the similarities.
        query_offset: Index of the first local query in the gathered batch.
        false_negatives: Optional ``(B, K)`` bool mask of in-batch keys of other queries that are
            also relevant to the query; removed from every softmax. A query's own keys cannot be
            masked (they are ranked by the teacher).

    Returns:
        A scalar.
    """
    _check_embeddings(query_emb, key_emb)
    _check_temperature("temperature", temperature)
    n, k = query_emb.shape[0], key_emb.shape[0]
    g = _check_teacher(teacher_scores, n)
    _check_groups(n, k, g, query_offset)
    device = query_emb.device
    scores = _upcast(query_emb @ key_emb.T) / temperature
    teacher = _upcast(teacher_scores.detach()).to(device=device, dtype=scores.dtype)
    order = torch.argsort(teacher, dim=-1, descending=True, stable=True)
    weights = torch.gather(F.softmax(teacher, dim=-1), 1, order)
    starts = (torch.arange(n, device=device) + query_offset) * g
    targets = starts[:, None] + order
    rows = torch.arange(n, device=device)
    if false_negatives is not None:
        _check_mask(false_negatives, (n, k))
        own = torch.zeros_like(false_negatives)
        own[rows[:, None], starts[:, None] + torch.arange(g, device=device)] = True
        if (false_negatives & own).any():
            raise ValueError(
                "`false_negatives` masks keys of the query's own group; only in-batch keys of "
                "other queries can be masked"
            )
        mask = false_negatives.clone()
    else:
        mask = torch.zeros((n, k), dtype=torch.bool, device=device)
    loss = scores.new_zeros(())
    for i in range(g):
        target = targets[:, i]
        logits = scores.masked_fill(mask, float("-inf"))
        ce = torch.logsumexp(logits, dim=-1) - scores[rows, target]
        loss = loss + (weights[:, i] * ce).mean()
        mask = mask.clone()
        mask[rows, target] = True
    return loss


def in_batch_false_negatives(
    relevant: Sequence[Collection[str]],
    key_ids: Sequence[str],
    *,
    group_size: int,
    query_offset: int = 0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Mask of in-batch keys that are relevant to a query but belong to another query's group.

    A document relevant to several queries of a batch (the same paragraph, the same API call,
    another evidence turn) would otherwise be a negative for all but one of them.

    Args:
        relevant: For each local query, the ids (or texts) of its relevant documents.
        key_ids: The id (or text) of every key of the (gathered) batch, in batch order.
        group_size: Keys per query.
        query_offset: Index of the first local query in the gathered batch.
        device: Device of the returned mask.

    Returns:
        ``(len(relevant), len(key_ids))`` bool tensor, False on each query's own group.
    """
    _check_groups(len(relevant), len(key_ids), group_size, query_offset)
    mask = torch.zeros((len(relevant), len(key_ids)), dtype=torch.bool)
    for j, rel in enumerate(relevant):
        own = range((query_offset + j) * group_size, (query_offset + j + 1) * group_size)
        for index, key in enumerate(key_ids):
            if key in rel and index not in own:
                mask[j, index] = True
    return mask.to(device) if device is not None else mask


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward hands each process the summed gradient of its slice."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        import torch.distributed as dist

        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        import torch.distributed as dist

        grad = grad.contiguous()
        dist.all_reduce(grad)  # sum over processes of d(loss_p) / d(gathered)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from every process, in rank order, keeping gradients.

    Backward hands each process the sum over processes of the gradient of its slice, so with
    data-parallel gradient averaging the update equals that of one process holding the whole
    batch. Works with every backend (gloo included). Returns ``tensor`` itself when
    torch.distributed is not initialised or runs one process.

    Raises:
        ValueError: If the processes hold tensors of different shapes.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    shape = torch.tensor(tensor.shape, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(s, shapes[0]) for s in shapes):
        raise ValueError(
            f"every process must hold the same number of keys; got shapes "
            f"{[tuple(s.tolist()) for s in shapes]}: use the same batch and group size"
        )
    gathered: Tensor = _GatherWithGrad.apply(tensor)
    return gathered


def _world() -> tuple[int, int]:
    """``(rank, number of processes)`` of torch.distributed; ``(0, 1)`` when it is not running."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _batch_keys(keys: Tensor, n_queries: int, gather: bool) -> tuple[Tensor, int]:
    """The keys of the whole batch and the index of its first local query.

    With ``gather`` and several processes, the keys of every process (`gather_with_grad`);
    else ``keys`` itself.
    """
    rank, world = _world()
    if not gather or world == 1:
        return keys, 0
    return gather_with_grad(keys), rank * n_queries


def _gather_ids(ids: list[str]) -> list[str]:
    """``ids`` of every process, in rank order (the key ids of a gathered batch)."""
    import torch.distributed as dist

    world = _world()[1]
    if world == 1:
        return ids
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, ids)
    return [i for part in parts for i in part]


# Per-task settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskLossConfig:
    """How one task trains.

    Attributes:
        positive: Which key is the positive: ``"first"`` listed, the ``"teacher"``'s best, or a
            ``"random"`` one of ``pos``.
        contrastive: Whether the contrastive (InfoNCE) term is on.
        distillation: ``"stabilized"``, ``"kl"`` or None.
        teacher_temperature: Teacher temperature of KL distillation.
        contrastive_weight: Weight of the contrastive term when both terms are on.
        distill_weight: Weight of the distillation term when both terms are on. A term alone
            has weight 1, as in the paper's code.
        temperature: Student temperature (similarity / temperature).
        max_samples: At most this many training queries of the task; None for all.
        min_teacher_spread: Drop queries whose max - min teacher score is below this.
    """

    positive: Literal["first", "teacher", "random"]
    contrastive: bool
    distillation: Literal["kl", "stabilized"] | None
    teacher_temperature: float = 1.0
    contrastive_weight: float = 0.2
    distill_weight: float = 1.0
    temperature: float = TEMPERATURE
    max_samples: int | None = None
    min_teacher_spread: float | None = None

    def __post_init__(self) -> None:
        if self.positive not in ("first", "teacher", "random"):
            raise ValueError(
                f"`positive` must be 'first', 'teacher' or 'random', got {self.positive!r}"
            )
        if self.distillation not in (None, "kl", "stabilized"):
            raise ValueError(
                f"`distillation` must be 'kl', 'stabilized' or None, got {self.distillation!r}"
            )
        if not self.contrastive and self.distillation is None:
            raise ValueError("a task needs at least one term: `contrastive` or `distillation`")
        for name in ("teacher_temperature", "temperature"):
            _check_temperature(name, getattr(self, name))
        for name in ("contrastive_weight", "distill_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{name}` must be >= 0, got {value!r}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"`max_samples` must be >= 1 or None, got {self.max_samples}")
        if self.min_teacher_spread is not None and self.min_teacher_spread < 0:
            raise ValueError(
                f"`min_teacher_spread` must be >= 0 or None, got {self.min_teacher_spread}"
            )

    @property
    def needs_teacher_scores(self) -> bool:
        """Whether training this task needs ``teacher_scores`` in its records."""
        return self.distillation is not None or self.positive == "teacher"

    @property
    def weights(self) -> tuple[float, float]:
        """Effective ``(contrastive, distillation)`` weights: a lone term has weight 1."""
        if self.contrastive and self.distillation is not None:
            return float(self.contrastive_weight), float(self.distill_weight)
        return (1.0, 0.0) if self.contrastive else (0.0, 1.0)


TASK_LOSS: Mapping[str, TaskLossConfig] = MappingProxyType(
    {
        "qa": TaskLossConfig("first", contrastive=False, distillation="stabilized"),
        # The LLM scores of conversational search are computed but not used.
        "convsearch": TaskLossConfig("first", contrastive=True, distillation=None),
        # No shared corpus between dialogues: in-batch negatives are meaningless.
        "chat": TaskLossConfig(
            "teacher", contrastive=False, distillation="kl", teacher_temperature=0.1
        ),
        "lrlm": TaskLossConfig(
            "teacher",
            contrastive=False,
            distillation="kl",
            teacher_temperature=0.1,
            max_samples=10_000,
            min_teacher_spread=0.1,
        ),
        "icl": TaskLossConfig("random", contrastive=False, distillation="stabilized"),
        "tool": TaskLossConfig("first", contrastive=True, distillation=None),
    }
)
"""The paper's per-task loss settings (read-only)."""


# Modules -----------------------------------------------------------------------------------------


def _embed(model: nn.Module, sentence_features: Iterable[dict[str, Tensor]]) -> list[Tensor]:
    return [model(features)["sentence_embedding"] for features in sentence_features]


def _in_fp32(
    compute: Callable[..., Tensor], embeddings: list[Tensor], *args: Any, **kwargs: Any
) -> Tensor:
    """``compute(embeddings, ...)`` in fp32, autocast off.

    Under autocast (bf16/fp16 training) the embeddings come out in half precision; their
    similarities divided by a temperature of 0.01 would lose the precision that ranks close keys,
    so the loss itself always runs in fp32.
    """
    embeddings = [e.float() for e in embeddings]
    with torch.autocast(embeddings[0].device.type, enabled=False):
        return compute(embeddings, *args, **kwargs)


def _split(embeddings: Sequence[Tensor], normalize: bool) -> tuple[Tensor, Tensor, int]:
    """``[queries, key_1, ..., key_G]`` columns -> queries, group-major keys, G."""
    if len(embeddings) < 2:
        raise ValueError(
            f"expected the query column and at least one key column, got {len(embeddings)}"
        )
    if normalize:
        embeddings = [F.normalize(e, p=2, dim=-1) for e in embeddings]
    query = embeddings[0]
    keys = torch.stack(list(embeddings[1:]), dim=1)  # (B, G, D)
    return query, keys.reshape(-1, keys.shape[-1]), keys.shape[1]


class _EmbeddingLoss(nn.Module):
    """Embeds ``[query, key_1 (positive), key_2, ...]`` columns and calls the pure loss."""

    def __init__(
        self,
        model: nn.Module,
        *,
        temperature: float = TEMPERATURE,
        gather_across_devices: bool = False,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        _check_temperature("temperature", temperature)
        self.model = model
        self.temperature = temperature
        self.gather_across_devices = gather_across_devices
        self.normalize = normalize

    def forward(
        self,
        sentence_features: Iterable[dict[str, Tensor]],
        labels: Tensor | None = None,
        false_negatives: Tensor | None = None,
    ) -> Tensor:
        """Embed the columns with the model and return the loss.

        Args:
            sentence_features: Tokenised columns: queries, then key 1 (the positive), key 2...
            labels: ``(B, G)`` teacher scores (distillation losses).
            false_negatives: Optional ``(B, K)`` mask over the (gathered) keys.
        """
        return _in_fp32(
            self.compute_loss_from_embeddings,
            _embed(self.model, sentence_features),
            labels,
            false_negatives,
        )

    def compute_loss_from_embeddings(
        self,
        embeddings: Sequence[Tensor],
        labels: Tensor | None = None,
        false_negatives: Tensor | None = None,
    ) -> Tensor:
        """The loss of already computed column embeddings (see `forward`)."""
        raise NotImplementedError

    def _gathered(self, query: Tensor, keys: Tensor) -> tuple[Tensor, int]:
        return _batch_keys(keys, query.shape[0], self.gather_across_devices)

    def get_config_dict(self) -> dict[str, Any]:
        """Settings recorded in model cards by sentence-transformers."""
        return {
            "temperature": self.temperature,
            "gather_across_devices": self.gather_across_devices,
            "normalize": self.normalize,
        }


def _need_labels(labels: Tensor | None, what: str) -> Tensor:
    if labels is None:
        raise ValueError(
            f"{what} needs teacher scores as labels; compute them with `llm-embedder score`"
        )
    return labels


def task_loss(
    config: TaskLossConfig,
    query: Tensor,
    own_keys: Tensor,
    batch_keys: Tensor,
    *,
    query_offset: int,
    labels: Tensor | None,
    false_negatives: Tensor | None,
) -> Tensor:
    """The loss of one task's queries, as `LLMEmbedderLoss` computes it, at any batch offset.

    Args:
        config: The task's settings.
        query: ``(n, D)`` the task's queries.
        own_keys: ``(n * G, D)`` their own keys, group by group (KL distillation).
        batch_keys: ``(K, D)`` every key of the (gathered) batch (in-batch negatives).
        query_offset: Index of the first of these queries among the batch's queries.
        labels: ``(n, G)`` teacher scores, for the distillation terms.
        false_negatives: ``(n, K)`` mask of in-batch keys relevant to each query.
    """
    w_contrastive, w_distill = config.weights
    group = own_keys.shape[0] // max(query.shape[0], 1)
    total = query.new_zeros((), dtype=torch.float32)
    if config.contrastive:
        total = total + w_contrastive * contrastive_loss(
            query,
            batch_keys,
            group_size=group,
            temperature=config.temperature,
            query_offset=query_offset,
            false_negatives=false_negatives,
        )
    if config.distillation == "kl":
        total = total + w_distill * kl_distillation_loss(
            query,
            own_keys,
            _need_labels(labels, "KL distillation"),
            temperature=config.temperature,
            teacher_temperature=config.teacher_temperature,
        )
    elif config.distillation == "stabilized":
        total = total + w_distill * stabilized_distillation_loss(
            query,
            batch_keys,
            _need_labels(labels, "stabilized distillation"),
            temperature=config.temperature,
            query_offset=query_offset,
            false_negatives=false_negatives,
        )
    return total


class ContrastiveLoss(_EmbeddingLoss):
    """InfoNCE with in-batch and hard negatives (see `contrastive_loss`)."""

    def compute_loss_from_embeddings(
        self,
        embeddings: Sequence[Tensor],
        labels: Tensor | None = None,
        false_negatives: Tensor | None = None,
    ) -> Tensor:
        """Contrastive loss of ``[queries, keys...]`` column embeddings; labels are unused."""
        query, keys, g = _split(embeddings, self.normalize)
        keys, offset = self._gathered(query, keys)
        return contrastive_loss(
            query,
            keys,
            group_size=g,
            temperature=self.temperature,
            query_offset=offset,
            false_negatives=false_negatives,
        )


class KLDistillationLoss(_EmbeddingLoss):
    """KL distillation over each query's own keys (see `kl_distillation_loss`).

    Args:
        model: The sentence-transformers model.
        teacher_temperature: Teacher temperature (0.1 for chat and long-range LM).
        **kwargs: ``temperature``, ``normalize``.
    """

    def __init__(self, model: nn.Module, *, teacher_temperature: float = 1.0, **kwargs: Any):
        super().__init__(model, **kwargs)
        _check_temperature("teacher_temperature", teacher_temperature)
        self.teacher_temperature = teacher_temperature

    def compute_loss_from_embeddings(
        self,
        embeddings: Sequence[Tensor],
        labels: Tensor | None = None,
        false_negatives: Tensor | None = None,
    ) -> Tensor:
        """KL distillation of column embeddings; ``labels`` are the ``(B, G)`` teacher scores."""
        query, keys, _ = _split(embeddings, self.normalize)
        return kl_distillation_loss(
            query,
            keys,
            _need_labels(labels, "KL distillation"),
            temperature=self.temperature,
            teacher_temperature=self.teacher_temperature,
        )

    def get_config_dict(self) -> dict[str, Any]:
        """Settings recorded in model cards by sentence-transformers."""
        return {**super().get_config_dict(), "teacher_temperature": self.teacher_temperature}


class StabilizedDistillationLoss(_EmbeddingLoss):
    """LLM-Embedder's stabilized distillation (see `stabilized_distillation_loss`)."""

    def compute_loss_from_embeddings(
        self,
        embeddings: Sequence[Tensor],
        labels: Tensor | None = None,
        false_negatives: Tensor | None = None,
    ) -> Tensor:
        """Stabilized distillation; ``labels`` are the ``(B, G)`` teacher scores."""
        query, keys, _ = _split(embeddings, self.normalize)
        keys, offset = self._gathered(query, keys)
        return stabilized_distillation_loss(
            query,
            keys,
            _need_labels(labels, "stabilized distillation"),
            temperature=self.temperature,
            query_offset=offset,
            false_negatives=false_negatives,
        )


def _blocks(tasks: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(task, start, end)`` of each run of equal tasks."""
    out: list[tuple[str, int, int]] = []
    start = 0
    for i in range(1, len(tasks) + 1):
        if i == len(tasks) or tasks[i] != tasks[start]:
            out.append((tasks[start], start, i))
            start = i
    return out


def contrastive_fallback(config: TaskLossConfig) -> TaskLossConfig:
    """The task's settings with its contrastive term alone (for queries without teacher scores)."""
    if config.distillation is None:
        return config
    return replace(config, contrastive=True, distillation=None)


def _parts(
    config: TaskLossConfig, labels: Tensor | None, start: int, end: int
) -> list[tuple[TaskLossConfig, int, int]]:
    """A task block split into its scored queries (``config``) and unscored ones (contrastive).

    A distilled task may hold queries the teacher did not score: their labels are NaN, and
    they train with the task's contrastive term alone. `TaskDataCollator` puts them after the
    scored queries of their task, so each part is contiguous.
    """
    if config.distillation is None or labels is None:
        return [(config, start, end)]
    missing = torch.isnan(labels[start:end]).any(dim=1)
    scored = int((~missing).sum())
    if bool(missing[:scored].any()):
        raise ValueError(
            "a task's queries without teacher scores (NaN labels) must follow its scored ones "
            "in the batch; collate with TaskDataCollator, which orders them so"
        )
    parts = [(config, start, start + scored), (contrastive_fallback(config), start + scored, end)]
    return [(c, a, b) for c, a, b in parts if b > a]


def _sides(columns: int) -> list[str]:
    """The side of each column: the queries, then ``columns - 1`` key columns."""
    return ["query", *["key"] * (columns - 1)]


def _uses_batch_keys(config: TaskLossConfig) -> bool:
    """Whether the task's loss takes in-batch keys of other queries as negatives."""
    return config.contrastive or config.distillation == "stabilized"


class MultiTaskLoss(nn.Module):
    """LLM-Embedder's loss over a batch of one or several tasks.

    The columns are embedded once; each task's block of queries gets its `TASK_LOSS` terms
    (`task_loss`), its in-batch negatives being every key of the batch (gathered across
    processes), relevant ones masked out. The batch loss is the mean over queries. In a
    homogeneous batch there is one block, and this equals `LLMEmbedderLoss` of that task.
    Queries of a distilled task whose labels are NaN (no teacher scores) train with the
    task's contrastive term alone (`contrastive_fallback`).

    Args:
        model: The sentence-transformers model.
        configs: Loss settings per task.
        gather_across_devices: Gather keys (and their ids) from every process. Only done when
            a task uses in-batch keys (KL distillation reads each query's own keys).
        mask_false_negatives: Mask in-batch keys relevant to a query (from ``key_ids`` and
            ``relevant_ids``).
        normalize: L2-normalise the embeddings (cosine similarity).
        prompt_lengths: Leading tokens ([CLS] and instruction) of each ``(task, "query" |
            "key")`` text to leave out of the pooling, row by row (a mixed batch holds several
            instructions in a column); None pools over every token.
    """

    def __init__(
        self,
        model: nn.Module,
        configs: Mapping[str, TaskLossConfig],
        *,
        gather_across_devices: bool = True,
        mask_false_negatives: bool = True,
        normalize: bool = True,
        prompt_lengths: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        super().__init__()
        if not configs:
            raise ValueError("`configs` must name at least one task")
        self.model = model
        self.configs = dict(configs)
        self.gather_across_devices = gather_across_devices
        self.mask_false_negatives = mask_false_negatives
        self.normalize = normalize
        self.prompt_lengths = dict(prompt_lengths) if prompt_lengths else None

    def forward(
        self,
        sentence_features: Sequence[dict[str, Tensor]],
        labels: Tensor | None = None,
        false_negatives: Tensor | None = None,
        *,
        tasks: Sequence[str] | None = None,
        key_ids: Sequence[Sequence[str]] | None = None,
        relevant_ids: Sequence[Sequence[str]] | None = None,
    ) -> Tensor:
        """Embed ``[queries, key_0, ..., key_{G-1}]`` and return the batch loss.

        Args:
            sentence_features: Tokenised columns.
            labels: ``(B, G)`` teacher scores.
            false_negatives: Optional ``(B, K)`` mask over the (gathered) keys, added to the
                one ``key_ids`` and ``relevant_ids`` give.
            tasks: Task of each query, equal tasks contiguous; None when the loss has one task.
            key_ids: Per query, the ids of its ``G`` keys (for the false-negative mask).
            relevant_ids: Per query, the ids of every key relevant to it.
        """
        if self.prompt_lengths is None:
            embeddings = _embed(self.model, sentence_features)
        else:
            columns = list(sentence_features)
            rows = self._tasks(tasks, columns[0]["attention_mask"].shape[0])
            embeddings = [
                self._embed_text_only(f, [self.prompt_lengths[(t, side)] for t in rows])
                for f, side in zip(columns, _sides(len(columns)), strict=True)
            ]
        return _in_fp32(
            self.compute_loss_from_embeddings,
            embeddings,
            labels,
            false_negatives,
            tasks=tasks,
            key_ids=key_ids,
            relevant_ids=relevant_ids,
        )

    def _tasks(self, tasks: Sequence[str] | None, n: int) -> Sequence[str]:
        if tasks is None:
            if len(self.configs) > 1:
                raise ValueError(
                    f"`tasks` must give the task of each query: this loss has several "
                    f"({', '.join(self.configs)})"
                )
            return [next(iter(self.configs))] * n
        if len(tasks) != n:
            raise ValueError(f"{len(tasks)} tasks given for {n} queries")
        return tasks

    def _embed_text_only(self, features: dict[str, Tensor], lengths: list[int]) -> Tensor:
        """Embed with row i's first ``lengths[i]`` tokens left out of the pooling.

        The transformer attends to every token; the modules after it see a pooling mask, as
        in the encoder's torch and ONNX paths (`embed_with_pooling_mask`).
        """
        mask = pooling_mask(features["attention_mask"], lengths)
        return embed_with_pooling_mask(self.model, features, mask)

    def compute_loss_from_embeddings(
        self,
        embeddings: Sequence[Tensor],
        labels: Tensor | None = None,
        false_negatives: Tensor | None = None,
        *,
        tasks: Sequence[str] | None = None,
        key_ids: Sequence[Sequence[str]] | None = None,
        relevant_ids: Sequence[Sequence[str]] | None = None,
    ) -> Tensor:
        """The loss of already computed column embeddings (see `forward`)."""
        query, keys, group = _split(embeddings, self.normalize)
        n = query.shape[0]
        tasks = self._tasks(tasks, n)
        # The same decision on every process: it depends on the settings, not on the batch.
        # (Unscored queries of a task distilled by KL alone use this process's keys.)
        gather = self.gather_across_devices and any(
            _uses_batch_keys(c) for c in self.configs.values()
        )
        batch_keys, offset = _batch_keys(keys, n, gather)
        flat_ids: list[str] | None = None
        if self.mask_false_negatives and key_ids is not None and relevant_ids is not None:
            flat_ids = [i for ids in key_ids for i in ids]
            if gather:
                flat_ids = _gather_ids(flat_ids)
        total = query.new_zeros((), dtype=torch.float32)
        parts = []
        for task, start, end in _blocks(tasks):
            config = self.configs.get(task)
            if config is None:
                raise ValueError(f"no loss settings for task {task!r}; known: {list(self.configs)}")
            parts += _parts(config, labels, start, end)
        for config, start, end in parts:
            mask = None if false_negatives is None else false_negatives[start:end]
            if flat_ids is not None and relevant_ids is not None and _uses_batch_keys(config):
                found = in_batch_false_negatives(
                    [set(r) for r in relevant_ids[start:end]],
                    flat_ids,
                    group_size=group,
                    query_offset=offset + start,
                    device=query.device,
                )
                mask = found if mask is None else mask | found
            loss = task_loss(
                config,
                query[start:end],
                keys[start * group : end * group],
                batch_keys,
                query_offset=offset + start,
                labels=None if labels is None else labels[start:end],
                false_negatives=mask,
            )
            total = total + loss * ((end - start) / n)
        return total

    def get_config_dict(self) -> dict[str, Any]:
        """Settings recorded in the model card by sentence-transformers."""
        return {
            "tasks": {t: asdict(c) for t, c in self.configs.items()},
            "gather_across_devices": self.gather_across_devices,
            "mask_false_negatives": self.mask_false_negatives,
        }


class LLMEmbedderLoss(MultiTaskLoss):
    """The loss of one task, as `TASK_LOSS` (or a config of your own) sets it.

    With both terms on, ``contrastive_weight * contrastive + distill_weight * distillation``;
    a lone term has weight 1. It is `MultiTaskLoss` with that one task; in-batch false
    negatives are marked by passing a ``false_negatives`` mask.

    Args:
        model: The sentence-transformers model.
        task: A task of `TASK_LOSS`, or a `TaskLossConfig`.
        gather_across_devices: Gather keys across processes for in-batch negatives.
        normalize: L2-normalise embeddings (cosine similarity).
    """

    def __init__(
        self,
        model: nn.Module,
        task: str | TaskLossConfig,
        *,
        gather_across_devices: bool = False,
        normalize: bool = True,
    ) -> None:
        if isinstance(task, TaskLossConfig):
            name, config = "task", task
        elif task in TASK_LOSS:
            name, config = task, TASK_LOSS[task]
        else:
            raise ValueError(
                f"no loss settings for task {task!r}; known: {', '.join(TASK_LOSS)}. Pass a "
                "TaskLossConfig for a task of your own"
            )
        super().__init__(
            model,
            {name: config},
            gather_across_devices=gather_across_devices,
            mask_false_negatives=False,
            normalize=normalize,
        )
        self.config = config
        self.temperature = config.temperature

    def get_config_dict(self) -> dict[str, Any]:
        """Settings recorded in model cards by sentence-transformers."""
        return {
            "temperature": self.temperature,
            "gather_across_devices": self.gather_across_devices,
            "normalize": self.normalize,
            **self.config.__dict__,
        }
