from __future__ import annotations

import pytest

from llm_embedder_integrations import ChromaStore
from llm_embedder_integrations.lexical import BM25Index, Hybrid, reciprocal_rank_fusion

DOCS = {
    "d1": "Caroline went to the LGBTQ support group on Tuesday.",
    "d2": "Melanie painted a sunrise over the lake last week.",
    "d3": "The weather was lovely and they walked in the park.",
    "d4": "Zyxoquin is the codename of the new project.",
}


def test_rrf_by_hand():
    fused = reciprocal_rank_fusion([["a", "b"], ["b", "c"]], [1.0, 2.0], rrf_k=1)
    # a: 1/2; b: 1/3 + 2/2; c: 2/3
    assert [i for i, _ in fused] == ["b", "c", "a"]
    assert dict(fused) == pytest.approx({"a": 0.5, "b": 1 / 3 + 1.0, "c": 2 / 3})


def test_rrf_needs_one_weight_per_ranking():
    with pytest.raises(ValueError, match="2 rankings but 1 weights"):
        reciprocal_rank_fusion([["a"], ["b"]], [1.0])


def test_bm25_ranks_the_document_with_the_rare_word_first():
    index = BM25Index(DOCS)
    top = index.top_k(["what is zyxoquin?"], k=3)[0]
    assert top[0][0] == "d4" and len(top) == 1  # only documents sharing a word score > 0


def test_bm25_respects_allowed_ids():
    index = BM25Index(DOCS)
    assert index.top_k(["zyxoquin"], k=3, allowed={"d1", "d2"}) == [[]]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dense_weight": -1}, "dense_weight"),
        ({"dense_weight": 0, "lexical_weight": 0}, "both 0"),
        ({"rrf_k": -1}, "`rrf_k` must be an int >= 0, got -1"),
        ({"rrf_k": True}, "`rrf_k` must be an int >= 0, got True"),
        ({"candidates": 0}, "`candidates` must be a positive int, got 0"),
        ({"candidates": True}, "`candidates` must be a positive int, got True"),
    ],
)
def test_hybrid_settings_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Hybrid(**kwargs)


@pytest.fixture
def store(encoder, tmp_path):
    s = ChromaStore(encoder, path=tmp_path, hybrid=True)
    s.add(
        list(DOCS.values()),
        task="chat",
        ids=list(DOCS),
        metadatas=[{"speaker": "c"}, {"speaker": "m"}, {"speaker": "m"}, {"speaker": "c"}],
    )
    return s


def test_hybrid_fuses_both_rankings(store):
    dense = store.search("zyxoquin", task="chat", k=4, hybrid=False)
    hybrid = store.search("zyxoquin", task="chat", k=4)
    assert hybrid[0].id == "d4"
    assert {h.id for h in hybrid} == {h.id for h in dense}  # same candidates, re-ranked
    assert hybrid[0].score == pytest.approx(
        1 / 61 + 1 / (60 + [h.id for h in dense].index("d4") + 1)
    )


def test_lexical_weight_zero_is_dense_order(store):
    dense = store.search("a lake at sunrise", task="chat", k=4, hybrid=False)
    only_dense = store.search(
        "a lake at sunrise", task="chat", k=4, hybrid=Hybrid(lexical_weight=0.0)
    )
    assert [h.id for h in only_dense] == [h.id for h in dense]


def test_hybrid_stays_in_sync_with_add_and_delete(store):
    store.delete(["d4"], task="chat")
    assert all(h.id != "d4" for h in store.search("zyxoquin", task="chat", k=4))
    store.add(["Zyxoquin shipped on Friday."], task="chat", ids=["d5"])
    assert store.search("zyxoquin", task="chat", k=1)[0].id == "d5"


def test_hybrid_respects_the_filter(store):
    hits = store.search("zyxoquin", task="chat", k=4, where={"speaker": "m"})
    assert {h.id for h in hits} == {"d2", "d3"}


def test_hybrid_answers_the_same_after_reopening(store, encoder):
    before = [h.id for h in store.search("support group", task="chat", k=3)]
    reopened = ChromaStore(encoder, path=store.path, hybrid=True)
    assert [h.id for h in reopened.search("support group", task="chat", k=3)] == before


def test_hybrid_on_an_empty_task(store):
    assert store.search("anything", task="qa", k=3) == []


def test_bad_hybrid_value(store):
    with pytest.raises(TypeError, match="`hybrid` must be"):
        store.search("x", task="chat", hybrid="yes")
