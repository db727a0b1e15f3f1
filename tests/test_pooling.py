"""One model builder and one rule for the tokens pooling leaves out, for every path that embeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm_embedder_integrations import SHIPPED_MODEL, LLMEmbedder
from llm_embedder_integrations._model import pooling_mask, tokens_left_out
from llm_embedder_integrations.instructions import TASKS
from llm_embedder_integrations.training.losses import TASK_LOSS, MultiTaskLoss
from llm_embedder_integrations.training.train import (
    TrainConfig,
    _load_model,
    instruction_token_counts,
)

TEXT = "who wrote the play Hamlet, and when was it first performed?"


def test_pooling_mask_leaves_out_each_rows_leading_tokens_after_left_padding():
    mask = torch.tensor([[1, 1, 1, 1, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    got = pooling_mask(mask, [2, 1, 0])
    want = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 0, 1, 1], [1, 1, 1, 1, 1]])
    assert torch.equal(got, want)
    assert torch.equal(mask[1], torch.tensor([0, 0, 1, 1, 1]))  # the input is left as it was


def test_pooling_mask_gives_numpy_for_numpy_with_one_count_for_every_row():
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=np.int64)
    got = pooling_mask(mask, 2)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, [[0, 0, 1, 0], [0, 0, 1, 1]])


@pytest.fixture(scope="module")
def trained_layout(tmp_path_factory):
    """The shipped MiniLM as the trainer builds it (mean over the text alone), and saved."""
    model = _load_model(TrainConfig(model=SHIPPED_MODEL), "cpu")
    folder = tmp_path_factory.mktemp("trainer-built") / "model"
    model.save(str(folder))
    return model, folder


def _naive_text_mean(model, prefix: str, text: str) -> np.ndarray:
    """Reference: the transformer over instruction + text, the mean over the text tokens only."""
    bert, tokenizer = model[0].auto_model, model.tokenizer
    skip = len(tokenizer(prefix)["input_ids"]) - 1  # [CLS] + instruction, not the final [SEP]
    with torch.inference_mode():
        hidden = bert(**tokenizer(prefix + text, return_tensors="pt")).last_hidden_state[0]
    vector = hidden[skip:].mean(0)
    return (vector / vector.norm()).numpy()


def test_one_text_embeds_the_same_through_encoder_torch_encoder_onnx_and_the_training_loss(
    trained_layout, tmp_path, monkeypatch
):
    monkeypatch.setenv("LLM_EMBEDDER_CACHE", str(tmp_path / "cache"))
    model, folder = trained_layout
    prefix = TASKS["qa"].query

    loss = MultiTaskLoss(
        model, {"qa": TASK_LOSS["qa"]}, prompt_lengths=instruction_token_counts(model, ["qa"])
    )
    left_out = loss.prompt_lengths[("qa", "query")]
    assert (
        left_out == tokens_left_out(model, prefix) == len(model.tokenizer(prefix)["input_ids"]) - 1
    )
    with torch.inference_mode():
        features = model.preprocess([prefix + TEXT])
        training = loss._embed_text_only(features, [left_out])[0].numpy()

    vectors = {"loss": training}
    for backend in ("torch", "onnx"):
        encoder = LLMEmbedder(folder, backend=backend, device="cpu", precision="fp32")
        assert encoder.instructions and encoder.instruction("qa", "query") == prefix
        vectors[backend] = encoder.encode_queries([TEXT], "qa")[0]

    expected = _naive_text_mean(model, prefix, TEXT)
    for path, vector in vectors.items():
        np.testing.assert_allclose(vector, expected, atol=1e-5, err_msg=path)
    # The check can fail: pooling the instruction too moves the vector well past the tolerance.
    with torch.inference_mode():
        pooled_all = model(model.preprocess([prefix + TEXT]))["sentence_embedding"][0].numpy()
    assert np.abs(pooled_all - expected).max() > 0.01
