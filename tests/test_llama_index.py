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


def test_embedding_takes_encoder_settings_directly(tmp_path):
    from llm_embedder_integrations import SHIPPED_MODEL
    from llm_embedder_integrations.cache import EmbeddingCache

    emb = LLMEmbedderEmbedding(
        SHIPPED_MODEL,
        backend="onnx",
        precision="fp32",
        cache=tmp_path / "cache.sqlite",
        show_progress=False,
        embed_batch_size=8,
    )
    enc = emb.llm_embedder
    assert (enc.backend, enc.show_progress, enc.batch_size) == ("onnx", False, 8)
    assert (emb.backend, emb.embed_batch_size) == ("onnx", 8)
    assert isinstance(enc.cache, EmbeddingCache)
    first = emb.get_text_embedding_batch(DOCS)
    assert (tmp_path / "cache.sqlite").stat().st_size > 0
    np.testing.assert_allclose(emb.get_text_embedding_batch(DOCS), first, atol=1e-6)


def test_settings_with_an_encoder_are_refused(encoder):
    with pytest.raises(ValueError, match=r"either `encoder` or the settings \['cache'\]"):
        LLMEmbedderEmbedding(encoder=encoder, cache="x.sqlite")


def test_instructions_are_exposed_read_only(encoder, encoder_instr):
    from llm_embedder_integrations.instructions import get_instruction

    emb = LLMEmbedderEmbedding(encoder=encoder_instr, task="chat")
    assert emb.query_instruction == get_instruction("chat").query
    assert emb.text_instruction == get_instruction("chat").key
    plain = LLMEmbedderEmbedding(encoder=encoder, task="chat")
    assert (plain.query_instruction, plain.text_instruction) == ("", "")
    with pytest.raises((AttributeError, ValueError)):
        emb.text_instruction = "x"


def test_empty_texts_are_embedded_with_one_warning(encoder, recwarn):
    emb = LLMEmbedderEmbedding(encoder=encoder, embed_batch_size=2)
    vectors = np.asarray(emb.get_text_embedding_batch(["", DOCS[0], " ", DOCS[1], ""]))
    warned = [str(w.message) for w in recwarn if "empty" in str(w.message)]
    assert warned == [
        "3 of 5 texts are empty or only white space; they are embedded as they are "
        "(their vectors carry no content)"
    ]
    np.testing.assert_allclose(vectors[1], encoder.encode_keys([DOCS[0]])[0], atol=1e-6)
    np.testing.assert_allclose(vectors[0], vectors[4], atol=1e-6)
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5)
    with pytest.warns(UserWarning, match="1 of 1 queries are empty"):
        np.testing.assert_allclose(emb.get_query_embedding(""), vectors[0], atol=1e-6)


def test_none_still_raises_with_its_position(encoder):
    with pytest.raises(TypeError, match=r"`texts\[1\]` must be a string, got NoneType"):
        LLMEmbedderEmbedding(encoder=encoder).get_text_embedding_batch(["ok", None])


@pytest.mark.slow
def test_local_llm_streams_and_joins_to_the_answer():
    from llm_embedder_integrations.llama_index import LocalLlamaIndexLLM

    llm = LocalLlamaIndexLLM(max_new_tokens=16)
    prompt = "Name three colours of the rainbow."
    responses = list(llm.stream_complete(prompt))
    assert len(responses) >= 5
    assert "".join(r.delta for r in responses) == responses[-1].text == llm.complete(prompt).text
