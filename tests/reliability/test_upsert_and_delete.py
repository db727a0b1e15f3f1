"""Writing twice is harmless: upsert keeps one entry (the latest); deleting nothing is a no-op."""

from __future__ import annotations

import numpy as np
import pytest

from llm_embedder_integrations import ChromaStore
from llm_embedder_integrations.langchain import chroma_vectorstore
from llm_embedder_integrations.store import _ADD_CHUNK, text_id
from llm_embedder_integrations.tools import ToolRouter

OLD = "The museum opens at nine in the morning."
NEW = "Penguins huddle together to survive the Antarctic winter."


@pytest.fixture
def store(encoder, tmp_path) -> ChromaStore:
    s = ChromaStore(encoder, path=tmp_path / "db")
    s.add(["Berlin is the capital of Germany.", OLD], task="qa", ids=["berlin", "x"])
    return s


def _entry(store: ChromaStore, id_: str) -> tuple[str, dict, np.ndarray]:
    got = store.collection("qa").get(ids=[id_], include=["documents", "metadatas", "embeddings"])
    assert got["ids"] == [id_]
    return got["documents"][0], got["metadatas"][0] or {}, np.asarray(got["embeddings"][0])


def test_same_id_twice_across_a_reopen_keeps_one_entry_with_the_latest_text_and_vector(store):
    reopened = ChromaStore(store.encoder, path=store.path)
    reopened.add([NEW], task="qa", ids=["x"], metadatas=[{"v": 2}])
    assert reopened.count("qa") == 2
    text, meta, vector = _entry(reopened, "x")
    assert (text, meta) == (NEW, {"v": 2})
    expected = store.encoder.encode_keys([NEW], task="qa")[0]
    assert float(vector @ expected) == pytest.approx(1.0, abs=1e-5)  # the vector was replaced
    [hit] = reopened.search(NEW, task="qa", k=1)
    assert (hit.id, hit.text) == ("x", NEW) and hit.score == pytest.approx(1.0, abs=1e-4)


def test_same_text_twice_with_default_ids_is_one_entry(store):
    first = store.add([NEW], task="qa")
    second = store.add([NEW], task="qa")
    assert first == second == [text_id(NEW)]
    assert store.count("qa") == 3


def test_a_text_repeated_in_one_call_with_default_ids_is_refused_before_writing(store):
    # Its default id (a hash of the text) would repeat; Chroma would fail on it mid-way.
    texts = [f"filler sentence number {i}" for i in range(_ADD_CHUNK + 10)] + [NEW, "z", NEW]
    with pytest.raises(ValueError, match=r"`texts\[524\]` repeats `texts\[522\]`.*pass `ids`"):
        store.add(texts, task="qa")
    assert store.count("qa") == 2  # not even the first chunk was written


def test_langchain_vectorstore_upsert_keeps_one_entry(store):
    vectorstore = chroma_vectorstore(store, "qa")
    vectorstore.add_texts([NEW], ids=["x"])
    assert store.count("qa") == 2
    assert [h.text for h in store.get(["x"], task="qa")] == [NEW]


def test_tool_added_twice_keeps_the_latest_description(store):
    router = ToolRouter(store)
    router.add_tools([{"name": "weather", "description": "Old: tide tables for a harbour."}])
    router.add_tools([{"name": "weather", "description": "Weather forecast for a city."}])
    assert store.count("tool") == 1 and router.names == ["weather"]
    assert "Weather forecast for a city." in store.get(["weather"], task="tool")[0].text
    assert router.route("will it rain in Oslo tomorrow?", k=1)[0].name == "weather"


@pytest.mark.parametrize(
    "delete",
    [
        pytest.param(lambda s: s.delete(["missing"], task="qa"), id="missing-id"),
        pytest.param(lambda s: s.delete([], task="qa"), id="no-ids"),
        pytest.param(lambda s: s.delete(where={"v": 99}, task="qa"), id="filter-matching-nothing"),
        pytest.param(lambda s: chroma_vectorstore(s, "qa").delete(ids=["missing"]), id="langchain"),
    ],
)
def test_deleting_what_is_not_stored_is_a_no_op(store, delete):
    before = store.collection("qa").get(include=["documents", "embeddings"])
    delete(store)
    after = store.collection("qa").get(include=["documents", "embeddings"])
    assert (after["ids"], after["documents"]) == (before["ids"], before["documents"])
    np.testing.assert_array_equal(after["embeddings"], before["embeddings"])


def test_delete_of_a_present_and_a_missing_id_removes_only_the_present_one(store):
    store.delete(["x", "missing"], task="qa")
    assert store.count("qa") == 1
    assert [h.id for h in store.get(["berlin", "x"], task="qa")] == ["berlin"]
    store.delete(["x"], task="qa")  # twice: still a no-op
    assert store.count("qa") == 1
