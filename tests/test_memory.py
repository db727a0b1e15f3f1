from __future__ import annotations

import re
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage
from langchain_tests.integration_tests import RetrieversIntegrationTests

from llm_embedder_integrations import SHIPPED_MODEL, ChromaStore, LLMEmbedder
from llm_embedder_integrations.memory import (
    MemoryRetriever,
    chunk_spans,
    chunk_text,
    merge_windows,
)

# One sentence per chunk (each added by its own add_text call): position i holds FACTS[i].
FACTS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
    "Photosynthesis converts sunlight into chemical energy in green plants.",
    "The Pacific Ocean is the largest and deepest ocean on Earth.",
    "Mount Everest is the highest mountain above sea level.",
    "Beethoven composed nine symphonies while living in Vienna.",
    "The cheetah is the fastest land animal in the world.",
]
MOUNTAIN = "Which mountain is the highest in the world?"


@pytest.fixture(scope="module")
def facts(encoder) -> ChromaStore:
    """A store whose lrlm memory holds FACTS[i] at position i of source "facts"."""
    memory = MemoryRetriever(ChromaStore(encoder), task="lrlm")
    for fact in FACTS:
        memory.add_text(fact, source_id="facts")
    return memory.store


def _memory(store: ChromaStore, **options) -> MemoryRetriever:
    """A retriever over ``store`` (retrievers hold no state: several can share one store)."""
    return MemoryRetriever(store, task="lrlm", exact=True, **options)


def _tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


# -- chunking --------------------------------------------------------------------------------------

_TEXTS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=400
).filter(lambda t: t.strip())
_WORDY = st.lists(
    st.sampled_from(["memory", "retrieval", "unbelievably", "Hamlet,", "the", "a\n", "  ", "é"]),
    min_size=1,
    max_size=120,
).map(" ".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(_TEXTS, _WORDY.filter(lambda t: t.strip())), limit=st.integers(1, 48))
def test_chunks_cover_the_text_in_order_within_the_token_limit(encoder, text, limit):
    tokenizer = encoder.tokenizer
    spans = chunk_spans(text, tokenizer, limit)
    assert chunk_text(text, tokenizer, limit) == [text[s:e] for s, e in spans]
    # Only white space outside the chunks: joined, they give the text back.
    previous = 0
    for start, end in spans:
        assert end > start and not text[previous:start].strip()
        previous = end
    assert not text[previous:].strip()
    assert re.sub(r"\s", "", "".join(text[s:e] for s, e in spans)) == re.sub(r"\s", "", text)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    for start, end in spans:
        in_span = sum(1 for a, _ in offsets["offset_mapping"] if start <= a < end)
        # The documented exception: one token whose text alone re-tokenises into more.
        assert _tokens(tokenizer, text[start:end]) <= limit or in_span == 1


def test_real_text_is_cut_at_word_starts_into_128_token_chunks(encoder, data_path):
    text = (data_path / "long_text" / "tinyshakespeare.txt").read_text()[:30_000]
    spans = chunk_spans(text, encoder.tokenizer)
    counts = [_tokens(encoder.tokenizer, text[s:e]) for s, e in spans]
    assert max(counts) == 128 and all(c >= 100 for c in counts[:-1])
    # English prose: every cut falls on white space, never inside a word.
    assert all(text[e].isspace() for _, e in spans[:-1])
    assert text[spans[0][0] : spans[0][0] + 14] == "First Citizen:"


def test_chunking_rejects_bad_input(encoder):
    with pytest.raises(ValueError, match="empty or only white space"):
        chunk_text("  \n ", encoder.tokenizer)
    with pytest.raises(ValueError, match="`chunk_tokens` must be a positive int, got 0"):
        chunk_text("some text", encoder.tokenizer, 0)
    with pytest.raises(TypeError, match="must be a string, got NoneType"):
        chunk_text(None, encoder.tokenizer)


def test_tokenizer_without_offsets_is_rejected_with_the_fix():
    class PythonTokenizer:  # a stand-in for a slow tokenizer: the check reads `is_fast`
        is_fast = False

    with pytest.raises(TypeError, match="fast \\(Rust\\) tokenizer .* got PythonTokenizer"):
        chunk_text("some text", PythonTokenizer())


# -- merging windows -------------------------------------------------------------------------------


