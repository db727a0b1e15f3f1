"""Bad input at every public entry point: one clear error, and nothing stored is lost.

Each case is run against the encoder, the store, the LangChain embeddings and retriever and the
LlamaIndex embedding and retriever. Every test snapshots everything the persistent store holds
(all collections: ids, texts, metadata, vectors) before the bad call and compares after it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from langchain_core.tools import StructuredTool

from llm_embedder_integrations import ChromaStore, LLMEmbedder, StoreMismatchError
from llm_embedder_integrations.encoder import shipped_model_path
from llm_embedder_integrations.langchain import LLMEmbedderEmbeddings, chroma_vectorstore
from llm_embedder_integrations.langchain import LLMEmbedderRetriever as LangChainRetriever
from llm_embedder_integrations.llama_index import LLMEmbedderEmbedding
from llm_embedder_integrations.llama_index import LLMEmbedderRetriever as LlamaIndexRetriever
from llm_embedder_integrations.memory import MemoryRetriever
from llm_embedder_integrations.tools import ToolRouter, ToolSpec

DOCS = {
    "paris": "The Eiffel Tower is in Paris, the capital of France.",
    "berlin": "Berlin is the capital of Germany and its largest city.",
    "plants": "Photosynthesis turns light into chemical energy in plants.",
    "ocean": "The Pacific is the largest and deepest ocean on Earth.",
}
TOOL = {"name": "get_weather", "description": "Weather forecast for a city and a date."}
LONG = "alpha beta gamma delta " * 2500  # 10,000 tokens (10,002 with [CLS] and [SEP])


@dataclass
class Env:
    """One persistent store and every public entry point over it."""

    encoder: LLMEmbedder
    store: ChromaStore
    lc_embeddings: LLMEmbedderEmbeddings
    lc_retriever: LangChainRetriever
    li_embedding: LLMEmbedderEmbedding
    li_retriever: LlamaIndexRetriever
    memory: MemoryRetriever
    router: ToolRouter


@pytest.fixture(scope="module")
def env(encoder, tmp_path_factory) -> Env:
    store = ChromaStore(encoder, path=tmp_path_factory.mktemp("bad-input") / "db")
    store.add(
        list(DOCS.values()),
        task="qa",
        ids=list(DOCS),
        metadatas=[{"n": i} for i in range(len(DOCS))],
    )
    memory = MemoryRetriever(store, task="lrlm")
    memory.add_text("Ann adopted a cat called Miso.", source_id="ann")
    router = ToolRouter(store)
    router.add_tools([TOOL])
    return Env(
        encoder=encoder,
        store=store,
        lc_embeddings=LLMEmbedderEmbeddings(encoder=encoder, task="qa"),
        lc_retriever=LangChainRetriever(store=store, task="qa", k=2),
        li_embedding=LLMEmbedderEmbedding(encoder=encoder, task="qa"),
        li_retriever=LlamaIndexRetriever(store, task="qa", similarity_top_k=2),
        memory=memory,
        router=router,
    )


Snapshot = dict[str, tuple[list[str], list[str], list[Any], np.ndarray]]


def snapshot(store: ChromaStore) -> Snapshot:
    """Everything the store's client holds: per collection, ids, texts, metadata and vectors."""
    out: Snapshot = {}
    for collection in store.client.list_collections():
        got = collection.get(include=["documents", "metadatas", "embeddings"])
        order = np.argsort(got["ids"])
        out[collection.name] = (
            [got["ids"][i] for i in order],
            [got["documents"][i] for i in order],
            [got["metadatas"][i] for i in order],
            np.asarray(got["embeddings"])[order],
        )
    return out


def assert_unchanged(store: ChromaStore, before: Snapshot) -> None:
    after = snapshot(store)
    assert list(after) == list(before), "a collection was created or dropped"
    for name, (ids, docs, metas, vectors) in before.items():
        assert after[name][:3] == (ids, docs, metas), name
        np.testing.assert_array_equal(after[name][3], vectors)
    assert store.count("qa") == len(DOCS)


