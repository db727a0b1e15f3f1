from __future__ import annotations

import pytest

from llm_embedder_integrations import ChromaStore
from llm_embedder_integrations.evaluation import evaluate_rankings, load_dataset
from llm_embedder_integrations.icl import ExampleBank

# Four kinds of demonstrations; a new input should draw examples of its own kind.
EXAMPLES = [
    {"id": "math-1", "input": "What is 12 plus 7?", "output": "19", "kind": "math"},
    {"id": "math-2", "input": "What is 30 minus 4?", "output": "26", "kind": "math"},
    {"id": "math-3", "input": "What is 6 times 8?", "output": "48", "kind": "math"},
    {
        "id": "sent-1",
        "input": "This movie was a delight from start to end.",
        "output": "POS",
        "kind": "sentiment",
    },
    {
        "id": "sent-2",
        "input": "A dull, lifeless film that wastes its cast.",
        "output": "NEG",
        "kind": "sentiment",
    },
    {
        "id": "sent-3",
        "input": "The acting in this film is superb.",
        "output": "POS",
        "kind": "sentiment",
    },
    {
        "id": "cap-1",
        "input": "What is the capital of France?",
        "output": "Paris",
        "kind": "capital",
    },
    {"id": "cap-2", "input": "What is the capital of Japan?", "output": "Tokyo", "kind": "capital"},
    {
        "id": "cap-3",
        "input": "What is the capital of Canada?",
        "output": "Ottawa",
        "kind": "capital",
    },
    {
        "id": "tr-1",
        "input": "Translate to French: good morning",
        "output": "bonjour",
        "kind": "translation",
    },
    {
        "id": "tr-2",
        "input": "Translate to French: thank you",
        "output": "merci",
        "kind": "translation",
    },
    {
        "id": "tr-3",
        "input": "Translate to French: the cat",
        "output": "le chat",
        "kind": "translation",
    },
]


@pytest.fixture(scope="module")
def bank(encoder) -> ExampleBank:
    bank = ExampleBank(ChromaStore(encoder), output_keys=["output"])
    bank.add(EXAMPLES)
    return bank


@pytest.fixture
def empty_bank(encoder, tmp_path) -> ExampleBank:
    return ExampleBank(ChromaStore(encoder, path=tmp_path / "chroma"))


# -- core ---------------------------------------------------------------------------------------


def test_examples_are_stored_as_input_newline_output(bank):
    hit = bank.store.get(["cap-2"], task="icl")[0]
    assert hit.text == "What is the capital of Japan?\nTokyo"
    assert hit.metadata == EXAMPLES[7]  # "kind" is kept as metadata, out of the text


def test_output_is_every_other_field_by_default(bank):
    ex = {"id": "x", "question": "2+2?", "answer": "4", "why": "two and two"}
    qa_bank = ExampleBank(bank.store, input_keys=["question"])
    assert qa_bank.input_text(ex) == "2+2?"
    assert qa_bank.example_text(ex) == "2+2?\n4\ntwo and two"


def test_overlapping_keys_are_rejected(bank):
    with pytest.raises(ValueError, match=r"fields \['input'\] are both input and output keys"):
        ExampleBank(bank.store, output_keys=["input", "output"])
    with pytest.raises(TypeError, match="wrap it in a list"):
        ExampleBank(bank.store, input_keys="input")


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("What is 9 plus 15?", "math"),
        ("An unwatchable, boring movie.", "sentiment"),
        ("What is the capital of Italy?", "capital"),
        ("Translate to French: the dog", "translation"),
    ],
)
def test_select_returns_examples_of_the_same_kind(bank, query, kind):
    selected = bank.select(query, k=3)
    assert [s.example["kind"] for s in selected] == [kind] * 3
    scores = [s.score for s in selected]
    assert scores == sorted(scores, reverse=True)


def test_the_query_example_itself_is_never_returned(bank):
    selected = bank.select(EXAMPLES[0], k=2)  # "math-1" asks with its own id and input
    assert sorted(s.id for s in selected) == ["math-2", "math-3"]


def test_the_same_input_as_text_is_excluded(bank):
    selected = bank.select("What is the capital of France?", k=3)
    assert "cap-1" not in [s.id for s in selected]
    assert len(selected) == 3


def test_exclusion_over_fetches_to_keep_k(bank):
    # All 11 other examples are returned when k asks for everything but the query itself.
    selected = bank.select(EXAMPLES[3], k=11)
    assert len(selected) == 11
    assert "sent-1" not in {s.id for s in selected}


