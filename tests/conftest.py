"""Shared fixtures: the shipped MiniLM loaded once per session, and the real data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llm_embedder_integrations import SHIPPED_MODEL, LLMEmbedder
from llm_embedder_integrations.encoder import shipped_model_path
from llm_embedder_integrations.evaluation.datasets import ENV_VAR, data_dir


def require_data() -> Path:
    """The real-data folder; the test skips without it, except under CI where it fails."""
    try:
        return data_dir()
    except FileNotFoundError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"real data folder missing under CI=true: {exc}")
        pytest.skip(f"real data folder not found: set {ENV_VAR} to the data folder ({exc})")


@pytest.fixture(scope="session")
def data_path() -> Path:
    """The real-data folder (see :func:`require_data`)."""
    return require_data()


@pytest.fixture(scope="session")
def encoder() -> LLMEmbedder:
    """The shipped all-MiniLM-L6-v2; instructions "auto" leave them off for it.

    ONNX fp32, the same on every CPU (``backend="auto"`` picks torch bf16 on a CPU with native
    bf16: test_backends.py covers that choice), so exact comparisons hold everywhere.
    """
    return LLMEmbedder(SHIPPED_MODEL, backend="onnx")


@pytest.fixture(scope="session")
def encoder_instr() -> LLMEmbedder:
    """The same loaded model with instructions forced on."""
    return LLMEmbedder(SHIPPED_MODEL, instructions=True, backend="onnx")


@pytest.fixture
def plain_bert(tmp_path) -> Path:
    """The shipped MiniLM's weights as a plain transformers checkpoint (no modules.json)."""
    import shutil

    plain = tmp_path / "plain-bert"
    plain.mkdir()
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
    ):
        shutil.copy(shipped_model_path() / name, plain / name)
    return plain