def test_merge_windows_keeps_each_key_once_in_sequence_order():
    merged = merge_windows([[5, 6], [1, 2], [6, 7], [4, 5]])
    assert [(m.hits, m.keys) for m in merged] == [((0, 2, 3), (4, 5, 6, 7)), ((1,), (1, 2))]


def test_merge_windows_bridging_two_results_joins_them_into_the_earlier():
    merged = merge_windows([[8, 9], [4, 5], [5, 6, 7, 8]])
    assert [(m.hits, m.keys) for m in merged] == [((0, 1, 2), (4, 5, 6, 7, 8, 9))]


def test_merge_windows_stops_at_the_limit():
    merged = merge_windows([[1, 2], [2, 3], [7, 8], [10, 11]], limit=2)
    assert [m.keys for m in merged] == [(1, 2, 3), (7, 8)]


# -- neighbour expansion ---------------------------------------------------------------------------


def test_middle_hit_comes_with_its_next_chunk(facts):
    [hit] = _memory(facts).search(MOUNTAIN, k=1)
    assert hit.positions == (3, 4) and hit.hit_position == 3
    assert hit.text == FACTS[3] + "\n" + FACTS[4]
    assert hit.source_id == "facts" and hit.id == "facts:3-4"
    assert [c.id for c in hit.chunks] == ["facts:3", "facts:4"]


def test_last_chunk_has_no_next(facts):
    [hit] = _memory(facts).search("What is the fastest land animal?", k=1)
    assert hit.positions == (5,) and hit.text == FACTS[5]


def test_previous_and_next_chunks(facts):
    [hit] = _memory(facts, previous_chunks=1, next_chunks=2).search(MOUNTAIN, k=1)
    assert hit.positions == (2, 3, 4, 5) and hit.hit_position == 3
    assert hit.text == "\n".join(FACTS[2:6])
    [first] = _memory(facts, previous_chunks=2).search("the Eiffel Tower in Paris", k=1)
    assert first.positions == (0, 1)  # nothing before the first chunk


def test_no_neighbours_when_disabled(facts):
    [hit] = _memory(facts, next_chunks=0).search(MOUNTAIN, k=1)
    assert hit.positions == (3,) and hit.text == FACTS[3]


def test_two_adjacent_hits_are_merged_and_each_chunk_appears_once(encoder):
    memory = MemoryRetriever(ChromaStore(encoder), task="chat", exact=True)
    memory.add_messages(
        [
            ("Ann", "Bananas are yellow fruit."),
            ("Bob", "They grow in bunches."),
            ("Ann", "Mount Everest is the highest mountain on Earth."),
            ("Bob", "Climbers need oxygen near its summit."),
            ("Ann", "K2 is the second highest mountain on Earth."),
            ("Bob", "It is even harder to climb than Everest."),
            ("Ann", "Violins have four strings."),
            ("Bob", "Cellos have four too."),
            ("Ann", "Rome is the capital of Italy."),
            ("Bob", "It has the Colosseum."),
        ],
        source_id="doc",
    )
    ranked = memory.store.search(MOUNTAIN, task="chat", k=2, exact=True)
    assert {h.metadata["position"] for h in ranked} == {1, 2}  # the two hits are neighbours
    first, second = memory.search(MOUNTAIN, k=2)
    assert first.positions == (1, 2, 3)
    assert sorted(first.hit_positions) == [1, 2] and first.score == pytest.approx(ranked[0].score)
    assert first.text.count("highest mountain") == 2 and first.text.count("Violins") == 1
    assert set(second.positions).isdisjoint(first.positions)  # a third hit filled k=2


def test_chunks_are_ordered_by_position_not_by_id(encoder):
    store = ChromaStore(encoder)
    # ids that sort the other way round from the positions
    store.add(
        FACTS[:4],
        task="lrlm",
        ids=["z-first", "y-second", "x-third", "w-fourth"],
        metadatas=[{"source_id": "s", "position": p} for p in range(4)],
    )
    memory = MemoryRetriever(store, previous_chunks=2, next_chunks=1, exact=True)
    [hit] = memory.search("Which ocean is the deepest?", k=1)
    assert hit.positions == (0, 1, 2, 3)
    assert [c.id for c in hit.chunks] == ["z-first", "y-second", "x-third", "w-fourth"]
    assert hit.text == "\n".join(FACTS[:4])


