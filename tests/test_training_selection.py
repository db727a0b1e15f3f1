"""Model selection: dev split, dev scores, interpolation, teacher checks, a selecting run.

The run trains too hard on purpose, selects per task, and saves a model that the encoder
loads per task.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter

import numpy as np
import pytest
import torch

from llm_embedder_integrations import SHIPPED_MODEL, LLMEmbedder
from llm_embedder_integrations.evaluation.datasets import load_dataset
from llm_embedder_integrations.evaluation.metrics import evaluate_rankings
from llm_embedder_integrations.instructions import TASKS, prompt_name, prompts_for
from llm_embedder_integrations.training import TrainConfig, train
from llm_embedder_integrations.training.data import TrainingRecord, mine_records, write_jsonl
from llm_embedder_integrations.training.selection import (
    DevCallback,
    cap_per_group,
    choose_per_task,
    dev_datasets,
    dev_groups,
    dev_query_scores,
    dev_scores,
    held_out_dev,
    interpolate,
    select_per_task,
    split_dev,
    teacher_quality,
)
from llm_embedder_integrations.training.train import (
    _examples_per_task,
    _load_base,
    _load_model,
    build_trainer,
    distillation_plan,
    read_records,
    teacher_scored,
)


def record(query: str, group: str, task: str = "qa", n: int = 0, **extra) -> TrainingRecord:
    return TrainingRecord(
        query=query,
        task=task,
        pos=[f"positive of {query}"],
        neg=[f"negative {i} of {query}" for i in range(2)],
        pos_ids=[f"{query}-p"],
        neg_ids=[f"{query}-n{i}" for i in range(2)],
        extra={"group": group, **extra},
    )


def test_dev_split_keeps_groups_whole_within_the_share_and_is_seeded():
    records = [record(f"q{i}", f"g{i // 3}") for i in range(30)]  # 10 groups of 3
    train_part, dev = split_dev(records, fraction=0.2, seed=1)
    assert len(dev) == 6 and len(train_part) == 24
    dev_groups = {r.extra["group"] for r in dev}
    assert not dev_groups & {r.extra["group"] for r in train_part}
    assert split_dev(records, fraction=0.2, seed=1)[1] == dev
    assert split_dev(records, fraction=0.2, seed=2)[1] != dev
    assert len(split_dev(records, fraction=0.4, max_queries=4)[1]) == 3  # capped, whole groups


def test_dev_split_leaves_a_task_with_one_group_in_training():
    records = [record(f"q{i}", "only") for i in range(10)]
    assert split_dev(records, fraction=0.3) == (records, [])
    with pytest.raises(ValueError, match="`fraction` must be a number > 0 and < 1, got 1.5"):
        split_dev(records, fraction=1.5)


def test_dev_split_is_drawn_from_every_source_of_a_task():
    # one task, two sources of unequal size: a split per task could miss the small one
    big = [record(f"b{i}", f"b{i}", source="big") for i in range(200)]
    small = [record(f"s{i}", f"s{i}", source="small") for i in range(30)]
    _, dev = split_dev([*big, *small], fraction=0.1, max_queries=100)
    assert Counter(r.extra["source"] for r in dev) == {"big": 20, "small": 3}
    # min_queries lifts a small source's share where it has three times as many records
    _, dev = split_dev([*big, *small], fraction=0.1, max_queries=100, min_queries=10)
    assert Counter(r.extra["source"] for r in dev) == {"big": 20, "small": 10}
    _, dev = split_dev([*big, *small], fraction=0.1, max_queries=100, min_queries=11)
    assert Counter(r.extra["source"] for r in dev) == {"big": 20, "small": 3}
    # a source with a dev set of its own is not split
    train_part, dev = split_dev([*big, *small], fraction=0.1, exclude={("qa", "small")})
    assert {r.extra["source"] for r in dev} == {"big"} and len(train_part) == 230 - 20
    # groups too large for the budget (long dialogues): the smallest whole one, up to a third
    dialogues = [record(f"d{i}", f"conv{i % 4}", source="locomo") for i in range(100)]
    _, dev = split_dev(dialogues, fraction=0.1, min_queries=20)
    assert len(dev) == 25 and len({r.extra["group"] for r in dev}) == 1
    assert split_dev(dialogues, fraction=0.1)[1] == []  # without a floor: none
    # the smallest dialogue is taken whatever place the seed shuffles it to
    sizes = {"conv0": 40, "conv1": 35, "conv2": 30, "conv3": 25}
    uneven = [record(f"{g}-{i}", g, source="locomo") for g, n in sizes.items() for i in range(n)]
    for seed in range(12):  # seed 11 shuffles it last
        _, dev = split_dev(uneven, fraction=0.1, min_queries=20, seed=seed)
        assert {r.extra["group"] for r in dev} == {"conv3"}, seed
    with pytest.raises(ValueError, match="`min_queries` must be a positive int or None"):
        split_dev(big, min_queries=0)


def test_held_out_dev_drops_groups_seen_in_training_and_caps_each_source():
    training = [record("t0", "page-a", source="nq"), record("t1", "page-b", source="nq")]
    given = [record(f"d{i}", f"page-{c}", source="nq") for i, c in enumerate("abcdefgh")]
    kept = held_out_dev(given, training, max_queries=4)
    assert len(kept) == 4 and not {r.extra["group"] for r in kept} & {"page-a", "page-b"}
    assert kept == held_out_dev(given, training, max_queries=4)  # seeded
    other_task = [record("x", "page-a", task="tool", source="nq")]  # same group, other task
    assert held_out_dev(other_task, training) == other_task


def test_training_keys_of_the_same_source_join_the_dev_pool_as_distractors():
    dev = [record("a", "g1", source="nq", relevant_ids=["a-p", "t1-p"])]
    training = [record(f"t{i}", f"h{i}", source="nq") for i in range(5)]
    other = [record("x", "h9", source="xquad")]
    (ds,) = dev_datasets(dev, [*training, *other], max_distractors=4).values()
    assert len(ds.corpus) == 3 + 4  # its own 3 keys, 4 of the 15 training keys
    assert not any(k.startswith("x-") for k in ds.corpus)  # another source's keys stay out
    assert dev_datasets(dev, [*training, *other], max_distractors=4)["qa/nq"].corpus == ds.corpus
    # a training key that is relevant to the dev query counts as relevant when it is pooled
    (full,) = dev_datasets(dev, training, max_distractors=100).values()
    assert len(full.corpus) == 18 and full.qrels["dev-0"] == {"a-p": 1, "t1-p": 1}


def test_dev_sets_bar_what_the_test_split_bars(encoder, data_path):
    # An ICL example is not its own demonstration: in a pool of the records' keys, a dev
    # query's own line (another record's positive) must not outrank its real demonstrations.
    ds = load_dataset("sni", "train", data_path=data_path)
    records, _ = mine_records(ds, encoder, negatives=3, max_positives=1, max_queries=60)
    dev, training = records[:20], records[20:]
    (dev_set,) = dev_datasets(dev, training).values()
    pooled_selves = [
        qid for qid, r in zip(dev_set.queries, dev, strict=True) if r.query_id in dev_set.corpus
    ]
    assert pooled_selves and all(
        dev[int(qid.split("-")[1])].query_id in dev_set.exclude[qid] for qid in pooled_selves
    )

    def encode(texts, task, side):
        return encoder.encode(texts, what=side + "s")

    scores = dev_query_scores(encode, {"sni": dev_set})["sni"]
    # the reference: each query ranked over the documents it may retrieve
    docs = list(dev_set.corpus)
    keys = dict(zip(docs, encode([dev_set.corpus[d] for d in docs], "icl", "key"), strict=True))
    run = {}
    for qid, text in dev_set.queries.items():
        allowed = dev_set.candidate_ids(qid)
        q = encode([text], "icl", "query")[0]
        run[qid] = sorted(allowed, key=lambda d: -float(keys[d] @ q))[:10]
    _, expected = evaluate_rankings(run, dev_set.qrels, ks=(10,), per_query=True)
    assert scores == pytest.approx({qid: v["mrr@10"] for qid, v in expected.items()})


def test_dev_sets_are_scored_per_source_with_their_tasks_instructions():
    records = [
        record("a", "g1", task="tool", source="torchhub"),
        record("b", "g2", task="tool", source="tensorflow"),
        record("c", "g3", task="qa"),
    ]
    sets = dev_datasets(records)
    assert sorted(sets) == ["qa", "tool/tensorflow", "tool/torchhub"]
    assert {ds.task for ds in sets.values()} == {"qa", "tool"}
    seen = []

    def encode(texts, task, side):  # plumbing: records which task each set is encoded for
        seen.append(task)
        return np.ones((len(texts), 2), dtype=np.float32) / np.sqrt(2)

    assert sorted(dev_scores(encode, sets)) == sorted(sets)
    assert sorted(set(seen)) == ["qa", "tool"]


def test_choice_never_trades_a_loss_on_one_source_for_a_gain_on_another():
    # plumbing of the choice rule on hand-made dev scores (no model)
    tasks = {"tool/torchhub": "tool", "tool/tensorflow": "tool", "qa": "qa"}

    def cell(torchhub, tensorflow, qa):
        return {"tool/torchhub": torchhub, "tool/tensorflow": tensorflow, "qa": qa}

    grid = {
        0.0: {"plain": cell(0.30, 0.40, 0.80), "instructions": cell(0.29, 0.41, 0.79)},
        0.5: {"plain": cell(0.36, 0.41, 0.80), "instructions": cell(0.50, 0.39, 0.82)},
        1.0: {"plain": cell(0.45, 0.35, 0.78), "instructions": cell(0.60, 0.30, 0.85)},
    }
    choices = choose_per_task(grid, tasks)
    # the best tool mean (alpha 1 with instructions: 0.45) loses on tensorflow: not taken
    tool = choices["tool"]
    assert (tool.alpha, tool.instructions) == (0.5, False)
    assert tool.dev == pytest.approx((0.36 + 0.41) / 2)
    assert tool.sources["tool/tensorflow"] == {"dev": 0.41, "base_dev": 0.40, "tuned_dev": 0.30}
    assert tool.tuned_dev == pytest.approx(0.45) and tool.base_dev == pytest.approx(0.35)
    assert (choices["qa"].alpha, choices["qa"].instructions) == (1.0, True)
    # a tie keeps the base: smaller alpha, then no instructions
    flat = {a: {m: cell(0.3, 0.4, 0.8) for m in ("plain", "instructions")} for a in (0.0, 1.0)}
    assert {(c.alpha, c.instructions) for c in choose_per_task(flat, tasks).values()} == {
        (0.0, False)
    }
    with pytest.raises(ValueError, match="must hold alpha 0"):
        choose_per_task({1.0: grid[1.0]}, tasks)


def rule_grids(shifts):
    """Per-query and mean grids from ``{alpha: {mode: {set: per-query shift from the base}}}``."""
    base = {"qa": [1.0, 0.5, 0.0, 0.2] * 5, "tool/a": [0.5] * 20, "tool/b": [0.25] * 20}
    queries = {
        a: {
            mode: {
                n: {f"{n}-{i}": x + d for i, (x, d) in enumerate(zip(base[n], deltas, strict=True))}
                for n, deltas in sets.items()
            }
            for mode, sets in modes.items()
        }
        for a, modes in shifts.items()
    }
    grid = {
        a: {
            m: {n: float(np.mean(list(v.values()))) for n, v in sets.items()}
            for m, sets in modes.items()
        }
        for a, modes in queries.items()
    }
    return grid, queries


def test_a_gain_within_the_dev_noise_keeps_the_simpler_choice():
    # plumbing of the one-standard-error rule on hand-made per-query scores (no model)
    tasks = {"qa": "qa", "tool/a": "tool", "tool/b": "tool"}
    same = {"qa": [0.0] * 20, "tool/a": [0.0] * 20, "tool/b": [0.0] * 20}
    # qa at alpha 1: +0.5 on 4 queries, -0.1 on 16: a mean gain of 0.02 with an SE of 0.055
    noisy_qa = [0.5 if i % 5 == 0 else -0.1 for i in range(20)]
    # tool at alpha 0.5: +0.1 on every query; at alpha 1 with instructions +0.11 on average
    steady = {**same, "tool/a": [0.1] * 20, "tool/b": [0.1] * 20}
    exact = {**same, "tool/a": [0.16] * 20, "tool/b": [0.06] * 20}
    noisy = {**same, "tool/a": [0.36, -0.04] * 10, "tool/b": [0.06] * 20}

    def shifts(top):
        return {
            0.0: {"plain": same, "instructions": same},
            0.5: {"plain": steady, "instructions": steady},
            1.0: {"plain": {**same, "qa": noisy_qa}, "instructions": top},
        }

    grid, queries = rule_grids(shifts(exact))
    loose = choose_per_task(grid, tasks)  # the means alone: every gain is taken
    assert (loose["qa"].alpha, loose["qa"].instructions) == (1.0, False)
    assert (loose["tool"].alpha, loose["tool"].instructions) == (1.0, True)
    choices = choose_per_task(grid, tasks, queries=queries, se=1.0)
    qa = choices["qa"]  # +0.02 is within one SE of the base: the base model stays
    assert (qa.alpha, qa.instructions) == (0.0, False)
    assert qa.dev == pytest.approx(qa.base_dev) and qa.best_dev == pytest.approx(loose["qa"].dev)
    assert qa.gap_se == pytest.approx(0.055, abs=0.001)
    # alpha 0.5 trails alpha 1 by 0.01 on every single query: a real gap, alpha 1 stays
    tool = choices["tool"]
    assert (tool.alpha, tool.instructions, tool.gap_se) == (1.0, True, 0.0)
    assert choose_per_task(grid, tasks, queries=queries, se=5.0)["tool"].alpha == 1.0
    # the same mean gap made of +0.2 and -0.2 per query is noise: the simpler alpha 0.5 is taken
    grid, queries = rule_grids(shifts(noisy))
    tool = choose_per_task(grid, tasks, queries=queries)["tool"]
    assert (tool.alpha, tool.instructions) == (0.5, False) and tool.gap_se > 0.01
    # se=0 is the means-only rule
    assert choose_per_task(grid, tasks, queries=queries, se=0)["tool"].alpha == 1.0
    with pytest.raises(ValueError, match="`se` must be a number >= 0"):
        choose_per_task(grid, tasks, queries=queries, se=-1)


def test_a_dev_gain_carried_by_one_group_keeps_the_base():
    # plumbing of the rule on hand-made per-query scores (no model): qa's 20 dev queries come
    # from 4 articles; at alpha 1 one article gains 0.4 on each of its 5 queries, the others
    # lose 0.02 on average. Per query that gain is 2 errors clear; over 4 articles it is noise.
    tasks = {"qa": "qa", "tool/a": "tool", "tool/b": "tool"}
    same = {"qa": [0.0] * 20, "tool/a": [0.0] * 20, "tool/b": [0.0] * 20}
    one_article = [0.4 if i < 5 else (-0.01 if i % 2 else -0.03) for i in range(20)]
    grid, queries = rule_grids(
        {
            0.0: {"plain": same, "instructions": same},
            1.0: {"plain": {**same, "qa": one_article}, "instructions": same},
        }
    )
    groups = {"qa": {f"qa-{i}": f"article-{i // 5}" for i in range(20)}}
    per_query = choose_per_task(grid, tasks, queries=queries)["qa"]
    assert per_query.alpha == 1.0
    grouped = choose_per_task(grid, tasks, queries=queries, groups=groups)["qa"]
    assert (grouped.alpha, grouped.instructions) == (0.0, False)
    assert grouped.gap_se > 2 * per_query_error(one_article)
    # spread over the four articles, the same gains hold: alpha 1 stays
    spread = {"qa": {f"qa-{i}": f"article-{i % 4}" for i in range(20)}}
    assert choose_per_task(grid, tasks, queries=queries, groups=spread)["qa"].alpha == 1.0


def per_query_error(deltas: list[float]) -> float:
    return float(np.std(deltas, ddof=1) / np.sqrt(len(deltas)))


def test_dev_queries_carry_their_group():
    dev = [record("a", "g1", source="nq"), record("b", "g2", source="nq"), record("c", "g1")]
    sets = dev_datasets(dev)
    assert {n: {q: m["group"] for q, m in ds.metadata.items()} for n, ds in sets.items()} == {
        "qa/nq": {"dev-0": "g1", "dev-1": "g2"},
        "qa": {"dev-2": "g1"},
    }
    assert dev_groups(dev) == {"qa/nq": {"dev-0": "g1", "dev-1": "g2"}, "qa": {"dev-2": "g1"}}


def one_step_config(tmp_path, **changes) -> TrainConfig:
    """A contrastive run of one step on the CPU, to set up a trainer and look at its data."""
    settings = {
        "output": str(tmp_path / "out"),
        "model": SHIPPED_MODEL,
        "distillation": False,
        "batch_size": 4,
        "group_size": 3,
        "max_steps": 1,
        "device": "cpu",
        "show_progress": False,
    }
    return TrainConfig(**{**settings, **changes})


def test_trainer_tags_sources_by_file_and_takes_a_given_dev_split(tmp_path):
    train_file, dev_file = tmp_path / "nq.scored.jsonl", tmp_path / "nq.dev.jsonl"
    write_jsonl([record(f"t{i}", f"page-{i}") for i in range(30)], train_file)
    write_jsonl([record(f"d{i}", f"page-{i + 25}") for i in range(20)], dev_file)
    assert {r.extra["source"] for r in read_records(train_file)} == {"nq"}
    config = one_step_config(tmp_path, data=(str(train_file),), dev_data=(str(dev_file),))
    trainer = build_trainer(config)
    # the given dev records of pages 25-29 are trained on: dropped; nq is not split again
    assert sorted(r.query for r in trainer.dev_records) == sorted(f"d{i}" for i in range(5, 20))
    assert _examples_per_task(trainer.train_dataset) == {"qa": 30}
    # 15 dev queries x 3 keys, and at most `dev_distractors` of the 90 training keys
    (pool,) = trainer.dev_callback.datasets.values()
    assert len(pool.corpus) == 45 + 90
    config.dev_distractors = 5
    (pool,) = build_trainer(config).dev_callback.datasets.values()
    assert len(pool.corpus) == 45 + 5
    with pytest.raises(ValueError, match="dev_distractors"):
        TrainConfig(dev_distractors=-1)


def test_group_cap_spreads_over_each_group_of_the_capped_tasks():
    records = [record(f"a{i}", "api-a", task="tool", source="tf") for i in range(5)]
    records += [record(f"b{i}", "api-b", task="tool", source="tf") for i in range(2)]
    records += [record(f"c{i}", "api-a", task="tool", source="torch") for i in range(3)]
    records += [record(f"q{i}", "page", task="qa") for i in range(4)]
    kept = [r.query for r in cap_per_group(records, {"tool": 2})]
    # a group is counted per source; the kept records span the group; qa is not capped
    assert kept == ["a0", "a4", "b0", "b1", "c0", "c2", "q0", "q1", "q2", "q3"]
    assert cap_per_group(records, {}) == records


def test_trainer_caps_groups_after_drawing_the_dev_split(tmp_path):
    # 10 APIs of 8 queries: the dev split takes whole APIs from all 80, then training keeps 3 each
    records = [record(f"t{i}", f"api-{i // 8}", task="tool", source="tf") for i in range(80)]
    config = one_step_config(tmp_path, dev_fraction=0.2)
    uncapped = build_trainer(config, records)
    config.max_group_queries = {"tool": 3}
    capped = build_trainer(config, records)
    assert [r.query for r in capped.dev_records] == [r.query for r in uncapped.dev_records]
    assert len(capped.dev_records) == 16
    assert _examples_per_task(capped.train_dataset) == {"tool": 8 * 3}
    assert _examples_per_task(uncapped.train_dataset) == {"tool": 64}


def lookup_encoder(vectors: dict[str, list[float]]):
    """A fixed text -> vector table: a plumbing test of the ranking, not of a model."""

    def encode(texts, task, side):
        rows = np.array([vectors[t] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    return encode


def test_dev_scores_rank_each_query_against_every_pooled_key():
    records = [record("a", "g1"), record("b", "g2", relevant_ids=["a-p"])]
    (ds,) = dev_datasets(records).values()
    assert len(ds.corpus) == 6 and ds.qrels["dev-1"] == {"a-p": 1, "b-p": 1}
    vectors = {t: [1.0, float(i)] for i, t in enumerate(ds.corpus.values())}
    vectors.update({"a": [0.0, 1.0], "b": [1.0, 0.0]})
    scores = dev_scores(lookup_encoder(vectors), {"qa": ds})
    q = np.array([[0.0, 1.0], [1.0, 0.0]])
    keys = np.array([vectors[t] for t in ds.corpus.values()])
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    ids = list(ds.corpus)
    run = {
        qid: [ids[j] for j in np.argsort(-(keys @ q[r]), kind="stable")]
        for r, qid in enumerate(ds.queries)
    }
    assert scores["qa"] == pytest.approx(evaluate_rankings(run, ds.qrels, ks=(10,))["mrr@10"])


def test_interpolation_is_the_weighted_mean_of_floats_and_checks_its_inputs():
    base = {"w": torch.zeros(3), "step": torch.tensor([7])}
    tuned = {"w": torch.tensor([2.0, 4.0, 6.0]), "step": torch.tensor([9])}
    mixed = interpolate(base, tuned, 0.25)
    assert mixed["w"].tolist() == [0.5, 1.0, 1.5] and mixed["step"].tolist() == [9]
    assert interpolate(base, tuned, 0)["w"].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="`alpha` must be a number in \\[0, 1\\], got 2"):
        interpolate(base, tuned, 2)
    with pytest.raises(ValueError, match="differ in their tensors"):
        interpolate({"v": torch.zeros(1)}, tuned, 0.5)


def test_teacher_quality_counts_top1_hits_of_teacher_and_student():
    good = TrainingRecord(
        query="q1", task="qa", pos=["p1"], neg=["n1"], teacher_scores=[-1.0, -3.0]
    )
    bad = TrainingRecord(query="q2", task="qa", pos=["p2"], neg=["n2"], teacher_scores=[-3.0, -1.0])
    vectors = {"q1": [1, 0], "p1": [1, 0], "n1": [0, 1], "q2": [1, 0], "p2": [1, 0], "n2": [0, 1]}
    quality = teacher_quality([good, bad], lookup_encoder(vectors))["qa"]
    assert (quality.records, quality.teacher, quality.student) == (2, 0.5, 1.0)
    assert not quality.teacher_wins


def test_distillation_falls_back_to_contrastive_where_the_teacher_is_no_better(caplog):
    model = _load_model(TrainConfig(model=SHIPPED_MODEL), "cpu")
    texts = [
        (
            "who wrote Hamlet?",
            "Hamlet is a tragedy by William Shakespeare.",
            "Bread is baked from flour and water.",
        )
    ] * 3
    worse = [  # the teacher prefers the wrong key; the base model gets it right
        TrainingRecord(query=q, task="qa", pos=[p], neg=[n], teacher_scores=[-5.0, -1.0])
        for q, p, n in texts
    ]
    better = [dataclasses_replace(r, task="icl", teacher_scores=[-1.0, -5.0]) for r in worse]
    unscored = [TrainingRecord(query="q", task="chat", pos=["a"], neg=["b"])]
    with caplog.at_level(logging.INFO):
        plan, quality = distillation_plan(
            TrainConfig(model=SHIPPED_MODEL), [*worse, *better, *unscored], model
        )
    assert plan == {"qa": False, "icl": False, "chat": False}
    assert quality["qa"].teacher == 0.0 and quality["qa"].student == 1.0
    assert "contrastive loss (the teacher is no better)" in caplog.text
    assert "chat: contrastive loss (no record has teacher scores)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        plan, _ = distillation_plan(TrainConfig(model=SHIPPED_MODEL), [*better, *unscored], model)
    assert plan == {"icl": False, "chat": False}
    flipped = [dataclasses_replace(r, task="chat", teacher_scores=[-1.0, -5.0]) for r in worse]
    tricky = [  # the base model prefers the wrong key; the teacher gets it right
        dataclasses_replace(r, pos=[r.neg[0]], neg=[r.pos[0]]) for r in flipped
    ]
    with caplog.at_level(logging.INFO):
        plan, _ = distillation_plan(TrainConfig(model=SHIPPED_MODEL), [*tricky, *unscored], model)
    assert plan == {"chat": True}
    assert "chat: 1 of 4 records have no teacher scores: they train with the contrastive" in (
        caplog.text
    )
    assert distillation_plan(TrainConfig(distillation=True), worse, model)[0] == {"qa": True}


def qa_record(i: int, source: str, task: str = "qa", answers=("William Shakespeare",)):
    return TrainingRecord(
        query=f"who wrote Hamlet? ({i})",
        task=task,
        pos=["Hamlet is a tragedy written by William Shakespeare around 1600."],
        neg=[f"Bread number {i} is baked from flour, water and yeast."],
        answers=list(answers) if answers else None,
        query_id=f"{source}-{i}",
        extra={"group": f"page-{i}", "source": source},
    )


def test_the_teacher_scores_a_spread_of_each_distilled_source_once(tmp_path, monkeypatch, caplog):
    nq = [qa_record(i, "nq") for i in range(5)]
    unanswered = qa_record(9, "nq", answers=None)
    tools = [qa_record(i, "th", task="tool") for i in range(3)]  # tool is not distilled
    given = dataclasses_replace(qa_record(7, "nq"), teacher_scores=[0.0, -1.0])
    records = [*nq, unanswered, *tools, given]
    config = one_step_config(tmp_path, teacher_queries=2, distillation="auto")
    with caplog.at_level(logging.INFO):
        out = teacher_scored(config, records)
    scored = [r for r in out if r.teacher_scores is not None and r is not given]
    # the first and last of the five answered, unscored nq records; nothing else changes
    assert [r.query_id for r in scored] == ["nq-0", "nq-4"]
    for r in scored:  # the real SmolLM2's rewards: the Hamlet paragraph explains the answer
        assert len(r.teacher_scores) == 2 and r.teacher_scores[0] > r.teacher_scores[1]
    assert [r for r in out if r not in scored] == [nq[1], nq[2], nq[3], unanswered, *tools, given]
    cache = tmp_path / "out" / "teacher-scores" / "smollm2-135m-instruct" / "nq.jsonl"
    assert [json.loads(line)["query_id"] for line in cache.read_text().splitlines()] == [
        "nq-0",
        "nq-4",
    ]
    assert "teacher scores of nq: 2 records (0 kept)" in caplog.text
    # the teacher's weights are let go before training starts (other LLMs stay loaded)
    from llm_embedder_integrations import _cpu, llm

    gguf = llm.smollm2_gguf_path()
    dtype = torch.bfloat16 if _cpu.teacher_dtype("cpu") == "bf16" else torch.float32
    assert (str(gguf.parent), gguf.name, "cpu", dtype) not in llm._loaded

    # a rerun takes the kept scores without loading the teacher; a changed record is scored again
    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was loaded although every score was kept")

    monkeypatch.setattr("llm_embedder_integrations.llm.LocalLLM", no_teacher)
    again = teacher_scored(config, records)
    assert [r.teacher_scores for r in again] == [r.teacher_scores for r in out]
    # so does a run with another output that shares the cache (`teacher_cache`)
    shared = dataclasses.replace(
        config, output=str(tmp_path / "other"), teacher_cache=str(cache.parents[1])
    )
    assert [r.teacher_scores for r in teacher_scored(shared, records)] == [
        r.teacher_scores for r in out
    ]
    changed = [dataclasses_replace(nq[0], neg=["Another negative."]), *nq[1:]]
    with pytest.raises(AssertionError, match="the teacher was loaded"):
        teacher_scored(config, changed)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="1 records of nq are left .* without torchrun"):
        teacher_scored(config, changed)
    assert teacher_scored(config, records)[0].teacher_scores == out[0].teacher_scores
    # a teacher that cannot be loaded is named, with the fix
    monkeypatch.undo()
    empty = tmp_path / "empty-lm"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty-lm': the teacher could not be loaded"):
        teacher_scored(dataclasses.replace(config, llm=str(empty)), records)
    # off unless asked for, and off for a contrastive run
    assert teacher_scored(one_step_config(tmp_path, distillation="auto"), records) == records
    assert teacher_scored(dataclasses.replace(config, distillation=False), records) == records


def test_the_trainer_measures_the_teacher_on_the_records_it_scored(tmp_path):
    records = [qa_record(i, "nq") for i in range(12)]
    config = one_step_config(tmp_path, teacher_queries=3, distillation="auto", dev_fraction=0)
    trainer = build_trainer(config, records)
    assert trainer.teacher_quality["qa"].records == 3
    assert trainer.teacher_seconds > 0 and trainer.mining == {}  # records given: nothing mined
    assert sum(1 for _ in (tmp_path / "out" / "teacher-scores").rglob("*.jsonl")) == 1


def test_teacher_settings_are_checked_and_reach_the_command_line():
    from llm_embedder_integrations.cli import _train_config, build_parser

    with pytest.raises(ValueError, match="teacher_queries"):
        TrainConfig(teacher_queries=-1)
    with pytest.raises(ValueError, match="`llm` must be a causal LM"):
        TrainConfig(llm=" ")
    with pytest.raises(ValueError, match="`teacher_dtype` must be 'fp32', 'bf16' or null"):
        TrainConfig(teacher_dtype="fp16")
    # a teacher folder that is not there fails before any mining, naming the fix
    from llm_embedder_integrations.cli import main

    argv = ["train", "--sources", "sni", "--teacher-queries", "5", "--llm", "/no/such/lm"]
    with pytest.raises(SystemExit, match=r"`llm` '/no/such/lm': .*folder holding its config"):
        main(argv)
    argv = ["train", "--sources", "sni", "--teacher-queries", "50", "--llm", "org/lm"]
    config = _train_config(build_parser().parse_args([*argv, "--teacher-dtype", "fp32"]))
    assert (config.teacher_queries, config.llm, config.teacher_dtype) == (50, "org/lm", "fp32")


def dataclasses_replace(r: TrainingRecord, **changes) -> TrainingRecord:
    import dataclasses

    return dataclasses.replace(r, **changes)


# A whole run -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def selected_run(tmp_path_factory, encoder, data_path):
    """A short run whose learning rate is far too high: fine-tuning must hurt, and the
    selection must then fall back to the base model on the dev split."""
    records = []
    for name in ("xquad", "gorilla_torchhub"):
        ds = load_dataset(name, "train", data_path=data_path)
        found, _ = mine_records(ds, encoder, negatives=3, max_queries=120)
        records += found  # grouped by their positive: a paragraph, an API doc
    folder = tmp_path_factory.mktemp("selected")
    config = TrainConfig(
        output=str(folder / "model"),
        model=SHIPPED_MODEL,
        batch_size=8,
        group_size=4,
        max_length=48,
        lr=3e-3,
        warmup_ratio=0.0,
        max_steps=6,
        eval_steps=3,
        save_steps=100,
        dev_fraction=0.25,
        dev_max_queries=24,
        alphas=(0.5, 1.0),
        device="cpu",
        show_progress=False,
    )
    return config, train(config, records)


def test_run_logs_a_dev_curve_and_keeps_the_best_step(selected_run):
    _, result = selected_run
    curve = result.summary["dev_curve"]
    assert [entry["step"] for entry in curve] == [3, 6]
    best = max(curve, key=lambda e: e["dev_mrr@10"])
    assert result.summary["best_step"] == best["step"]
    dev = result.summary["dev_queries"]
    assert set(dev) == {"qa/xquad", "tool/gorilla_torchhub"}
    assert all(0 < n <= 24 for n in dev.values())
    assert any("dev_mrr@10" in entry for entry in result.log_history)
    groups = result.summary["selection"]["groups"]
    assert set(groups) == set(dev) and all(len(groups[n]) == dev[n] for n in dev)
    for task, name in (("qa", "qa/xquad"), ("tool", "tool/gorilla_torchhub")):
        peak = max(curve, key=lambda e, name=name: (e[f"dev_mrr@10/{name}"], -e["step"]))
        assert result.summary["task_best_steps"][task] == peak["step"]
        step = result.summary["task_steps"][task]
        assert step in (peak["step"], result.summary["best_step"])
        choice = result.summary["selection"]["tasks"][task]
        assert choice["step"] == (None if choice["alpha"] == 0 else step)


def test_the_grid_takes_each_tasks_step_dev_scores_as_alpha_one(selected_run):
    _, result = selected_run
    curve = {e["step"]: e for e in result.summary["dev_curve"]}
    steps = result.summary["task_steps"]
    selection = result.summary["selection"]
    cell = selection["grid"]["1.00"]["instructions"]
    expected = {n: curve[steps[n.split("/")[0]]][f"dev_mrr@10/{n}"] for n in cell}
    assert cell == pytest.approx(expected)
    # the per-query grid is in the summary, so the rule can be re-run on it
    queries = selection["queries"]["1.00"]["instructions"]
    assert {n: np.mean(list(v.values())) for n, v in queries.items()} == pytest.approx(cell)


class CountingModel:
    """Plumbing stand-in for a sentence-transformers model: counts its encode calls."""

    def __init__(self):
        self.training, self.calls, self.prompts = False, 0, {}

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode

    def load_state_dict(self, state):
        self.state = state

    def encode(self, texts, **kwargs):
        self.calls += 1
        rows = np.array([[len(t), 1.0 + float(self.state["w"])] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_a_known_cell_of_the_grid_is_not_encoded_again():
    sets = dev_datasets([record("a", "g1"), record("bb", "g2"), record("c", "g3", task="tool")])
    base, tuned = {"w": torch.zeros(1)}, {"w": torch.ones(1)}
    known = {n: dict.fromkeys(ds.qrels, 0.125) for n, ds in sets.items()}
    model = CountingModel()
    selection = select_per_task(
        model, base, tuned, sets, alphas=(1.0,), known={(1.0, "instructions"): known}
    )
    assert selection.grid[1.0]["instructions"] == dict.fromkeys(sets, 0.125)
    assert model.calls == 3 * 2 * len(sets)  # 3 cells of 4 scored, queries and keys each
    assert model.state == tuned  # the tuned weights are back in the model


class StepState:
    """Plumbing stand-in for the trainer's state: a step and a log history."""

    def __init__(self, step):
        self.global_step, self.log_history = step, []


