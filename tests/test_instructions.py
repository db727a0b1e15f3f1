from __future__ import annotations

import pytest

from llm_embedder_integrations import TASKS, get_instruction, register_task
from llm_embedder_integrations.instructions import BUILTIN_TASKS, prompt_name, task_of_prompt

# Verbatim from FlagEmbedding research/llm_embedder/src/retrieval/data.py, TASK_CONFIG.
PAPER = {
    "qa": (
        "Represent this query for retrieving relevant documents: ",
        "Represent this document for retrieval: ",
    ),
    "convsearch": (
        "Encode this query and context for searching relevant passages: ",
        "Encode this passage for retrieval: ",
    ),
    "chat": (
        "Embed this dialogue to find useful historical dialogues: ",
        "Embed this historical dialogue for retrieval: ",
    ),
    "lrlm": (
        "Embed this text chunk for finding useful historical chunks: ",
        "Embed this historical text chunk for retrieval: ",
    ),
    "icl": (
        "Convert this example into vector to look for useful examples: ",
        "Convert this example into vector for retrieval: ",
    ),
    "tool": (
        "Transform this user request for fetching helpful tool descriptions: ",
        "Transform this tool description for retrieval: ",
    ),
}


def test_builtin_table_is_the_papers_character_for_character():
    assert tuple(PAPER) == BUILTIN_TASKS
    for task, (query, key) in PAPER.items():
        assert tuple(TASKS[task]) == (query, key)
        assert TASKS[task].query == query and TASKS[task].key == key


def test_every_instruction_ends_in_one_space():
    for pair in TASKS.values():
        for text in pair:
            assert text.endswith(" ") and not text.endswith("  ")


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown task 'qna'.*'qa', 'convsearch'.*'tool'"):
        get_instruction("qna")


def test_table_is_read_only():
    with pytest.raises(TypeError):
        TASKS["qa"] = ("a ", "b ")  # type: ignore[index]


def test_register_a_custom_task_and_use_it():
    pair = register_task("legal", "Find statutes for this question: ", "Represent this statute: ")
    assert TASKS["legal"] == pair
    assert get_instruction("legal").key == "Represent this statute: "
    assert register_task("legal", pair.query, pair.key) == pair  # same pair again: fine


def test_register_cannot_redefine_a_builtin_task():
    with pytest.raises(ValueError, match="already built-in"):
        register_task("qa", "Q: ", "D: ")


@pytest.mark.parametrize("name", ["", "has space", "semi;colon", None])
def test_register_rejects_bad_names(name):
    with pytest.raises(ValueError, match="task name"):
        register_task(name, "q ", "k ")


def test_register_rejects_empty_instruction():
    with pytest.raises(ValueError, match="key_instruction"):
        register_task("custom_empty", "q ", "  ")


def test_prompt_names_round_trip():
    for task in BUILTIN_TASKS:
        assert task_of_prompt(prompt_name(task, "query")) == (task, "query")
        assert task_of_prompt(prompt_name(task, "key")) == (task, "key")
    assert task_of_prompt("query") is None
