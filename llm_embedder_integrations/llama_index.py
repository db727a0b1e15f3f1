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
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM  # noqa: E402
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402
from pydantic import Field, PrivateAttr  # noqa: E402

from ._adapters import EncoderCache, build_encoder, embed, embed_checked  # noqa: E402
from ._validation import check_k  # noqa: E402
from .encoder import Backend, LLMEmbedder, Precision, validate_texts  # noqa: E402
from .instructions import get_instruction  # noqa: E402
from .llm import LocalLLM  # noqa: E402
from .store import ChromaStore, Hit  # noqa: E402

__all__ = [
    "LLMEmbedderEmbedding",
    "LLMEmbedderFewShotExamples",
    "LLMEmbedderMemoryRetriever",
    "LLMEmbedderRetriever",
    "LLMEmbedderToolRetriever",
    "LocalLlamaIndexLLM",
    "NextChunkPostprocessor",
    "few_shot_prompt",
    "hit_to_node",
]


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
    precision: Precision = Field(
        default="auto", description="fp32, fp16, bf16 or auto (see LLMEmbedder)."
    )
    backend: Backend = Field(
        default="auto", description="torch, onnx, onnx-int8 or auto (see LLMEmbedder)."
    )
    show_progress: bool | None = Field(
        default=None, description="Progress bar; None shows it for more than 8 batches."
    )

    _encoder: LLMEmbedder = PrivateAttr()

    def __init__(
        self,
        model_name: str | None = None,
        *,
        task: str = "qa",
        instructions: bool | Literal["auto"] = "auto",
        device: str | None = None,
        embed_batch_size: int = 32,
        precision: Precision = "auto",
        backend: Backend = "auto",
        cache: EncoderCache = None,
        show_progress: bool | None = None,
        encoder: LLMEmbedder | None = None,
        **kwargs: Any,
    ) -> None:
        """Load the encoder, or wrap ``encoder``.

        Args:
            model_name: Hub id or local directory; None picks BAAI/llm-embedder, else the
                shipped MiniLM.
            task: Task whose instructions are applied.
            instructions: Apply instructions: "auto" turns them on for models trained with them.
            device: Torch device; None picks the best.
            embed_batch_size: Texts per forward pass (with ``encoder``: texts per call to it).
            precision: fp32, fp16, bf16 or "auto" (see :class:`LLMEmbedder`).
            backend: torch, onnx, onnx-int8 or "auto" (see :class:`LLMEmbedder`).
            cache: Path of an SQLite embedding cache (unchanged texts are never encoded twice).
            show_progress: Progress bar while embedding; None shows it for long inputs.
            encoder: An encoder already loaded; it excludes the settings above but ``task``.
            **kwargs: Other ``BaseEmbedding`` fields (e.g. ``callback_manager``).
        """
        get_instruction(task)
        defaults = {
            "model_name": (model_name, None),
            "instructions": (instructions, "auto"),
            "device": (device, None),
            "precision": (precision, "auto"),
            "backend": (backend, "auto"),
            "cache": (cache, None),
            "show_progress": (show_progress, None),
        }
        given = {name: v for name, (v, default) in defaults.items() if v != default}
        encoder = build_encoder(
            encoder,
            given,
            model_name=model_name,
            instructions=instructions,
            device=device,
            batch_size=embed_batch_size,
            precision=precision,
            backend=backend,
            cache=cache,
            show_progress=show_progress,
        )
        super().__init__(
            model_name=encoder.model_id,
            task=task,
            instructions=encoder.instructions,
            device=encoder.device.type,
            embed_batch_size=embed_batch_size,
            precision=precision,
            backend=encoder.backend,
            show_progress=encoder.show_progress,
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

    @property
    def query_instruction(self) -> str:
        """The prefix put before each query (empty when instructions are off)."""
        return self._encoder.instruction(self.task, "query")

    @property
    def text_instruction(self) -> str:
        """The prefix put before each text (the task's key instruction; may be empty)."""
        return self._encoder.instruction(self.task, "key")

    def _get_query_embedding(self, query: str) -> Embedding:
        return embed(self._encoder, [query], task=self.task, side="query")[0].tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return embed(self._encoder, [text], task=self.task, side="key")[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        # Checked (and empty ones counted) once per call by get_text_embedding_batch.
        return embed_checked(self._encoder, list(texts), task=self.task, side="key").tolist()

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._get_text_embeddings(texts)  # one batch, not one forward pass per text

    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        """Embed ``texts`` with the key instruction; a single string is refused, not split.

        Empty texts are embedded too, with one warning giving their count.
        """
        items = validate_texts(texts, "texts", allow_empty=True)
        return super().get_text_embedding_batch(items, show_progress, **kwargs)

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        """Async :meth:`get_text_embedding_batch`."""
        items = validate_texts(texts, "texts", allow_empty=True)
        return await super().aget_text_embedding_batch(items, show_progress, **kwargs)


class LocalLlamaIndexLLM(CustomLLM):
    """A LlamaIndex LLM over a local transformers causal LM (offline; SmolLM2 by default).

    It streams: ``stream_complete`` and ``stream_chat`` yield the answer while it is generated.

    Example:
        .. code-block:: python

            index.as_query_engine(llm=LocalLlamaIndexLLM(max_new_tokens=64))
    """

    max_new_tokens: int = Field(default=128, description="Most tokens generated per answer.")
    context_window: int = Field(default=2048, description="Tokens the model attends to.")
    no_repeat_ngram_size: int = Field(
        default=3,
        description="No sequence of this many answer tokens appears twice (0: off); stops loops.",
    )
    repetition_penalty: float = Field(
        default=1.0, description="transformers' penalty on tokens already seen (1.0: none)."
    )

    _llm: LocalLLM = PrivateAttr()

    def __init__(self, llm: LocalLLM | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.max_new_tokens <= 0:
            raise ValueError(f"`max_new_tokens` must be > 0, got {self.max_new_tokens}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(
                f"`no_repeat_ngram_size` must be >= 0 (0: off), got {self.no_repeat_ngram_size}"
            )
        if self.repetition_penalty <= 0:
            raise ValueError(f"`repetition_penalty` must be > 0, got {self.repetition_penalty}")
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

    def _options(self) -> dict[str, Any]:
        return {
            "max_new_tokens": self.max_new_tokens,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "repetition_penalty": self.repetition_penalty,
        }

    @staticmethod
    def _turns(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
        return [{"role": m.role.value, "content": m.content or ""} for m in messages]

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer with the model's chat template."""
        text = self._llm.chat(self._turns(messages), **self._options())
        return ChatResponse(message=ChatMessage(role="assistant", content=text))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """:meth:`chat`, piece by piece while it is generated."""
        pieces = self._llm.stream_chat(self._turns(messages), **self._options())

        def gen() -> ChatResponseGen:
            text = ""
            for piece in pieces:
                text += piece
                yield ChatResponse(message=ChatMessage(role="assistant", content=text), delta=piece)

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Answer ``prompt`` as one user turn."""
        text = self._llm.chat([{"role": "user", "content": prompt}], **self._options())
        return CompletionResponse(text=text)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """:meth:`complete`, piece by piece while it is generated."""
        pieces = self._llm.stream_chat([{"role": "user", "content": prompt}], **self._options())

        def gen() -> CompletionResponseGen:
            text = ""
            for piece in pieces:
                text += piece
                yield CompletionResponse(text=text, delta=piece)

        return gen()


def hit_to_node(hit: Hit | MemoryHit) -> NodeWithScore:
    """A store hit, or a memory result, as a LlamaIndex ``NodeWithScore`` (scalar metadata)."""
    return NodeWithScore(
        node=TextNode(id_=hit.id, text=hit.text, metadata=hit.metadata), score=hit.score
    )


def _check_query(query: object) -> str | QueryBundle:
    """``query`` if it is a string or a ``QueryBundle``, else a ``TypeError`` naming its type."""
    if isinstance(query, (str, QueryBundle)):
        return query
    hint = "; decode it first (e.g. query.decode('utf-8'))" if isinstance(query, bytes) else ""
    raise TypeError(
        f"`query` must be a string or a QueryBundle, got {type(query).__name__}: {query!r}{hint}"
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
        self.similarity_top_k = check_k(similarity_top_k)
        self.filters = filters
        self.exact = exact
        super().__init__(**kwargs)

    def retrieve(self, str_or_query_bundle: str | QueryBundle) -> list[NodeWithScore]:
        """Nodes for a query string or ``QueryBundle``; any other type is a ``TypeError``."""
        return super().retrieve(_check_query(str_or_query_bundle))

    async def aretrieve(self, str_or_query_bundle: str | QueryBundle) -> list[NodeWithScore]:
        """Async :meth:`retrieve`."""
        return await super().aretrieve(_check_query(str_or_query_bundle))

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.store.search(
            query_bundle.query_str,
            task=self.task,
            k=self.similarity_top_k,
            where=self.filters,
            exact=self.exact,
        )
        return [hit_to_node(h) for h in hits]


# -- memory

from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.schema import BaseNode, NodeRelationship  # noqa: E402
from llama_index.core.storage.docstore import BaseDocumentStore  # noqa: E402

from .memory import MemoryHit, MemoryRetriever, merge_windows  # noqa: E402


class LLMEmbedderMemoryRetriever(BaseRetriever):
    """LlamaIndex retriever over a :class:`MemoryRetriever`: each hit chunk with its neighbours.

    Args:
        memory: The memory to search.
        similarity_top_k: Number of results (merged windows) returned.
        filters: Chroma ``where`` filter on the hit chunks, e.g. ``{"source_id": "conv-1"}``.
    """

    def __init__(
        self,
        memory: MemoryRetriever,
        *,
        similarity_top_k: int = 4,
        filters: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(memory, MemoryRetriever):
            raise TypeError(f"`memory` must be a MemoryRetriever, got {type(memory).__name__}")
        self.memory = memory
        self.similarity_top_k = check_k(similarity_top_k)
        self.filters = filters
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.memory.search(query_bundle.query_str, self.similarity_top_k, where=self.filters)
        return [hit_to_node(h) for h in hits]


def _walk(
    docstore: BaseDocumentStore, node: BaseNode, relationship: NodeRelationship, steps: int
) -> list[BaseNode]:
    """Up to ``steps`` nodes reached from ``node`` by ``relationship`` (NEXT or PREVIOUS)."""
    found: list[BaseNode] = []
    for _ in range(steps):
        related = node.relationships.get(relationship)
        if related is None or isinstance(related, list):
            break
        neighbour = docstore.get_node(related.node_id, raise_error=False)
        if neighbour is None:
            break
        found.append(neighbour)
        node = neighbour
    return found


class NextChunkPostprocessor(BaseNodePostprocessor):
    """Add the next (and optionally previous) nodes of each retrieved node, in document order.

    The neighbours come from the docstore through the ``NEXT``/``PREVIOUS`` relationships that
    LlamaIndex's node parsers set (e.g. ``SentenceSplitter``). A retrieved node comes back with
    its window ``[previous..., node, next...]``; windows that share a node are merged into the
    earlier (better ranked) one, so every node appears once, and windows keep the rank of their
    best node. Retrieved nodes keep their score; added neighbours have no score (None), as with
    LlamaIndex's ``PrevNextNodePostprocessor``.

    Example:
        .. code-block:: python

            index = VectorStoreIndex.from_documents(
                documents, transformations=[SentenceSplitter()], embed_model=embed_model
            )
            engine = index.as_query_engine(
                node_postprocessors=[NextChunkPostprocessor(docstore=index.docstore)]
            )
    """

    docstore: BaseDocumentStore = Field(description="Where the neighbour nodes are looked up.")
    num_next: int = Field(default=1, ge=0, description="Nodes added after each retrieved node.")
    num_previous: int = Field(
        default=0, ge=0, description="Nodes added before each retrieved node."
    )

    @classmethod
    def class_name(cls) -> str:
        """Name LlamaIndex uses when serialising the component."""
        return "NextChunkPostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        by_id = {n.node.node_id: n for n in reversed(nodes)}  # the best-ranked copy wins
        windows = []
        for hit in nodes:
            before = _walk(self.docstore, hit.node, NodeRelationship.PREVIOUS, self.num_previous)
            after = _walk(self.docstore, hit.node, NodeRelationship.NEXT, self.num_next)
            window = [*reversed(before), hit.node, *after]
            for node in window:
                by_id.setdefault(node.node_id, NodeWithScore(node=node, score=None))
            windows.append([node.node_id for node in window])
        return [by_id[key] for group in merge_windows(windows) for key in group.keys]


# -- in-context examples and tools

from llama_index.core.objects.base import ObjectRetriever  # noqa: E402
from llama_index.core.objects.base_node_mapping import BaseObjectNodeMapping  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.prompts import PromptTemplate  # noqa: E402
from llama_index.core.tools.types import BaseTool  # noqa: E402

from .icl import ExampleBank, SelectedExample  # noqa: E402
from .tools import ToolRouter, tool_spec  # noqa: E402


class LLMEmbedderFewShotExamples:
    r"""Few-shot examples chosen per query, for a LlamaIndex prompt's ``function_mappings``.

    LlamaIndex fills a template variable from a function of the other variables (its dynamic
    few-shot recipe); this callable takes the query from ``query_key`` and returns the ``k``
    examples of the bank closest to it, formatted and joined.

    Args:
        bank: The examples.
        k: Number of examples per query.
        query_key: Template variable holding the query.
        example_template: Format of one example over its fields (e.g.
            ``"Input: {input}\nOutput: {output}"``); None uses the stored ``"input\noutput"``.
        separator: Between two examples.
        filters: Chroma filter on the example fields.

    Example:
        .. code-block:: python

            examples = LLMEmbedderFewShotExamples(bank, k=3)
            prompt = PromptTemplate(
                "{few_shot_examples}\n\n{query_str}\n",
                function_mappings={"few_shot_examples": examples},
            )
            prompt.format(query_str="3 + 5")
    """

    def __init__(
        self,
        bank: ExampleBank,
        *,
        k: int = 4,
        query_key: str = "query_str",
        example_template: str | None = None,
        separator: str = "\n\n",
        filters: dict[str, Any] | None = None,
    ) -> None:
        self.bank = bank
        self.k = check_k(k)
        self.query_key = query_key
        self.example_template = example_template
        self.separator = separator
        self.filters = filters
        self.__name__ = type(self).__name__  # LlamaIndex serialises mapped functions by name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, query_key={self.query_key!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> LLMEmbedderFewShotExamples:
        # PromptTemplate.partial_format deep-copies the prompt: share the bank, do not copy it.
        return self

    def select(self, query: str) -> list[SelectedExample]:
        """The ``k`` examples for ``query``, best first."""
        return self.bank.select(query, self.k, where=self.filters)

    def format(self, query: str) -> str:
        """The examples for ``query`` as one block of text."""
        selected = self.select(query)
        if self.example_template is None:
            return self.separator.join(s.text for s in selected)
        return self.separator.join(self.example_template.format(**s.example) for s in selected)

    def __call__(self, **kwargs: Any) -> str:
        """Called by ``PromptTemplate.format`` with the template variables."""
        if self.query_key not in kwargs:
            raise ValueError(
                f"the prompt was formatted without {self.query_key!r} (got {sorted(kwargs)}); "
                "pass it, or set `query_key` to the variable that holds the query"
            )
        return self.format(str(kwargs[self.query_key]))


def few_shot_prompt(
    template: str, examples: LLMEmbedderFewShotExamples, *, variable: str = "few_shot_examples"
) -> PromptTemplate:
    """A ``PromptTemplate`` whose ``{variable}`` is filled with the examples for each query."""
    if "{" + variable + "}" not in template:
        raise ValueError(f"`template` has no {{{variable}}} placeholder: {template!r}")
    return PromptTemplate(template, function_mappings={variable: examples})


class _RoutedToolNodes(BaseRetriever):
    """Node view of a ToolRouter: one node per routed tool (text = the indexed tool text)."""

    def __init__(self, router: ToolRouter, similarity_top_k: int) -> None:
        self.router = router
        self.similarity_top_k = check_k(similarity_top_k)
        super().__init__()

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        matches = self.router.route(query_bundle.query_str, self.similarity_top_k)
        return [
            NodeWithScore(
                node=TextNode(id_=m.name, text=self.router.text(m.name), metadata={"name": m.name}),
                score=m.score,
            )
            for m in matches
        ]


class _RouterToolMapping(BaseObjectNodeMapping[BaseTool]):
    """Tools by name from a ToolRouter (which keeps the objects)."""

    def __init__(self, router: ToolRouter) -> None:
        self.router = router

    @classmethod
    def from_objects(cls, objs: Sequence[BaseTool], *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("build it from a ToolRouter: _RouterToolMapping(router)")

    def validate_object(self, obj: BaseTool) -> None:
        if not isinstance(obj, BaseTool):
            raise TypeError(
                f"tool {tool_spec(obj).name!r} is a {type(obj).__name__}, not a LlamaIndex "
                "tool: add LlamaIndex tools (e.g. FunctionTool.from_defaults(fn)) to the router "
                "whose tools an agent will call"
            )

    @property
    def obj_node_mapping(self) -> dict[str, Any]:
        return {name: self.router.tool(name) for name in self.router.names}

    def _add_object(self, obj: BaseTool) -> None:
        self.router.add_tools([obj])

    def to_node(self, obj: BaseTool) -> TextNode:
        spec = tool_spec(obj)
        return TextNode(id_=spec.name, text=spec.text, metadata={"name": spec.name})

    def _from_node(self, node: BaseNode) -> BaseTool:
        return self.router.tool(node.metadata["name"])

    def persist(self, persist_dir: str = "", obj_node_mapping_fname: str = "") -> None:
        raise NotImplementedError(
            "the tools live in the ToolRouter's store; persist that store (ChromaStore(path=...))"
        )


class LLMEmbedderToolRetriever(ObjectRetriever[BaseTool]):
    """LlamaIndex tool retriever over a :class:`ToolRouter`, for agents' ``tool_retriever``.

    ``retrieve(request)`` returns the ``similarity_top_k`` LlamaIndex tools the router picks
    for the request, so an agent with thousands of tools sees only the relevant few.

    Args:
        router: Holds the tools (LlamaIndex tools, e.g. ``FunctionTool``).
        similarity_top_k: Number of tools per request.
        node_postprocessors: Applied to the routed tool nodes before they become tools.

    Example:
        .. code-block:: python

            router = ToolRouter(ChromaStore(LLMEmbedder()))
            router.add_tools([FunctionTool.from_defaults(fn) for fn in functions])
            agent = FunctionAgent(tool_retriever=LLMEmbedderToolRetriever(router), llm=llm)
    """

    def __init__(
        self,
        router: ToolRouter,
        *,
        similarity_top_k: int = 4,
        node_postprocessors: list[BaseNodePostprocessor] | None = None,
    ) -> None:
        super().__init__(
            retriever=_RoutedToolNodes(router, similarity_top_k),
            object_node_mapping=_RouterToolMapping(router),
            node_postprocessors=node_postprocessors,
        )
        self.router = router
