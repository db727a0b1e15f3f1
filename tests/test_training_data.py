from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llm_embedder_integrations.evaluation.datasets import RetrievalDataset, load_dataset
from llm_embedder_integrations.training.data import (
    TrainingDataError,
    TrainingRecord,
    convert_dataset,
    iter_jsonl,
    read_jsonl,
    records_from_dataset,
    write_jsonl,
)

TOY_TASKS = ("qa", "icl", "chat", "convsearch", "tool", "lrlm")


@pytest.fixture(scope="module")
def toy(data_path) -> Path:
    return data_path / "llm_embedder_toy"


def raw_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# The toy files of the paper's repository ---------------------------------------------------------


@pytest.mark.parametrize("task", TOY_TASKS)
def test_toy_file_loads_and_round_trips(toy, task):
    path = toy / f"{task}.json"
    records = read_jsonl(path)
    assert len(records) == 8
    assert {r.task for r in records} == {task}
    assert [r.to_dict() for r in records] == raw_lines(path)


def test_toy_chat_keys_are_the_history(toy):
    records = read_jsonl(toy / "chat.json")
    for record, raw in zip(records, raw_lines(toy / "chat.json"), strict=True):
        assert record.pos == [] and record.neg == []
        assert record.keys == raw["history"]
        assert len(record.teacher_scores) == len(raw["history"])
        assert "pos" not in record.to_dict()


def test_toy_lrlm_has_no_positive_but_teacher_scores(toy):
    records = read_jsonl(toy / "lrlm.json")
    assert all(r.pos == [] and len(r.neg) == 64 == len(r.teacher_scores) for r in records)
    assert all(r.extra["context"] == "" and len(r.answers) == 1 for r in records)


def test_toy_icl_teacher_scores_are_pos_then_neg_scores(toy):
    for record in read_jsonl(toy / "icl.json"):
        assert record.answers is None
        assert record.teacher_scores == record.extra["pos_scores"] + record.extra["neg_score"]


def test_toy_convsearch_has_duplicate_negatives_and_no_scores(toy):
    records = read_jsonl(toy / "convsearch.json")
    assert all(r.teacher_scores is None and len(r.pos) == 1 for r in records)
    assert sum(len(r.neg) - len(set(r.neg)) for r in records) == 25
    assert all(len(r.extra["neg_index"]) == len(r.neg) for r in records)


def test_toy_tool_has_several_positives_and_a_string_qid(toy):
    records = read_jsonl(toy / "tool.json")
    assert [len(r.pos) for r in records] == [4, 7, 3, 10, 10, 9, 10, 10]
    assert all(isinstance(r.extra["qid"], str) and r.query_id is None for r in records)


def test_toy_qa_scores_cover_pos_and_neg(toy):
    records = read_jsonl(toy / "qa.json")
    assert all(len(r.teacher_scores) == 101 == len(r.pos) + len(r.neg) for r in records)


# Validation --------------------------------------------------------------------------------------

GOOD = {"query": "q", "pos": ["p"], "neg": ["n1", "n2"], "task": "qa"}


def write_lines(tmp_path: Path, bad: str) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + bad + "\n" + json.dumps(GOOD) + "\n")
    return path


