from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llm_embedder_integrations.cli import main
from llm_embedder_integrations.llm import LocalLLM
from llm_embedder_integrations.training.data import (
    TrainingDataError,
    TrainingRecord,
    read_jsonl,
    write_jsonl,
)
from llm_embedder_integrations.training.reward import TEMPLATES, LLMReward, score_file


@pytest.fixture(scope="module")
def llm() -> LocalLLM:
    """The shipped SmolLM2-135M on CPU in fp32."""
    return LocalLLM(device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def reward(llm) -> LLMReward:
    return LLMReward(llm, batch_size=3)


def naive_score(llm: LocalLLM, ids: list[int], n_answer: int) -> float:
    """Full logits of one unpadded sequence; mean log-probability of its last n tokens."""
    with torch.no_grad():
        logits = llm.hf_model(torch.tensor([ids])).logits[0]
    logp = F.log_softmax(logits.float(), dim=-1)
    n = len(ids)
    return float(sum(logp[i - 1, ids[i]] for i in range(n - n_answer, n)) / n_answer)


CASES = [  # (task, query, key, answer, context)
    ("qa", "What is the capital of France?", "Paris is the capital of France.", "Paris", ""),
    ("qa", "Who wrote Hamlet?", "Bananas are rich in potassium.", "Shakespeare", ""),
    ("convsearch", "And its population?", "Oslo has 700,000 inhabitants.", "About 700,000.", ""),
    ("icl", "Review: great film!", "Review: awful plot.\nnegative", "positive", ""),
    ("chat", "Where do you live?", "Speaker 1: hi\nSpeaker 2: I live in Oslo.", "In Oslo.", ""),
    ("lrlm", "and then the king said", "Once upon a time there was a king.", " farewell.", " "),
]


def test_prompts_follow_the_paper_templates(reward):
    tok = reward.tokenizer
    ids, n = reward.encode("qa", " What? ", " Some knowledge. ", " Paris ")
    assert tok.decode(ids) == "Knowledge: Some knowledge.\n\nQuestion: What?\n\nAnswer: Paris"
    assert tok.decode(ids[-n:]) == " Paris"
    ids, n = reward.encode("chat", "Hi?", "Speaker 1: a\nSpeaker 2: b", "Hello there.")
    assert tok.decode(ids) == "Speaker 1: a\nSpeaker 2: b\nSpeaker 1: Hi?\nSpeaker 2: Hello there."
    assert tok.decode(ids[-n:]) == " Hello there."
    ids, n = reward.encode("icl", "in2", "in1\nout1", "out2")
    assert tok.decode(ids) == "in1\nout1\nin2\nout2" and tok.decode(ids[-n:]) == "out2"
    ids, n = reward.encode("lrlm", "query chunk", "key chunk.", " the continuation", context=" ")
    assert tok.decode(ids) == "key chunk. query chunk the continuation"
    assert tok.decode(ids[-n:]) == " the continuation"
    assert set(TEMPLATES) == {"qa", "convsearch", "icl", "chat"}


def test_batched_scores_equal_one_by_one_and_naive_full_logits(llm, reward):
    items = [reward.encode(*case) for case in CASES]
    assert len({len(ids) for ids, _ in items}) > 3  # padding is exercised
    batched = reward.score_encoded(items)
    single = [reward.score_encoded([item])[0] for item in items]
    naive = [naive_score(llm, ids, n) for ids, n in items]
    assert batched == pytest.approx(single, abs=1e-4)
    assert batched == pytest.approx(naive, abs=1e-4)
    full = LLMReward(llm, batch_size=4, answer_logits_only=False)
    assert full.score_encoded(items) == pytest.approx(naive, abs=1e-4)
    assert all(-15 < s < 0 for s in batched)


def test_an_already_loaded_model_can_be_passed(llm, reward):
    direct = LLMReward(model=llm.hf_model, tokenizer=llm.tokenizer)
    items = [reward.encode(*CASES[0])]
    assert direct.score_encoded(items) == pytest.approx(reward.score_encoded(items), abs=1e-6)
    with pytest.raises(ValueError, match="either `llm`, or both `model` and `tokenizer`"):
        LLMReward(llm, model=llm.hf_model)


@pytest.mark.parametrize(
    ("query", "answer", "relevant", "irrelevant"),
    [
        (
            "What is the secret code word?",
            "Zanzibar",
            "The secret code word is Zanzibar.",
            "The weather today is sunny and warm.",
        ),
        (
            "What is the name of Anna's dog?",
            "Bartholomew",
            "Anna has a dog called Bartholomew.",
            "Trains leave the station every hour.",
        ),
        (
            "In which year was the bridge opened?",
            "1873",
            "The bridge was opened in 1873 after six years of work.",
            "Apples and pears grow in the orchard.",
        ),
        (
            "What colour is the submarine?",
            "Crimson",
            "The submarine is painted crimson.",
            "The library closes at nine in the evening.",
        ),
    ],
)
def test_the_candidate_holding_the_answer_scores_higher(
    reward, query, answer, relevant, irrelevant
):
    good, bad = reward.score("qa", query, [relevant, irrelevant], answer)
    assert good > bad + 0.5


def test_record_scores_follow_its_keys(reward):
    record = TrainingRecord(
        "What is the secret code word?",
        "qa",
        pos=["The secret code word is Zanzibar."],
        neg=["Cats sleep a lot.", "The code is hidden."],
        answers=["Zanzibar"],
    )
    scores = reward.score_record(record)
    assert scores == pytest.approx(
        reward.score("qa", record.query, record.keys, "Zanzibar"), abs=1e-4
    )
    assert max(range(3), key=scores.__getitem__) == 0


def test_one_of_several_answers_is_drawn_per_record(reward):
    record = TrainingRecord("q", "qa", ["p"], answers=["a", "b", "c", "d", "e"])
    drawn = {reward.answer_of(record) for _ in range(5)}
    assert len(drawn) == 1 and drawn <= {"a", "b", "c", "d", "e"}
    others = {
        reward.answer_of(TrainingRecord(f"q{i}", "qa", ["p"], answers=record.answers))
        for i in range(20)
    }
    assert len(others) > 1


def test_tools_and_records_without_answers_are_refused(reward):
    with pytest.raises(ValueError, match="task 'tool' has no LLM reward"):
        reward.encode("tool", "q", "k", "a")
    with pytest.raises(ValueError, match="has no `answers`"):
        reward.score_record(TrainingRecord("q", "qa", ["p"]))
    with pytest.raises(ValueError, match="`answer`\\) is empty"):
        reward.encode("qa", "q", "k", "  ")


def test_long_keys_are_cut(llm):
    short = LLMReward(llm, key_max_length=4)
    ids, n = short.encode("icl", "q", "one two three four five six seven", "a")
    assert short.tokenizer.decode(ids) == "one two three four\nq\na"


def test_toy_chat_record_scores_have_one_per_history_turn(reward, data_path):
    record = read_jsonl(data_path / "llm_embedder_toy" / "chat.json")[0]
    short = TrainingRecord(record.query, "chat", history=record.history[:3], answers=record.answers)
    scores = reward.score_record(short)
    assert len(scores) == 3 and all(-10 < s < 0 for s in scores)


# The score command -------------------------------------------------------------------------------


RECORDS = [
    TrainingRecord(
        "What is the secret code word?",
        "qa",
        ["The code word is Zanzibar."],
        ["Cats sleep.", "Rain falls."],
        answers=["Zanzibar"],
    ),
    TrainingRecord("Hi, how are you?", "chat", history=["Speaker 1: hey"], answers=["Fine."]),
    TrainingRecord("Review: great!", "icl", ["Review: bad.\nnegative"], answers=["positive"]),
    TrainingRecord("and so", "lrlm", [], ["It was late."], teacher_scores=[0.0], answers=[" on."]),
]


@pytest.fixture(scope="module")
def scored(tmp_path_factory, llm) -> tuple[Path, Path]:
    """The input file and the output of an uninterrupted run of the CLI."""
    folder = tmp_path_factory.mktemp("score")
    src, out = folder / "in.jsonl", folder / "full.jsonl"
    write_jsonl(RECORDS, src)
    assert main(["score", str(src), str(out), "--batch-size", "2", "--dtype", "fp32"]) == 0
    return src, out


def test_score_command_fills_teacher_scores(scored, reward):
    src, out = scored
    records = read_jsonl(out)
    assert [len(r.teacher_scores) for r in records] == [3, 1, 1, 1]
    assert [r.to_dict() | {"teacher_scores": None} for r in records] == [
        r.to_dict() | {"teacher_scores": None} for r in RECORDS
    ]
    assert records[0].teacher_scores == pytest.approx(reward.score_record(RECORDS[0]), abs=1e-4)


def test_interrupted_run_resumes_to_the_same_output(scored, tmp_path):
    src, full = scored
    lines = full.read_bytes().splitlines(keepends=True)
    out = tmp_path / "resumed.jsonl"
    out.write_bytes(lines[0] + lines[1] + lines[2][: len(lines[2]) // 2])
    assert main(["score", str(src), str(out), "--batch-size", "2", "--dtype", "fp32"]) == 0
    assert out.read_bytes() == full.read_bytes()
    assert score_file(src, out) == 0  # complete: nothing left, the LLM is not even needed


def test_resume_refuses_the_output_of_another_input(scored, tmp_path):
    src, _ = scored
    out = tmp_path / "other.jsonl"
    out.write_text(json.dumps({"query": "something else", "pos": ["p"], "task": "qa"}) + "\n")
    with pytest.raises(TrainingDataError, match="belongs to another input"):
        score_file(src, out, show_progress=False)
    out.write_text('{"query": \n{"query": "x"}\n')
    with pytest.raises(TrainingDataError, match="line 1: is not valid JSON"):
        score_file(src, out, show_progress=False)


def test_score_names_the_line_of_an_unscorable_record(tmp_path, reward):
    src = tmp_path / "in.jsonl"
    write_jsonl([RECORDS[0], TrainingRecord("q", "tool", ["p"])], src)
    with pytest.raises(TrainingDataError, match=r"in.jsonl, line 2: task 'tool' has no LLM"):
        score_file(src, tmp_path / "out.jsonl", reward=reward, show_progress=False)
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_on_gpu_ranks_like_fp32(reward):
    gpu = LLMReward(LocalLLM(device="cuda"), batch_size=4)
    assert gpu.model.dtype == torch.bfloat16
    items = [reward.encode(*case) for case in CASES]
    assert gpu.score_encoded(items) == pytest.approx(reward.score_encoded(items), abs=0.3)


def test_any_hugging_face_causal_lm_folder_can_be_the_teacher(llm, tmp_path):
    """`--llm PATH` takes a plain transformers folder: a small Llama with SmolLM2's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(llm.tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = LlamaForCausalLM(config).eval()
    folder = tmp_path / "plain-causal-lm"
    model.save_pretrained(folder)
    llm.tokenizer.save_pretrained(folder)
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(RECORDS[:1], src)
    argv = ["score", str(src), str(out), "--llm", str(folder), "--dtype", "fp32"]
    assert main(argv) == 0
    (record,) = read_jsonl(out)
    direct = LLMReward(model=model, tokenizer=llm.tokenizer).score_record(RECORDS[0])
    assert record.teacher_scores == pytest.approx(direct, abs=1e-4)
    assert len(set(record.teacher_scores)) == len(RECORDS[0].keys)  # real, distinct scores


def test_the_teacher_dtype_follows_the_device(monkeypatch):
    from llm_embedder_integrations import _cpu
    from llm_embedder_integrations.training import reward as reward_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for bf16, expected in ((True, "bf16"), (False, "fp32")):
        features = _cpu.parse_cpu_flags({"avx2", "avx512f"} | ({"avx512_bf16"} if bf16 else set()))
        monkeypatch.setattr(_cpu, "cpu_features", lambda *a, f=features: f)
        assert reward_module._teacher_dtype() == expected
