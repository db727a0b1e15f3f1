"""The sentence-transformers model, built one way, and the tokens its pooling leaves out.

The encoder (its torch and ONNX backends) and the trainer build their model with
:func:`build_sentence_transformer` and embed instructed texts with :func:`embed_with_pooling_mask`
over a :func:`pooling_mask`, so a model trained here pools the same way wherever it runs.

A model saved with sentence-transformers' ``Pooling(include_prompt=False)`` pools over the text
alone: the transformer attends to the instruction, the pooling leaves out the first
:func:`tokens_left_out` tokens ([CLS] and the instruction). Any other model pools over every token.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

if TYPE_CHECKING:  # torch loads on first use, not on import
    from collections.abc import Mapping, Sequence

    import torch
    from sentence_transformers import SentenceTransformer

    from .encoder import ResolvedModel

__all__ = [
    "PoolingMode",
    "build_sentence_transformer",
    "embed_with_pooling_mask",
    "embedding_dimension",
    "leading_tokens",
    "pooling_mask",
    "pools_instructions",
    "tokens_left_out",
]

PoolingMode = Literal["auto", "cls", "mean"]
"""``"auto"``: the model's sentence-transformers config, else CLS; ``"cls"``/``"mean"``: forced."""

MaskT = TypeVar("MaskT", "torch.Tensor", np.ndarray)


def _has_st_config(source: str, local_files_only: bool) -> bool:
    """Whether ``source`` is in sentence-transformers layout (has modules.json)."""
    path = Path(source)
    if path.is_dir():
        return (path / "modules.json").is_file()
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        hf_hub_download(source, "modules.json", local_files_only=local_files_only)
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return False
    return True


def embedding_dimension(module: Any) -> int:
    """Output dimension of a sentence-transformers model or module (the name varies by version)."""
    for name in (
        "get_embedding_dimension",
        "get_sentence_embedding_dimension",
        "get_word_embedding_dimension",
    ):
        getter = getattr(type(module), name, None)
        if getter is not None:
            return int(getter(module))
    raise TypeError(f"cannot tell the embedding dimension of {type(module).__name__}")


def build_sentence_transformer(
    resolved: ResolvedModel, device: str, pooling: PoolingMode = "auto"
) -> SentenceTransformer:
    """A new sentence-transformers model of ``resolved``, in fp32, on ``device``.

    A model in sentence-transformers layout loads as saved (its pooling, prompts and
    ``include_prompt``) when ``pooling`` is ``"auto"``. A plain transformers checkpoint, or any
    model with ``pooling`` forced, becomes Transformer -> Pooling -> Normalize, with CLS pooling
    as LLM-Embedder unless ``pooling`` is ``"mean"``.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    offline = {"local_files_only": resolved.local_files_only}
    if pooling == "auto" and _has_st_config(resolved.source, resolved.local_files_only):
        return SentenceTransformer(resolved.source, device=device, **offline)
    transformer = Transformer(
        resolved.source, model_kwargs=offline, processor_kwargs=offline, config_kwargs=offline
    )
    mode = "mean" if pooling == "mean" else "cls"
    pool = Pooling(embedding_dimension(transformer), pooling_mode=mode)
    return SentenceTransformer(modules=[transformer, pool, Normalize()], device=device, **offline)


def pools_instructions(model: Any) -> bool:
    """Whether ``model`` pools over the instruction tokens too (False: over the text alone).

    sentence-transformers' ``Pooling(include_prompt=False)`` leaves the prompt out of the
    pooling; this package's trainer saves mean-pooled models that way, so that an instruction
    steers the text's token embeddings without being averaged into them (with CLS pooling, as
    LLM-Embedder, it acts the same way through attention).
    """
    return all(getattr(module, "include_prompt", True) for module in model)


def leading_tokens(tokenizer: Any, prefix: str) -> int:
    """Tokens ``prefix`` takes at the start of a text: [CLS] and its own, not a final [SEP].

    Counted as sentence-transformers counts a prompt; 0 for an empty prefix.
    """
    if not prefix:
        return 0
    ids = tokenizer(prefix)["input_ids"]
    return len(ids) - (1 if ids and ids[-1] in set(tokenizer.all_special_ids) else 0)


def tokens_left_out(model: Any, prefix: str) -> int:
    """Leading tokens of a text starting with ``prefix`` that ``model``'s pooling leaves out.

    0 when the model pools over instructions (or there is no prefix); else [CLS] and the
    prefix's tokens (:func:`leading_tokens`).
    """
    if not prefix or pools_instructions(model):
        return 0
    return leading_tokens(model.tokenizer, prefix)


def pooling_mask(attention_mask: MaskT, left_out: int | Sequence[int]) -> MaskT:
    """A copy of ``attention_mask`` with the first ``left_out`` real tokens of each row set to 0.

    Args:
        attention_mask: ``(batch, sequence)`` mask, a torch tensor or a numpy array; padding on
            the left is skipped before counting.
        left_out: Tokens to leave out, one count for every row or one per row.

    Returns:
        The mask the pooling sees, of the input's type, dtype and device.
    """
    import torch

    as_numpy = isinstance(attention_mask, np.ndarray)
    mask = torch.from_numpy(np.ascontiguousarray(attention_mask)) if as_numpy else attention_mask
    positions = torch.arange(mask.shape[1], device=mask.device)
    first = mask.to(torch.int32).argmax(dim=1)  # the first real token (0 without left padding)
    cut = first + torch.as_tensor(left_out, device=mask.device)
    out = mask * (positions[None, :] >= cut[:, None]).to(mask.dtype)
    return out.numpy() if as_numpy else out


def embed_with_pooling_mask(
    model: Any, features: Mapping[str, torch.Tensor], mask: torch.Tensor
) -> torch.Tensor:
    """Sentence embeddings whose transformer attends to every token and whose pooling sees ``mask``.

    ``model`` is a sentence-transformers model (its first module the transformer); the modules
    after the first read ``mask`` as their attention mask. Traced as is into the ONNX graph.
    """
    first, *rest = list(model)
    out = first({k: v for k, v in features.items() if k != "prompt_length"})
    out["attention_mask"] = mask
    for module in rest:
        out = module(out)
    return out["sentence_embedding"]