def test_explicit_exclude(bank):
    selected = bank.select("What is 9 plus 15?", k=3, exclude=["math-1", "math-2"])
    assert {s.id for s in selected}.isdisjoint({"math-1", "math-2"})
    assert selected[0].id == "math-3"


def test_k_larger_than_the_bank(bank):
    assert len(bank.select("hello", k=50)) == len(EXAMPLES)


def test_where_filter(bank):
    selected = bank.select("What is 9 plus 15?", k=3, where={"kind": "capital"})
    assert {s.example["kind"] for s in selected} == {"capital"}


def test_empty_bank_selects_nothing(empty_bank):
    assert empty_bank.select("What is 2 plus 2?", k=3) == []
    assert len(empty_bank) == 0


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_k_must_be_positive(bank, k):
    with pytest.raises(ValueError, match="`k` must be a positive int"):
        bank.select("What is 2 plus 2?", k=k)


def test_missing_input_field(empty_bank):
    with pytest.raises(ValueError, match=r"missing input field\(s\) \['input'\]"):
        empty_bank.add([{"question": "2+2?", "answer": "4"}])
    assert len(empty_bank) == 0


def test_non_scalar_field(empty_bank):
    with pytest.raises(TypeError, match=r"`examples\[1\]\['output'\]` is a list"):
        empty_bank.add([{"input": "a", "output": "b"}, {"input": "c", "output": ["d"]}])
    assert len(empty_bank) == 0


def test_single_example_must_be_wrapped(empty_bank):
    with pytest.raises(TypeError, match="wrap a single example in a list"):
        empty_bank.add({"input": "a", "output": "b"})


def test_same_id_replaces(empty_bank):
    empty_bank.add([{"id": "e1", "input": "What is 1 plus 1?", "output": "3"}])
    empty_bank.add([{"id": "e1", "input": "What is 1 plus 1?", "output": "2"}])
    assert len(empty_bank) == 1
    assert empty_bank.store.get(["e1"], task="icl")[0].text == "What is 1 plus 1?\n2"


def test_sni_examples_come_from_the_same_task(encoder, data_path):
    ds = load_dataset("sni", "test", data_path=data_path)
    bank = ExampleBank(ChromaStore(encoder))
    bank.add(
        [
            {"id": i, "input": text.split("\n", 1)[0], "output": text.split("\n", 1)[1]}
            for i, text in ds.corpus.items()
        ]
    )
    qids = list(ds.queries)
    selected = bank.select_batch([ds.queries[q] for q in qids], k=3)
    run = {q: [s.id for s in row] for q, row in zip(qids, selected, strict=True)}
    task_qrels = {
        q: {d: 1 for d, m in ds.doc_metadata.items() if m["task"] == ds.metadata[q]["task"]}
        for q in qids
    }
    # Measured 0.937 with all-MiniLM-L6-v2; picking at random gives about 0.33.
    assert evaluate_rankings(run, task_qrels, ks=(3,))["precision@3"] >= 0.9


# -- LangChain ------------------------------------------------------------------------------------


def test_langchain_few_shot_prompt(encoder):
    from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate

    from llm_embedder_integrations.langchain import LLMEmbedderExampleSelector

    selector = LLMEmbedderExampleSelector.from_examples(
        EXAMPLES, encoder=encoder, output_keys=["output"], k=2
    )
    prompt = FewShotPromptTemplate(
        example_selector=selector,
        example_prompt=PromptTemplate.from_template("Q: {input}\nA: {output}"),
        prefix="Answer like the examples.",
        suffix="Q: {input}\nA:",
        input_variables=["input"],
    )
    text = prompt.format(input="What is the capital of Spain?")
    blocks = text.split("\n\n")
    assert blocks[0] == "Answer like the examples."
    assert blocks[-1] == "Q: What is the capital of Spain?\nA:"
    shown = blocks[1:-1]
    assert len(shown) == 2
    assert all(b.startswith("Q: What is the capital of") for b in shown)
    assert {b.rsplit("A: ", 1)[1] for b in shown} <= {"Paris", "Tokyo", "Ottawa"}