# -- texts: entry points that take a list of texts ------------------------------------------------

TEXT_LISTS: dict[str, Callable[[Env, Any], Any]] = {
    "encoder.encode_keys": lambda env, x: env.encoder.encode_keys(x, task="qa"),
    "encoder.encode_queries": lambda env, x: env.encoder.encode_queries(x, task="qa"),
    "store.add": lambda env, x: env.store.add(x, task="qa"),
    "store.search_batch": lambda env, x: env.store.search_batch(x, task="qa"),
    "langchain.embed_documents": lambda env, x: env.lc_embeddings.embed_documents(x),
    "llama_index.get_text_embedding_batch": lambda env, x: (
        env.li_embedding.get_text_embedding_batch(x)
    ),
    "llama_index.aget_text_embedding_batch": lambda env, x: asyncio.run(
        env.li_embedding.aget_text_embedding_batch(x)
    ),
}
_NAME = r"`(texts|keys|queries)"
BAD_TEXT_LISTS = [
    pytest.param(None, TypeError, _NAME + r"` must be a list of strings, got NoneType", id="None"),
    pytest.param("", TypeError, _NAME + r"` .*got a single str; wrap it in a list", id="empty-str"),
    pytest.param("a text", TypeError, r"got a single str; wrap it in a list", id="str"),
    pytest.param(b"a text", TypeError, r"got a single bytes; wrap it in a list", id="bytes"),
    pytest.param(42, TypeError, _NAME + r"` must be a list of strings, got int", id="int"),
    pytest.param({"a": "b"}, TypeError, r"must be a list of strings, got dict", id="dict"),
    pytest.param(["ok", None], TypeError, _NAME + r"\[1\]` must be .* got NoneType", id="[None]"),
    pytest.param(["ok", b"x"], TypeError, _NAME + r"\[1\]` is bytes; decode it", id="[bytes]"),
    pytest.param(["ok", 3.5], TypeError, _NAME + r"\[1\]` must be a string, got fl", id="[float]"),
]
EMBEDS_EMPTY = {
    "langchain.embed_documents",
    "llama_index.get_text_embedding_batch",
    "llama_index.aget_text_embedding_batch",
    "langchain.embed_query",
    "llama_index.get_query_embedding",
    "llama_index.get_text_embedding",
}
"""The frameworks' embedding adapters embed empty texts, with one warning, as LangChain's
HuggingFaceEmbeddings does; everything else rejects them."""


@pytest.mark.parametrize("entry", TEXT_LISTS)
@pytest.mark.parametrize(("bad", "error", "match"), BAD_TEXT_LISTS)
def test_bad_text_list_is_rejected_and_nothing_is_lost(env, entry, bad, error, match):
    before = snapshot(env.store)
    with pytest.raises(error, match=match):
        TEXT_LISTS[entry](env, bad)
    assert_unchanged(env.store, before)


@pytest.mark.parametrize("entry", TEXT_LISTS)
def test_empty_list_is_a_no_op(env, entry):
    before = snapshot(env.store)
    assert len(TEXT_LISTS[entry](env, [])) == 0
    assert_unchanged(env.store, before)


@pytest.mark.parametrize("entry", [e for e in TEXT_LISTS if e != "store.add"])
def test_long_text_in_a_list_is_truncated_with_one_warning(env, entry):
    assert env.encoder.count_tokens([LONG]) == [10_002]
    before = snapshot(env.store)
    with pytest.warns(UserWarning) as record:
        out = TEXT_LISTS[entry](env, [LONG, "a short text"])
    messages = [str(w.message) for w in record if "exceeded" in str(w.message)]
    assert len(messages) == 1
    assert re.match(r"1 of 2 (keys|queries) exceeded 256 tokens and were truncated", messages[0])
    assert "chunk long texts" in messages[0]
    assert len(out) == 2
    assert_unchanged(env.store, before)


