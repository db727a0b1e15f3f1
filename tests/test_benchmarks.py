"""The benchmark scripts' own measuring logic (benchmarks/ is not a package: loaded by path)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
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
