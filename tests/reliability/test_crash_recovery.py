"""A process killed with SIGKILL mid-way leaves a store (or a scored file) that resumes cleanly."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from _writer import doc_id, synthetic

from llm_embedder_integrations import SHIPPED_MODEL, ChromaStore, LLMEmbedder
from llm_embedder_integrations.cli import main
from llm_embedder_integrations.encoder import shipped_model_path
from llm_embedder_integrations.store import _ADD_CHUNK
from llm_embedder_integrations.training import (
    TrainingDataError,
    TrainingRecord,
    read_jsonl,
    write_jsonl,
)
from llm_embedder_integrations.training.reward import LLMReward

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

HERE = Path(__file__).parent
TOTAL = 10_000
START_TIMEOUT_S = 180  # the child imports torch and loads the model first


def _child_env() -> dict[str, str]:
    # One thread in the child: two processes each spinning two threads on two cores slow down
    # by an order of magnitude.
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The child's stdout lines, read by a thread (None at the end), so waits can time out."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _kill_when(command: list[str], log: Path, ready: Callable[[], bool]) -> None:
    """Run ``command`` in a child process and SIGKILL it as soon as ``ready()`` holds."""
    with log.open("w") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, env=_child_env()
        )
    name = command[3]  # the sub-command of python -m llm_embedder_integrations
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if process.poll() is not None:
                pytest.fail(
                    f"{name} exited ({process.returncode}) before the kill:\n"
                    f"{log.read_text()[-2000:]}"
                )
            assert time.monotonic() < deadline, f"{name} too slow to start"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL


def test_store_killed_while_adding_keeps_whole_chunks_and_resumes(tmp_path):
    path = tmp_path / "db"
    with (tmp_path / "writer.err").open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "_writer.py"), str(path), str(TOTAL)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=_child_env(),
        )
    lines = _lines(process)
    try:
        printed: list[str] = []
        while f"writing {2 * _ADD_CHUNK}" not in printed:  # the second chunk's commit begins
            line = lines.get(timeout=START_TIMEOUT_S)
            assert line is not None, (tmp_path / "writer.err").read_text()[-2000:]
            printed.append(line)
        time.sleep(0.02)  # kill inside the commit (measured: Chroma's upsert takes ~0.05 s)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    while (more := lines.get(timeout=10)) is not None:
        printed.append(more)
    reported = max(int(x.split()[1]) for x in printed if x.startswith("committed"))

    encoder = LLMEmbedder(SHIPPED_MODEL, backend="onnx-int8", batch_size=128)
    store = ChromaStore(encoder, path=path)
    committed = store.count("qa")
    print(f"{reported} reported committed before the kill; {committed} stored after reopening")
    assert 0 < committed < TOTAL
    # Killed after a commit but before its line: one chunk more than reported.
    assert committed % _ADD_CHUNK == 0 and committed in (reported, reported + _ADD_CHUNK)
    got = store.collection("qa").get(include=["documents"])
    assert sorted(got["ids"]) == [doc_id(i) for i in range(committed)]  # whole chunks, in order
    stored = dict(zip(got["ids"], got["documents"], strict=True))
    assert all(stored[doc_id(i)] == synthetic(i) for i in range(committed))
    probe = committed - 1  # the last committed document is searchable through the index
    assert store.search(synthetic(probe), task="qa", k=1)[0].id == doc_id(probe)

    rest = range(committed, TOTAL)
    store.add([synthetic(i) for i in rest], task="qa", ids=[doc_id(i) for i in rest])
    assert store.count("qa") == TOTAL
    reopened = ChromaStore(encoder, path=path)
    assert reopened.count("qa") == TOTAL
    assert reopened.search(synthetic(TOTAL - 1), task="qa", k=1)[0].id == doc_id(TOTAL - 1)


# -- llm-embedder score ---------------------------------------------------------------------------

RECORDS = 120


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """A one-layer random Llama with MiniLM's tokenizer.

    A stand-in for the LLM: this test is about the resume plumbing of the score command, and a
    real LLM would make the child too slow to kill mid-way in a test budget.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-lm")
    tokenizer = AutoTokenizer.from_pretrained(shipped_model_path())
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def _records() -> list[TrainingRecord]:
    return [
        TrainingRecord(
            f"Where was the animal of note {i}?",
            "qa",
            [synthetic(i)],
            [synthetic(i + 1), synthetic(i + 2)],
            answers=[f"near the place of note {i}"],
            query_id=i,
        )
        for i in range(RECORDS)
    ]


