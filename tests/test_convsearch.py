from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_tests.integration_tests import RetrieversIntegrationTests

from llm_embedder_integrations import SHIPPED_MODEL, ChromaStore, LLMEmbedder
from llm_embedder_integrations.convsearch import ConversationalRetriever, conversational_query
from llm_embedder_integrations.evaluation import load_dataset
from llm_embedder_integrations.langchain import LLMEmbedderConversationalRetriever

PASSAGES = [
    "Norway funds its welfare state with income taxes of up to 47 percent and oil revenue.",
    "Sweden has one of the highest tax rates in Europe, with municipal and state income tax.",
    "Norway is famous for its fjords, the northern lights and the city of Bergen.",
    "Peru is home to Machu Picchu and a large part of the Amazon rainforest.",
    "Taxes on coffee imports were lowered in Peru in 2019.",
]
IDS = ["norway-tax", "sweden-tax", "norway-sights", "peru-sights", "peru-tax"]
QUESTION = "What about its taxes?"
PERU = ["Tell me about Peru.", "What can tourists visit there?"]


@lru_cache(maxsize=2)
def _searcher(instructions: bool = False) -> ConversationalRetriever:
    searcher = ConversationalRetriever(
        ChromaStore(LLMEmbedder(SHIPPED_MODEL, instructions=instructions)), exact=True
    )
    searcher.add(PASSAGES, ids=IDS)
    return searcher


def test_query_is_the_utterance_then_the_history_most_recent_first():
    assert conversational_query("c?", ["a", "b"]) == "c? b a"
    assert conversational_query("only") == "only"
    assert conversational_query("c?", ["a", "b"], max_history=1) == "c? b"
    assert conversational_query("c?", ["a", "b"], max_history=0) == "c?"


def test_trec_cast_loader_uses_the_same_format(data_path):
    ds = load_dataset("trec_cast", "all", history=True)
    raw = load_dataset("trec_cast", "all")
    assert len(ds.queries) == 239
    for qid, meta in ds.metadata.items():
        expected = " ".join([meta["raw"], *reversed(meta["history"])])
        assert ds.queries[qid] == expected == conversational_query(meta["raw"], meta["history"])
        assert raw.queries[qid] == meta["raw"]


def test_history_resolves_what_the_utterance_refers_to():
    searcher = _searcher()
    assert searcher.search(QUESTION, k=1)[0].id == "norway-tax"
    with_peru = [h.id for h in searcher.search(QUESTION, PERU, k=2)]
    assert sorted(with_peru) == ["peru-sights", "peru-tax"]
    assert searcher.search(QUESTION, PERU, k=5)[-1].id != "peru-tax"


def test_query_is_encoded_with_the_convsearch_query_instruction():
    searcher = _searcher(instructions=True)
    encoder = searcher.store.encoder
    hits = searcher.search(QUESTION, PERU, k=5)
    query = encoder.encode_queries([conversational_query(QUESTION, PERU)], task="convsearch")
    keys = encoder.encode_keys([h.text for h in hits], task="convsearch")
    np.testing.assert_allclose([h.score for h in hits], (query @ keys.T)[0], atol=1e-5)
    assert encoder.instruction("convsearch", "query").startswith("Encode this query and context")


def test_batch_search_matches_single_searches():
    searcher = _searcher()
    turns = [(QUESTION, PERU), (QUESTION, [])]
    batch = searcher.search_batch(turns, k=3)
    assert [[h.id for h in hits] for hits in batch] == [
        [h.id for h in searcher.search(u, hist, k=3)] for u, hist in turns
    ]


def test_bad_input_is_rejected(encoder):
    searcher = _searcher()
    with pytest.raises(ValueError, match="`utterance\\[0\\]` is empty"):
        searcher.search("  ", PERU)
    with pytest.raises(TypeError, match="`history` must be a list of strings"):
        searcher.search(QUESTION, "Tell me about Peru.")
    with pytest.raises(ValueError, match="`history\\[1\\]` is empty"):
        searcher.search(QUESTION, ["Peru", ""])
    with pytest.raises(ValueError, match="`k` must be a positive int, got 0"):
        searcher.search(QUESTION, k=0)
    with pytest.raises(ValueError, match="`max_history` must be an int >= 0 or None, got -1"):
        ConversationalRetriever(ChromaStore(encoder), max_history=-1)
    with pytest.raises(TypeError, match="wrap a single turn in a list"):
        searcher.search_batch((QUESTION, PERU))


def test_empty_store_returns_nothing(encoder):
    assert ConversationalRetriever(ChromaStore(encoder)).search(QUESTION, PERU) == []


# -- LangChain -------------------------------------------------------------------------------------


class TestConversationalRetrieverIntegration(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self):
        return LLMEmbedderConversationalRetriever

    @property
    def retriever_constructor_params(self):
        return {"searcher": _searcher()}

    @property
    def retriever_query_example(self) -> str:
        return "How high are taxes in Norway?"


def test_langchain_takes_a_question_and_its_history():
    retriever = LLMEmbedderConversationalRetriever(searcher=_searcher(), k=2)
    docs = retriever.invoke({"question": QUESTION, "history": PERU})
    assert sorted(d.id for d in docs) == ["peru-sights", "peru-tax"]
    assert docs[0].metadata["score"] > docs[1].metadata["score"]
    assert retriever.invoke(QUESTION, k=1)[0].id == "norway-tax"


def test_langchain_message_history_uses_the_users_turns_only():
    retriever = LLMEmbedderConversationalRetriever(searcher=_searcher(), k=5)
    history = [
        HumanMessage(PERU[0]),
        AIMessage("Norway and Sweden are in Scandinavia."),  # left out of the query
        HumanMessage(PERU[1]),
    ]
    with_messages = retriever.invoke({"question": QUESTION, "history": history})
    with_strings = retriever.invoke({"question": QUESTION, "history": PERU})
    assert [d.id for d in with_messages] == [d.id for d in with_strings]


def test_langchain_rejects_a_malformed_input():
    retriever = LLMEmbedderConversationalRetriever(searcher=_searcher())
    with pytest.raises(ValueError, match="needs 'question' and may have 'history'"):
        retriever.invoke({"query": QUESTION})
    with pytest.raises(TypeError, match="'history' must be a list, got str"):
        retriever.invoke({"question": QUESTION, "history": "Peru"})
    with pytest.raises(TypeError, match="must be a string or a dict"):
        retriever.invoke(42)
