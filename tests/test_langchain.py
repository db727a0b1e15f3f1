from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import (
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests

from llm_embedder_integrations import SHIPPED_MODEL, ChromaStore, LLMEmbedder
from llm_embedder_integrations.langchain import (
    LLMEmbedderEmbeddings,
    LLMEmbedderRetriever,
    chroma_vectorstore,
)

DOCS = [
    "The Eiffel Tower is in Paris, the capital of France.",
    "Berlin is the capital of Germany and its largest city.",
    "Photosynthesis turns light into chemical energy in plants.",
    "The Pacific is the largest and deepest ocean on Earth.",
    "Mount Everest is the highest mountain above sea level.",
]


@lru_cache(maxsize=1)
def _filled_store() -> ChromaStore:
    store = ChromaStore(LLMEmbedder(SHIPPED_MODEL))
    store.add(DOCS, task="qa", metadatas=[{"n": i} for i in range(len(DOCS))])
    return store


class TestEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self):
        return LLMEmbedderEmbeddings

    @property
    def embedding_model_params(self):
        return {"model_name": SHIPPED_MODEL, "task": "qa"}


class TestEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self):
        return LLMEmbedderEmbeddings

    @property
    def embedding_model_params(self):
        return {"model_name": SHIPPED_MODEL, "task": "chat", "instructions": True}


class TestRetrieverIntegration(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self):
        return LLMEmbedderRetriever

    @property
    def retriever_constructor_params(self):
        return {"store": _filled_store(), "task": "qa"}

    @property
    def retriever_query_example(self) -> str:
        return "What is the capital of France?"


def test_documents_use_the_key_and_queries_the_query_instruction(encoder_instr):
    emb = LLMEmbedderEmbeddings(encoder=encoder_instr, task="tool")
    text = "search the web for a query"
    np.testing.assert_allclose(
        emb.embed_documents([text]), encoder_instr.encode_keys([text], task="tool"), atol=1e-6
    )
    np.testing.assert_allclose(
        emb.embed_query(text), encoder_instr.encode_queries([text], task="tool")[0], atol=1e-6
    )
    assert not np.allclose(emb.embed_query(text), emb.embed_documents([text])[0])


def test_newlines_are_not_rewritten(encoder):
    emb = LLMEmbedderEmbeddings(encoder=encoder, task="chat")
    dialogue = "Speaker 1: hi\nSpeaker 2: hello"
    np.testing.assert_allclose(
        emb.embed_documents([dialogue])[0], encoder.encode([dialogue])[0], atol=1e-6
    )


def test_embeddings_reject_unknown_task_and_typos(encoder):
    with pytest.raises(ValueError, match="unknown task"):
        LLMEmbedderEmbeddings(encoder=encoder, task="nope")
    with pytest.raises(ValueError, match="extra"):
        LLMEmbedderEmbeddings(encoder=encoder, tsak="qa")


def test_embed_query_rejects_non_string(encoder):
    with pytest.raises(TypeError, match="`text` must be a string, got NoneType"):
        LLMEmbedderEmbeddings(encoder=encoder).embed_query(None)


def test_retriever_scores_k_and_filter():
    retriever = LLMEmbedderRetriever(store=_filled_store(), task="qa", k=2)
    docs = retriever.invoke("Which is the highest mountain?")
    assert len(docs) == 2 and docs[0].page_content == DOCS[4]
    assert docs[0].metadata["score"] > docs[1].metadata["score"]
    assert len(retriever.invoke("mountain", k=4)) == 4
    only = retriever.invoke("mountain", k=3, filter={"n": 0})
    assert [d.metadata["n"] for d in only] == [0]


def test_retriever_rejects_bad_k():
    with pytest.raises(ValueError, match="`k` must be a positive int"):
        LLMEmbedderRetriever(store=_filled_store(), k=0)
    with pytest.raises(ValueError, match="`k` must be a positive int"):
        LLMEmbedderRetriever(store=_filled_store()).invoke("x", k=-1)


def test_retriever_over_langchain_chroma(encoder, tmp_path):
    from langchain_chroma import Chroma

    vs = Chroma(
        collection_name="lc-test",
        embedding_function=LLMEmbedderEmbeddings(encoder=encoder, task="qa"),
        persist_directory=str(tmp_path),
        collection_metadata={"hnsw:space": "cosine"},
    )
    vs.add_documents([Document(page_content=t, metadata={"n": i}) for i, t in enumerate(DOCS)])
    docs = LLMEmbedderRetriever(store=vs, k=1).invoke("deepest ocean")
    assert docs[0].page_content == DOCS[3]
    assert 0.0 < docs[0].metadata["score"] <= 1.0


