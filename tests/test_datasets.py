from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import require_data

from llm_embedder_integrations.evaluation.datasets import (
    DATASETS,
    ENV_VAR,
    RetrievalDataset,
    data_dir,
    load_dataset,
    render_tool,
)


@pytest.fixture(scope="module")
def root(data_path) -> Path:
    return data_path


def load(root: Path, name: str, split: str = "all", **options) -> RetrievalDataset:
    return load_dataset(name, split, data_path=root, **options)


# Variants covering every loader and option that changes the corpus or the labels.
VARIANTS = [
    ("xquad", {}),
    ("gorilla_torchhub", {}),
    ("gorilla_tensorflow", {}),
    ("locomo", {}),
    ("locomo", {"level": "session"}),
    ("trec_cast", {}),
    ("trec_cast", {"history": True}),
    ("sni", {}),
    ("tinyshakespeare", {}),
]
VARIANT_IDS = [name + "".join(f"-{k}={v}" for k, v in opts.items()) for name, opts in VARIANTS]

# What a train/test split must keep apart: query metadata key -> group of the query.
GROUP_KEYS = {
    "xquad": "title",
    "gorilla_torchhub": "api_call",
    "gorilla_tensorflow": "api_call",
    "locomo": "conversation",
    "trec_cast": "topic",
}


# Counts --------------------------------------------------------------------------------------


def test_dataset_names():
    assert DATASETS == (
        "xquad",
        "gorilla_torchhub",
        "gorilla_tensorflow",
        "locomo",
        "trec_cast",
        "sni",
        "tinyshakespeare",
    )


def test_xquad_counts(root):
    ds = load(root, "xquad")
    assert (ds.task, len(ds.corpus), len(ds.queries)) == ("qa", 240, 1190)
    assert len({m["title"] for m in ds.metadata.values()}) == 48


@pytest.mark.parametrize(
    ("name", "docs", "queries"),
    [("gorilla_torchhub", 94, 186), ("gorilla_tensorflow", 696, 688)],
)
def test_gorilla_counts(root, name, docs, queries):
    ds = load(root, name)
    assert (ds.task, len(ds.corpus), len(ds.queries)) == ("tool", docs, queries)


def test_locomo_counts(root):
    ds = load(root, "locomo")
    per_conversation = Counter(m["conversation"] for m in ds.doc_metadata.values())
    assert per_conversation == {
        "conv-26": 419,
        "conv-30": 369,
        "conv-41": 663,
        "conv-42": 629,
        "conv-43": 680,
    }
    # 999 questions, of which conv-26 has two without any evidence
    assert len(ds.queries) == 997


def test_trec_cast_counts(root):
    ds = load(root, "trec_cast")
    assert (ds.task, len(ds.queries)) == ("convsearch", 239)
    keys = {(m["canonical_result_id"], m["passage_id"]) for m in ds.doc_metadata.values()}
    assert len(keys) == 234
    # ... but 235 distinct texts: topic 106 turns 4 and 5 share MARCO_D684519 passage 2
    assert len(ds.corpus) == 235
    assert ds.qrels["106_4"] == {"MARCO_D684519-2": 1}
    assert ds.qrels["106_5"] == {"MARCO_D684519-2~2": 1}
    assert ds.corpus["MARCO_D684519-2~2"].startswith("Treatment and follow-up")


def test_sni_counts(root):
    ds = load(root, "sni")
    assert (ds.task, len(ds.corpus), len(ds.queries)) == ("icl", 123, 123)
    assert Counter(m["task"] for m in ds.metadata.values()) == {
        "task363_sst2_polarity_classification": 54,
        "task085_unnatural_addsub_arithmetic": 40,
        "task1564_triviaqa_answer_generation": 29,
    }