def test_long_text_is_stored_whole_and_found_by_its_start(encoder):
    store = ChromaStore(encoder)
    with pytest.warns(UserWarning, match=r"^1 of 1 keys exceeded 256 tokens"):
        [id_] = store.add([LONG], task="qa")
    store.add(list(DOCS.values()), task="qa")
    [stored] = store.get([id_], task="qa")
    assert stored.text == LONG  # the vector covers the first 256 tokens; the text is kept whole
    assert store.search("alpha beta gamma delta", task="qa", k=1)[0].id == id_


def test_long_text_in_memory_is_chunked_not_truncated(encoder):
    memory = MemoryRetriever(ChromaStore(encoder), task="lrlm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncation warning: every chunk fits
        ids = memory.add_text(LONG, source_id="book")
    chunks = memory.store.get(ids, task="lrlm")
    counts = encoder.count_tokens([c.text for c in chunks])
    assert len(chunks) == memory.count() == 79  # ceil(10,000 / 128)
    assert max(counts) <= 128 + 2  # 128 tokens plus [CLS] and [SEP]
    assert [c.metadata["position"] for c in chunks] == list(range(79))
    assert " ".join(c.text for c in chunks) == LONG.strip()


# -- queries: entry points that take one query -----------------------------------------------------


QUERIES: dict[str, Callable[[Env, Any], Any]] = {
    "store.search": lambda env, x: env.store.search(x, task="qa"),
    "langchain.embed_query": lambda env, x: env.lc_embeddings.embed_query(x),
    "langchain.retriever.invoke": lambda env, x: env.lc_retriever.invoke(x),
    "langchain.retriever.ainvoke": lambda env, x: asyncio.run(env.lc_retriever.ainvoke(x)),
    "llama_index.get_query_embedding": lambda env, x: env.li_embedding.get_query_embedding(x),
    "llama_index.get_text_embedding": lambda env, x: env.li_embedding.get_text_embedding(x),
    "llama_index.retriever.retrieve": lambda env, x: env.li_retriever.retrieve(x),
    "llama_index.retriever.aretrieve": lambda env, x: asyncio.run(env.li_retriever.aretrieve(x)),
}
BAD_QUERIES = [
    pytest.param(None, TypeError, r"must be a string.*got NoneType", id="None"),
    pytest.param(b"who?", TypeError, r"bytes", id="bytes"),
    pytest.param(42, TypeError, r"must be a string.*got int", id="int"),
    pytest.param(["who?"], TypeError, r"must be a string.*got list", id="list"),
]


@pytest.mark.parametrize("entry", QUERIES)
@pytest.mark.parametrize(("bad", "error", "match"), BAD_QUERIES)
def test_bad_query_is_rejected_and_nothing_is_lost(env, entry, bad, error, match):
    before = snapshot(env.store)
    with pytest.raises(error, match=match):
        QUERIES[entry](env, bad)
    assert_unchanged(env.store, before)


@pytest.mark.parametrize("entry", QUERIES)
def test_long_query_is_truncated_with_one_warning(env, entry):
    before = snapshot(env.store)
    with pytest.warns(UserWarning) as record:
        out = QUERIES[entry](env, LONG)
    messages = [str(w.message) for w in record if "exceeded" in str(w.message)]
    assert len(messages) == 1
    assert re.match(r"1 of 1 (keys|queries) exceeded 256 tokens and were truncated", messages[0])
    assert len(out) in (2, 4, env.encoder.dim)  # k=2 (retrievers), k=4 (store), or a vector
    assert_unchanged(env.store, before)


# -- empty texts: rejected by the core, embedded by the framework embeddings -------------------

EMPTY_INPUTS = [
    *[
        pytest.param(entry, TEXT_LISTS[entry], texts, id=f"{entry}-{name}")
        for entry in TEXT_LISTS
        for name, texts in (("[empty]", ["ok", ""]), ("[blank]", ["ok", " \n\t"]))
    ],
    *[
        pytest.param(entry, QUERIES[entry], query, id=f"{entry}-{name}")
        for entry in QUERIES
        for name, query in (("empty", ""), ("blank", " \n"))
    ],
]


@pytest.mark.parametrize(
    ("entry", "call", "value"), [p for p in EMPTY_INPUTS if p.values[0] not in EMBEDS_EMPTY]
)
def test_empty_text_is_rejected_and_nothing_is_lost(env, entry, call, value):
    before = snapshot(env.store)
    with pytest.raises(ValueError, match=r"is empty or only white space"):
        call(env, value)
    assert_unchanged(env.store, before)


@pytest.mark.parametrize(
    ("entry", "call", "value"), [p for p in EMPTY_INPUTS if p.values[0] in EMBEDS_EMPTY]
)
def test_framework_embeddings_embed_an_empty_text_with_one_warning(env, entry, call, value):
    before = snapshot(env.store)
    with pytest.warns(UserWarning, match=r"are empty or only white space"):
        out = call(env, value)
    vector = out[-1] if isinstance(value, list) else out
    assert len(vector) == env.encoder.dim
    assert not isinstance(value, list) or len(out) == len(value)
    assert_unchanged(env.store, before)


# -- unknown task ---------------------------------------------------------------------------------

UNKNOWN_TASK: dict[str, Callable[[Env], Any]] = {
    "encoder.encode_keys": lambda env: env.encoder.encode_keys(["x"], task="nope"),
    "encoder.encode_queries": lambda env: env.encoder.encode_queries(["x"], task="nope"),
    "store.add": lambda env: env.store.add(["x"], task="nope"),
    "store.search": lambda env: env.store.search("x", task="nope"),
    "store.count": lambda env: env.store.count("nope"),
    "store.delete": lambda env: env.store.delete(["paris"], task="nope"),
    "store.reset": lambda env: env.store.reset("nope"),
    "langchain.LLMEmbedderEmbeddings": lambda env: LLMEmbedderEmbeddings(
        encoder=env.encoder, task="nope"
    ),
    "langchain.LLMEmbedderRetriever": lambda env: LangChainRetriever(store=env.store, task="nope"),
    "llama_index.LLMEmbedderEmbedding": lambda env: LLMEmbedderEmbedding(
        encoder=env.encoder, task="nope"
    ),
    "llama_index.LLMEmbedderRetriever": lambda env: LlamaIndexRetriever(env.store, task="nope"),
    "memory.MemoryRetriever": lambda env: MemoryRetriever(env.store, task="nope"),
    "tools.ToolRouter": lambda env: ToolRouter(env.store, task="nope"),
}


@pytest.mark.parametrize("entry", UNKNOWN_TASK)
def test_unknown_task_lists_the_known_ones_and_creates_nothing(env, entry):
    before = snapshot(env.store)
    with pytest.raises(ValueError, match=r"unknown task 'nope'; known tasks: 'qa', 'convsearch'"):
        UNKNOWN_TASK[entry](env)
    assert_unchanged(env.store, before)


# -- vectors --------------------------------------------------------------------------------------


def _vectors(env: Env, rows: int, bad_row: int | None, value: float) -> np.ndarray:
    vectors = env.encoder.encode_keys([f"text {i}" for i in range(rows)], task="qa")
    if bad_row is not None:
        vectors[bad_row, 3] = value
    return vectors


VECTOR_CASES = [
    pytest.param(
        lambda env: env.store.add(
            ["a", "b"], task="qa", ids=["a", "b"], embeddings=_vectors(env, 2, 1, np.nan)
        ),
        r"`embeddings\[1\]` contains NaN or infinity \(1 rows in all\); nothing was stored",
        id="add-nan",
    ),
    pytest.param(
        lambda env: env.store.add(["a"], task="qa", embeddings=_vectors(env, 1, 0, np.inf)),
        r"`embeddings\[0\]` contains NaN or infinity",
        id="add-inf",
    ),
    pytest.param(
        lambda env: env.store.add(["a"], task="qa", embeddings=np.zeros((1, 8))),
        r"`embeddings` must have shape \(n, 384\), got \(1, 8\)",
        id="add-wrong-dim",
    ),
    pytest.param(
        lambda env: env.store.search_by_vectors(_vectors(env, 3, 2, np.nan), task="qa"),
        r"`vectors\[2\]` contains NaN or infinity",
        id="search-nan",
    ),
    pytest.param(
        lambda env: env.store.search_by_vectors(
            _vectors(env, 1, 0, -np.inf), task="qa", exact=True
        ),
        r"`vectors\[0\]` contains NaN or infinity",
        id="exact-search-inf",
    ),
    pytest.param(
        lambda env: env.store.search_by_vectors(np.zeros(384), task="qa"),
        r"`vectors` must have shape \(n, 384\), got \(384,\)",
        id="search-1d",
    ),
    pytest.param(
        lambda env: env.memory.search_by_vectors(_vectors(env, 1, 0, np.nan)),
        r"`vectors\[0\]` contains NaN or infinity",
        id="memory-nan",
    ),
]


@pytest.mark.parametrize(("call", "match"), VECTOR_CASES)
def test_bad_vectors_are_rejected_and_nothing_is_lost(env, call, match):
    before = snapshot(env.store)
    with pytest.raises(ValueError, match=match):
        call(env)
    assert_unchanged(env.store, before)


# -- k --------------------------------------------------------------------------------------------

K_ENTRY_POINTS: dict[str, Callable[[Env, int], Any]] = {
    "store.search": lambda env, k: env.store.search("capital", task="qa", k=k),
    "store.search_batch": lambda env, k: env.store.search_batch(["capital"], task="qa", k=k),
    "store.search_by_vectors": lambda env, k: env.store.search_by_vectors(
        _vectors(env, 1, None, 0.0), task="qa", k=k
    ),
    "store.search(hybrid)": lambda env, k: env.store.search("capital", task="qa", k=k, hybrid=True),
    "langchain.LLMEmbedderRetriever(k=)": lambda env, k: LangChainRetriever(store=env.store, k=k),
    "langchain.retriever.invoke(k=)": lambda env, k: env.lc_retriever.invoke("capital", k=k),
    "llama_index.LLMEmbedderRetriever": lambda env, k: LlamaIndexRetriever(
        env.store, similarity_top_k=k
    ),
    "memory.search": lambda env, k: env.memory.search("cat", k=k),
    "tools.route": lambda env, k: env.router.route("rain tomorrow?", k=k),
}


@pytest.mark.parametrize("entry", K_ENTRY_POINTS)
@pytest.mark.parametrize("k", [0, -2])
def test_k_not_positive_is_rejected_and_nothing_is_lost(env, entry, k):
    before = snapshot(env.store)
    with pytest.raises(ValueError, match=rf"`k` must be a positive int, got {k}"):
        K_ENTRY_POINTS[entry](env, k)
    assert_unchanged(env.store, before)


# -- ids ------------------------------------------------------------------------------------------

ID_CASES = [
    pytest.param(
        lambda env: env.store.get("paris", task="qa"), TypeError, "wrap a single id", id="get-str"
    ),
    pytest.param(
        lambda env: env.store.delete("paris", task="qa"),
        TypeError,
        "wrap a single id",
        id="delete-str",
    ),
    pytest.param(
        lambda env: env.store.delete(task="qa"), ValueError, "pass `ids` or `where`", id="delete"
    ),
    pytest.param(
        lambda env: env.store.add(["a", "b"], task="qa", ids=["x", 7]),
        TypeError,
        r"`ids\[1\]` must be a non-empty string, got 7",
        id="add-int-id",
    ),
    pytest.param(
        lambda env: env.store.add(["a", "b"], task="qa", ids=["paris", "paris"]),
        ValueError,
        r"`ids\[1\]` repeats `ids\[0\]` \('paris'\)",
        id="add-repeated-id",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), ID_CASES)
def test_bad_ids_are_rejected_and_nothing_is_lost(env, call, error, match):
    before = snapshot(env.store)
    with pytest.raises(error, match=match):
        call(env)
    assert_unchanged(env.store, before)


# -- tools ----------------------------------------------------------------------------------------


def _no_description_tool() -> StructuredTool:
    def forecast(city: str) -> str:
        return city

    return StructuredTool.from_function(func=forecast, name="forecast", description="")


TOOL_CASES = [
    pytest.param({"name": "broken"}, r"tool 'broken' has no description", id="dict"),
    pytest.param({"name": "broken", "description": "  "}, r"tool 'broken' has no desc", id="blank"),
    pytest.param({"description": "Adds numbers."}, r"a tool dict needs a 'name'", id="no-name"),
    pytest.param(_no_description_tool(), r"tool 'forecast' has no description", id="langchain"),
]


@pytest.mark.parametrize(("tool", "match"), TOOL_CASES)
def test_tool_without_description_is_rejected_and_nothing_is_written(env, tool, match):
    before = snapshot(env.store)
    good = {"name": "convert_currency", "description": "Convert an amount between currencies."}
    with pytest.raises(ValueError, match=match):
        env.router.add_tools([good, tool])  # the good tool is not written either
    assert env.router.names == ["get_weather"]
    assert_unchanged(env.store, before)


def test_tool_spec_without_description_names_the_fix():
    with pytest.raises(ValueError, match=r"tool 'x' has no description .* give it one"):
        ToolSpec("x", "")


# -- reopening with another model or dimension ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> LLMEmbedder:
    """A 32-dimension random BERT with MiniLM's tokenizer: another model, another dimension."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    src = shipped_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, folder / name)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder)
    return LLMEmbedder(folder, backend="torch")


MISMATCH: dict[str, Callable[[ChromaStore], Any]] = {
    "store.add": lambda s: s.add(["x"], task="qa"),
    "store.search": lambda s: s.search("x", task="qa"),
    "store.count": lambda s: s.count("qa"),
    "store.delete": lambda s: s.delete(["paris"], task="qa"),
    "langchain.retriever": lambda s: LangChainRetriever(store=s, task="qa").invoke("x"),
    "langchain.chroma_vectorstore": lambda s: chroma_vectorstore(s, "qa"),
    "llama_index.retriever": lambda s: LlamaIndexRetriever(s, task="qa").retrieve("x"),
}


@pytest.mark.parametrize("entry", MISMATCH)
def test_store_reopened_with_another_model_and_dimension(env, tiny_encoder, entry):
    assert tiny_encoder.dim == 32
    before = snapshot(env.store)
    other = ChromaStore(tiny_encoder, path=env.store.path)
    with pytest.raises(StoreMismatchError) as info:
        MISMATCH[entry](other)
    message = str(info.value)
    assert "model 'sentence-transformers/all-MiniLM-L6-v2' (dim 384" in message
    assert f"model '{tiny_encoder.model_id}' (dim 32" in message
    assert "Open it with the same model" in message and "store.reset(task)" in message
    assert_unchanged(ChromaStore(env.encoder, path=env.store.path), before)


def test_foreign_collection_of_another_dimension_is_refused_and_kept(encoder, tmp_path: Path):
    client = chromadb.PersistentClient(
        path=str(tmp_path), settings=chromadb.Settings(anonymized_telemetry=False)
    )
    foreign = client.create_collection("llm-embedder-qa", embedding_function=None)
    foreign.add(ids=["a", "b"], embeddings=np.eye(2, 8), documents=["one", "two"])
    store = ChromaStore(encoder, path=tmp_path)
    with pytest.raises(StoreMismatchError, match="their vectors are not comparable"):
        store.add(["x"], task="qa")
    got = client.get_collection("llm-embedder-qa").get(include=["embeddings"])
    assert got["ids"] == ["a", "b"] and np.asarray(got["embeddings"]).shape == (2, 8)
