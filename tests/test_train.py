from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from sentence_transformers.base.sampler import DefaultBatchSampler
from torch.utils.data import ConcatDataset, SequentialSampler

from llm_embedder_integrations import SHIPPED_MODEL, TASKS, LLMEmbedder, _cpu
from llm_embedder_integrations.cli import _train_config, build_parser
from llm_embedder_integrations.training import (
    TrainingDataError,
    TrainingRecord,
    in_batch_false_negatives,
    read_jsonl,
)
from llm_embedder_integrations.training.losses import TASK_LOSS
from llm_embedder_integrations.training.train import (
    HomogeneousBatchSampler,
    MultiTaskLoss,
    TrainConfig,
    build_examples,
    build_trainer,
    dataloader_workers,
    instruction_token_ids,
    last_complete_checkpoint,
    train,
    training_attention,
)

EXAMPLE_YAML = Path(__file__).resolve().parents[1] / "examples" / "train.yaml"
TASK_COLUMN = "_llm_embedder_task"


@pytest.fixture(scope="module")
def toy(data_path) -> dict[str, list[TrainingRecord]]:
    folder = data_path / "llm_embedder_toy"
    return {task: read_jsonl(folder / f"{task}.json") for task in TASKS if task in TASK_LOSS}


@pytest.fixture(scope="module")
def all_toy(toy) -> list[TrainingRecord]:
    return [r for records in toy.values() for r in records]


def small_config(tmp_path: Path, **changes) -> TrainConfig:
    """A few quick CPU steps of the shipped MiniLM on short texts."""
    settings = {
        "output": str(tmp_path / "model"),
        "model": SHIPPED_MODEL,
        "batch_size": 4,
        "group_size": 4,
        "max_length": 48,
        "device": "cpu",
        "show_progress": False,
        "logging_steps": 1,
        "distillation": True,  # the paper's table as it is ("auto" is tested with selection)
    }
    return TrainConfig(**{**settings, **changes})


