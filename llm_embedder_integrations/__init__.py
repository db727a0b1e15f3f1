"""LLM-Embedder for LangChain and LlamaIndex.

The core (this namespace) imports neither framework; the adapters live in
``llm_embedder_integrations.langchain`` and ``llm_embedder_integrations.llama_index``.
"""

from __future__ import annotations

from .cache import EmbeddingCache
from .convsearch import ConversationalRetriever
from .encoder import DEFAULT_MODEL, SHIPPED_MODEL, LLMEmbedder, resolve_model
from .icl import ExampleBank
from .instructions import TASKS, Instruction, Task, get_instruction, register_task
from .lexical import Hybrid
from .memory import MemoryHit, MemoryRetriever
from .store import ChromaStore, Hit, StoreMismatchError
from .tools import ToolMatch, ToolRouter, ToolSpec

__all__ = [
    "DEFAULT_MODEL",
    "SHIPPED_MODEL",
    "TASKS",
    "ChromaStore",
    "ConversationalRetriever",
    "EmbeddingCache",
    "ExampleBank",
    "Hit",
    "Hybrid",
    "Instruction",
    "LLMEmbedder",
    "MemoryHit",
    "MemoryRetriever",
    "StoreMismatchError",
    "Task",
    "ToolMatch",
    "ToolRouter",
    "ToolSpec",
    "get_instruction",
    "register_task",
    "resolve_model",
]

__version__ = "0.1.0"