def test_tinyshakespeare_counts(root):
    ds = load(root, "tinyshakespeare")
    text = (root / "long_text" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    n_words = len(text.split())
    assert ds.task == "lrlm"
    assert len(ds.corpus) == -(-n_words // 96)
    assert len(ds.queries) == 200


# Properties every dataset must have ---------------------------------------------------------


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("split", ["all", "train", "test"])
def test_every_relevant_id_is_in_the_corpus(root, name, options, split):
    ds = load(root, name, split, **options)
    assert ds.queries
    assert set(ds.qrels) == set(ds.queries)
    for qid, relevant in ds.qrels.items():
        assert relevant, qid
        assert set(relevant) <= set(ds.corpus), qid
        assert not set(relevant) & ds.exclude.get(qid, set()), qid
        assert set(relevant) <= set(ds.candidate_ids(qid)), qid


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=VARIANT_IDS)
def test_train_and_test_partition_the_queries(root, name, options):
    train = load(root, name, "train", **options)
    test = load(root, name, "test", **options)
    assert not set(train.queries) & set(test.queries)
    if name == "tinyshakespeare":  # samples n_queries chunks per split, by text position
        return
    assert set(train.queries) | set(test.queries) == set(load(root, name, **options).queries)
    assert 0.2 < len(test.queries) / (len(train.queries) + len(test.queries)) < 0.45


@pytest.mark.parametrize("name", sorted(GROUP_KEYS))
def test_split_groups_are_disjoint(root, name):
    key = GROUP_KEYS[name]
    train = {m[key] for m in load(root, name, "train").metadata.values()}
    test = {m[key] for m in load(root, name, "test").metadata.values()}
    assert train and test
    assert not train & test
    # the metadata's "group" is that grouping: a dev split carved by it mirrors the test split
    for split in ("train", "test"):
        for meta in load(root, name, split).metadata.values():
            assert meta["group"] == str(meta[key])


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=VARIANT_IDS)
def test_loading_twice_gives_the_same_split(root, name, options):
    first = load(root, name, "test", **options)
    second = load(root, name, "test", **options)
    assert first == second
    assert list(first.queries) == list(second.queries)


# XQuAD ---------------------------------------------------------------------------------------


def test_xquad_paragraphs_are_not_shared_between_splits(root):
    train, test = load(root, "xquad", "train"), load(root, "xquad", "test")
    assert not set(train.corpus) & set(test.corpus)
    assert len(train.corpus) + len(test.corpus) == 240


def test_xquad_query_points_to_its_paragraph_and_keeps_answers(root):
    ds = load(root, "xquad")
    qid = "56beb4343aeaaa14008c925b"
    assert ds.queries[qid] == "How many points did the Panthers defense surrender?"
    assert ds.qrels[qid] == {"Super_Bowl_50#0": 1}
    assert ds.metadata[qid]["answers"] == ["308"]
    assert "308" in ds.corpus["Super_Bowl_50#0"]


# Gorilla -------------------------------------------------------------------------------------


def test_render_tool_is_readable():
    doc = {
        "api_name": "slow_r50",
        "domain": "Video Classification",
        "functionality": "3D ResNet",
        "description": "A video network.",
        "api_call": "ignored",
    }
    assert render_tool(doc) == (
        "slow_r50\nDomain: Video Classification\nFunctionality: 3D ResNet\n"
        "Description: A video network."
    )


def test_render_tool_leaves_out_empty_fields():
    assert render_tool({"api_name": "x", "domain": "", "description": "d"}) == "x\nDescription: d"


def test_render_tool_needs_a_name():
    with pytest.raises(ValueError, match="needs an `api_name`"):
        render_tool({"domain": "Vision"})


@pytest.mark.parametrize("name", ["gorilla_torchhub", "gorilla_tensorflow"])
def test_gorilla_queries_hold_no_answer(root, name):
    ds = load(root, name)
    for text in ds.queries.values():
        assert not re.search(r"###\s*(Output|Instruction)|<<<|api_call", text), text
        assert text == text.strip() and text


@pytest.mark.parametrize("name", ["gorilla_torchhub", "gorilla_tensorflow"])
def test_gorilla_relevant_is_every_doc_with_the_api_call(root, name):
    ds = load(root, name)
    by_call: dict[str, set[str]] = {}
    for doc_id, meta in ds.doc_metadata.items():
        by_call.setdefault(meta["api_call"], set()).add(doc_id)
    for qid, relevant in ds.qrels.items():
        assert set(relevant) == by_call[ds.metadata[qid]["api_call"]], qid


def test_gorilla_tensorflow_has_an_api_with_220_docs(root):
    ds = load(root, "gorilla_tensorflow")
    assert max(len(r) for r in ds.qrels.values()) == 220


def test_gorilla_splits_keep_the_whole_tool_set(root):
    assert load(root, "gorilla_torchhub", "test").corpus == load(root, "gorilla_torchhub").corpus


def test_gorilla_instruction_marker_with_space_is_removed(root):
    ds = load(root, "gorilla_tensorflow")
    assert not any(t.startswith("###") or t.startswith("Instruction") for t in ds.queries.values())


# LoCoMo --------------------------------------------------------------------------------------


def test_locomo_turn_text_has_speaker_and_shared_image(root):
    ds = load(root, "locomo")
    assert ds.corpus["conv-26/D1:1"] == "Caroline: Hey Mel! Good to see you! How have you been?"
    assert ds.corpus["conv-26/D1:5"].endswith(
        " [shares a photo of a dog walking past a wall with a painting of a woman]"
    )
    assert ds.doc_metadata["conv-26/D1:5"] == {
        "conversation": "conv-26",
        "session": 1,
        "position": 4,
        "date_time": "1:56 pm on 8 May, 2023",
    }