@pytest.mark.parametrize(
    ("bad", "field", "message"),
    [
        ('{"query": "q", "pos": ["p"]', None, "not valid JSON"),
        ("[1, 2]", None, "must be a JSON object"),
        (json.dumps({"pos": ["p"], "task": "qa"}), "query", "is missing"),
        (json.dumps({**GOOD, "query": "  "}), "query", "non-empty string"),
        (json.dumps({**GOOD, "pos": []}), "pos", "non-empty list of strings"),
        (json.dumps({**GOOD, "pos": "p"}), "pos", "wrap a single text in a list"),
        (json.dumps({**GOOD, "pos": ["p", 3]}), "pos", "item 1 must be a string"),
        (json.dumps({**GOOD, "neg": None}), "neg", "got null"),
        (json.dumps({**GOOD, "teacher_scores": [0.1, 0.2]}), "teacher_scores", "2 scores for 3"),
        (json.dumps({**GOOD, "teacher_scores": [0.1, "x", 1]}), "teacher_scores", "item 1"),
        (json.dumps({**GOOD, "task": "poetry"}), "task", "unknown task 'poetry'"),
        (json.dumps({"query": "q", "pos": ["p"]}), "task", "is missing"),
        (json.dumps({**GOOD, "history": ["h"]}), "pos", "cannot also have `pos`"),
        (json.dumps({**GOOD, "answers": "a"}), "answers", "must be a list of strings"),
        (json.dumps({**GOOD, "pos_ids": ["a", "b"]}), "pos_ids", "2 ids for 1 texts"),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path, bad, field, message):
    path = write_lines(tmp_path, bad)
    with pytest.raises(TrainingDataError, match=message) as info:
        read_jsonl(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 3, field)
    assert str(err).startswith(f"{path}, line 3")
    if field:
        assert f"field `{field}`" in str(err)


def test_task_of_the_file_fills_records_without_one(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"query": "q", "pos": ["p"]}) + "\n")
    assert read_jsonl(path, task="tool")[0].task == "tool"


def test_lazy_reader_stops_at_the_first_bad_line(tmp_path):
    path = write_lines(tmp_path, "oops")
    reader = iter_jsonl(path)
    assert next(reader).query == "q"
    with pytest.raises(TrainingDataError, match="line 3"):
        next(reader)


def test_write_then_read_gives_equal_records(tmp_path):
    records = [
        TrainingRecord("q1", "qa", ["p"], ["n"], answers=["a"], teacher_scores=[0.5, -1.0]),
        TrainingRecord("q2", "chat", history=["h1", "h2"], query_id=7, extra={"x": [1]}),
        TrainingRecord("q3", "tool", ["p"], pos_ids=["d1"], neg_ids=[]),
    ]
    path = tmp_path / "out" / "r.jsonl"
    assert write_jsonl(records, path) == 3
    assert read_jsonl(path) == records


def test_constructor_validates_like_the_reader():
    with pytest.raises(TrainingDataError, match="field `teacher_scores`: has 1 scores for 2 keys"):
        TrainingRecord("q", "qa", ["p"], ["n"], teacher_scores=[1.0])
    with pytest.raises(TrainingDataError, match="item 0 must be a finite number"):
        TrainingRecord("q", "qa", ["p"], teacher_scores=[float("nan")])


# Conversion of the evaluation datasets (real encoder, real data) ---------------------------------


def expected_negatives(ds: RetrievalDataset, encoder, qid: str, n: int) -> list[str]:
    """Independent ranking: score every candidate, drop the relevant ones, take the top n."""
    docs = ds.candidate_ids(qid)
    q = encoder.encode_queries([ds.queries[qid]], task=ds.task)[0]
    k = encoder.encode_keys([ds.corpus[d] for d in docs], task=ds.task)
    ranked = [docs[i] for i in np.argsort(-(k @ q), kind="stable")]
    return [d for d in ranked if d not in ds.qrels[qid]][:n]


def subset(ds: RetrievalDataset, n_queries: int, n_docs: int) -> RetrievalDataset:
    """The first queries with their relevant documents and the first other documents."""
    qids = list(ds.queries)[:n_queries]
    docs = list(ds.corpus)[:n_docs] + [d for q in qids for d in ds.qrels[q]]
    return RetrievalDataset(
        ds.name,
        ds.task,
        {d: ds.corpus[d] for d in docs},
        {q: ds.queries[q] for q in qids},
        {q: ds.qrels[q] for q in qids},
        {q: ds.metadata[q] for q in qids if q in ds.metadata},
        {q: ds.exclude[q] for q in qids if q in ds.exclude},
        {d: ds.doc_metadata[d] for d in docs if d in ds.doc_metadata},
        ds.split,
    )