def test_score_killed_mid_way_resumes_to_a_complete_output(tmp_path, tiny_lm, capsys):
    src, out = tmp_path / "train.jsonl", tmp_path / "scored.jsonl"
    write_jsonl(_records(), src)
    arguments = ["score", str(src), str(out), "--llm", str(tiny_lm), "--batch-size", "3"]
    arguments += ["--dtype", "fp32"]  # the reference below scores in fp32
    command = [sys.executable, "-m", "llm_embedder_integrations", *arguments]
    _kill_when(
        command,
        tmp_path / "score.err",
        lambda: out.is_file() and out.read_bytes().count(b"\n") >= 5,
    )
    killed = out.read_bytes()
    kept = killed[: killed.rfind(b"\n") + 1]  # the complete lines written before the kill
    done = kept.count(b"\n")
    with capsys.disabled():  # shown with -s
        print(f"{done} of {RECORDS} records scored before the kill")
    assert 5 <= done < RECORDS, "the kill came too late to test resuming"

    assert main(arguments) == 0  # the same command, resumed in this process
    assert f"scored {RECORDS - done} records" in capsys.readouterr().err
    final = out.read_bytes()
    assert final.startswith(kept)  # nothing written before the kill was rewritten
    scored = read_jsonl(out)
    assert [r.query_id for r in scored] == list(range(RECORDS))  # none lost, none twice
    assert all(len(r.teacher_scores or []) == 3 for r in scored)
    reward = LLMReward(str(tiny_lm), batch_size=3)
    for index in (done - 1, done, RECORDS - 1):  # before the kill, first resumed, last
        expected = reward.score_record(_records()[index])
        assert scored[index].teacher_scores == pytest.approx(expected, abs=1e-5)
    assert json.loads(final.splitlines()[0])["query"] == "Where was the animal of note 0?"


def test_score_stops_at_a_bad_line_keeps_what_it_scored_and_resumes_once_fixed(tmp_path, tiny_lm):
    src, out = tmp_path / "train.jsonl", tmp_path / "scored.jsonl"
    write_jsonl(_records()[:4], src)
    good = src.read_text().splitlines(keepends=True)
    src.write_text("".join([*good[:2], '{"query": "cut off\n', *good[3:]]))
    command = ["score", str(src), str(out), "--llm", str(tiny_lm), "--batch-size", "3"]
    with pytest.raises(TrainingDataError, match=rf"{re.escape(str(src))}, line 3: not valid JSON"):
        main(command)
    kept = out.read_bytes()
    assert [r.query_id for r in read_jsonl(out)] == [0, 1]  # scored before the bad line
    src.write_text("".join(good))  # the line repaired
    assert main(command) == 0
    assert out.read_bytes().startswith(kept)
    assert [r.query_id for r in read_jsonl(out)] == [0, 1, 2, 3]


# -- llm-embedder train ---------------------------------------------------------------------------

TRAIN_STEPS = 12


def _train_yaml(tmp_path: Path, data_path: Path, output: Path) -> Path:
    """A short CPU run of the shipped MiniLM on the toy tool records, a checkpoint every 2 steps."""
    settings = {
        "data": [str(data_path / "llm_embedder_toy" / "tool.json")],
        "output": str(output),
        "model": SHIPPED_MODEL,
        "max_steps": TRAIN_STEPS,
        "batch_size": 4,
        "group_size": 4,
        "max_length": 48,
        "lr": 1e-4,
        "device": "cpu",
        # The killed child runs one thread, the resumed run here two: oneDNN's bf16 kernels round
        # differently with the thread count (fp32 within the tolerance below), so it runs in fp32.
        "precision": "fp32",
        "save_steps": 2,
        "save_total_limit": 2,
        "logging_steps": 1,
        "seed": 7,
    }
    path = tmp_path / f"{output.name}.yaml"
    path.write_text(json.dumps(settings))  # YAML is a superset of JSON
    return path


def _logged_losses(checkpoint: Path) -> dict[int, float]:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}


def test_train_killed_mid_way_resumes_to_the_uninterrupted_result(tmp_path, data_path, capsys):
    output = tmp_path / "killed"
    config = _train_yaml(tmp_path, data_path, output)
    command = [
        sys.executable,
        "-m",
        "llm_embedder_integrations",
        "train",
        "--config",
        str(config),
        "--no-progress",
    ]
    _kill_when(
        command,
        tmp_path / "train.err",
        lambda: (output / "checkpoint-4" / "trainer_state.json").is_file(),
    )
    left = sorted(p.name for p in output.glob("checkpoint-*"))
    with capsys.disabled():  # shown with -s
        print(f"checkpoints when killed: {left}")
    assert f"checkpoint-{TRAIN_STEPS}" not in left, "the kill came too late to test resuming"

    assert main(["train", "--config", str(config), "--resume", "--no-progress"]) == 0
    assert "trained 12 steps" in capsys.readouterr().err
    resumed = _logged_losses(output / f"checkpoint-{TRAIN_STEPS}")
    assert sorted(resumed) == list(range(1, TRAIN_STEPS + 1))  # every step once

    # The same run without the kill: the resumed one continues it exactly (data order, seed).
    straight = tmp_path / "straight"
    config_straight = _train_yaml(tmp_path, data_path, straight)
    assert main(["train", "--config", str(config_straight), "--no-progress"]) == 0
    expected = _logged_losses(straight / f"checkpoint-{TRAIN_STEPS}")
    assert resumed == pytest.approx(expected, rel=1e-4, abs=1e-6)
    encoder = LLMEmbedder(str(output), backend="torch", device="cpu")
    reference = LLMEmbedder(str(straight), backend="torch", device="cpu")
    text = ["load a pretrained ResNet-50 for image classification"]
    np.testing.assert_allclose(
        encoder.encode_queries(text, "tool"), reference.encode_queries(text, "tool"), atol=1e-4
    )