def test_chroma_vectorstore_shares_the_stores_collection(encoder):
    store = ChromaStore(encoder)
    store.add(DOCS, task="qa")
    vs = chroma_vectorstore(store, "qa")
    assert vs.similarity_search("plants and light", k=1)[0].page_content == DOCS[2]
    vs.add_texts(["Tokyo is the capital of Japan."])
    assert store.search("capital of Japan", task="qa", k=1)[0].text.startswith("Tokyo")


# -- any LangChain vector store, search_type / search_kwargs


def _cosines(encoder, query: str, texts: list[str]) -> np.ndarray:
    return encoder.encode_keys(texts, task="qa") @ encoder.encode_queries([query], task="qa")[0]


def test_retriever_over_in_memory_vector_store_gives_cosine_scores(encoder):
    from langchain_core.vectorstores import InMemoryVectorStore

    vs = InMemoryVectorStore(LLMEmbedderEmbeddings(encoder=encoder, task="qa"))
    vs.add_texts(DOCS)
    docs = LLMEmbedderRetriever(store=vs, k=3).invoke("deepest ocean")
    assert docs[0].page_content == DOCS[3]
    expected = dict(zip(DOCS, _cosines(encoder, "deepest ocean", DOCS), strict=True))
    for doc in docs:
        assert doc.metadata["score_type"] == "cosine"
        assert doc.metadata["score"] == pytest.approx(float(expected[doc.page_content]), abs=1e-5)


def test_retriever_over_l2_chroma_converts_distances_to_cosine_without_warning(
    encoder, recwarn, tmp_path
):
    from langchain_chroma import Chroma

    vs = Chroma.from_texts(
        DOCS,
        embedding=LLMEmbedderEmbeddings(encoder=encoder, task="qa"),
        collection_name="l2-default",
        persist_directory=str(tmp_path),
    )
    try:
        docs = LLMEmbedderRetriever(store=vs, k=5).invoke("capital of Germany")
    finally:
        vs.delete_collection()
    assert not [w for w in recwarn if "Relevance scores" in str(w.message)]
    expected = dict(zip(DOCS, _cosines(encoder, "capital of Germany", DOCS), strict=True))
    assert docs[0].page_content == DOCS[1]
    for doc in docs:
        assert doc.metadata["score_type"] == "cosine"
        assert doc.metadata["score"] == pytest.approx(float(expected[doc.page_content]), abs=1e-4)
    assert min(d.metadata["score"] for d in docs) < 0.2 < docs[0].metadata["score"]


def test_retriever_over_a_store_without_relevance_scores_says_raw(encoder):
    """Plumbing: a store that returns distances and defines no relevance score."""
    from langchain_core.vectorstores import InMemoryVectorStore

    class DistanceStore(InMemoryVectorStore):
        def similarity_search_with_score(self, query, k=4, **kwargs):
            pairs = super().similarity_search_with_score(query, k=k, **kwargs)
            return [(doc, 1.0 - score) for doc, score in pairs]

    vs = DistanceStore(LLMEmbedderEmbeddings(encoder=encoder, task="qa"))
    vs.add_texts(DOCS)
    docs = LLMEmbedderRetriever(store=vs, k=2).invoke("deepest ocean")
    expected = 1.0 - float(_cosines(encoder, "deepest ocean", [DOCS[3]])[0])
    assert docs[0].page_content == DOCS[3]
    assert docs[0].metadata["score_type"] == "raw"
    assert docs[0].metadata["score"] == pytest.approx(expected, abs=1e-5)
    threshold = LLMEmbedderRetriever(
        store=vs, search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.5}
    )
    with pytest.raises(ValueError, match="DistanceStore gives raw scores"):
        threshold.invoke("deepest ocean")


def test_score_threshold_keeps_only_close_documents():
    retriever = LLMEmbedderRetriever(
        store=_filled_store(),
        search_type="similarity_score_threshold",
        search_kwargs={"k": 5, "score_threshold": 0.4},
    )
    docs = retriever.invoke("Which is the highest mountain?")
    assert [d.page_content for d in docs] == [DOCS[4]]
    assert docs[0].metadata["score"] >= 0.4


def test_score_threshold_needs_a_threshold():
    with pytest.raises(ValueError, match="score_threshold"):
        LLMEmbedderRetriever(store=_filled_store(), search_type="similarity_score_threshold")