def test_mining_respects_filters_excludes_and_positives(encoder):
    corpus = {
        "a1": "The Eiffel Tower is in Paris.",
        "a2": "Paris is the capital of France.",
        "a3": "The Louvre museum is in Paris.",
        "a4": "Lyon is a French city.",
        "b1": "Paris Hilton is an American celebrity.",
        "b2": "Berlin is the capital of Germany.",
    }
    ds = RetrievalDataset(
        "mini",
        "qa",
        corpus,
        {"q": "Where is the Eiffel Tower?"},
        {"q": {"a1": 1}},
        metadata={"q": {"filter": {"group": "a"}, "answers": ["Paris"]}},
        exclude={"q": {"a3"}},
        doc_metadata={d: {"group": d[0]} for d in corpus},
    )
    (record,) = records_from_dataset(ds, encoder, negatives=5)
    assert record.pos_ids == ["a1"] and record.pos == [corpus["a1"]]
    assert sorted(record.neg_ids) == ["a2", "a4"]  # b* filtered out, a3 excluded, a1 relevant
    assert record.neg_ids == expected_negatives(ds, encoder, "q", 5)
    assert record.answers == ["Paris"] and record.query_id == "q" and record.task == "qa"


def test_gorilla_negatives_are_the_top_ranked_irrelevant_apis(encoder, data_path):
    ds = load_dataset("gorilla_torchhub", "train", data_path=data_path)
    records = convert_dataset(
        "gorilla_torchhub",
        encoder,
        data_path=data_path,
        max_queries=2,
        bm25=False,
        false_negative_margin=None,
    )
    assert [r.query_id for r in records] == list(ds.queries)[:2]
    docs = list(ds.corpus)
    keys = encoder.encode_keys([ds.corpus[d] for d in docs], task="tool")
    for record in records:
        qid = record.query_id
        q = encoder.encode_queries([ds.queries[qid]], task="tool")[0]
        ranked = [docs[i] for i in np.argsort(-(keys @ q), kind="stable")]
        norm = {d: " ".join(t.casefold().split()) for d, t in ds.corpus.items()}
        positives = [norm[d] for d in ds.qrels[qid]]
        # A doc equal to a positive, or containing one, or inside one: a likely false negative.
        irrelevant = [
            d
            for d in ranked
            if d not in ds.qrels[qid] and not any(p in norm[d] or norm[d] in p for p in positives)
        ]
        assert record.neg_ids == irrelevant[:7]
        assert set(record.pos_ids) == set(ds.qrels[qid])
        assert record.answers is None and record.task == "tool"


def test_gorilla_tensorflow_positives_can_be_capped(encoder, data_path):
    ds = load_dataset("gorilla_tensorflow", "train", data_path=data_path)
    qid = next(q for q in ds.queries if len(ds.qrels[q]) > 3)
    sub = RetrievalDataset(
        ds.name,
        ds.task,
        {d: ds.corpus[d] for d in list(ds.qrels[qid])[:40]} | {"other": "Unrelated text."},
        {qid: ds.queries[qid]},
        {qid: {d: 1 for d in list(ds.qrels[qid])[:40]}},
    )
    (record,) = records_from_dataset(sub, encoder, max_positives=2)
    assert len(record.pos) == 2 and record.neg_ids == ["other"]


def test_locomo_records_stay_in_their_conversation_and_carry_answers(encoder, data_path):
    ds = load_dataset("locomo", "train", data_path=data_path)
    records = records_from_dataset(ds, encoder, max_queries=4)
    assert len(records) == 4
    for record in records:
        conv = ds.metadata[record.query_id]["conversation"]
        assert all(d.startswith(f"{conv}/") for d in record.pos_ids + record.neg_ids)
        assert record.answers == ds.metadata[record.query_id]["answers"]
        assert record.task == "chat" and len(record.neg) == 7


