"""The training-scale sources and hard-negative mining.

The converters are tested on small files written here in each source's own format (the real
``train/`` folder is training data, never test data); the Gorilla converter also reads the real
evaluation folder, whose test split decides which APIs are held out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llm_embedder_integrations.evaluation.datasets import RetrievalDataset, load_dataset
from llm_embedder_integrations.training.data import mine_records
from llm_embedder_integrations.training.sources import (
    TRAIN_SOURCES,
    load_training_source,
    strip_gutenberg,
)


def write_lines(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_nq_qed_dedups_paragraphs_detokenizes_and_groups_by_page(tmp_path):
    para = "The Raiders won Super Bowl XV ( played in 1981 ) , and it was n't close ."
    rows = [
        {
            "example_id": 1,
            "question_text": "who won super bowl xv",
            "title_text": "Super Bowl",
            "paragraph_text": para,
            "answer_text": ["The Raiders"],
        },
        {
            "example_id": 2,
            "question_text": "when was super bowl xv played",
            "title_text": "Super Bowl",
            "paragraph_text": para,
            "answer_text": ["1981"],
        },
        {
            "example_id": 3,
            "question_text": "what is a wildcard team",
            "title_text": "Wild card",
            "paragraph_text": "A wild card team enters the playoffs .",
            "answer_text": ["a team"],
        },
    ]
    write_lines(tmp_path / "train" / "nq_qed_train" / "nq-train-00-qed.jsonlines", rows)
    ds = load_training_source("nq_qed", data_path=tmp_path)
    assert (ds.task, len(ds.corpus), len(ds.queries)) == ("qa", 2, 3)
    assert ds.qrels["nq-1"] == ds.qrels["nq-2"]  # one paragraph, two questions
    doc = next(iter(ds.qrels["nq-1"]))
    assert ds.corpus[doc] == "The Raiders won Super Bowl XV (played in 1981), and it wasn't close."
    assert ds.metadata["nq-2"] == {"group": "Super Bowl", "answers": ["1981"]}


def test_canard_query_is_the_question_then_earlier_questions_and_skips_unanswered(tmp_path):
    rows = [
        {
            "dialog_id": "d1",
            "turn": 1,
            "title": "Zappa",
            "section": "Band",
            "history": [],
            "question": "What group disbanded?",
            "rewrite": "What group disbanded?",
            "answer": "The Mothers of Invention",
        },
        {
            "dialog_id": "d1",
            "turn": 2,
            "title": "Zappa",
            "section": "Band",
            "history": ["What group disbanded?", "The Mothers of Invention"],
            "question": "When?",
            "rewrite": "When did the Mothers disband?",
            "answer": "In late 1969.",
        },
        {
            "dialog_id": "d1",
            "turn": 3,
            "title": "Zappa",
            "section": "Band",
            "history": [
                "What group disbanded?",
                "The Mothers of Invention",
                "When?",
                "In late 1969.",
            ],
            "question": "Why?",
            "rewrite": "Why did they disband?",
            "answer": None,
        },
    ]
    write_lines(tmp_path / "train" / "canard_dev" / "canard_dev_turns.jsonl", rows)
    ds = load_training_source("canard", data_path=tmp_path)
    assert ds.task == "convsearch" and list(ds.queries) == ["d1#1", "d1#2"]
    assert ds.queries["d1#2"] == "When? What group disbanded?"
    assert ds.corpus[next(iter(ds.qrels["d1#2"]))] == "In late 1969."
    assert ds.metadata["d1#2"]["group"] == "d1"


def test_gorilla_train_drops_every_instruction_whose_api_the_test_split_holds_out(
    tmp_path, data_path
):
    real = data_path / "gorilla"
    (tmp_path / "gorilla").symlink_to(real, target_is_directory=True)
    test_calls = {
        "".join(m["api_call"].split())
        for m in load_dataset("gorilla_torchhub", "test", data_path=data_path).metadata.values()
    }
    train_calls = {
        "".join(m["api_call"].split())
        for m in load_dataset("gorilla_torchhub", "train", data_path=data_path).metadata.values()
    }
    api_file = real / "api" / "torchhub_api.jsonl"
    docs = [json.loads(line) for line in api_file.read_text(encoding="utf-8").splitlines()]
    line_of = {"".join(d["api_call"].split()): i for i, d in enumerate(docs)}
    held, kept = sorted(test_calls)[0], sorted(train_calls - test_calls)[0]
    folder = tmp_path / "train" / "gorilla_apibench_train"
    (folder / "api").mkdir(parents=True)
    (folder / "api" / "torchhub_api.jsonl").write_text(api_file.read_text(encoding="utf-8"))
    pairs = [
        {
            "row": 0,
            "query": "an instruction for a held-out API",
            "api_call": held,
            "doc_lines": [line_of[held]],
        },
        {
            "row": 1,
            "query": "an instruction for a training API",
            "api_call": kept,
            "doc_lines": [line_of[kept]],
        },
    ]
    write_lines(folder / "torchhub_train_pairs.jsonl", pairs)
    ds = load_training_source("gorilla_torchhub_train", data_path=tmp_path)
    assert list(ds.queries.values()) == ["an instruction for a training API"]
    assert ds.qrels["torchhub-train-q1"] == {f"torchhub-{line_of[kept]}": 1}
    assert ds.task == "tool" and len(ds.corpus) == len(docs)


BOOK = (
    "\ufeffThe Project Gutenberg EBook of Nothing\r\n\r\n"
    "*** START OF THIS PROJECT GUTENBERG EBOOK NOTHING ***\r\n\r\n"
    + " ".join(f"w{i}" for i in range(40))
    + "\r\n\r\n*** END OF THIS PROJECT GUTENBERG EBOOK NOTHING ***\r\nLicense text.\r\n"
)


def test_strip_gutenberg_keeps_the_book_alone():
    text = strip_gutenberg(BOOK)
    assert text.startswith("w0 w1") and text.endswith("w39")
    assert "\r" not in text and "License" not in text and "START" not in text
    with pytest.raises(ValueError, match="not a Project Gutenberg text"):
        strip_gutenberg("just some text")


def test_gutenberg_chunk_asks_for_the_previous_chunk_of_its_own_book(tmp_path):
    folder = tmp_path / "train" / "gutenberg_books"
    folder.mkdir(parents=True)
    (folder / "11-0.txt").write_text(BOOK, encoding="utf-8")
    (folder / "12.txt").write_text(BOOK.replace("w", "v"), encoding="utf-8")
    (folder / "README.txt").write_text("not a book")
    ds = load_training_source("gutenberg", data_path=tmp_path, chunk_words=10, queries_per_book=1)
    assert ds.task == "lrlm" and len(ds.corpus) == 8 and len(ds.queries) == 2
    qid = "11/query-00002"
    assert ds.queries[qid] == " ".join(f"w{i}" for i in range(20, 30))
    assert ds.qrels[qid] == {"11/chunk-00001": 1}
    assert ds.exclude[qid] == {"11/chunk-00002", "11/chunk-00003"}
    assert ds.metadata[qid]["next_chunk_id"] == "11/chunk-00003"
    assert ds.candidate_ids(qid) == ["11/chunk-00000", "11/chunk-00001"]  # its own book only


def test_unknown_source_and_option_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown training source 'squad'; known sources: nq_qed"):
        load_training_source("squad", data_path=tmp_path)
    with pytest.raises(ValueError, match="'nq_qed' takes no options"):
        load_training_source("nq_qed", data_path=tmp_path, chunk_words=3)
    with pytest.raises(FileNotFoundError, match="canard_dev_turns.jsonl"):
        load_training_source("canard", data_path=tmp_path)
    assert TRAIN_SOURCES == ("nq_qed", "canard", "gorilla_torchhub_train", "gutenberg")


# Mining ------------------------------------------------------------------------------------------


def mining_set() -> RetrievalDataset:
    corpus = {
        "gold": "Paris is the capital and largest city of France.",
        "copy": "paris is the  capital and largest city of France.",  # same text, other case
        "longer": "History. Paris is the capital and largest city of France. It is old.",
        "lyon": "Lyon is a large city in France, known for its food.",
        "berlin": "Berlin is the capital of Germany.",
        "rome": "Rome is the capital of Italy, with a long history.",
        "madrid": "Madrid is the capital of Spain.",
        "bread": "Bread is made of flour, water and yeast.",
    }
    queries = {"q": "What is the capital of France?"}
    return RetrievalDataset(
        "mini", "qa", corpus, queries, {"q": {"gold": 1}}, {"q": {"group": "geo"}}
    )


def test_mining_drops_copies_and_texts_that_contain_the_positive(encoder):
    records, stats = mine_records(mining_set(), encoder, negatives=4, false_negative_margin=None)
    (record,) = records
    assert record.pos_ids == ["gold"]
    assert "copy" not in record.neg_ids and "longer" not in record.neg_ids
    assert stats.dropped["same_text"] == 1 and stats.dropped["overlap"] == 1
    assert len(record.neg_ids) == 4 and stats.negatives["dense"] + stats.negatives["bm25"] == 4
    assert stats.negatives["bm25"] >= 1  # the two rankings take turns
    assert record.extra == {"relevant_ids": ["gold"], "group": "geo", "source": "mini"}
    assert str(stats).startswith("1 records") and "(2 in all)" in str(stats)


def test_mining_drops_a_text_the_base_model_scores_above_the_positive_by_the_margin(encoder):
    base = mining_set()
    # A weak positive: the base model ranks the France texts above it.
    ds = RetrievalDataset("mini", "qa", base.corpus, base.queries, {"q": {"bread": 1}})
    q = encoder.encode_queries([ds.queries["q"]], task="qa")[0]
    scores = {d: float(encoder.encode_keys([t], task="qa")[0] @ q) for d, t in ds.corpus.items()}
    above = {d for d, s in scores.items() if s > scores["bread"] + 0.1}
    assert {"gold", "lyon"} <= above
    records, stats = mine_records(ds, encoder, negatives=7, bm25=False, false_negative_margin=0.1)
    assert not above & set(records[0].neg_ids)
    assert set(records[0].neg_ids) == set(ds.corpus) - above - {"bread"}
    assert stats.dropped["above_positive"] == len(above)


def test_mining_respects_filters_and_exclusions(encoder):
    base = mining_set()
    doc_metadata = {d: {"side": "a" if i % 2 else "b"} for i, d in enumerate(base.corpus)}
    metadata = {"q": {"filter": {"side": "b"}, "next_chunk_id": "rome"}}
    ds = RetrievalDataset(
        "mini",
        "lrlm",
        base.corpus,
        base.queries,
        {"q": {"gold": 1}},
        metadata,
        {"q": {"madrid"}},
        doc_metadata,
    )
    allowed = set(ds.candidate_ids("q"))
    assert "gold" in allowed and "madrid" not in allowed and "copy" not in allowed
    records, stats = mine_records(ds, encoder, negatives=7, false_negative_margin=None)
    (record,) = records
    assert set(record.neg_ids) == allowed - {"gold", "longer"}  # "longer" holds the positive
    assert record.answers == [ds.corpus["rome"]]  # the continuation, for the LLM reward
    assert stats.queries == 1


def test_mining_keeps_the_exclusions_that_other_records_hold_as_keys(encoder):
    base = mining_set()
    queries = {"q": base.queries["q"], "r": "Which city is the capital of Spain?"}
    qrels = {"q": {"gold": 1}, "r": {"madrid": 1}}
    exclude = {"q": {"madrid", "bread"}}
    ds = RetrievalDataset("mini", "lrlm", base.corpus, queries, qrels, exclude=exclude)
    records, _ = mine_records(ds, encoder, negatives=2, bm25=False, false_negative_margin=None)
    q, r = records
    assert "madrid" in r.pos_ids and "bread" not in {*r.pos_ids, *r.neg_ids, *q.neg_ids}
    # "madrid", a key of another record, may join a pool with q: it stays barred there
    assert q.extra["excluded_ids"] == ["madrid"]
    assert "excluded_ids" not in r.extra


def test_mining_rejects_a_bad_setting_by_name(encoder):
    with pytest.raises(ValueError, match="`false_negative_margin` must be a number >= 0"):
        mine_records(mining_set(), encoder, false_negative_margin=-1)
    with pytest.raises(ValueError, match="`negatives` must be an int >= 0"):
        mine_records(mining_set(), encoder, negatives=1.5)


def test_mined_vectors_match_the_encoder(encoder):
    """The mining ranks with the task's encoder as `encode_queries`/`encode_keys` do."""
    ds = mining_set()
    records, _ = mine_records(ds, encoder, negatives=2, bm25=False, false_negative_margin=None)
    q = encoder.encode_queries([ds.queries["q"]], task="qa")[0]
    order = sorted(
        (d for d in ds.corpus if d not in ("gold", "copy", "longer")),
        key=lambda d: -float(encoder.encode_keys([ds.corpus[d]], task="qa")[0] @ q),
    )
    assert records[0].neg_ids == order[:2]
    assert np.isfinite(q).all()
