"""Optional dependencies: cached availability checks, and an ImportError naming the fix."""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache
from types import ModuleType

__all__ = ["is_available", "require"]

# extra -> (modules it provides, pip line)
_EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "langchain": (
        ("langchain_core", "langchain_chroma"),
        'pip install "llm-embedder-integrations[langchain]"',
    ),
    "llama-index": (
        ("llama_index.core", "llama_index.vector_stores.chroma"),
        'pip install "llm-embedder-integrations[llama-index]"',
    ),
    "eval": (("ragas",), 'pip install "llm-embedder-integrations[eval]"'),
    "train": (("datasets", "accelerate", "yaml"), 'pip install "llm-embedder-integrations[train]"'),
    "llm": (("gguf", "accelerate"), 'pip install "llm-embedder-integrations[llm]"'),
}


@cache
def is_available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(extra: str, module: str | None = None) -> ModuleType | None:
    """Import the modules of ``extra`` (or just ``module``), or raise an ImportError with the fix.

    Args:
        extra: Name of the package extra, e.g. ``"langchain"``.
        module: One module to import and return; all modules of the extra when None.

    Returns:
        The imported ``module``, or None when ``module`` is None.

    Raises:
        ImportError: naming the missing module and the ``pip install`` line that provides it.
    """
    if extra not in _EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(_EXTRAS)}")
    modules, pip_line = _EXTRAS[extra]
    wanted = (module,) if module is not None else modules
    imported = None
    for name in wanted:
        try:
            imported = importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(
                f"{name} is needed for this feature but could not be imported ({exc}). "
                f"Install it with: {pip_line}"
            ) from exc
    return imported if module is not None else None