def test_langchain_selector_add_example_and_self_exclusion(encoder):
    from llm_embedder_integrations.langchain import LLMEmbedderExampleSelector

    selector = LLMEmbedderExampleSelector.from_examples(EXAMPLES[:3], encoder=encoder, k=1)
    new_id = selector.add_example(
        {"id": "math-4", "input": "What is 100 minus 1?", "output": "99", "kind": "math"}
    )
    assert new_id == "math-4"
    assert selector.select_examples({"input": "What is 100 minus 2?"})[0]["id"] == "math-4"
    # The example being answered is not its own demonstration.
    chosen = selector.select_examples({"input": "What is 100 minus 1?", "id": "math-4"})
    assert chosen[0]["id"] != "math-4"


async def test_langchain_selector_async(encoder):
    from llm_embedder_integrations.langchain import LLMEmbedderExampleSelector

    selector = LLMEmbedderExampleSelector.from_examples(EXAMPLES, encoder=encoder, k=1)
    chosen = await selector.aselect_examples({"input": "Translate to French: good night"})
    assert chosen[0]["kind"] == "translation"


def test_langchain_selector_rejects_store_and_encoder(encoder):
    from llm_embedder_integrations.langchain import LLMEmbedderExampleSelector

    with pytest.raises(ValueError, match="pass `store` or `encoder`, not both"):
        LLMEmbedderExampleSelector.from_examples(EXAMPLES, ChromaStore(encoder), encoder=encoder)


def test_langchain_selector_rejects_bad_k(bank):
    from llm_embedder_integrations.langchain import LLMEmbedderExampleSelector

    with pytest.raises(ValueError, match="`k` must be a positive int, got 0"):
        LLMEmbedderExampleSelector(bank=bank, k=0)


# -- LlamaIndex -----------------------------------------------------------------------------------


def test_llama_index_dynamic_few_shot_prompt(bank):
    from llama_index.core import PromptTemplate

    from llm_embedder_integrations.llama_index import LLMEmbedderFewShotExamples

    examples = LLMEmbedderFewShotExamples(bank, k=2, example_template="Q: {input}\nA: {output}")
    prompt = PromptTemplate(
        "Examples:\n{few_shot_examples}\n\nQ: {query_str}\nA:",
        function_mappings={"few_shot_examples": examples},
    )
    text = prompt.format(query_str="Translate to French: the house")
    shown = text.split("Examples:\n", 1)[1].rsplit("\n\nQ: Translate to French: the house", 1)[0]
    pairs = shown.split("\n\n")
    assert len(pairs) == 2
    assert all(p.startswith("Q: Translate to French:") for p in pairs)
    # A query engine deep-copies the prompt (partial_format): the bank is shared, not copied.
    partial = prompt.partial_format(query_str="What is 2 plus 3?")
    assert partial.function_mappings["few_shot_examples"] is examples
    assert "Q: What is" in partial.format().split("\n\n")[0]


def test_llama_index_few_shot_prompt_helper_uses_the_paper_format(bank):
    from llm_embedder_integrations.llama_index import LLMEmbedderFewShotExamples, few_shot_prompt

    prompt = few_shot_prompt(
        "{few_shot_examples}\n\n{query_str}\n", LLMEmbedderFewShotExamples(bank, k=1)
    )
    assert prompt.format(query_str="What is 3 times 3?").startswith("What is 6 times 8?\n48\n\n")


def test_llama_index_few_shot_needs_the_query_variable(bank):
    from llm_embedder_integrations.llama_index import LLMEmbedderFewShotExamples, few_shot_prompt

    prompt = few_shot_prompt(
        "{few_shot_examples}\n{question}", LLMEmbedderFewShotExamples(bank, k=1)
    )
    with pytest.raises(ValueError, match="formatted without 'query_str'"):
        prompt.format(question="What is 3 times 3?")
    with pytest.raises(ValueError, match=r"has no \{few_shot_examples\} placeholder"):
        few_shot_prompt("{query_str}", LLMEmbedderFewShotExamples(bank, k=1))


# -- hybrid -------------------------------------------------------------------------------------


def test_a_hybrid_store_fuses_bm25_into_the_selection(encoder):
    store = ChromaStore(encoder, hybrid=True)
    bank = ExampleBank(store, output_keys=["output"], exact=True)
    bank.add(EXAMPLES)
    query = "Translate to French: what is the capital?"  # BM25 lifts the translation example
    fused = store.search(query, task="icl", k=3, exact=True)
    dense = store.search(query, task="icl", k=3, exact=True, hybrid=False)
    assert [h.id for h in fused] != [h.id for h in dense]  # the query tells them apart
    selected = bank.select(query, k=3)
    assert [s.id for s in selected] == [h.id for h in fused]
    assert [s.score for s in selected] == pytest.approx([h.score for h in fused])