def test_positions_past_ten_order_numerically(encoder):
    memory = MemoryRetriever(ChromaStore(encoder), task="chat", previous_chunks=2, exact=True)
    notes = [f"Note {i} is about the weather." for i in range(21)]
    memory.add_messages([*notes, "The cheetah is the fastest land animal."], source_id="notes")
    [hit] = memory.search("fastest land animal", k=1)
    assert hit.positions == (8, 9, 10)
    assert [c.id for c in hit.chunks] == ["notes:8", "notes:9", "notes:10"]


# -- exact k ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mountains(encoder):
    """Six adjacent mountain chunks (hits that merge) and three ocean chunks."""
    memory = MemoryRetriever(ChromaStore(encoder), task="chat", exact=True)
    peaks = ["Everest", "K2", "Kangchenjunga", "Lhotse", "Makalu", "Cho Oyu"]
    memory.add_messages(
        [m for i, p in enumerate(peaks) for m in (f"Which is peak {i + 1}?", f"{p}, a high peak.")],
        source_id="peaks",
    )
    oceans = ["Pacific", "Atlantic", "Indian"]
    memory.add_messages(
        [m for o in oceans for m in ("Name an ocean.", f"The {o} is a large ocean.")],
        source_id="oceans",
    )
    return memory


@pytest.mark.parametrize("k", [1, 2, 3])
def test_exactly_k_results_even_when_hits_merge(mountains, k):
    results = mountains.search("a high mountain peak", k=k)
    assert len(results) == k
    chunks = [(r.source_id, p) for r in results for p in r.positions]
    assert len(chunks) == len(set(chunks))
    assert results[0].source_id == "peaks"


def test_more_hits_are_fetched_when_merging_leaves_fewer_than_k(mountains):
    wide = MemoryRetriever(mountains.store, task="chat", previous_chunks=1, exact=True)
    ranked = wide.store.search("a high mountain peak", task="chat", k=9, exact=True)
    assert [h.metadata["source_id"] for h in ranked[:6]] == ["peaks"] * 6  # precondition
    first, second = wide.search("a high mountain peak", k=2)
    # the six peak hits all merge into one result: the second needed the seventh hit
    assert first.positions == tuple(range(6)) and len(first.hit_positions) == 6
    assert second.source_id == "oceans"
    assert len(wide.search("a high mountain peak", k=3)) == 2  # only two are possible


def test_k_larger_than_possible_returns_every_chunk_once(mountains):
    results = mountains.search("a high mountain peak", k=50)
    chunks = sorted((r.source_id, p) for r in results for p in r.positions)
    assert chunks == [("oceans", p) for p in range(3)] + [("peaks", p) for p in range(6)]
    assert len(results) < 9


def test_where_filter_limits_the_hits(mountains):
    results = mountains.search("a high mountain peak", k=2, where={"source_id": "oceans"})
    assert [r.source_id for r in results] == ["oceans", "oceans"]


def test_batch_search_matches_single_searches(mountains):
    queries = ["a high mountain peak", "The Pacific ocean"]
    batch = mountains.search_batch(queries, k=2)
    assert [[r.id for r in results] for results in batch] == [
        [r.id for r in mountains.search(q, k=2)] for q in queries
    ]
    vectors = mountains.store.encoder.encode_queries(queries, task="chat")
    assert mountains.search_by_vectors(vectors, k=2) == batch


def test_metadata_is_scalar(mountains):
    [hit] = mountains.search("Pacific", k=1)
    assert hit.metadata == {
        "source_id": "oceans",
        "first_position": 0,
        "last_position": 1,
        "positions": "0,1",
        "score": hit.score,
        "hit_position": 0,
        "hit_positions": "0",
    }


# -- adding, persistence ---------------------------------------------------------------------------


def test_long_text_is_chunked_and_positions_continue(encoder):
    memory = MemoryRetriever(ChromaStore(encoder), chunk_tokens=16, exact=True)
    ids = memory.add_text(" ".join(FACTS[:3]), source_id="a", metadata={"page": 1})
    assert ids == [f"a:{i}" for i in range(len(ids))] and len(ids) >= 3
    more = memory.add_text(FACTS[5], source_id="a", metadata={"page": 2})
    assert more == [f"a:{len(ids)}"]
    assert memory.add_text(FACTS[4], source_id="b") == ["b:0"]
    stored = memory.store.get(more, task="lrlm")[0]
    assert stored.metadata == {"page": 2, "source_id": "a", "position": len(ids)}


