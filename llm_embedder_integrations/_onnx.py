"""ONNX export of a sentence-transformers model, cached next to it, and its CPU runner.

The export uses ``torch.onnx.export`` and runs with onnxruntime directly (no optimum), so it
works offline and on models fine-tuned by this package. The file is re-exported when the
model's weights change (their sizes and modification times are recorded beside it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["OnnxRunner", "onnx_path"]

logger = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
_CACHE_HOME = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm-embedder"


def _weights_fingerprint(model_dir: Path) -> dict[str, list[int]]:
    return {
        str(p.relative_to(model_dir)): [p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(model_dir.rglob("*"))
        if p.suffix in _WEIGHT_SUFFIXES and "onnx" not in p.parts
    }


def onnx_path(model_dir: Path | None, model_id: str, quantized: bool) -> Path:
    """Where the ONNX file of a model lives: ``<model>/onnx/`` if writable, else the user cache."""
    name = "model_int8.onnx" if quantized else "model.onnx"
    if model_dir is not None and os.access(model_dir, os.W_OK):
        return model_dir / "onnx" / name
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:16]
    return _CACHE_HOME / "onnx" / digest / name


GRAPH_VERSION = 2
"""Inputs of the exported graph: 2 added ``pooling_mask`` (older exports are redone)."""


class _Graph(torch.nn.Module):
    """The model as a function of its tokenizer outputs and a pooling mask, for tracing.

    The transformer sees the real attention mask; the modules after it (pooling,
    normalisation) see ``pooling_mask``, which leaves instruction tokens out of the pooling
    for models that pool over the text alone (it equals the attention mask otherwise).
    """

    def __init__(self, st: Any, columns: tuple[str, ...]) -> None:
        super().__init__()
        self.st = st
        self.columns = columns

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *tokens, pooling_mask = inputs
        first, *rest = list(self.st)
        features = first(dict(zip(self.columns, tokens, strict=True)))
        features["attention_mask"] = pooling_mask
        for module in rest:
            features = module(features)
        return features["sentence_embedding"]


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def _export(st: Any, columns: tuple[str, ...], path: Path) -> None:
    cpu = st.to("cpu").float()
    sample = st.tokenizer(
        ["an example", "another, longer example text"], padding=True, return_tensors="pt"
    )
    tmp = _atomic_target(path)
    names = [*columns, "pooling_mask"]
    axes = {c: {0: "batch", 1: "sequence"} for c in names}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it treats as dynamic
        torch.onnx.export(
            _Graph(cpu, columns).eval(),
            (*(sample[c] for c in columns), sample["attention_mask"]),
            str(tmp),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, path)


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = _atomic_target(dst)
    # Per-channel int8 weights on the matrix products only: per-tensor scales lose far more
    # (on MiniLM, min cosine to fp32 0.90 per tensor against 0.99 per channel).
    quantize_dynamic(
        str(src),
        str(tmp),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
    )
    os.replace(tmp, dst)


class OnnxRunner:
    """Runs an exported model with onnxruntime on the CPU.

    Args:
        st: The loaded sentence-transformers model (exported on first use).
        model_dir: Its local directory, if any (the export goes beside it when writable).
        model_id: Its stable name (names the cache folder otherwise).
        columns: Tokenizer outputs the model takes.
        quantized: Dynamic int8 quantisation of the weights.
    """

    def __init__(
        self,
        st: Any,
        model_dir: Path | None,
        model_id: str,
        columns: tuple[str, ...],
        *,
        quantized: bool,
    ) -> None:
        import onnxruntime as ort

        fp32 = onnx_path(model_dir, model_id, quantized=False)
        stamp = fp32.with_suffix(".json")
        want: dict[str, Any] = {
            "model": model_id,
            "columns": list(columns),
            "graph": GRAPH_VERSION,
        }
        if model_dir is not None:
            want["weights"] = _weights_fingerprint(model_dir)
        have = json.loads(stamp.read_text()) if stamp.is_file() else None
        if have != want or not fp32.is_file():
            logger.info("exporting %s to ONNX at %s", model_id, fp32)
            _export(st, columns, fp32)
            int8 = onnx_path(model_dir, model_id, quantized=True)
            int8.unlink(missing_ok=True)
            stamp.write_text(json.dumps(want))
        path = fp32
        if quantized:
            path = onnx_path(model_dir, model_id, quantized=True)
            if not path.is_file():
                _quantize(fp32, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.path = path
        self.columns = columns
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, features: dict[str, np.ndarray], prompt_length: int = 0) -> np.ndarray:
        """Sentence embeddings (not normalised) of padded int64 features.

        The first ``prompt_length`` tokens of each row are left out of the pooling.
        """
        feed = {c: features[c].astype(np.int64, copy=False) for c in self.columns}
        pooling_mask = features["attention_mask"].astype(np.int64, copy=True)
        pooling_mask[:, :prompt_length] = 0
        feed["pooling_mask"] = pooling_mask
        return self._session.run(None, feed)[0]
