"""What the LangChain and LlamaIndex embedding adapters share: building the encoder, embedding."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from .cache import EmbeddingCache
from .encoder import Backend, LLMEmbedder, Precision, validate_texts

EncoderCache = str | os.PathLike[str] | EmbeddingCache | None


def build_encoder(
    encoder: LLMEmbedder | None,
    given: Mapping[str, Any],
    *,
    model_name: str | None,
    instructions: bool | Literal["auto"],
    device: str | None,
    batch_size: int,
    precision: Precision,
    backend: Backend,
    cache: EncoderCache,
    show_progress: bool | None,
) -> LLMEmbedder:
    """``encoder`` itself, or a new one from the settings.

    Args:
        encoder: An encoder already loaded, or None.
        given: The settings the user passed explicitly (name -> value); with ``encoder`` they
            would be silently ignored, so any of them is an error.
        model_name: Passed on to :class:`LLMEmbedder` when no encoder is given, with the rest.
        instructions: See :class:`LLMEmbedder`.
        device: See :class:`LLMEmbedder`.
        batch_size: See :class:`LLMEmbedder`.
        precision: See :class:`LLMEmbedder`.
        backend: See :class:`LLMEmbedder`.
        cache: See :class:`LLMEmbedder`.
        show_progress: See :class:`LLMEmbedder`.
    """
    if encoder is not None:
        if given:
            raise ValueError(
                f"pass either `encoder` or the settings {sorted(given)}, not both: an encoder "
                "already loaded has its own; set them when building the LLMEmbedder"
            )
        return encoder
    return LLMEmbedder(
        model_name,
        instructions=instructions,
        device=device,
        batch_size=batch_size,
        precision=precision,
        backend=backend,
        cache=cache,
        show_progress=show_progress,
    )


def embed(
    encoder: LLMEmbedder, texts: Sequence[str], *, task: str, side: Literal["query", "key"]
) -> np.ndarray:
    """Embed ``texts`` as ``side`` texts of ``task``; empty texts are embedded too.

    Empty (or white-space) texts are embedded as they are, with one warning giving their count,
    as LangChain's ``HuggingFaceEmbeddings`` does, so one blank page does not abort the
    indexing of a whole document set. ``None``, bytes and other non-strings raise, naming the
    position.
    """
    what = "queries" if side == "query" else "texts"
    return embed_checked(
        encoder, validate_texts(texts, what, allow_empty=True), task=task, side=side
    )


def embed_checked(
    encoder: LLMEmbedder, items: list[str], *, task: str, side: Literal["query", "key"]
) -> np.ndarray:
    """:func:`embed` for strings already checked (no second warning about empty ones)."""
    empty = [i for i, text in enumerate(items) if not text.strip()]
    if not empty:
        if side == "query":
            return encoder.encode_queries(items, task=task)
        return encoder.encode_keys(items, task=task)
    out = np.empty((len(items), encoder.dim), dtype=np.float32)
    filled = [i for i, text in enumerate(items) if text.strip()]
    if filled:
        out[filled] = embed_checked(encoder, [items[i] for i in filled], task=task, side=side)
    # The encoder's public methods refuse empty texts; its tokenise-and-pool step takes them.
    prefix = encoder.instruction(task, side)
    what = "queries" if side == "query" else "texts"
    out[empty] = encoder._encode_new([items[i] for i in empty], prefix, what)
    return out