def test_locomo_query_searches_only_its_conversation(root):
    ds = load(root, "locomo")
    assert ds.queries["conv-26/q0"] == "When did Caroline go to the LGBTQ support group?"
    assert ds.qrels["conv-26/q0"] == {"conv-26/D1:3": 1}
    assert ds.metadata["conv-26/q0"]["filter"] == {"conversation": "conv-26"}
    candidates = ds.candidate_ids("conv-26/q0")
    assert len(candidates) == 419
    assert all(c.startswith("conv-26/") for c in candidates)


def test_locomo_malformed_evidence_is_repaired(root):
    ds = load(root, "locomo")
    combined = [q for q, m in ds.metadata.items() if m["evidence"] == ["D8:6", "D9:17"]]
    assert combined and all(q.startswith("conv-26/") for q in combined)
    assert any("conv-43/D11:26" in rel for rel in ds.qrels.values())


def test_locomo_session_level(root):
    turns = load(root, "locomo")
    sessions = load(root, "locomo", level="session")
    assert len(sessions.corpus) == 19 + 19 + 32 + 29 + 29
    assert set(sessions.queries) == set(turns.queries)
    assert sessions.corpus["conv-26/session_1"].startswith(
        "Caroline: Hey Mel! Good to see you! How have you been?\nMelanie: "
    )
    for qid, relevant in turns.qrels.items():
        expected = {f"{d.split('/')[0]}/session_{d.split('/D')[1].split(':')[0]}" for d in relevant}
        assert set(sessions.qrels[qid]) == expected


def test_locomo_bad_level(root):
    with pytest.raises(ValueError, match="`level` must be 'turn' or 'session', got 'dialog'"):
        load(root, "locomo", level="dialog")


def test_locomo_test_split_holds_two_conversations(root):
    conversations = {m["conversation"] for m in load(root, "locomo", "test").metadata.values()}
    assert len(conversations) == 2


# TREC CAsT -----------------------------------------------------------------------------------


def test_trec_cast_raw_history_and_rewrite(root):
    raw = load(root, "trec_cast")
    history = load(root, "trec_cast", history=True)
    rewrite = load(root, "trec_cast", rewrite=True)
    meta = raw.metadata["106_3"]
    assert raw.queries["106_3"] == "How deadly is it?" == meta["raw"]
    assert meta["history"] == [raw.metadata["106_1"]["raw"], raw.metadata["106_2"]["raw"]]
    assert history.queries["106_3"] == " ".join(
        ["How deadly is it?", raw.metadata["106_2"]["raw"], raw.metadata["106_1"]["raw"]]
    )
    assert history.queries["106_1"] == raw.queries["106_1"]
    assert rewrite.queries["106_3"] == "How deadly is lobular carcinoma in situ?"
    assert raw.qrels == history.qrels == rewrite.qrels


def test_trec_cast_history_and_rewrite_exclude_each_other(root):
    with pytest.raises(ValueError, match="exclude each other"):
        load(root, "trec_cast", history=True, rewrite=True)


# SNI -----------------------------------------------------------------------------------------


def test_sni_relevant_is_same_task_and_label_without_itself(root):
    ds = load(root, "sni")
    for qid, relevant in ds.qrels.items():
        meta = ds.metadata[qid]
        assert qid not in relevant
        assert ds.exclude[qid] == {qid}
        expected = {
            d
            for d, m in ds.doc_metadata.items()
            if d != qid and m["task"] == meta["task"] and m["label"] == meta["label"]
        }
        assert set(relevant) == expected


def test_sni_example_text_is_input_then_output(root):
    ds = load(root, "sni")
    assert ds.corpus["task085-page1-000"] == "1575 + 6566 + 3553 + 343 + 5125 - 6463 - 6491\n-1058"
    assert ds.queries["task085-page1-000"] == "1575 + 6566 + 3553 + 343 + 5125 - 6463 - 6491"


def test_sni_test_queries_search_the_train_bank(root):
    train, test = load(root, "sni", "train"), load(root, "sni", "test")
    assert test.corpus == train.corpus
    assert not set(test.queries) & set(test.corpus)
    tasks = {m["task"] for m in train.metadata.values()}
    assert {m["task"] for m in test.metadata.values()} == tasks


# Tiny Shakespeare ----------------------------------------------------------------------------


