"""LlamaIndex adapters: an embedding model bound to one task, and a retriever over the store.

Install with ``pip install "llm-embedder-integrations[llama-index]"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from ._imports import require

require("llama-index", "llama_index.core")

from llama_index.core.base.base_retriever import BaseRetriever  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding  # noqa: E402
from llama_index.core.base.llms.types import (  # noqa: E402
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM  # noqa: E402
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402
from pydantic import Field, PrivateAttr  # noqa: E402

from .encoder import LLMEmbedder  # noqa: E402
from .instructions import get_instruction  # noqa: E402
from .llm import LocalLLM  # noqa: E402
from .store import ChromaStore, Hit, _check_k  # noqa: E402

__all__ = ["LLMEmbedderEmbedding", "LLMEmbedderRetriever", "LocalLlamaIndexLLM", "hit_to_node"]


class LLMEmbedderEmbedding(BaseEmbedding):
    """LlamaIndex embedding model for one LLM-Embedder task.

    Queries get the task's query instruction, texts (nodes) its key instruction.

    Example:
        .. code-block:: python

            from llama_index.core import Settings
            from llm_embedder_integrations.llama_index import LLMEmbedderEmbedding

            Settings.embed_model = LLMEmbedderEmbedding(model_name="BAAI/llm-embedder", task="qa")
    """

    task: str = Field(default="qa", description="Task whose instructions are applied.")
    instructions: bool | Literal["auto"] = Field(
        default="auto", description="Apply instructions: True, False or 'auto'."
    )
    device: str | None = Field(default=None, description="Torch device; None picks the best.")

    _encoder: LLMEmbedder = PrivateAttr()

    def __init__(
        self,
        model_name: str | None = None,
        *,
        task: str = "qa",
        instructions: bool | Literal["auto"] = "auto",
        device: str | None = None,
        embed_batch_size: int = 32,
        encoder: LLMEmbedder | None = None,
        **kwargs: Any,
    ) -> None:
        get_instruction(task)
        if encoder is None:
            encoder = LLMEmbedder(
                model_name,
                instructions=instructions,
                device=device,
                batch_size=embed_batch_size,
            )
        super().__init__(
            model_name=encoder.model_id,
            task=task,
            instructions=encoder.instructions,
            device=encoder.device.type,
            embed_batch_size=embed_batch_size,
            **kwargs,
        )
        self._encoder = encoder

    @classmethod
    def class_name(cls) -> str:
        """Name LlamaIndex uses when serialising the component."""
        return "LLMEmbedderEmbedding"

    @property
    def llm_embedder(self) -> LLMEmbedder:
        """The underlying encoder."""
        return self._encoder

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encoder.encode_queries([query], task=self.task)[0].tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encoder.encode_keys([text], task=self.task)[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._encoder.encode_keys(texts, task=self.task).tolist()


class LocalLlamaIndexLLM(CustomLLM):
    """A LlamaIndex LLM over a local transformers causal LM (offline; SmolLM2 by default).

    Example:
        .. code-block:: python

            index.as_query_engine(llm=LocalLlamaIndexLLM(max_new_tokens=64))
    """

    max_new_tokens: int = Field(default=128, description="Most tokens generated per answer.")
    context_window: int = Field(default=2048, description="Tokens the model attends to.")

    _llm: LocalLLM = PrivateAttr()

    def __init__(self, llm: LocalLLM | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.max_new_tokens <= 0:
            raise ValueError(f"`max_new_tokens` must be > 0, got {self.max_new_tokens}")
        self._llm = llm if llm is not None else LocalLLM()

    @classmethod
    def class_name(cls) -> str:
        """Name LlamaIndex uses when serialising the component."""
        return "LocalLlamaIndexLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """Context window, output budget and chat capability, for LlamaIndex's prompt packing."""
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            model_name=self._llm.name,
        )

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer with the model's chat template."""
        turns = [{"role": m.role.value, "content": m.content or ""} for m in messages]
        text = self._llm.chat(turns, max_new_tokens=self.max_new_tokens)
        return ChatResponse(message=ChatMessage(role="assistant", content=text))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Answer ``prompt`` as one user turn."""
        text = self._llm.chat([{"role": "user", "content": prompt}],
                              max_new_tokens=self.max_new_tokens)
        return CompletionResponse(text=text)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """One chunk holding the whole answer (the local model does not stream)."""
        response = self.complete(prompt, formatted=formatted)
        yield CompletionResponse(text=response.text, delta=response.text)


def hit_to_node(hit: Hit) -> NodeWithScore:
    """A store hit as a LlamaIndex ``NodeWithScore``."""
    return NodeWithScore(
        node=TextNode(id_=hit.id, text=hit.text, metadata=hit.metadata), score=hit.score
    )


class LLMEmbedderRetriever(BaseRetriever):
    """LlamaIndex retriever over one task of a :class:`ChromaStore`.

    Args:
        store: The store to search.
        task: Its task (query instruction and collection).
        similarity_top_k: Number of nodes returned.
        filters: Chroma ``where`` metadata filter.
        exact: Brute-force search instead of the HNSW index.
    """

    def __init__(
        self,
        store: ChromaStore,
        *,
        task: str = "qa",
        similarity_top_k: int = 4,
        filters: dict[str, Any] | None = None,
        exact: bool = False,
        **kwargs: Any,
    ) -> None:
        get_instruction(task)
        self.store = store
        self.task = task
        self.similarity_top_k = _check_k(similarity_top_k)
        self.filters = filters
        self.exact = exact
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.store.search(
            query_bundle.query_str,
            task=self.task,
            k=self.similarity_top_k,
            where=self.filters,
            exact=self.exact,
        )
        return [hit_to_node(h) for h in hits]
