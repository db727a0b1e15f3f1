"""LLM-Embedder's task instructions: one table, plus a registry for tasks of your own.

The six built-in pairs are verbatim from the paper's code (FlagEmbedding
``research/llm_embedder/src/retrieval/data.py``, ``TASK_CONFIG["llm-embedder"]["instruction"]``).
Each string ends in one space and is prefixed to the text as it is. Nothing else in this
package spells an instruction string.

Instructions travel as sentence-transformers prompts named ``"{task}_query"`` and
``"{task}_key"``, so a model fine-tuned by this package saves them in its own config.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, NamedTuple

__all__ = [
    "BUILTIN_TASKS",
    "TASKS",
    "Instruction",
    "Task",
    "get_instruction",
    "prompt_name",
    "prompts_for",
    "register_task",
    "task_of_prompt",
]

Task = Literal["qa", "convsearch", "chat", "lrlm", "icl", "tool"]
"""The six tasks of LLM-Embedder: knowledge (qa, convsearch), memory (chat, lrlm),
in-context examples (icl) and tools (tool)."""


class Instruction(NamedTuple):
    """The pair of instructions of one task."""

    query: str
    """Prefixed to queries (the text that searches)."""
    key: str
    """Prefixed to keys (the stored texts that are searched)."""


_BUILTIN: dict[str, Instruction] = {
    "qa": Instruction(
        "Represent this query for retrieving relevant documents: ",
        "Represent this document for retrieval: ",
    ),
    "convsearch": Instruction(
        "Encode this query and context for searching relevant passages: ",
        "Encode this passage for retrieval: ",
    ),
    "chat": Instruction(
        "Embed this dialogue to find useful historical dialogues: ",
        "Embed this historical dialogue for retrieval: ",
    ),
    "lrlm": Instruction(
        "Embed this text chunk for finding useful historical chunks: ",
        "Embed this historical text chunk for retrieval: ",
    ),
    "icl": Instruction(
        "Convert this example into vector to look for useful examples: ",
        "Convert this example into vector for retrieval: ",
    ),
    "tool": Instruction(
        "Transform this user request for fetching helpful tool descriptions: ",
        "Transform this tool description for retrieval: ",
    ),
}

BUILTIN_TASKS: tuple[str, ...] = tuple(_BUILTIN)
"""The six tasks of the paper, in the paper's order."""

_registry: dict[str, Instruction] = dict(_BUILTIN)

TASKS: Mapping[str, Instruction] = MappingProxyType(_registry)
"""Read-only view ``task -> (query_instruction, key_instruction)``; includes registered tasks."""

_PROMPT_SUFFIX = {"query": "_query", "key": "_key"}


def register_task(name: str, query_instruction: str, key_instruction: str) -> Instruction:
    """Register a task of your own.

    Args:
        name: Task name; letters, digits and underscores. A built-in name cannot be redefined.
        query_instruction: Prefixed to queries of this task, as is (end it with a space).
        key_instruction: Prefixed to stored texts of this task, as is.

    Returns:
        The registered pair. Registering the same pair twice is allowed.

    Raises:
        ValueError: on a bad name, an empty instruction, or a name already registered with other
            instructions.
    """
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise ValueError(f"task name must be letters, digits and underscores, got {name!r}")
    for label, value in (
        ("query_instruction", query_instruction),
        ("key_instruction", key_instruction),
    ):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"`{label}` must be a non-empty string, got {value!r}")
    new = Instruction(query_instruction, key_instruction)
    old = _registry.get(name)
    if old is not None and old != new:
        kind = "built-in" if name in _BUILTIN else "registered"
        raise ValueError(
            f"task {name!r} is already {kind} with other instructions {tuple(old)!r}; "
            "choose another name"
        )
    _registry[name] = new
    return new


def get_instruction(task: str) -> Instruction:
    """Return the instruction pair of ``task``.

    Raises:
        ValueError: if the task is unknown; the message lists the known tasks.
    """
    try:
        return _registry[task]
    except (KeyError, TypeError):
        known = ", ".join(repr(t) for t in _registry)
        raise ValueError(
            f"unknown task {task!r}; known tasks: {known}. "
            "Register your own with register_task(name, query_instruction, key_instruction)."
        ) from None


def prompt_name(task: str, side: Literal["query", "key"]) -> str:
    """Name of the sentence-transformers prompt that holds ``task``'s instruction for ``side``."""
    get_instruction(task)
    return f"{task}{_PROMPT_SUFFIX[side]}"


def prompts_for(tasks: Mapping[str, Instruction] | None = None) -> dict[str, str]:
    """Sentence-transformers ``prompts`` dict for ``tasks`` (all known tasks by default)."""
    table = TASKS if tasks is None else tasks
    prompts: dict[str, str] = {}
    for task, pair in table.items():
        prompts[f"{task}_query"] = pair.query
        prompts[f"{task}_key"] = pair.key
    return prompts


def task_of_prompt(name: str) -> tuple[str, Literal["query", "key"]] | None:
    """Split a prompt name made by :func:`prompt_name` into ``(task, side)``, or None."""
    if name.endswith("_query") and len(name) > len("_query"):
        return name[: -len("_query")], "query"
    if name.endswith("_key") and len(name) > len("_key"):
        return name[: -len("_key")], "key"
    return None
