from __future__ import annotations

import numpy as np
import pytest

from llm_embedder_integrations import ChromaStore, LLMEmbedder, StoreMismatchError

DOCS = [
    "The Eiffel Tower is in Paris, the capital of France.",
    "Berlin is the capital of Germany and its largest city.",
    "Photosynthesis turns light into chemical energy in plants.",
    "The Pacific is the largest and deepest ocean on Earth.",
]
META = [{"topic": "city"}, {"topic": "city"}, {"topic": "biology"}, {"topic": "geo"}]


@pytest.fixture
def store(encoder, tmp_path):
    s = ChromaStore(encoder, path=tmp_path / "db")
    s.add(DOCS, task="qa", ids=["paris", "berlin", "plants", "ocean"], metadatas=META)
    return s


def test_search_finds_the_right_document_with_scores(store):
    hits = store.search("Which city is the capital of Germany?", task="qa", k=2)
    assert [h.id for h in hits][0] == "berlin"
    assert hits[0].score > hits[1].score
    assert hits[0].metadata == {"topic": "city"} and hits[0].text == DOCS[1]


def test_exact_and_hnsw_agree_on_a_small_collection(store):
    query = "largest ocean"
    hnsw = store.search(query, task="qa", k=4)
    exact = store.search(query, task="qa", k=4, exact=True)
    assert [h.id for h in hnsw] == [h.id for h in exact]
    np.testing.assert_allclose([h.score for h in hnsw], [h.score for h in exact], atol=1e-5)


def test_score_is_cosine_similarity(store, encoder):
    hit = store.search("plants and light", task="qa", k=1)[0]
    q = encoder.encode_queries(["plants and light"], task="qa")[0]
    k = encoder.encode_keys([hit.text], task="qa")[0]
    assert hit.score == pytest.approx(float(q @ k), abs=1e-5)


def test_upsert_same_id_keeps_one_entry_latest_text(store):
    store.add(["Paris has the Louvre."], task="qa", ids=["paris"])
    assert store.count("qa") == 4
    assert store.get(["paris"], task="qa")[0].text == "Paris has the Louvre."


def test_default_ids_are_content_hashes(encoder, tmp_path):
    s = ChromaStore(encoder, path=tmp_path)
    first = s.add(DOCS[:2], task="qa")
    assert s.add(DOCS[:2], task="qa") == first
    assert s.count("qa") == 2


def test_metadata_filter(store):
    hits = store.search("capital city", task="qa", k=4, where={"topic": "biology"})
    assert [h.id for h in hits] == ["plants"]
    hits = store.search("capital city", task="qa", k=4, where={"topic": "biology"}, exact=True)
    assert [h.id for h in hits] == ["plants"]


def test_k_larger_than_the_collection_returns_all(store):
    assert len(store.search("anything", task="qa", k=50)) == 4


def test_delete_by_id_and_filter_and_missing_id_is_a_noop(store):
    store.delete(["paris", "not-there"], task="qa")
    assert store.count("qa") == 3
    store.delete(task="qa", where={"topic": "geo"})
    assert {h.id for h in store.search("x", task="qa", k=10)} == {"berlin", "plants"}


def test_tasks_live_in_separate_collections(store):
    assert store.count("tool") == 0
    assert store.search("capital", task="tool", k=3) == []


def test_persistent_store_reopens_with_the_same_answers(store, encoder):
    before = store.search("deep ocean", task="qa", k=3)
    reopened = ChromaStore(encoder, path=store.path)
    assert reopened.count("qa") == 4
    after = reopened.search("deep ocean", task="qa", k=3)
    assert [h.id for h in after] == [h.id for h in before]


def test_in_memory_stores_do_not_share_data(encoder):
    a, b = ChromaStore(encoder), ChromaStore(encoder)
    a.add(DOCS, task="qa")
    assert a.count("qa") == 4 and b.count("qa") == 0


def test_reopening_with_another_model_is_an_error(store, plain_bert):

    plain = plain_bert
    other = ChromaStore(LLMEmbedder(plain), path=store.path)
    with pytest.raises(StoreMismatchError, match="was built with model 'sentence-transformers"):
        other.search("x", task="qa")
    assert ChromaStore(store.encoder, path=store.path).count("qa") == 4  # nothing lost


def test_reopening_with_instructions_switched_is_an_error(store, encoder_instr):
    other = ChromaStore(encoder_instr, path=store.path)
    with pytest.raises(StoreMismatchError, match="key instruction"):
        other.add(["x"], task="qa")