# Configuration -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", 0, "`lr` must be a number > 0, got 0"),
        ("instruction_warmup_steps", -1, "`instruction_warmup_steps` must be an int >= 0, got -1"),
        ("batch_size", 0, "`batch_size` must be a positive int, got 0"),
        ("group_size", 1, "`group_size` must be >= 2"),
        ("precision", "fp8", "`precision` must be one of .*got 'fp8'"),
        ("device", "tpu", "`device` must be one of .*got 'tpu'"),
        ("warmup_ratio", 1.5, "`warmup_ratio` must be a number >= 0 and <= 1, got 1.5"),
        ("epochs", float("nan"), "`epochs` must be a number > 0, got nan"),
        ("max_steps", 0, "`max_steps` must be a positive int or None, got 0"),
        ("seed", -1, "`seed` must be an int >= 0, got -1"),
        (
            "dataloader_num_workers",
            True,
            "`dataloader_num_workers` must be an int >= 0 or 'auto', got True",
        ),
        (
            "dataloader_num_workers",
            "many",
            "`dataloader_num_workers` must be an int >= 0 or 'auto', got 'many'",
        ),
        ("homogeneous", "yes", "`homogeneous` must be true or false, got 'yes'"),
        ("resume", "", "`resume` must be true, false or a checkpoint directory"),
        ("max_group_queries", 30, "`max_group_queries` must map tasks to a number of queries"),
        ("max_group_queries", {"tools": 30}, "`max_group_queries`: unknown task 'tools'"),
        ("max_group_queries", {"tool": 0}, r"`max_group_queries\['tool'\]` must be a positive"),
    ],
)
def test_config_rejects_a_bad_value_and_quotes_it(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_config_from_the_example_yaml_resolves_paths_and_takes_overrides():
    config = TrainConfig.from_yaml(EXAMPLE_YAML, lr=1e-4, epochs=None)
    assert config.data == (
        str(EXAMPLE_YAML.parent / "data" / "qa.scored.jsonl"),
        str(EXAMPLE_YAML.parent / "data" / "tool.jsonl"),
    )
    assert config.output == str(EXAMPLE_YAML.parent / "models" / "llm-embedder-minilm")
    assert (config.lr, config.epochs, config.group_size) == (1e-4, 1, 8)  # None keeps the file's
    assert config.homogeneous and config.distillation


def test_config_names_an_unknown_setting(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("data: [a.jsonl]\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) \['learning_rate'\]"):
        TrainConfig.from_yaml(path)


def test_yaml_config_without_pyyaml_names_the_extra_to_install(tmp_path, monkeypatch):
    path = tmp_path / "train.yaml"
    path.write_text("lr: 0.1\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(ImportError, match=r'pip install "llm-embedder-integrations\[train\]"'):
        TrainConfig.from_yaml(path)


def test_yaml_exponent_without_a_dot_is_read_as_a_number(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("lr: 2e-5\n")  # YAML 1.1 (PyYAML) reads this as a string
    assert TrainConfig.from_yaml(path).lr == 2e-5


def test_cli_flags_win_over_the_yaml_file():
    args = build_parser().parse_args(
        ["train", "--config", str(EXAMPLE_YAML), "--lr", "3e-5", "--no-homogeneous", "--resume"]
    )
    config = _train_config(args)
    assert (config.lr, config.homogeneous, config.resume, config.batch_size) == (
        3e-5,
        False,
        True,
        32,
    )


def test_resume_without_a_checkpoint_says_so(tmp_path, all_toy):
    config = small_config(tmp_path, resume=True, max_steps=1)
    with pytest.raises(FileNotFoundError, match="holds no complete checkpoint"):
        train(config, all_toy)


# Examples ----------------------------------------------------------------------------------------


def test_examples_follow_each_tasks_positive_rule(toy):
    examples = build_examples([*toy["qa"], *toy["lrlm"]], group_size=4, seed=0)
    for record, example in zip(toy["qa"], examples["qa"], strict=True):
        assert example["key_0"] == record.pos[0]  # qa: the first listed
        assert example["label"][0] == record.teacher_scores[0]
        assert {example[f"key_{i}"] for i in (1, 2, 3)} <= set(record.neg)
    for record, example in zip(toy["lrlm"], examples["lrlm"], strict=False):
        best = int(np.argmax(record.teacher_scores))
        assert example["key_0"] == record.keys[best]  # lrlm: the teacher's best
        assert example["label"][0] == max(example["label"])
    assert all(len(e["key_ids"]) == 4 for e in examples["qa"])


def test_lrlm_drops_records_whose_teacher_scores_barely_differ(toy):
    record = toy["lrlm"][0]
    flat = dataclasses.replace(record, teacher_scores=[1.0 + 0.001 * i for i in range(64)])
    assert max(toy["lrlm"][1].teacher_scores) - min(toy["lrlm"][1].teacher_scores) >= 0.1
    examples = build_examples([flat, toy["lrlm"][1]], group_size=4)
    assert [e["query"] for e in examples["lrlm"]] == [toy["lrlm"][1].query]


def test_distillation_needs_teacher_scores_unless_turned_off(toy):
    unscored = [dataclasses.replace(r, teacher_scores=None) for r in toy["qa"]]
    with pytest.raises(TrainingDataError, match="8 of 8 'qa' records have no `teacher_scores`"):
        build_examples(unscored, group_size=4)
    examples = build_examples(unscored, group_size=4, distillation=False)
    assert examples["qa"][0]["label"] == [0.0] * 4


def test_unscored_records_of_a_distilled_task_become_contrastive_examples(toy):
    half = [
        r if i % 2 else dataclasses.replace(r, teacher_scores=None) for i, r in enumerate(toy["qa"])
    ]
    examples = build_examples(half, group_size=4, unscored="contrastive")["qa"]
    assert len(examples) == 8
    for record, example in zip(half, examples, strict=True):
        if record.teacher_scores is None:
            assert all(math.isnan(x) for x in example["label"])
        else:
            assert example["label"][0] == record.teacher_scores[0]
        assert example["key_0"] == record.pos[0]
    with pytest.raises(TrainingDataError, match="4 of 8 'qa' records have no `teacher_scores`"):
        build_examples(half, group_size=4)
    with pytest.raises(ValueError, match="`unscored` must be 'error' or 'contrastive'"):
        build_examples(half, group_size=4, unscored="drop")


def test_auto_distils_the_scored_records_and_trains_the_rest_contrastively(tmp_path, toy):
    half = [
        r if i % 2 else dataclasses.replace(r, teacher_scores=None) for i, r in enumerate(toy["qa"])
    ]
    trainer = build_trainer(small_config(tmp_path, distillation="auto", batch_size=8), half)
    assert set(trainer.distillation) == {"qa"}
    (batch,) = list(trainer.get_train_dataloader())
    unscored = torch.isnan(batch["label"]).any(dim=1).tolist()
    assert sorted(unscored) == unscored and sum(unscored) == 4  # scored rows first
    loss = trainer.compute_loss(trainer.model, batch)
    assert torch.isfinite(loss)


def test_relevant_ids_mark_an_in_batch_duplicate_of_the_positive():
    shared = TrainingRecord(query="q1", task="tool", pos=["doc A"], neg=["x", "y", "z"])
    other = TrainingRecord(query="q2", task="tool", pos=["doc A"], neg=["u", "v", "w"])
    examples = build_examples([shared, other], group_size=4)["tool"]
    ids = [i for e in examples for i in e["key_ids"]]
    mask = in_batch_false_negatives([set(e["relevant_ids"]) for e in examples], ids, group_size=4)
    assert mask[0].nonzero().flatten().tolist() == [4]  # the other query's copy of "doc A"
    assert mask[1].nonzero().flatten().tolist() == [0]


def test_a_key_the_query_must_not_retrieve_is_no_in_batch_negative_of_it():
    # long text: chunk i asks for chunk i - 1 and must not retrieve itself or any later chunk,
    # yet its own text is the positive of the record of chunk i + 1
    def chunk(i: int, negative: int) -> TrainingRecord:
        return TrainingRecord(
            query=f"chunk {i}",
            task="lrlm",
            pos=[f"chunk {i - 1}"],
            neg=[f"chunk {negative}"],
            pos_ids=[f"c{i - 1}"],
            neg_ids=[f"c{negative}"],
            extra={"excluded_ids": [f"c{j}" for j in range(i, 5)]},
        )

    examples = build_examples([chunk(2, 0), chunk(3, 0)], group_size=2, distillation=False)
    ids = [i for e in examples["lrlm"] for i in e["key_ids"]]
    relevant = [set(e["relevant_ids"]) for e in examples["lrlm"]]
    mask = in_batch_false_negatives(relevant, ids, group_size=2)
    assert mask[0].nonzero().flatten().tolist() == [ids.index("lrlm\x00c2")]
    assert not mask[1].any()


# Batches -----------------------------------------------------------------------------------------


def batch_tasks(trainer) -> list[list[str]]:
    return [batch[TASK_COLUMN] for batch in trainer.get_train_dataloader()]


def test_every_batch_is_from_one_task_and_carries_its_instruction(tmp_path, all_toy):
    trainer = build_trainer(small_config(tmp_path), all_toy)
    batches = list(trainer.get_train_dataloader())
    assert len(batches) == 12  # 8 records per task, 4 per batch
    assert all(len(set(b[TASK_COLUMN])) == 1 for b in batches)
    assert sorted({b[TASK_COLUMN][0] for b in batches}) == sorted(TASK_LOSS)
    tokenizer = trainer.model.tokenizer
    for batch in batches[:3]:
        task = batch[TASK_COLUMN][0]
        for column, instruction in (("query", TASKS[task].query), ("key_2", TASKS[task].key)):
            prefix = tokenizer(instruction, add_special_tokens=False)["input_ids"]
            ids = batch[f"{column}_input_ids"][0].tolist()
            assert ids[1 : 1 + len(prefix)] == prefix  # after [CLS]


def test_mixed_batches_hold_several_tasks_each_contiguous(tmp_path, all_toy):
    trainer = build_trainer(small_config(tmp_path, homogeneous=False), all_toy)
    tasks = batch_tasks(trainer)
    assert any(len(set(t)) > 1 for t in tasks)
    assert all(t == sorted(t) for t in tasks)  # one block per task for the loss


def test_with_two_processes_each_step_has_one_task_on_both():
    parts = [Dataset.from_dict({"x": list(range(n))}) for n in (14, 20, 8)]
    concat = ConcatDataset(parts)

    def batches(epoch: int) -> list[list[int]]:
        samplers = [
            DefaultBatchSampler(SequentialSampler(p), batch_size=2, drop_last=True) for p in parts
        ]
        sampler = HomogeneousBatchSampler(
            concat, samplers, generator=torch.Generator(), seed=7, num_processes=2
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    first = batches(0)
    assert first == batches(0)  # every process computes the same order from the shared seed
    assert first != batches(1)
    assert len(first) == 20  # 7 + 10 + 4 batches, each dataset's cut to pairs: 6 + 10 + 4
    owner = [int(np.searchsorted(concat.cumulative_sizes, b[0], side="right")) for b in first]
    # Accelerate gives batch 2s of the stream to process 0 and batch 2s + 1 to process 1.
    assert all(owner[step] == owner[step + 1] for step in range(0, len(first), 2))
    assert sorted(owner) == [0] * 6 + [1] * 10 + [2] * 4


# Module layout -----------------------------------------------------------------------------------


def test_moved_names_stay_importable_from_the_trainer_module():
    """The trainer's parts live in .data, .losses and .sampler; .train re-exports them."""
    import importlib

    from llm_embedder_integrations import training
    from llm_embedder_integrations.training import data, losses, sampler

    train_module = importlib.import_module("llm_embedder_integrations.training.train")
    homes = {
        data: ("build_examples", "build_train_dataset", "effective_loss_config"),
        losses: ("MultiTaskLoss",),
        sampler: ("HomogeneousBatchSampler", "TaskDataCollator"),
    }
    for module, names in homes.items():
        for name in names:
            assert name in module.__all__ and name in train_module.__all__
            assert getattr(train_module, name) is getattr(module, name)
            assert getattr(training, name) is getattr(module, name)


# A real training run -----------------------------------------------------------------------------


def test_loss_embeds_each_row_without_its_own_instruction():
    """Per-row exclusion (any batch) equals sentence-transformers' own (one prompt a batch)."""
    from llm_embedder_integrations.training.train import _load_model, instruction_token_counts

    model = _load_model(TrainConfig(model=SHIPPED_MODEL), "cpu")
    assert model[1].include_prompt is False
    loss = MultiTaskLoss(
        model,
        {t: TASK_LOSS[t] for t in ("qa", "chat")},
        prompt_lengths=instruction_token_counts(model, ["qa", "chat"]),
    )
    texts = ["who wrote Hamlet?", "Speaker 1: did you paint again?"]
    with torch.inference_mode():
        alone = {
            task: model(model.preprocess(texts, prompt=TASKS[task].query))["sentence_embedding"]
            for task in ("qa", "chat")
        }
        assert "prompt_length" in model.preprocess(texts, prompt=TASKS["qa"].query)
        # A mixed column: row 0 carries the qa instruction, row 1 the chat one.
        mixed = model.preprocess([TASKS["qa"].query + texts[0], TASKS["chat"].query + texts[1]])
        lengths = [loss.prompt_lengths[("qa", "query")], loss.prompt_lengths[("chat", "query")]]
        got = loss._embed_text_only(mixed, lengths)
    torch.testing.assert_close(got[0], alone["qa"][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[1], alone["chat"][1], atol=1e-5, rtol=0)


def test_pool_instructions_true_keeps_the_instruction_in_the_mean():
    from llm_embedder_integrations.training.train import _load_model

    model = _load_model(TrainConfig(model=SHIPPED_MODEL, pool_instructions=True), "cpu")
    assert model[1].include_prompt is True


@pytest.fixture(scope="module")
def trained(tmp_path_factory, toy):
    """Four steps on the 8 toy tool records: one batch of all 8, the same every step."""
    folder = tmp_path_factory.mktemp("train")
    config = small_config(
        folder,
        batch_size=8,
        lr=1e-4,
        warmup_ratio=0.0,
        max_steps=4,
        save_steps=4,
    )
    return config, train(config, toy["tool"])


def test_loss_decreases_over_a_few_steps(trained):
    _, result = trained
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(losses) == 4
    assert losses[-1] < 0.8 * losses[0]
    assert result.global_step == 4 and result.examples == {"tool": 8}


def test_saved_model_carries_the_instructions_and_loads_with_them(trained):
    config, result = trained
    saved = json.loads((result.output / "config_sentence_transformers.json").read_text())
    for task, pair in TASKS.items():
        assert saved["prompts"][f"{task}_query"] == pair.query
        assert saved["prompts"][f"{task}_key"] == pair.key
    encoder = LLMEmbedder(str(result.output), backend="torch", device="cpu")
    assert encoder.instructions is True
    assert encoder.max_length == 256  # trained on 48 tokens, keeps the base model's limit
    text = ["load a pretrained ResNet-50 for image classification"]
    np.testing.assert_allclose(
        encoder.encode_queries(text, task="tool"),
        encoder.encode(text, prefix=TASKS["tool"].query),
        atol=1e-6,
    )
    base = LLMEmbedder(SHIPPED_MODEL, instructions=True, backend="torch", device="cpu")
    before, after = base.encode_queries(text, "tool"), encoder.encode_queries(text, "tool")
    assert float((after @ before.T)[0, 0]) < 0.9999  # the weights moved
    assert [p.name for p in result.output.glob("checkpoint-*")] == ["checkpoint-4"]
    pooling = json.loads((result.output / "1_Pooling" / "config.json").read_text())
    assert pooling["include_prompt"] is False  # mean over the text, instruction left out
    assert encoder.pools_instructions is False


def test_resume_continues_the_step_count(trained, toy):
    config, first = trained
    resumed = train(dataclasses.replace(config, max_steps=5, resume=True), toy["tool"])
    assert resumed.global_step == 5
    steps = [h["step"] for h in resumed.log_history if "loss" in h]
    assert steps == [1, 2, 3, 4, 5]  # the first four come from the checkpoint's state
    assert resumed.seconds < 10 * first.seconds


def test_resume_skips_a_checkpoint_whose_save_was_interrupted(trained, toy, tmp_path, caplog):
    config, _ = trained
    output = tmp_path / "model"
    shutil.copytree(config.output, output)
    complete = last_complete_checkpoint(output)  # checkpoint-4, or 5 after the test above
    step = int(complete.name.rsplit("-", 1)[1])
    # What a kill inside the trainer's save leaves: weights written, trainer_state.json not yet.
    partial = output / f"checkpoint-{step + 5}"
    shutil.copytree(complete, partial)
    (partial / "trainer_state.json").unlink()
    assert last_complete_checkpoint(output) == complete
    changes = {"output": str(output), "max_steps": step + 1, "resume": True}
    resumed = train(dataclasses.replace(config, **changes), toy["tool"])
    assert resumed.global_step == step + 1
    assert "skipping" in caplog.text and partial.name in caplog.text
    assert partial.is_dir()  # left for the user to inspect, not deleted


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_few_bf16_steps_on_cuda(tmp_path, toy):
    config = small_config(tmp_path, device="cuda", precision="bf16", max_steps=3, batch_size=8)
    result = train(config, toy["tool"])
    assert result.global_step == 3
    assert all(np.isfinite(h["loss"]) for h in result.log_history if "loss" in h)


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)]
)
def test_the_encoder_trains_in_the_chosen_precision_and_the_loss_in_fp32(
    tmp_path, toy, precision, dtype
):
    # bf16 used to train in fp32: the loss runs the model's modules itself, outside the
    # forward that accelerate wraps in autocast.
    config = small_config(tmp_path, precision=precision, max_steps=1, dev_fraction=0.0)
    trainer = build_trainer(config, toy["tool"])
    seen: dict[str, object] = {}
    layer = trainer.model[0].auto_model.encoder.layer[0].output.dense

    def hook(module, args, out):
        seen.setdefault("encoder", out.dtype)

    layer.register_forward_hook(hook)
    compute = trainer.loss.compute_loss_from_embeddings

    def spy(embeddings, *args, **kwargs):
        seen["loss"] = {e.dtype for e in embeddings}
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        return compute(embeddings, *args, **kwargs)

    trainer.loss.compute_loss_from_embeddings = spy  # a spy on the real loss (plumbing)
    trainer.train()
    assert seen == {"encoder": dtype, "loss": {torch.float32}, "autocast": False}


def test_auto_collates_in_the_main_process_on_the_cpu_and_in_workers_on_cuda(tmp_path, monkeypatch):
    config = small_config(tmp_path)
    assert config.dataloader_num_workers == "auto"
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert dataloader_workers(config, "cpu") == 0
    assert dataloader_workers(config, "cuda") == 8
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert dataloader_workers(config, "cuda") == 1
    assert dataloader_workers(small_config(tmp_path, dataloader_num_workers=3), "cpu") == 3


def test_training_leaves_cudnn_attention_out_on_cuda_only():
    # Plumbing: the switch itself (the CUDA run is the gpu-marked test above).
    assert torch.backends.cuda.cudnn_sdp_enabled()
    with training_attention("cuda"):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled()
    with training_attention("cpu"):
        assert torch.backends.cuda.cudnn_sdp_enabled()


@pytest.mark.parametrize(("flags", "bf16"), [("avx2", False), ("avx2 avx512f avx512_bf16", True)])
def test_auto_precision_on_the_cpu_follows_its_bf16_support(
    tmp_path, toy, monkeypatch, flags, bf16
):
    features = _cpu.parse_cpu_flags(frozenset(flags.split()), "Fake CPU")
    monkeypatch.setattr(_cpu, "cpu_features", lambda cpuinfo=None: features)
    trainer = build_trainer(small_config(tmp_path, dev_fraction=0.0), toy["tool"])
    assert (trainer.args.bf16, trainer.args.fp16) == (bf16, False)


def test_without_progress_setting_up_the_trainer_draws_no_progress_bar(tmp_path, toy, capsys):
    # sentence-transformers draws "Computing widget examples" while the trainer is built.
    build_trainer(small_config(tmp_path, dev_fraction=0.0), toy["tool"])
    captured = capsys.readouterr()
    assert "Computing widget examples" not in captured.err + captured.out
    build_trainer(small_config(tmp_path, dev_fraction=0.0, show_progress=True), toy["tool"])
    assert "Computing widget examples" in capsys.readouterr().err  # the bar the test looks for


def test_the_instruction_warm_up_trains_the_instruction_embeddings_alone_then_everything(
    tmp_path, toy
):
    from transformers import TrainerCallback

    config = small_config(
        tmp_path,
        max_steps=3,
        dev_fraction=0.0,
        instruction_warmup_steps=2,
        instruction_warmup_lr=5e-3,
        lr=1e-3,
    )
    trainer = build_trainer(config, toy["tool"])
    model = trainer.model
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ids = sorted(instruction_token_ids(model, ["tool"]))
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    rates: list[float] = []

    class Snapshot(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            rates.append(optimizer.param_groups[0]["lr"])

        def on_step_end(self, args, state, control, **kwargs):
            snapshots[state.global_step] = {
                k: v.detach().clone() for k, v in model.state_dict().items()
            }

    trainer.add_callback(Snapshot())
    trainer.train()
    name = next(k for k in start if k.endswith("word_embeddings.weight"))
    others = [i for i in range(start[name].shape[0]) if i not in set(ids)]
    warm = snapshots[2]
    assert not torch.equal(warm[name][ids], start[name][ids])  # the instructions' rows learn
    # the other rows only by AdamW's weight decay (relative 1e-5 a step at this lr)
    torch.testing.assert_close(warm[name][others], start[name][others], rtol=1e-4, atol=1e-7)
    body = [k for k in start if k != name and start[k].is_floating_point()]
    assert all(torch.equal(warm[k], start[k]) for k in body)  # frozen
    after = snapshots[3]
    assert sum(not torch.equal(after[k], warm[k]) for k in body) > len(body) // 2
    assert all(p.requires_grad for p in model.parameters())  # released
    assert rates[:2] == [5e-3, 5e-3] and rates[2] < 1e-3  # then the run's own schedule


def test_the_train_command_keeps_bm25s_debug_lines_out_of_its_log(monkeypatch, tmp_path):
    """Mining negatives with `--sources` builds BM25 indexes; bm25s logs at DEBUG by itself."""
    import logging

    import bm25s  # noqa: F401  (sets its logger to DEBUG on import)

    from llm_embedder_integrations.cli import main

    monkeypatch.setattr(logging.getLogger("bm25s"), "level", logging.DEBUG)
    with pytest.raises(SystemExit, match="missing.yaml"):
        main(["train", "--config", str(tmp_path / "missing.yaml")])
    assert logging.getLogger("bm25s").level == logging.WARNING