class StepModel:
    """Plumbing stand-in for a model whose only weight is the step it was trained to."""

    def __init__(self, step):
        self.training, self.w = True, torch.tensor([float(step)])

    def train(self, mode=True):
        self.training = mode

    def state_dict(self):
        return {"w": self.w}


def test_dev_callback_keeps_each_tasks_best_step_and_drops_the_others(monkeypatch):
    """Plumbing: the dev scores per step are given (a stand-in for encoding the dev sets)."""
    from llm_embedder_integrations.training import selection as selection_module

    sets = dev_datasets([record("a", "g1"), record("c", "g3", task="tool")])
    name_of = {ds.task: name for name, ds in sets.items()}
    by_step = {
        3: {"qa": 0.5, "tool": 0.1},
        6: {"qa": 0.4, "tool": 0.4},
        9: {"qa": 0.1, "tool": 0.3},
    }
    step = {"now": 0}

    def scores(encode, datasets, k=10):
        return {
            name_of[t]: dict.fromkeys(sets[name_of[t]].qrels, v)
            for t, v in by_step[step["now"]].items()
        }

    monkeypatch.setattr(selection_module, "dev_query_scores", scores)
    callback = DevCallback(sets, eval_steps=3)
    for now in (3, 6, 9):
        step["now"] = now
        model = StepModel(now)
        callback.on_step_end(None, StepState(now), None, model=model)
        assert model.training  # back in training mode after scoring
    assert callback.task_steps == {"qa": 3, "tool": 6}
    assert callback.best_step == 6  # the best mean over tasks: 0.40 against 0.30 and 0.20
    assert callback.state_at(3)["w"].item() == 3.0 and callback.best_state["w"].item() == 6.0
    assert callback.queries_at(3)[name_of["qa"]] == dict.fromkeys(sets[name_of["qa"]].qrels, 0.5)
    with pytest.raises(KeyError):
        callback.state_at(9)  # no task's best: not kept
    assert [e["step"] for e in callback.curve] == [3, 6, 9]