def test_tinyshakespeare_chunks_cover_the_text(root):
    ds = load(root, "tinyshakespeare", chunk_words=50)
    text = (root / "long_text" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    assert " ".join(ds.corpus.values()).split() == text.split()
    assert all(len(c.split()) == 50 for c in list(ds.corpus.values())[:-1])
    assert "\n" in ds.corpus["chunk-00000"]  # original layout kept


def test_tinyshakespeare_query_asks_for_the_previous_chunk(root):
    ds = load(root, "tinyshakespeare", n_queries=10)
    assert len(ds.queries) == 10
    for qid, text in ds.queries.items():
        i = ds.metadata[qid]["position"]
        assert i >= 2
        assert text == ds.corpus[f"chunk-{i:05d}"]
        assert ds.qrels[qid] == {f"chunk-{i - 1:05d}": 1}
        assert ds.candidate_ids(qid) == [f"chunk-{j:05d}" for j in range(i)]


def test_tinyshakespeare_test_is_the_end_of_the_text(root):
    train, test = load(root, "tinyshakespeare", "train"), load(root, "tinyshakespeare", "test")
    last_train = max(m["position"] for m in train.doc_metadata.values())
    assert min(m["position"] for m in test.doc_metadata.values()) == last_train + 1
    assert len(test.corpus) == pytest.approx(0.1 * (len(train.corpus) + len(test.corpus)), abs=1)


@pytest.mark.parametrize(("option", "value"), [("chunk_words", 0), ("n_queries", -3)])
def test_tinyshakespeare_bad_options(root, option, value):
    with pytest.raises(ValueError, match=f"`{option}` must be a positive int, got {value}"):
        load(root, "tinyshakespeare", **{option: value})


# API errors ----------------------------------------------------------------------------------


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'squad'; known datasets: xquad, gorilla"):
        load_dataset("squad")


def test_unknown_split(root):
    with pytest.raises(ValueError, match="`split` must be one of .* got 'dev'"):
        load_dataset("xquad", "dev", data_path=root)


def test_unknown_option_names_the_accepted_ones(root):
    with pytest.raises(ValueError, match=r"takes no option\(s\) \['levels'\]; .* \['level'\]"):
        load(root, "locomo", levels="turn")


def test_option_of_optionless_dataset(root):
    with pytest.raises(ValueError, match="its options are none"):
        load(root, "xquad", history=True)


def test_require_data_skips_without_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"set {ENV_VAR}"):
        require_data()


def test_require_data_fails_under_ci(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="missing under CI=true"):
        require_data()


def test_data_dir_explicit_path_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "/nonexistent")
    assert data_dir(tmp_path) == tmp_path


def test_data_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert data_dir() == tmp_path


def test_data_dir_default_is_beside_the_checkout(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    expected = Path(__file__).resolve().parents[2] / "shared" / "data"
    if expected.is_dir():
        assert data_dir() == expected
    else:
        with pytest.raises(FileNotFoundError, match=re.escape(str(expected))):
            data_dir()


def test_missing_data_dir_names_the_path_and_variable(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(ENV_VAR, str(missing))
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(missing))}.*{ENV_VAR}"):
        data_dir()


def test_missing_file_in_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="xquad.en.json.*README.txt"):
        load_dataset("xquad", data_path=tmp_path)


# The dataclass -------------------------------------------------------------------------------


def test_dataset_rejects_relevant_ids_outside_the_corpus():
    with pytest.raises(ValueError, match=r"not in `corpus`: \['d2'\]"):
        RetrievalDataset("toy", "qa", {"d1": "a"}, {"q": "x"}, {"q": {"d2": 1}})


def test_dataset_rejects_unknown_task():
    with pytest.raises(ValueError, match="`task` must be one of .* got 'search'"):
        RetrievalDataset("toy", "search", {}, {}, {})


def test_candidate_ids_apply_filter_and_exclude():
    ds = RetrievalDataset(
        "toy",
        "chat",
        corpus={"a/1": "x", "a/2": "y", "b/1": "z"},
        queries={"q": "?"},
        qrels={"q": {"a/2": 1}},
        metadata={"q": {"filter": {"conversation": "a"}}},
        exclude={"q": {"a/1"}},
        doc_metadata={
            "a/1": {"conversation": "a"},
            "a/2": {"conversation": "a"},
            "b/1": {"conversation": "b"},
        },
    )
    assert ds.candidate_ids("q") == ["a/2"]
    with pytest.raises(KeyError, match="'nope' is not a query"):
        ds.candidate_ids("nope")


def test_repr_is_short(root):
    assert repr(load(root, "xquad")) == (
        "RetrievalDataset(name='xquad', task='qa', split='all', 240 documents, 1190 queries)"
    )