def test_memory_reopened_from_its_directory_answers_the_same(encoder, tmp_path):
    memory = MemoryRetriever(ChromaStore(encoder, path=tmp_path / "mem"), task="chat")
    memory.add_messages([("Ann", f) for f in FACTS], source_id="c")
    before = memory.search(MOUNTAIN, k=2)
    del memory

    reopened = MemoryRetriever(ChromaStore(encoder, path=tmp_path / "mem"), task="chat")
    after = reopened.search(MOUNTAIN, k=2)
    assert [(h.id, h.text) for h in after] == [(h.id, h.text) for h in before]
    assert [h.score for h in after] == pytest.approx([h.score for h in before])
    assert reopened.add_messages(["Bob here"], source_id="c") == ["c:3"]
    last = reopened.store.get(["c:3"], task="chat")[0]
    assert last.text == "Speaker 1: Bob here" and last.metadata["first_utterance"] == 6


def test_empty_memory_returns_nothing(encoder):
    assert MemoryRetriever(ChromaStore(encoder)).search("anything", k=3) == []


def test_conversation_with_one_turn(encoder):
    memory = MemoryRetriever(ChromaStore(encoder), task="chat")
    assert memory.add_messages(["I just adopted a kitten named Miso."], source_id="c") == ["c:0"]
    [hit] = memory.search("What is the name of my cat?", k=3)
    assert hit.text == "Speaker 1: I just adopted a kitten named Miso." and hit.positions == (0,)
    # the next plain utterance is the other speaker's turn, in a new chunk
    memory.add_messages(["Cute!"], source_id="c")
    assert memory.store.get(["c:1"], task="chat")[0].text == "Speaker 2: Cute!"


def test_conversation_is_chunked_as_pairs_with_speaker_names(encoder):
    memory = MemoryRetriever(ChromaStore(encoder), task="chat")
    ids = memory.add_messages(
        [
            ("Caroline", "I went to a support group yesterday."),
            {"speaker": "Melanie", "text": "How was it?"},
            {"role": "Caroline", "content": "Really inspiring."},
        ],
        source_id="c",
    )
    chunks = memory.store.get(ids, task="chat")
    assert [c.text for c in chunks] == [
        "Caroline: I went to a support group yesterday.\nMelanie: How was it?",
        "Caroline: Really inspiring.",
    ]
    assert [(c.metadata["first_utterance"], c.metadata["utterances"]) for c in chunks] == [
        (0, 2),
        (2, 1),
    ]


def test_adding_each_exchange_gives_the_same_chunks_as_adding_all(encoder):
    turns = ["hello", "hi there", "how are you?", "fine, thanks", "bye", "see you"]
    at_once = MemoryRetriever(ChromaStore(encoder), task="chat")
    at_once.add_messages(turns, source_id="c")
    stepwise = MemoryRetriever(ChromaStore(encoder), task="chat")
    for i in range(0, len(turns), 2):
        stepwise.add_messages(turns[i : i + 2], source_id="c")
    ids = ["c:0", "c:1", "c:2"]
    texts = [c.text for c in stepwise.store.get(ids, task="chat")]
    assert texts == [c.text for c in at_once.store.get(ids, task="chat")]
    assert texts[1] == "Speaker 1: how are you?\nSpeaker 2: fine, thanks"


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, -1, True, 1.5])
def test_search_rejects_bad_k(mountains, k):
    with pytest.raises(ValueError, match="`k` must be a positive int"):
        mountains.search("x", k=k)


def test_bad_input_is_rejected(encoder):
    memory = MemoryRetriever(ChromaStore(encoder), task="chat")
    with pytest.raises(ValueError, match="`text` is empty"):
        memory.add_text(" \n")
    with pytest.raises(ValueError, match="`query\\[0\\]` is empty"):
        memory.search("", k=1)
    with pytest.raises(ValueError, match="`messages` is empty"):
        memory.add_messages([])
    with pytest.raises(ValueError, match="`messages\\[1\\] text` is empty"):
        memory.add_messages(["hi", ("Bob", "  ")])
    with pytest.raises(TypeError, match="wrap a single message in a list"):
        memory.add_messages("hi")
    with pytest.raises(ValueError, match="`source_id` must be a non-empty string"):
        memory.add_text("hi", source_id="")
    with pytest.raises(ValueError, match="written by the memory itself"):
        memory.add_text("hi", metadata={"position": 3})
    assert memory.count() == 0  # nothing was stored