def test_a_task_keeps_its_own_peak_only_beyond_the_dev_noise(monkeypatch, caplog):
    """Plumbing: the dev scores per step and query are given (a stand-in for encoding)."""
    from llm_embedder_integrations.training import selection as selection_module

    records = [record(f"q{i}", f"g{i // 2}") for i in range(8)]
    records += [record(f"t{i}", f"a{i // 2}", task="tool") for i in range(8)]
    sets = dev_datasets(records)
    name_of = {ds.task: name for name, ds in sets.items()}
    # per query, in each set's query order: qa peaks at step 3 by 0.2 on every query; tool
    # peaks at step 9 by 0.025 on average, two of its APIs up 0.3 and two down 0.25
    by_step = {
        3: {"qa": [0.8] * 8, "tool": [0.2] * 8},
        6: {"qa": [0.6] * 8, "tool": [0.5] * 8},
        9: {"qa": [0.1] * 8, "tool": [0.8, 0.8, 0.25, 0.25] * 2},
    }
    step = {"now": 0}

    def scores(encode, datasets, k=10):
        return {
            name_of[t]: dict(zip(sets[name_of[t]].qrels, v, strict=True))
            for t, v in by_step[step["now"]].items()
        }

    monkeypatch.setattr(selection_module, "dev_query_scores", scores)
    callback = DevCallback(sets, eval_steps=3)
    for now in (3, 6, 9):
        step["now"] = now
        callback.on_step_end(None, StepState(now), None, model=StepModel(now))
    assert callback.best_step == 6 and callback.task_steps == {"qa": 3, "tool": 9}
    with caplog.at_level(logging.INFO, logger=selection_module.__name__):
        assert callback.chosen_steps(se=1.0) == {"qa": 3, "tool": 6}
    assert "tool: its own best dev step 9 gains 0.0250 on the best step 6" in caplog.text
    assert callback.chosen_steps(se=0) == callback.task_steps
    # the error is over the 4 APIs (0.159; per query it would be 0.104): within 0.1 of it,
    # a gain of 0.025 is beyond the noise
    assert "within 1.0 standard errors (0.1588)" in caplog.text
    assert callback.chosen_steps(se=0.1) == {"qa": 3, "tool": 9}


