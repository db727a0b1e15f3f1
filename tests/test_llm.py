"""The shipped SmolLM2 GGUF: converted once into the user cache, then loaded from there."""

from __future__ import annotations

import logging

import pytest
import torch

from llm_embedder_integrations import llm as llm_module
from llm_embedder_integrations.llm import LocalLLM, converted_gguf_dir, smollm2_gguf_path

TEXT = "Knowledge: Oslo is the capital of Norway.\n\nQuestion: What is the capital of Norway?"


def fresh_load(monkeypatch, dtype: str = "fp32") -> LocalLLM:
    monkeypatch.setattr(llm_module, "_loaded", {})  # no in-process reuse: load as a new process
    return LocalLLM(device="cpu", dtype=dtype)


def test_gguf_is_converted_once_and_the_copy_loads_the_same_model(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="llm_embedder_integrations.llm")
    # A cache that cannot be written costs time, never the model.
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("LLM_EMBEDDER_CACHE", str(blocked / "cache"))
    unwritable = fresh_load(monkeypatch)
    assert "could not cache the converted" in caplog.text
    assert unwritable.hf_model is not None

    monkeypatch.setenv("LLM_EMBEDDER_CACHE", str(tmp_path / "cache"))
    folder = converted_gguf_dir(smollm2_gguf_path())
    assert folder.is_relative_to(tmp_path / "cache")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{")  # an interrupted conversion: no marker, replaced
    converted = fresh_load(monkeypatch)
    assert (folder / "converted.json").is_file() and (folder / "model.safetensors").is_file()
    assert "converted once into" in caplog.text

    caplog.clear()
    cached = fresh_load(monkeypatch)
    assert "converted once into" not in caplog.text  # read from the copy, not the GGUF file
    assert cached.hf_model is not converted.hf_model
    first, second = converted.hf_model.state_dict(), cached.hf_model.state_dict()
    assert sorted(first) == sorted(second)
    assert all(torch.equal(first[name], second[name]) for name in first)
    ids = converted.tokenizer(TEXT, return_tensors="pt")
    assert torch.equal(ids["input_ids"], cached.tokenizer(TEXT, return_tensors="pt")["input_ids"])
    with torch.no_grad():
        expected = converted.hf_model(**ids).logits
        assert torch.equal(cached.hf_model(**ids).logits, expected)
    messages = [{"role": "user", "content": "What is the capital of Norway?"}]
    assert cached.tokenizer.apply_chat_template(
        messages, tokenize=False
    ) == converted.tokenizer.apply_chat_template(messages, tokenize=False)
    assert cached.tokenizer.pad_token == converted.tokenizer.pad_token
    assert cached.chat(messages, max_new_tokens=8) == converted.chat(messages, max_new_tokens=8)


def test_a_bf16_model_is_the_same_converted_cached_or_uncacheable(tmp_path, monkeypatch):
    # A bf16 teacher cast its rotary frequencies to bf16 when it was just converted (or could
    # not be cached) and kept them in fp32 when read from the cache, so a run's teacher scores
    # depended on whether an earlier run had converted the GGUF file.
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("LLM_EMBEDDER_CACHE", str(blocked / "cache"))
    uncacheable = fresh_load(monkeypatch, "bf16")
    monkeypatch.setenv("LLM_EMBEDDER_CACHE", str(tmp_path / "cache"))
    converted = fresh_load(monkeypatch, "bf16")
    cached = fresh_load(monkeypatch, "bf16")
    ids = cached.tokenizer(TEXT, return_tensors="pt")
    with torch.no_grad():
        expected = cached.hf_model(**ids).logits
    for model in (converted.hf_model, uncacheable.hf_model):
        assert {n: b.dtype for n, b in model.named_buffers()} == {
            n: b.dtype for n, b in cached.hf_model.named_buffers()
        }
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
        with torch.no_grad():
            assert torch.equal(model(**ids).logits, expected)


def test_the_converted_copy_is_keyed_by_the_gguf_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_EMBEDDER_CACHE", str(tmp_path))
    gguf = tmp_path / "model.Q4_0.gguf"
    gguf.write_bytes(b"one")
    before = converted_gguf_dir(gguf)
    assert before.parent == tmp_path / "gguf" and before.name.startswith("model.Q4_0-")
    gguf.write_bytes(b"other")  # a changed file: a new folder
    assert converted_gguf_dir(gguf) != before
    with pytest.raises(FileNotFoundError):
        converted_gguf_dir(tmp_path / "missing.gguf")