def test_locomo_answered_only_drops_unanswerable_questions(encoder, data_path):
    ds = load_dataset("locomo", "train", data_path=data_path)
    unanswered = next(q for q in ds.queries if not ds.metadata[q]["answers"])
    conv = ds.metadata[unanswered]["conversation"]
    answered = [
        q
        for q in ds.queries
        if ds.metadata[q]["conversation"] == conv and ds.metadata[q]["answers"]
    ][:2]
    qids = [answered[0], unanswered, answered[1]]
    corpus = {d: t for d, t in ds.corpus.items() if d.startswith(f"{conv}/")}
    mini = RetrievalDataset(
        ds.name,
        ds.task,
        dict(list(corpus.items())[:30]) | {d: corpus[d] for q in qids for d in ds.qrels[q]},
        {q: ds.queries[q] for q in qids},
        {q: ds.qrels[q] for q in qids},
        {q: ds.metadata[q] for q in qids},
        doc_metadata={d: {"conversation": conv} for d in corpus},
    )
    assert [r.query_id for r in records_from_dataset(mini, encoder)] == qids
    kept = records_from_dataset(mini, encoder, answered_only=True)
    assert [r.query_id for r in kept] == answered


def test_sni_records_exclude_the_example_itself(encoder, data_path):
    ds = load_dataset("sni", "train", data_path=data_path)
    records = records_from_dataset(ds, encoder, max_queries=3, negatives=5)
    for record in records:
        qid = record.query_id
        assert qid not in record.pos_ids + record.neg_ids
        assert set(record.pos_ids) == set(ds.qrels[qid])
        assert record.answers == ds.metadata[qid]["answers"]
        assert record.neg_ids == expected_negatives(ds, encoder, qid, 5)


def test_tinyshakespeare_answer_is_the_continuation(encoder, data_path):
    ds = load_dataset("tinyshakespeare", "train", data_path=data_path)
    records = records_from_dataset(ds, encoder, max_queries=2, negatives=3)
    for record in records:
        position = ds.metadata[record.query_id]["position"]
        assert record.answers == [ds.corpus[f"chunk-{position + 1:05d}"]]
        assert all(int(d.split("-")[1]) < position for d in record.pos_ids + record.neg_ids)
        assert record.pos_ids == [f"chunk-{position - 1:05d}"]
        assert len(record.neg) == min(3, position - 1)


def test_xquad_records_carry_the_answers(encoder, data_path):
    xquad = subset(load_dataset("xquad", "train", data_path=data_path), 3, 12)
    records = records_from_dataset(xquad, encoder, negatives=4)
    assert [r.answers for r in records] == [xquad.metadata[q]["answers"] for q in xquad.queries]
    assert [r.pos_ids for r in records] == [list(xquad.qrels[q]) for q in xquad.queries]
    assert all(len(r.neg) == 4 and r.task == "qa" for r in records)


def test_trec_cast_records_use_the_loader_options(encoder, data_path):
    cast = subset(load_dataset("trec_cast", "train", data_path=data_path, history=True), 3, 8)
    records = records_from_dataset(cast, encoder, negatives=2)
    assert [r.query for r in records] == list(cast.queries.values())
    assert records[2].query.startswith(cast.metadata[records[2].query_id]["raw"] + " ")
    assert all(r.answers is None and len(r.neg) == 2 and r.task == "convsearch" for r in records)


def test_converter_rejects_bad_counts(encoder, data_path):
    with pytest.raises(ValueError, match="`negatives` must be an int >= 0, got -1"):
        convert_dataset("sni", encoder, data_path=data_path, negatives=-1)
    # NaN compares false with every score: it would silently keep every likely false negative.
    with pytest.raises(ValueError, match="`false_negative_margin` must be a number >= 0 or None"):
        convert_dataset("sni", encoder, data_path=data_path, false_negative_margin=float("nan"))
    with pytest.raises(ValueError, match="`max_queries` must be a positive int or None, got 0"):
        convert_dataset("sni", encoder, data_path=data_path, max_queries=0)
    with pytest.raises(ValueError, match="takes no option"):
        convert_dataset("sni", encoder, data_path=data_path, history=True)
