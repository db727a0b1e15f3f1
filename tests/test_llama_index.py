from __future__ import annotations

import chromadb
import numpy as np
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.vector_stores.chroma import ChromaVectorStore

from llm_embedder_integrations import ChromaStore
from llm_embedder_integrations.llama_index import LLMEmbedderEmbedding, LLMEmbedderRetriever

DOCS = [
    "The Eiffel Tower is in Paris, the capital of France.",
    "Berlin is the capital of Germany and its largest city.",
    "Photosynthesis turns light into chemical energy in plants.",
    "The Pacific is the largest and deepest ocean on Earth.",
]


def test_query_and_text_use_their_instructions(encoder_instr):
    emb = LLMEmbedderEmbedding(encoder=encoder_instr, task="icl")
    text = "2 + 3\n5"
    np.testing.assert_allclose(
        emb.get_query_embedding(text),
        encoder_instr.encode_queries([text], task="icl")[0],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        emb.get_text_embedding(text), encoder_instr.encode_keys([text], task="icl")[0], atol=1e-6
    )
    batch = emb.get_text_embedding_batch([text, "7 - 1\n6"])
    np.testing.assert_allclose(batch[0], emb.get_text_embedding(text), atol=1e-6)


async def test_async_variants(encoder):
    emb = LLMEmbedderEmbedding(encoder=encoder)
    assert await emb.aget_query_embedding("hi") == pytest.approx(emb.get_query_embedding("hi"))
    assert await emb.aget_text_embedding("hi") == pytest.approx(emb.get_text_embedding("hi"))


def test_unknown_task(encoder):
    with pytest.raises(ValueError, match="unknown task"):
        LLMEmbedderEmbedding(encoder=encoder, task="nope")


def test_vector_store_index_on_chroma_vector_store(encoder, tmp_path):
    client = chromadb.PersistentClient(path=str(tmp_path))
    collection = client.get_or_create_collection(
        "li-test", configuration={"hnsw": {"space": "cosine"}}
    )
    vector_store = ChromaVectorStore(chroma_collection=collection)
    index = VectorStoreIndex(
        [TextNode(text=t) for t in DOCS],
        storage_context=StorageContext.from_defaults(vector_store=vector_store),
        embed_model=LLMEmbedderEmbedding(encoder=encoder, task="qa"),
    )
    hits = index.as_retriever(similarity_top_k=2).retrieve("Which ocean is the deepest?")
    assert hits[0].node.get_content() == DOCS[3]
    assert collection.count() == len(DOCS)


def test_retriever_over_our_store(encoder):
    store = ChromaStore(encoder)
    store.add(
        DOCS,
        task="qa",
        ids=["paris", "berlin", "plants", "ocean"],
        metadatas=[{"n": i} for i in range(4)],
    )
    retriever = LLMEmbedderRetriever(store, task="qa", similarity_top_k=2)
    hits = retriever.retrieve("capital of Germany")
    assert all(isinstance(h, NodeWithScore) for h in hits)
    assert hits[0].node.node_id == "berlin" and hits[0].node.metadata == {"n": 1}
    assert hits[0].score > hits[1].score
    filtered = LLMEmbedderRetriever(store, task="qa", filters={"n": 2}).retrieve("capital")
    assert [h.node.node_id for h in filtered] == ["plants"]


def test_query_engine_with_the_local_llm(encoder):
    from llm_embedder_integrations.llama_index import LocalLlamaIndexLLM

    docs = [*DOCS, "Polonia Warsaw play their home games at Konwiktorska Street in Warsaw."]
    index = VectorStoreIndex(
        [TextNode(text=t) for t in docs], embed_model=LLMEmbedderEmbedding(encoder=encoder)
    )
    engine = index.as_query_engine(llm=LocalLlamaIndexLLM(max_new_tokens=24), similarity_top_k=1)
    response = engine.query("Where does Polonia Warsaw play its home games?")
    assert response.source_nodes[0].node.get_content() == docs[-1]
    assert "Konwiktorska" in response.response


def test_local_llm_rejects_bad_budget():
    from llm_embedder_integrations.llama_index import LocalLlamaIndexLLM

    with pytest.raises(ValueError, match="max_new_tokens"):
        LocalLlamaIndexLLM(max_new_tokens=0)