def test_mmr_avoids_near_duplicates(encoder):
    store = ChromaStore(encoder)
    texts = [
        "The Eiffel Tower is in Paris, the capital of France.",
        "The Eiffel Tower stands in Paris, the capital city of France.",
        "Paris hosts the Louvre, the most visited museum in the world.",
    ]
    store.add(texts, task="qa")
    similar = LLMEmbedderRetriever(store=store, k=2).invoke("Eiffel Tower Paris")
    assert {d.page_content for d in similar} == set(texts[:2])
    mmr = LLMEmbedderRetriever(
        store=store, k=2, search_type="mmr", search_kwargs={"fetch_k": 3, "lambda_mult": 0.3}
    ).invoke("Eiffel Tower Paris")
    assert len(mmr) == 2 and mmr[1].page_content == texts[2]
    assert mmr[0].metadata["score_type"] == "mmr" and "score" not in mmr[0].metadata


def test_search_kwargs_are_checked():
    with pytest.raises(ValueError, match=r"unknown search_kwargs \['top_k'\]"):
        LLMEmbedderRetriever(store=_filled_store(), search_kwargs={"top_k": 2})
    with pytest.raises(ValueError, match=r"\['k'\] given both"):
        LLMEmbedderRetriever(store=_filled_store(), k=2, search_kwargs={"k": 3})
    retriever = LLMEmbedderRetriever(store=_filled_store(), search_kwargs={"k": 3})
    assert len(retriever.invoke("capital")) == 3
    assert len(retriever.invoke("capital", k=1)) == 1


# -- constructor settings, instructions, empty texts


def test_embeddings_take_encoder_settings_directly(tmp_path):
    from llm_embedder_integrations.cache import EmbeddingCache

    emb = LLMEmbedderEmbeddings(
        model_name=SHIPPED_MODEL,
        backend="onnx",
        precision="fp32",
        cache=str(tmp_path / "cache.sqlite"),
        show_progress=False,
    )
    enc = emb.llm_embedder
    assert (enc.backend, enc.show_progress) == ("onnx", False)
    assert isinstance(enc.cache, EmbeddingCache)
    first = emb.embed_documents(DOCS[:2])
    assert (tmp_path / "cache.sqlite").stat().st_size > 0
    np.testing.assert_allclose(emb.embed_documents(DOCS[:2]), first, atol=1e-6)


def test_settings_with_an_encoder_are_refused(encoder):
    with pytest.raises(ValueError, match=r"either `encoder` or the settings \['backend'\]"):
        LLMEmbedderEmbeddings(encoder=encoder, backend="torch")


def test_instructions_are_exposed_read_only(encoder, encoder_instr):
    from llm_embedder_integrations.instructions import get_instruction

    emb = LLMEmbedderEmbeddings(encoder=encoder_instr, task="tool")
    assert emb.query_instruction == get_instruction("tool").query
    assert emb.embed_instruction == get_instruction("tool").key
    plain = LLMEmbedderEmbeddings(encoder=encoder, task="tool")
    assert (plain.query_instruction, plain.embed_instruction) == ("", "")
    with pytest.raises(AttributeError):
        emb.query_instruction = "x"


def test_empty_texts_are_embedded_like_huggingface_embeddings(encoder):
    from langchain_huggingface import HuggingFaceEmbeddings

    from llm_embedder_integrations.encoder import shipped_model_path

    emb = LLMEmbedderEmbeddings(encoder=encoder, task="qa")
    with pytest.warns(UserWarning, match="2 of 3 texts are empty or only white space"):
        vectors = np.asarray(emb.embed_documents(["", DOCS[0], "  "]))
    np.testing.assert_allclose(vectors[1], encoder.encode_keys([DOCS[0]])[0], atol=1e-6)
    hf = HuggingFaceEmbeddings(
        model_name=str(shipped_model_path()), encode_kwargs={"normalize_embeddings": True}
    )
    np.testing.assert_allclose(vectors[0], hf.embed_documents([""])[0], atol=1e-4)
    with pytest.warns(UserWarning, match="1 of 1 queries are empty"):
        np.testing.assert_allclose(emb.embed_query(""), vectors[0], atol=1e-6)


