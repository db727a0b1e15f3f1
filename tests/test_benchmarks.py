"""The benchmark scripts' own measuring logic (benchmarks/ is not a package: loaded by path)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_single_queries_are_timed_one_system_at_a_time():
    # plumbing: the runs record the order they are called in (no model)
    speed = load("speed")
    calls = []
    runs = {name: (lambda q, name=name: calls.append((name, q))) for name in ("torch", "onnx")}
    questions = [f"q{i}" for i in range(8)]
    latencies = speed.query_latencies(questions, runs)
    assert {name: len(v) for name, v in latencies.items()} == {"torch": 16, "onnx": 16}
    order = [name for name, _ in calls]
    # each system answers its 5 warm-up and 8 timed questions in a row; the second round reversed
    assert order == ["torch"] * 13 + ["onnx"] * 26 + ["torch"] * 13
    assert [q for name, q in calls[:13]] == questions[:5] + questions


def _grouped_record(qid: str, task: str, source: str, group: str):
    from llm_embedder_integrations.training import TrainingRecord

    extra = {"group": group, "source": source}
    return TrainingRecord(query=qid, task=task, pos=[group], neg=["n"], query_id=qid, extra=extra)


def test_each_variant_trains_the_commands_config_with_its_own_changes(tmp_path, capsys):
    # plumbing: the parser and the configs, no run
    import dataclasses

    from llm_embedder_integrations.training import TrainConfig

    finetune = load("finetune")
    args = finetune.parse_args(["--workdir", str(tmp_path)])
    command = TrainConfig.from_yaml(finetune.CONFIG, show_progress=False)
    assert args.train_config == command
    selected = finetune.variant_config(args, args.train_config, "selected")
    moved = {"data", "sources", "output", "teacher_cache"}
    for field in dataclasses.fields(TrainConfig):
        if field.name not in moved:
            assert getattr(selected, field.name) == getattr(command, field.name), field.name
    assert selected.data == (str(tmp_path / "data" / "records.jsonl"),) and not selected.sources
    assert selected.output == str(tmp_path / "models" / "selected")
    assert selected.teacher_cache == str(tmp_path / "teacher-scores")  # shared by the variants
    one_step = finetune.variant_config(args, args.train_config, "one-step")
    assert one_step.teacher_cache == selected.teacher_cache and not one_step.step_per_task
    # --seed and the like, and any setting through --set, YAML-typed
    argv = ["--workdir", "w", "--seed", "7", "--set", "max_group_queries=null", "alphas=[0.5,1]"]
    changed = finetune.parse_args(argv).train_config
    assert changed.seed == 7 and changed.max_group_queries is None
    assert changed.alphas == (0.5, 1.0) and changed.teacher_queries == command.teacher_queries
    with pytest.raises(SystemExit):
        finetune.parse_args(["--workdir", "w", "--set", "dev_fractoin=0.3"])
    assert "unknown training setting(s) ['dev_fractoin']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        finetune.parse_args(["--workdir", "w", "--set", "seed"])
    assert "expected KEY=VALUE (a TrainConfig setting), got 'seed'" in capsys.readouterr().err


def test_the_benchmark_mines_the_records_the_command_mines_once(tmp_path, data_path):
    from llm_embedder_integrations.training import read_jsonl
    from llm_embedder_integrations.training.train import source_records

    finetune = load("finetune")
    quick = ["sources=[sni,gorilla_torchhub]", "source_queries=6", "source_docs=30"]
    args = finetune.parse_args(["--workdir", str(tmp_path), "--set", *quick])
    path = finetune.mined_records(args, args.train_config)
    command, _ = source_records(args.train_config)
    assert [r.to_dict() for r in read_jsonl(path)] == [r.to_dict() for r in command]
    mining = json.loads((tmp_path / "data" / "mining.json").read_text())["sources"]
    assert {n: (m["task"], m["records"]) for n, m in mining.items()} == {
        "sni": ("icl", 6),
        "gorilla_torchhub": ("tool", 6),
    }
    # reused as it is; refused, with the fix, for records mined with other settings
    stamp = path.stat().st_mtime_ns
    assert finetune.mined_records(args, args.train_config) == path
    assert path.stat().st_mtime_ns == stamp
    other = finetune.parse_args(["--workdir", str(tmp_path), "--set", *quick, "source_docs=40"])
    with pytest.raises(ValueError, match="was mined with .* give another --workdir"):
        finetune.mined_records(other, other.train_config)
    argv = ["--workdir", str(tmp_path), "--stage", "convert", "--set", *quick, "source_docs=40"]
    with pytest.raises(SystemExit, match="^finetune.py: .* give another --workdir"):
        finetune.main(argv)  # one line, no traceback


def test_the_training_speed_records_vary_in_length_and_carry_scores_where_distilled():
    speed = load("train_speed")
    records = speed.synthetic_records(6, group_size=3, max_length=64)
    assert [r.task for r in records] == ["qa"] * 6 + ["tool"] * 6
    assert all(len(r.teacher_scores) == 5 for r in records[:6])
    assert all(r.teacher_scores is None for r in records[6:])
    lengths = {len(key.split()) for r in records for key in r.neg}
    assert min(lengths) >= 16 and max(lengths) <= 64 and len(lengths) > 5


def test_a_training_speed_setting_times_the_steps_after_its_warm_up(tmp_path):
    # the real trainer and model, a few tiny steps on the CPU
    import argparse

    speed = load("train_speed")
    args = argparse.Namespace(
        model=speed.SHIPPED_MODEL,
        batch_size=2,
        group_size=2,
        max_length=24,
        warmup=2,
        steps=3,
        workers=None,
        device="cpu",
        profile=None,
        profile_steps=2,
    )
    records = speed.synthetic_records(8, args.group_size, args.max_length)
    result = speed.run_setting(speed.SETTINGS["fp32"], records, args, str(tmp_path))
    step = result["step_ms"] / 1e3
    assert 0 < result["collate_ms"] < result["step_ms"] <= result["slowest_step_ms"]
    # three timed steps of two queries: the rate is 2 queries over the mean step
    assert 2 / result["queries_per_second"] >= step * 0.5
    assert result["seconds"] > 5 * step * 0.5
    assert "| fp32 | " in speed.markdown([result])


def test_the_finetune_gains_table_shows_each_system_against_the_base():
    finetune = load("finetune")
    row = {
        "base": {"mrr@10": 0.5, "ndcg@10": 0.6},
        "bm25": {"mrr@10": 0.4, "ndcg@10": 0.5, "gain": [-0.1, 0.02]},
        "selected": {"mrr@10": 0.55, "ndcg@10": 0.6, "gain": [0.05, 0.012]},
    }
    text = finetune.gains_markdown({"qa: xquad": row, "icl: sni": row})
    lines = text.splitlines()
    assert lines[0] == "| task: dataset | (a) BM25 - (b) | (g) selected - (b) |"
    assert lines[2] == "| qa: xquad | -0.100 ± 0.020 | +0.050 ± 0.012 |"
    assert len(lines) == 4


def test_a_row_below_the_base_names_the_groups_that_carry_its_loss():
    finetune = load("finetune")
    # five articles: "a" loses two questions, "b" one, "c" gains one, the rest hold
    base = {f"{g}-{i}": 1.0 for g in "abcde" for i in range(4)}
    base["c-0"] = 0.5
    system = {**base, "a-0": 0.0, "a-1": 0.5, "b-0": 0.5, "c-0": 1.0}
    groups = {q: f"article {q[0]}" for q in base}
    split = finetune.split_by_group(system, base, groups, top=2)
    assert split["queries"] == 20
    assert (split["queries_lower"], split["queries_higher"]) == (3, 1)
    assert (split["groups"], split["lower"], split["higher"]) == (5, 2, 1)
    assert split["largest_losses"] == [["article a", -0.075, 4], ["article b", -0.025, 4]]
    per_query = finetune.split_by_group(system, base, None)
    assert (per_query["unit"], per_query["groups"]) == ("query", 20)
    gain = [sum(system[q] - base[q] for q in base) / 20, 0.04]
    table = {
        "qa: xquad": {"selected": {"mrr@10": 0.9, "gain": gain, "by_group": split}},
        "icl: sni": {"selected": {"mrr@10": 0.9, "gain": [0.01, 0.02], "by_group": per_query}},
    }
    lines = finetune.losses_markdown(table).splitlines()
    assert len(lines) == 3  # the row at or above the base is left out
    assert lines[2] == (
        "| qa: xquad | -0.075 ± 0.040 | 3 / 1 of 20 | 2 / 1 of 5 "
        "| article a -0.0750 (4), article b -0.0250 (4) |"
    )
    above = {"icl: sni": table["icl: sni"]}
    assert finetune.losses_markdown(above) == "(g) selected is at or above the base on every row."


def test_a_selected_model_without_instructions_is_not_taken_for_a_failed_load(tmp_path):
    # plumbing: the settings file alone, no model
    import json

    finetune = load("finetune")
    assert finetune.expects_instructions(tmp_path)  # a checkpoint: no selection settings
    choices = {"qa": {"instructions": False}, "chat": {"instructions": False}}
    (tmp_path / "llm_embedder.json").write_text(json.dumps({"tasks": choices}))
    assert not finetune.expects_instructions(tmp_path)
    choices["chat"]["instructions"] = True
    (tmp_path / "llm_embedder.json").write_text(json.dumps({"tasks": choices}))
    assert finetune.expects_instructions(tmp_path)


def test_reselection_recovers_the_fine_tuned_weights_from_an_interpolated_copy():
    # plumbing: tensors, no model
    import torch

    reselect = load("reselect")
    base = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    tuned = {"w": torch.tensor([3.0, -2.0]), "b": torch.tensor([1.0])}
    saved = {k: 0.75 * tuned[k] + 0.25 * base[k] for k in base}
    recovered = reselect.recover_tuned(base, saved, 0.75)
    assert all(torch.allclose(recovered[k], tuned[k]) for k in base)
    with pytest.raises(ValueError, match="a saved weight must be in"):
        reselect.recover_tuned(base, saved, 0.0)


def test_reselection_draws_an_old_runs_dev_groups_again_and_checks_them(tmp_path):
    # plumbing: records and settings, no model
    from llm_embedder_integrations.training import TrainConfig
    from llm_embedder_integrations.training.data import write_jsonl
    from llm_embedder_integrations.training.selection import dev_groups
    from llm_embedder_integrations.training.train import split_off_dev

    reselect = load("reselect")
    records = [_grouped_record(f"q{i}", "qa", "nq", f"page-{i // 3}") for i in range(60)]
    write_jsonl(records, tmp_path / "nq.jsonl")
    config = TrainConfig(data=(str(tmp_path / "nq.jsonl"),), dev_fraction=0.2, seed=3)
    expected = dev_groups(split_off_dev(config, records)[1])
    (name,) = expected
    assert len(set(expected[name].values())) > 1
    scored = {"0.00": {"plain": {name: dict.fromkeys(expected[name], 0.5)}}}
    summary = {"config": config.to_dict(), "selection": {"queries": scored}}
    assert reselect.run_groups(summary) == expected
    saved = {name: dict.fromkeys(expected[name], "one")}
    assert reselect.run_groups({**summary, "selection": {"groups": saved}}) == saved
    config = dataclasses.replace(config, dev_max_queries=6)  # a smaller split than the run's
    with pytest.raises(ValueError, match="does not hold the run's qa/nq queries"):
        reselect.run_groups({**summary, "config": config.to_dict()})


def test_xquad_articles_are_ranked_as_the_test_split_is_and_split_by_article():
    xquad_articles = load("xquad_articles")
    from llm_embedder_integrations.evaluation.datasets import load_dataset

    train = load_dataset("xquad", "train")  # the copy bundled with the package will do
    two = sorted({m["title"] for m in train.metadata.values()})[:2]
    ds = xquad_articles.articles(train, set(two), "train")
    assert {m["title"] for m in ds.doc_metadata.values()} == set(two)
    assert len(ds.corpus) == 10  # five paragraphs an article, every one of them
    assert all(set(ds.qrels[q]) <= ds.corpus.keys() for q in ds.queries)
    assert {ds.metadata[q]["title"] for q in ds.queries} == set(two)
    with pytest.raises(ValueError, match="records no groups for 'qa/xquad': re-run"):
        xquad_articles.dev_titles({"selection": {"groups": {}}})
    assert xquad_articles.dev_titles(
        {"selection": {"groups": {"qa/xquad": {"dev-0": "A", "dev-1": "B", "dev-2": "A"}}}}
    ) == {"A", "B"}
    # plumbing: made-up scores; "t1" loses a question, "d1" gains one
    scores = {
        "base": {"test": {"q1": 1.0, "q2": 1.0}, "dev": {"q3": 0.5, "q4": 1.0}, "trained": {}},
        "0.50": {"test": {"q1": 0.0, "q2": 1.0}, "dev": {"q3": 1.0, "q4": 1.0}, "trained": {}},
    }
    titles = {"test": {"q1": "t1", "q2": "t2"}, "dev": {"q3": "d1", "q4": "d2"}, "trained": {}}
    scores["base"]["trained"] = scores["0.50"]["trained"] = {"q5": 1.0, "q6": 0.5}
    titles["trained"] = {"q5": "r1", "q6": "r2"}
    text = xquad_articles.report({"qa": {"alpha": 0.5}, "scores": scores, "titles": titles})
    lines = text.splitlines()
    assert lines[0] == "| articles | questions | articles | base | alpha 0.50 - base |"
    assert lines[2].startswith("| test | 2 | 2 | 1.0000 | -0.5000 ± ")
    assert lines[5].startswith("| never trained (test + dev) | 4 | 4 | 0.8750 | -0.1250 ± ")
    assert "- test: t1 -0.5000 (1); 1 unchanged" in lines
    assert "- dev: d1 +0.2500 (1); 1 unchanged" in lines
    assert "- trained: none moves; 2 unchanged" in lines


def _tail_fact_dataset():
    from llm_embedder_integrations.evaluation.datasets import RetrievalDataset

    filler = " ".join(
        f"Step {i}: stir the pasta sauce slowly and add a pinch of salt." for i in range(22)
    )
    eiffel = (
        " The Eiffel Tower stands on the Champ de Mars in Paris. Gustave Eiffel's company built"
        " the Eiffel Tower for the World's Fair of 1889. The Eiffel Tower is the most visited"
        " tower in Paris."
    )
    corpus = {
        "recipe#0": filler + eiffel,
        "towers#0": "Big Ben is the clock tower of the Palace of Westminster in London.",
        "towers#1": "The Leaning Tower of Pisa is the bell tower of Pisa Cathedral in Italy.",
        "towers#2": "The CN Tower is a communications tower in Toronto, Canada.",
    }
    queries = {"q": "Where does the Eiffel Tower stand?", "r": "Which tower is in Toronto?"}
    qrels = {"q": {"recipe#0": 1}, "r": {"towers#2": 1}}
    return RetrievalDataset("xquad", "qa", corpus, queries, qrels, split="test")


def test_long_documents_ranks_a_long_document_by_its_best_passage(encoder):
    long_documents = load("long_documents")
    ds = _tail_fact_dataset()
    assert long_documents.cut_documents(encoder, ds) == (1, 5)  # the recipe, in two passages
    truncated = long_documents.per_query_mrr(encoder, ds, passages=False)
    passages = long_documents.per_query_mrr(encoder, ds, passages=True)
    # the fact lies beyond the first 256 tokens: cut off whole, found in its own passage
    assert truncated["q"] < 1.0 and passages["q"] == 1.0
    assert truncated["r"] == passages["r"] == 1.0
    filtered = dataclasses.replace(ds, metadata={"q": {"filter": {"title": "recipe"}}})
    with pytest.raises(ValueError, match="filter or exclusions are not supported"):
        long_documents.per_query_mrr(encoder, filtered, passages=True)


def test_long_documents_report_gives_both_ways_and_the_paired_difference():
    # plumbing: made-up per-query scores
    long_documents = load("long_documents")
    scores = {
        "base": {"truncated": {"q": 1.0, "r": 1.0}, "passages": {"q": 1.0, "r": 1.0}},
        "saved": {"truncated": {"q": 0.5, "r": 1.0}, "passages": {"q": 1.0, "r": 1.0}},
    }
    rows = {"qa: xquad": {"documents": 4, "cut": 1, "passages": 5, "scores": scores}}
    lines = long_documents.report(rows).splitlines()
    assert lines[0].startswith("| task: dataset | documents cut (passages) | base: truncated |")
    assert lines[0].endswith("| saved - base: truncated | saved - base: passages |")
    assert lines[2].startswith("| qa: xquad | 1 of 4 (5) | 1.0000 | 1.0000 | 0.7500 | 1.0000 |")
    assert " -0.2500 ± " in lines[2] and lines[2].endswith("| +0.0000 ± 0.0000 |")