def test_bad_configuration_is_rejected(encoder):
    store = ChromaStore(encoder)
    with pytest.raises(ValueError, match="`next_chunks` must be an int >= 0, got -1"):
        MemoryRetriever(store, next_chunks=-1)
    with pytest.raises(ValueError, match="unknown task 'memory'"):
        MemoryRetriever(store, task="memory")
    with pytest.raises(ValueError, match="exceed the encoder's max_length \\(256\\)"):
        MemoryRetriever(store, chunk_tokens=300)


def test_foreign_entries_are_reported(encoder):
    store = ChromaStore(encoder)
    store.add(["The highest mountain is Everest."], task="lrlm", ids=["loose"])
    with pytest.raises(ValueError, match="'loose' has no `source_id`/`position` metadata"):
        MemoryRetriever(store).search(MOUNTAIN, k=1)


# -- LangChain -------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _langchain_memory() -> MemoryRetriever:
    memory = MemoryRetriever(ChromaStore(LLMEmbedder(SHIPPED_MODEL)), task="chat", exact=True)
    for source in ("a", "b", "c"):
        memory.add_messages(FACTS, source_id=source)
    return memory


class TestMemoryRetrieverIntegration(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self):
        from llm_embedder_integrations.langchain import LLMEmbedderMemoryRetriever

        return LLMEmbedderMemoryRetriever

    @property
    def retriever_constructor_params(self):
        return {"memory": _langchain_memory()}

    @property
    def retriever_query_example(self) -> str:
        return MOUNTAIN


def test_langchain_documents_carry_the_merged_text_and_metadata(facts):
    from llm_embedder_integrations.langchain import LLMEmbedderMemoryRetriever

    retriever = LLMEmbedderMemoryRetriever(memory=_memory(facts), k=1)
    [doc] = retriever.invoke(MOUNTAIN)
    assert isinstance(doc, Document) and doc.id == "facts:3-4"
    assert doc.page_content == FACTS[3] + "\n" + FACTS[4]
    assert doc.metadata["positions"] == "3,4" and doc.metadata["hit_position"] == 3


def test_langchain_messages_keep_their_speakers(encoder):
    from llm_embedder_integrations.langchain import LLMEmbedderMemoryRetriever

    memory = MemoryRetriever(ChromaStore(encoder), task="chat")
    retriever = LLMEmbedderMemoryRetriever(memory=memory, k=2)
    retriever.add_messages(
        [
            HumanMessage("I live in Oslo now."),
            AIMessage("Nice city!"),
            HumanMessage("hi", name="Jo"),
        ]
    )
    docs = retriever.invoke("Where does the user live?")
    # two chunks, the hit and its next: one result although k=2
    assert [d.page_content for d in docs] == [
        "User: I live in Oslo now.\nAssistant: Nice city!\nJo: hi"
    ]


def test_langchain_memory_retriever_in_a_chain(facts):
    from langchain_core.runnables import RunnableLambda

    from llm_embedder_integrations.langchain import LLMEmbedderMemoryRetriever

    retriever = LLMEmbedderMemoryRetriever(memory=_memory(facts), k=1)
    chain = retriever | RunnableLambda(lambda docs: docs[0].metadata["first_position"])
    assert chain.invoke(MOUNTAIN) == 3


# -- LlamaIndex ------------------------------------------------------------------------------------

_PLAY = """\
Mount Everest is the highest mountain above sea level, on the border of Nepal and China.
Climbers reach it from a base camp in the Khumbu valley after weeks of acclimatisation.

The summit was first reached in 1953 by Tenzing Norgay and Edmund Hillary.
They spent about fifteen minutes at the top before climbing down.

Today hundreds of people climb it every spring when the winds drop.
Crowding near the summit has become a serious danger for climbers.
"""
_OTHER = """\
Bread is made from flour, water, salt and yeast, kneaded and left to rise.
It is baked in a hot oven until the crust turns brown and crisp.
"""


@pytest.fixture(scope="module")
def llama_index(encoder):
    from llama_index.core import Document as LIDocument
    from llama_index.core import VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter

    from llm_embedder_integrations.llama_index import LLMEmbedderEmbedding

    documents = [LIDocument(text=_PLAY, id_="everest"), LIDocument(text=_OTHER, id_="bread")]
    return VectorStoreIndex.from_documents(
        documents,
        transformations=[SentenceSplitter(chunk_size=40, chunk_overlap=0)],
        embed_model=LLMEmbedderEmbedding(encoder=encoder, task="lrlm"),
    )