def test_a_blank_page_does_not_abort_chroma_from_documents(encoder, tmp_path):
    from langchain_chroma import Chroma

    pages = [Document(page_content=t) for t in [DOCS[0], "", DOCS[3]]]
    with pytest.warns(UserWarning, match="1 of 3 texts are empty"):
        vs = Chroma.from_documents(
            pages,
            LLMEmbedderEmbeddings(encoder=encoder),
            collection_name="blank-page",
            persist_directory=str(tmp_path),
        )
    try:
        assert vs._collection.count() == 3
        assert vs.similarity_search("deepest ocean", k=1)[0].page_content == DOCS[3]
    finally:
        vs.delete_collection()


@pytest.mark.parametrize(
    ("bad", "message"),
    [(None, r"`texts\[1\]` must be a string, got NoneType"), (b"x", r"`texts\[1\]` is bytes")],
)
def test_none_and_bytes_still_raise_with_their_position(encoder, bad, message):
    with pytest.raises(TypeError, match=message):
        LLMEmbedderEmbeddings(encoder=encoder).embed_documents(["ok", bad])


# -- the local chat model: no loops, streaming


@pytest.fixture(scope="module")
def private_school_chain(data_path):
    """The demo's RAG chain over XQuAD's private-school paragraphs, where SmolLM2 loops."""
    from llm_embedder_integrations.evaluation.datasets import load_dataset

    corpus = load_dataset("xquad", "all", data_path=data_path).corpus
    ids = [i for i in corpus if i.startswith("Private_school#")]
    store = ChromaStore(LLMEmbedder(SHIPPED_MODEL, backend="onnx"))
    store.add([corpus[i] for i in ids], task="qa", ids=ids)
    retriever = LLMEmbedderRetriever(store=store, k=2)
    question = "How are ergänzungsschulen funded?"
    assert [d.id for d in retriever.invoke(question)] == ["Private_school#0", "Private_school#1"]
    return retriever, question


def _repeated_ngrams(tokenizer, text: str, n: int) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) - len(set(grams))


@pytest.mark.slow
def test_local_chat_model_does_not_loop(private_school_chain):
    from llm_embedder_integrations.langchain import LocalChatModel, rag_chain

    retriever, question = private_school_chain
    looping = LocalChatModel(max_new_tokens=24, no_repeat_ngram_size=0)
    tokenizer = looping.llm.tokenizer
    before = rag_chain(retriever, looping).invoke(question)
    assert before.startswith("The funds for the funds for the funds for")
    assert _repeated_ngrams(tokenizer, before, 4) >= 10
    after = rag_chain(retriever, LocalChatModel(max_new_tokens=24)).invoke(question)
    assert len(tokenizer(after)["input_ids"]) >= 20
    assert _repeated_ngrams(tokenizer, after, 3) == 0


@pytest.mark.slow
def test_local_chat_model_streams_tokens(private_school_chain):
    from llm_embedder_integrations.langchain import LocalChatModel, rag_chain

    retriever, question = private_school_chain
    chain = rag_chain(retriever, LocalChatModel(max_new_tokens=16))
    chunks = list(chain.stream(question))
    assert all(isinstance(c, str) for c in chunks)
    assert len([c for c in chunks if c]) >= 8  # LangChain may add an empty closing chunk
    assert "".join(chunks) == chain.invoke(question)


def test_stream_chat_cuts_at_a_stop_string_and_strips():
    from llm_embedder_integrations.llm import LocalLLM

    llm = LocalLLM()
    messages = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    full = llm.chat(messages, max_new_tokens=24)
    assert "4" in full and full == full.strip()
    pieces = list(llm.stream_chat(messages, max_new_tokens=24, stop=["4"]))
    assert "".join(pieces) == full.split("4", 1)[0].strip()
    assert len(pieces) >= 3


def test_a_hybrid_store_names_its_scores_rrf(encoder):
    store = ChromaStore(encoder, hybrid=True)
    store.add(DOCS, task="qa")
    docs = LLMEmbedderRetriever(store=store, k=2).invoke("Mount Everest")
    assert docs[0].page_content == DOCS[4]
    assert docs[0].metadata["score_type"] == "rrf"
    assert docs[0].metadata["score"] == pytest.approx(2 / 61)  # first in both rankings


def test_closing_a_stream_early_leaves_no_generating_thread():
    import threading

    from llm_embedder_integrations.llm import LocalLLM

    llm = LocalLLM()
    before = threading.active_count()
    stream = llm.stream_chat(
        [{"role": "user", "content": "Tell me a long story."}], max_new_tokens=512
    )
    first = next(stream)
    assert first and threading.active_count() == before + 1  # the generating thread
    stream.close()
    assert threading.active_count() == before