def test_reset_drops_a_task(store):
    store.reset("qa")
    assert store.count("qa") == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"texts": ["a", None]}, TypeError, r"texts\[1\]"),
        ({"texts": ["a", "b"], "ids": ["x", "x"]}, ValueError, r"ids\[1\]` repeats"),
        ({"texts": ["a"], "ids": ["x", "y"]}, ValueError, "one id per text"),
        ({"texts": ["a"], "metadatas": [{"k": [1, 2]}]}, TypeError, "Chroma stores only"),
        ({"texts": ["a"], "metadatas": [{"k": float("nan")}]}, ValueError, "finite"),
        ({"texts": ["a"], "embeddings": np.full((1, 384), np.nan)}, ValueError, "NaN"),
        ({"texts": ["a"], "embeddings": np.zeros((1, 5))}, ValueError, "shape"),
    ],
)
def test_bad_input_is_rejected_and_nothing_stored_is_lost(store, kwargs, error, match):
    with pytest.raises(error, match=match):
        store.add(task="qa", **kwargs)
    assert store.count("qa") == 4


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k(store, k):
    with pytest.raises(ValueError, match="`k` must be a positive int"):
        store.search("x", task="qa", k=k)


def test_empty_add_and_empty_search(store):
    assert store.add([], task="qa") == []
    assert store.search_batch([], task="qa") == []


def test_unknown_task_in_the_store(store):
    with pytest.raises(ValueError, match="unknown task"):
        store.search("x", task="nope")


def test_bad_collection_name(encoder):
    with pytest.raises(ValueError, match="`name` must be"):
        ChromaStore(encoder, name="has space")


# -- the one search path ------------------------------------------------------------------------


@pytest.mark.parametrize("exact", [False, True], ids=["hnsw", "exact"])
def test_excluded_ids_are_never_returned_and_k_still_comes_back(store, exact):
    query = "Which city is the capital of Germany?"
    ranked = [h.id for h in store.search(query, task="qa", k=4, exact=exact)]
    hits = store.search(query, task="qa", k=2, exclude=ranked[:2], exact=exact)
    assert [h.id for h in hits] == ranked[2:]


def test_the_over_fetch_rule_fetches_until_it_holds(store):
    query = "Which city is the capital of Germany?"
    ranked = [h.id for h in store.search(query, task="qa", k=4, exact=True)]
    assert ranked.index("ocean") >= 1  # precondition: k=1 alone would not reach it
    seen: list[int] = []

    def enough(row: int, hits: list) -> bool:
        seen.append(len(hits))
        return any(h.metadata["topic"] == "geo" for h in hits)

    hits = store.search_batch([query], task="qa", k=1, enough=enough, exact=True)[0]
    assert [h.id for h in hits][: ranked.index("ocean") + 1] == ranked[: ranked.index("ocean") + 1]
    assert seen[0] == 1 and seen[-1] == len(hits) >= ranked.index("ocean") + 1


def test_precomputed_vectors_give_the_same_hits(store, encoder):
    queries = ["deep ocean", "plants and light"]
    vectors = encoder.encode_queries(queries, task="qa")
    by_text = store.search_batch(queries, task="qa", k=3)
    assert store.search_batch(task="qa", k=3, vectors=vectors) == by_text
    assert store.search_batch(queries, task="qa", k=3, vectors=vectors) == by_text


def test_hybrid_search_without_the_texts_is_an_error_not_a_dense_search(encoder):
    store = ChromaStore(encoder, hybrid=True)
    store.add(DOCS, task="qa")
    vectors = encoder.encode_queries(["deep ocean"], task="qa")
    with pytest.raises(ValueError, match="hybrid search needs the query texts"):
        store.search_by_vectors(vectors, task="qa")
    assert len(store.search_by_vectors(vectors, task="qa", k=2, hybrid=False)[0]) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, TypeError, "pass the query texts, their `vectors`"),
        ({"queries": ["a", "b"], "vectors": np.zeros((1, 384))}, ValueError, "one vector per"),
        ({"queries": ["a"], "exclude": ["x"]}, TypeError, r"`exclude\[0\]` is the string"),
        ({"queries": ["a"], "exclude": [["x"], ["y"]]}, ValueError, "one collection of ids"),
    ],
)
def test_bad_search_arguments(store, kwargs, error, match):
    with pytest.raises(error, match=match):
        store.search_batch(task="qa", **kwargs)


def test_exact_search_of_an_empty_task_or_an_empty_filter_finds_nothing(store):
    assert store.search("anything", task="tool", k=3, exact=True) == []
    assert store.search("capital", task="qa", k=3, where={"topic": "none"}, exact=True) == []