def _ids_in_order(index, doc_id):
    """Node ids of one document, in document order (following NEXT from the first)."""
    nodes = [n for n in index.docstore.docs.values() if n.ref_doc_id == doc_id]
    node = next(n for n in nodes if n.prev_node is None)
    order = [node.node_id]
    while node.next_node is not None:
        node = index.docstore.get_node(node.next_node.node_id)
        order.append(node.node_id)
    assert len(order) == len(nodes)
    return order


def test_next_chunk_postprocessor_adds_the_following_node(llama_index):
    from llm_embedder_integrations.llama_index import NextChunkPostprocessor

    order = _ids_in_order(llama_index, "everest")
    assert len(order) >= 3
    retriever = llama_index.as_retriever(similarity_top_k=1)
    nodes = retriever.retrieve("Who first reached the summit, and in which year?")
    hit = order.index(nodes[0].node.node_id)
    assert 0 < hit < len(order) - 1  # a middle node
    processed = NextChunkPostprocessor(docstore=llama_index.docstore).postprocess_nodes(
        nodes, query_str="Who first reached the summit?"
    )
    assert [n.node.node_id for n in processed] == order[hit : hit + 2]
    assert processed[0].score == nodes[0].score and processed[1].score is None


def test_next_chunk_postprocessor_in_a_query_engine(llama_index):
    from llama_index.core.llms import MockLLM

    from llm_embedder_integrations.llama_index import NextChunkPostprocessor

    order = _ids_in_order(llama_index, "everest")
    engine = llama_index.as_query_engine(
        llm=MockLLM(),
        similarity_top_k=len(order),
        node_postprocessors=[
            NextChunkPostprocessor(docstore=llama_index.docstore, num_next=1, num_previous=1)
        ],
    )
    response = engine.query("climbing Mount Everest")
    ids = [n.node.node_id for n in response.source_nodes]
    assert len(ids) == len(set(ids))  # merged windows: each node once
    # every Everest node is there, in document order, as one run
    everest = [i for i in ids if i in order]
    assert everest == order


def test_next_chunk_postprocessor_at_the_end_and_with_previous(llama_index):
    from llama_index.core.schema import NodeWithScore

    from llm_embedder_integrations.llama_index import NextChunkPostprocessor

    order = _ids_in_order(llama_index, "everest")
    last = NodeWithScore(node=llama_index.docstore.get_node(order[-1]), score=0.5)
    post = NextChunkPostprocessor(docstore=llama_index.docstore, num_next=2, num_previous=1)
    assert [n.node.node_id for n in post.postprocess_nodes([last])] == order[-2:]


def test_llama_index_memory_retriever(facts):
    from llm_embedder_integrations.llama_index import LLMEmbedderMemoryRetriever

    retriever = LLMEmbedderMemoryRetriever(_memory(facts), similarity_top_k=1)
    [node] = retriever.retrieve(MOUNTAIN)
    assert node.node.node_id == "facts:3-4" and node.node.get_content() == "\n".join(FACTS[3:5])
    assert node.node.metadata["positions"] == "3,4" and node.score > 0


# -- hybrid ----------------------------------------------------------------------------------------

# A query whose BM25 ranking moves FACTS_H[0] ("Tuesday") above where the dense ranking has it.
FACTS_H = [
    "Caroline went to the LGBTQ support group on Tuesday.",
    "Melanie painted a sunrise over the lake last week.",
    "The weather was lovely and they walked in the park.",
    "Zyxoquin is the codename of the new project.",
    "They talked about a new job and a move to another city.",
    "Melanie's kids love the beach and camping trips.",
]
QUERY_H = "when did they walk in the park on Tuesday?"


def test_a_hybrid_store_fuses_bm25_into_the_memory_search(encoder):
    store = ChromaStore(encoder, hybrid=True)
    memory = MemoryRetriever(store, task="chat", next_chunks=0, exact=True)
    for fact in FACTS_H:
        memory.add_text(fact, source_id="c")
    fused = store.search(QUERY_H, task="chat", k=3, exact=True)
    dense = store.search(QUERY_H, task="chat", k=3, exact=True, hybrid=False)
    assert [h.id for h in fused] != [h.id for h in dense]  # the query tells them apart
    results = memory.search(QUERY_H, k=3)
    assert [r.chunks[0].id for r in results] == [h.id for h in fused]
    assert [r.score for r in results] == pytest.approx([h.score for h in fused])
