"""LLM-Embedder for LangChain and LlamaIndex.

The core (this namespace) imports neither framework; the adapters live in
``llm_embedder_integrations.langchain`` and ``llm_embedder_integrations.llama_index``.
"""

from __future__ import annotations

from .cache import EmbeddingCache
from .encoder import DEFAULT_MODEL, SHIPPED_MODEL, LLMEmbedder, resolve_model
from .instructions import TASKS, Instruction, Task, get_instruction, register_task
from .lexical import Hybrid
from .store import ChromaStore, Hit, StoreMismatchError

__all__ = [
    "DEFAULT_MODEL",
    "SHIPPED_MODEL",
    "TASKS",
    "ChromaStore",
    "EmbeddingCache",
    "Hit",
    "Hybrid",
    "Instruction",
    "LLMEmbedder",
    "StoreMismatchError",
    "Task",
    "get_instruction",
    "register_task",
    "resolve_model",
]

__version__ = "0.1.0"
