"""Shared fixtures: the shipped MiniLM loaded once per session, and the real data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llm_embedder_integrations import SHIPPED_MODEL, LLMEmbedder

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """The real-data folder: $LLM_EMBEDDER_DATA, else ../shared/data beside the checkout."""
    return Path(os.environ.get("LLM_EMBEDDER_DATA") or REPO.parent / "shared" / "data")


def require_data(sub: str = "") -> Path:
    """The data folder (or one of its subfolders); skip when absent, fail under CI."""
    path = data_root() / sub
    if not path.exists():
        reason = (
            f"real data not found at {path}: set LLM_EMBEDDER_DATA to the data folder "
            "(see the README, 'Data')"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def encoder() -> LLMEmbedder:
    """The shipped all-MiniLM-L6-v2; instructions "auto" leave them off for it."""
    return LLMEmbedder(SHIPPED_MODEL)


@pytest.fixture(scope="session")
def encoder_instr() -> LLMEmbedder:
    """The same loaded model with instructions forced on."""
    return LLMEmbedder(SHIPPED_MODEL, instructions=True)