class LoggingModel(CountingModel):
    """Plumbing stand-in: records the weight each text was encoded with."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def encode(self, texts, **kwargs):
        for text in texts:
            self.seen.setdefault(float(self.state["w"]), set()).add(text)
        return super().encode(texts, **kwargs)


def test_each_task_interpolates_towards_its_own_steps_weights():
    sets = dev_datasets([record("a", "g1"), record("c", "g3", task="tool")])
    base, best = {"w": torch.zeros(1)}, {"w": torch.ones(1)}
    own = {"tool": (9, {"w": torch.full((1,), 2.0)})}
    model = LoggingModel()
    selection = select_per_task(
        model, base, best, sets, alphas=(1.0,), se=0, tuned_step=6, task_weights=own
    )
    assert model.state == best  # the best step's weights are back in the model
    assert model.seen[0.0] >= {"a", "c"}  # alpha 0: the base model for every task, once
    assert "c" in model.seen[2.0] and "c" not in model.seen[1.0]  # tool: its own step
    assert "a" in model.seen[1.0] and "a" not in model.seen[2.0]  # qa: the best step
    expected = {"qa": 6, "tool": 9}
    for task, choice in selection.tasks.items():
        assert choice.step == (None if choice.alpha == 0 else expected[task])


def test_the_saved_folder_holds_each_tasks_step_and_weight_and_loads_them(tmp_path):
    from llm_embedder_integrations.training.selection import Selection, TaskChoice
    from llm_embedder_integrations.training.train import save_selected

    model = _load_model(TrainConfig(model=SHIPPED_MODEL), "cpu")
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)

    def moved(scale):
        return {
            k: v + scale * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
            for k, v in base.items()
        }

    at_3, at_6 = moved(0.02), moved(0.02)

    def choice(alpha, step):
        return TaskChoice(alpha, False, 0.5, 0.4, 0.45, step=step)

    selection = Selection(
        tasks={
            "qa": choice(0.5, 3),
            "tool": choice(1.0, 6),
            "icl": choice(1.0, 6),
            "chat": choice(0.0, None),
        }
    )
    settings = save_selected(
        model,
        tmp_path,
        base,
        at_6,
        selection,
        base_model=SHIPPED_MODEL,
        task_weights={"qa": (3, at_3), "tool": (6, at_6), "icl": (6, at_6)},
    )
    tasks = settings["tasks"]
    assert {t: (e["model"], e["step"]) for t, e in tasks.items()} == {
        "qa": ("variants/step-3-alpha-0.50", 3),
        "tool": (".", 6),
        "icl": (".", 6),
        "chat": ("variants/alpha-0.00", None),
    }
    loaded = LLMEmbedder(str(tmp_path), backend="torch", precision="fp32", device="cpu")
    text = ["how do I load a pretrained image classifier?"]
    for task, weights in (("qa", interpolate(base, at_3, 0.5)), ("tool", at_6), ("chat", base)):
        model.load_state_dict(weights)
        expected = model.encode(text, normalize_embeddings=True)
        np.testing.assert_allclose(loaded.encode_queries(text, task), expected, atol=1e-5)


def test_a_run_worse_than_its_base_says_so_and_saves_the_base_for_that_task(selected_run, caplog):
    config, result = selected_run
    summary = json.loads((result.output / "llm_embedder_training.json").read_text())
    assert summary["regressed_tasks"] == result.summary["regressed_tasks"]
    tasks = summary["selection"]["tasks"]
    for task in summary["regressed_tasks"]:
        assert tasks[task]["tuned_dev"] < tasks[task]["base_dev"]
    for choice in tasks.values():  # never below the base on the dev split
        assert choice["dev"] is None or choice["dev"] >= choice["base_dev"]
    assert summary["regressed_tasks"], "lr 3e-3 for 6 steps should have hurt a task"


def test_tasks_without_a_dev_set_keep_the_base_model(selected_run, caplog):
    # the run trains qa and tool alone: the other four tasks have nothing to choose on
    _, result = selected_run
    settings = json.loads((result.output / "llm_embedder.json").read_text())["tasks"]
    assert set(settings) == set(TASKS)
    for task in set(TASKS) - {"qa", "tool"}:
        entry = settings[task]
        assert (entry["alpha"], entry["instructions"], entry["dev_mrr@10"]) == (0.0, False, None)
    assert sorted(result.summary["selection"]["tasks"]) == sorted(TASKS)
    base = LLMEmbedder(SHIPPED_MODEL, backend="torch", precision="fp32", device="cpu")
    loaded = LLMEmbedder(str(result.output), backend="torch", precision="fp32", device="cpu")
    text = ["we talked about the trip to Lisbon last week"]
    np.testing.assert_allclose(loaded.encode_queries(text, "chat"), base.encode(text), atol=1e-5)


def test_a_task_without_a_dev_set_keeps_the_base_as_it_is_used(caplog):
    # plumbing of the choice rule on hand-made dev scores (no model)
    grid = {a: {m: {"qa": 0.5 + a / 10} for m in ("plain", "instructions")} for a in (0.0, 1.0)}
    with caplog.at_level(logging.WARNING):
        choices = choose_per_task(
            grid, {"qa": "qa"}, serve=("qa", "chat", "tool"), base_instructions={"tool": True}
        )
    assert (choices["qa"].alpha, choices["qa"].measured) == (1.0, True)
    chat, tool = choices["chat"], choices["tool"]
    assert (chat.alpha, chat.instructions, chat.dev, chat.measured) == (0.0, False, None, False)
    assert (tool.alpha, tool.instructions) == (0.0, True)
    assert "no dev set for chat, tool: " in caplog.text and "keep the base model" in caplog.text


def test_the_choice_must_reach_the_base_as_it_is_used():
    # plumbing of the choice rule (no model): a base trained with its instructions (as
    # LLM-Embedder is) is measured with them, and every choice must reach that
    tasks = {"qa": "qa"}
    grid = {
        0.0: {"plain": {"qa": 0.60}, "instructions": {"qa": 0.80}},
        0.5: {"plain": {"qa": 0.70}, "instructions": {"qa": 0.78}},
        1.0: {"plain": {"qa": 0.75}, "instructions": {"qa": 0.79}},
    }
    plain = choose_per_task(grid, tasks)["qa"]
    assert plain.base_dev == pytest.approx(0.60)
    used = choose_per_task(grid, tasks, base_instructions={"qa": True})["qa"]
    assert (used.alpha, used.instructions, used.base_dev) == (0.0, True, pytest.approx(0.80))
    # a tie with the base keeps the base's own setting
    flat = {a: {m: {"qa": 0.8} for m in ("plain", "instructions")} for a in (0.0, 1.0)}
    tie = choose_per_task(flat, tasks, base_instructions={"qa": True})["qa"]
    assert (tie.alpha, tie.instructions) == (0.0, True)


def test_the_base_is_used_with_the_instructions_it_was_trained_with(tmp_path):
    from sentence_transformers import SentenceTransformer

    from llm_embedder_integrations.encoder import shipped_model_path

    assert _load_base(TrainConfig(model=SHIPPED_MODEL), "cpu")[1] == dict.fromkeys(TASKS, False)
    model = SentenceTransformer(str(shipped_model_path()), device="cpu")
    model.prompts = {**prompts_for(TASKS), prompt_name("qa", "query"): ""}
    model.prompts[prompt_name("qa", "key")] = ""
    model.save(str(tmp_path / "trained"))
    _, used = _load_base(TrainConfig(model=str(tmp_path / "trained")), "cpu")
    assert used == {task: task != "qa" for task in TASKS}


def test_the_saved_model_applies_each_tasks_choice_when_loaded(selected_run):
    config, result = selected_run
    settings = json.loads((result.output / "llm_embedder.json").read_text())
    loaded = LLMEmbedder(str(result.output), backend="torch", precision="fp32", device="cpu")
    base = LLMEmbedder(SHIPPED_MODEL, backend="torch", precision="fp32", device="cpu")
    text = ["how do I load a pretrained image classifier?"]
    for task, entry in settings["tasks"].items():
        assert (loaded.instruction(task, "query") != "") == entry["instructions"]
        if entry["alpha"] == 0.0 and not entry["instructions"]:
            np.testing.assert_allclose(
                loaded.encode_queries(text, task), base.encode(text), atol=1e-5
            )
        folder = result.output / entry["model"]
        assert (folder / "model.safetensors").is_file()


def test_config_names_an_unknown_source():
    with pytest.raises(ValueError, match=r"unknown source\(s\) \['squad'\] in `sources`"):
        TrainConfig(sources=("nq_qed", "squad"))


def test_sources_are_converted_with_mined_negatives_and_capped(data_path):
    from llm_embedder_integrations.training.train import source_records

    config = TrainConfig(
        sources=("sni",),
        source_queries=5,
        group_size=3,
        data_path=str(data_path),
        model=SHIPPED_MODEL,
    )
    records, mining = source_records(config)
    assert len(records) == 5 and {r.task for r in records} == {"icl"}
    assert all(len(r.neg) == 2 and len(r.pos) == 1 for r in records)
    assert list(mining) == ["sni"] and mining["sni"]["queries"] == 5
    assert sum(mining["sni"]["negatives"].values()) == 10
    assert set(mining["sni"]["dropped"]) == {"same_text", "overlap", "above_positive"}
    assert mining["sni"]["seconds"] > 0
    # `source_docs`: the negatives come from that many documents, the judged ones kept
    from llm_embedder_integrations.evaluation.runner import cap_corpus, cap_queries
    from llm_embedder_integrations.training.data import load_source

    capped, _ = source_records(dataclasses.replace(config, source_docs=8))
    pool = cap_corpus(cap_queries(load_source("sni", data_path=data_path), 5), 8).corpus
    assert {k for r in capped for k in r.neg} <= set(pool.values())
    assert len(pool) < len(load_source("sni", data_path=data_path).corpus)
    with pytest.raises(ValueError, match="source_docs"):
        TrainConfig(source_docs=0)


def test_a_run_with_one_step_for_all_names_it_per_task_and_keeps_the_mining_counts(
    tmp_path, data_path
):
    config = TrainConfig(
        sources=("sni", "gorilla_torchhub"),
        source_queries=40,
        data_path=str(data_path),
        output=str(tmp_path / "model"),
        model=SHIPPED_MODEL,
        batch_size=8,
        group_size=3,
        max_length=48,
        max_steps=4,
        eval_steps=2,
        save_steps=100,
        dev_fraction=0.25,
        dev_max_queries=12,
        step_per_task=False,
        interpolate=False,
        device="cpu",
        show_progress=False,
    )
    summary = train(config).summary
    # one step for every task: each task with a dev set is named with the best step
    assert summary["task_steps"] == {"icl": summary["best_step"], "tool": summary["best_step"]}
    saved = json.loads((tmp_path / "model" / "llm_embedder_training.json").read_text())
    assert saved["mining"] == summary["mining"]
    assert set(summary["mining"]) == {"sni", "gorilla_torchhub"}
    for name, stats in summary["mining"].items():
        assert stats["queries"] == 40, name
        assert sum(stats["negatives"].values()) == 2 * stats["queries"], name


def test_train_command_takes_sources_and_the_example_config_lists_them():
    from pathlib import Path

    from llm_embedder_integrations.cli import _train_config, build_parser

    args = build_parser().parse_args(["train", "--sources", "nq_qed", "sni", "--output", "m"])
    assert _train_config(args).sources == ("nq_qed", "sni")
    example = Path(__file__).resolve().parents[1] / "examples" / "finetune.yaml"
    config = TrainConfig.from_yaml(example)
    assert config.sources[:4] == ("nq_qed", "canard", "gorilla_torchhub_train", "gutenberg")
    assert config.interpolate and config.distillation == "auto" and config.dev_fraction == 0.1
    assert config.temperature == 0.05 and config.step_per_task
    assert config.max_group_queries == {"tool": 30}
    assert config.teacher_queries == 100 and config.llm is None  # the shipped SmolLM2


def test_layer_lr_decay_lowers_the_rate_layer_by_layer_down_to_the_embeddings(tmp_path):
    from llm_embedder_integrations.training.train import layer_lr_scales

    model = _load_model(TrainConfig(model=SHIPPED_MODEL), "cpu")
    names = [n for n, _ in model.named_parameters()]
    scales = layer_lr_scales(names, 0.5)
    by_name = {n: scales[n] for n in names}
    assert by_name["0.model.encoder.layer.5.output.dense.weight"] == 1.0  # MiniLM: 6 layers
    assert by_name["0.model.encoder.layer.4.output.dense.weight"] == 0.5
    assert by_name["0.model.encoder.layer.0.attention.self.query.weight"] == 0.5**5
    assert by_name["0.model.embeddings.word_embeddings.weight"] == 0.5**6
    assert set(layer_lr_scales(names, 1.0).values()) == {1.0}

    path = tmp_path / "qa.jsonl"
    write_jsonl([record(f"t{i}", f"g{i}") for i in range(8)], path)
    config = TrainConfig(
        data=(str(path),),
        output=str(tmp_path / "out"),
        model=SHIPPED_MODEL,
        lr=1e-4,
        layer_lr_decay=0.5,
        dev_fraction=0,
        distillation=False,
        device="cpu",
        show_progress=False,
    )
    optimizer = build_trainer(config).create_optimizer()
    rates = sorted({round(g["lr"] / 1e-4, 6) for g in optimizer.param_groups})
    assert rates == [round(0.5**k, 6) for k in range(6, -1, -1)]
    decayed = {g["weight_decay"] for g in optimizer.param_groups}
    assert decayed == {0.0, config.weight_decay}  # biases and LayerNorms stay undecayed
    n_params = sum(len(g["params"]) for g in optimizer.param_groups)
    assert n_params == len(names)
    with pytest.raises(ValueError, match="layer_lr_decay"):
        TrainConfig(layer_lr_decay=0)


def test_temperature_reaches_every_task_loss_and_the_command_line(tmp_path):
    from llm_embedder_integrations.cli import _train_config, build_parser
    from llm_embedder_integrations.training import TASK_LOSS

    path = tmp_path / "qa.jsonl"
    write_jsonl([record(f"t{i}", f"g{i}") for i in range(8)], path)
    settings = {
        "data": (str(path),),
        "output": str(tmp_path / "out"),
        "model": SHIPPED_MODEL,
        "dev_fraction": 0,
        "device": "cpu",
        "show_progress": False,
    }
    paper = build_trainer(TrainConfig(**settings)).loss.configs["qa"]
    warmer = build_trainer(TrainConfig(**settings, temperature=0.05)).loss.configs["qa"]
    assert paper.temperature == 0.01 == TASK_LOSS["qa"].temperature
    assert warmer.temperature == 0.05
    # Only the temperature changes: the task's terms stay the paper's.
    assert dataclasses.replace(warmer, temperature=0.01) == paper

    args = build_parser().parse_args(["train", "--temperature", "0.05", "--output", "m"])
    assert _train_config(args).temperature == 0.05
    with pytest.raises(ValueError, match="temperature"):
        TrainConfig(temperature=0)
