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
