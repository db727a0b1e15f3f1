"""ONNX export of a sentence-transformers model, cached per user, and its CPU runner.

The export uses ``torch.onnx.export`` and runs with onnxruntime directly (no optimum), so it
works offline and on models fine-tuned by this package. Files go to the user cache
(``$LLM_EMBEDDER_CACHE``, else ``$XDG_CACHE_HOME/llm-embedder``, else ``~/.cache/llm-embedder``),
never into the model's folder, under a fingerprint of the weights (a hub model's revision; a
local model's weight files, their sizes and modification times): changed weights get a new
export and an unchanged model is never exported twice. Each file is written to a temporary
name and renamed into place, so processes exporting at once all succeed and no reader sees
half a file.
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

from . import _cpu
from ._model import embed_with_pooling_mask, pooling_mask

__all__ = ["OnnxRunner", "cache_root", "weights_fingerprint"]

logger = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
CACHE_ENV = "LLM_EMBEDDER_CACHE"
"""Environment variable naming the cache folder (overrides the XDG location)."""


def cache_root() -> Path:
    """The user cache folder of this package (read from the environment at each call)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "llm-embedder"


def _hub_revision(repo_id: str) -> str | None:
    """The commit of the cached snapshot of a hub model, or None when it is not cached."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(found, str):
        return None
    parts = Path(found).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None


def weights_fingerprint(source: str, model_id: str) -> str:
    """A short stable key of a model's weights: what its exports are filed under.

    A local folder: the name, size and modification time of each weight file. A hub id: its
    cached revision (the model's commit). Anything else: the id alone.
    """
    path = Path(source)
    parts: dict[str, Any] = {"model": model_id}
    if path.is_dir():
        parts["weights"] = {
            str(p.relative_to(path)): [p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(path.rglob("*"))
            if p.suffix in _WEIGHT_SUFFIXES and "onnx" not in p.parts
        }
    else:
        parts["revision"] = _hub_revision(source)
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


GRAPH_VERSION = 3
"""2 added the ``pooling_mask`` input; 3 traces eager attention, which the fuser recognises."""


class _Graph(torch.nn.Module):
    """The model as a function of its tokenizer outputs and a pooling mask, for tracing.

    The transformer sees the real attention mask; the modules after it (pooling,
    normalisation) see ``pooling_mask``, which leaves instruction tokens out of the pooling
    for models that pool over the text alone (it equals the attention mask otherwise): the
    encoder's torch path and the training loss run the same :func:`._model.embed_with_pooling_mask`.
    """

    def __init__(self, st: Any, columns: tuple[str, ...]) -> None:
        super().__init__()
        self.st = st
        self.columns = columns

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *tokens, mask = inputs
        return embed_with_pooling_mask(self.st, dict(zip(self.columns, tokens, strict=True)), mask)


def _write_atomically(path: Path, write: Any) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    The file ends with mode 0644 (mkstemp creates 0600): the cache may be shared.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _transformer(st: Any) -> Any:
    """The Hugging Face model inside a sentence-transformers model's first module, if any."""
    first = next(iter(st))
    return getattr(first, "auto_model", None) or getattr(first, "model", None)


def _export(st: Any, columns: tuple[str, ...], path: Path) -> None:
    cpu = st.to("cpu").float()
    sample = st.tokenizer(
        ["an example", "another, longer example text"], padding=True, return_tensors="pt"
    )
    names = [*columns, "pooling_mask"]
    axes = {c: {0: "batch", 1: "sequence"} for c in names}
    # Eager attention traces to the MatMul/Softmax pattern that onnxruntime's transformer
    # optimizer fuses; SDPA traces to one it does not. Restored afterwards: the model is shared.
    model = _transformer(cpu)
    before = getattr(getattr(model, "config", None), "_attn_implementation", None)
    switch = before not in (None, "eager") and hasattr(model, "set_attn_implementation")

    def write(tmp: Path) -> None:
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

    if switch:
        model.set_attn_implementation("eager")
    try:
        _write_atomically(path, write)
    finally:
        if switch:
            model.set_attn_implementation(before)


_FUSED_TOLERANCE = 1e-4
"""Largest difference from the unfused graph at which a fused graph is kept."""


def _sample_feed(st: Any, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    texts = ["a", "An example sentence, of a few more words than the first one.", "short text"]
    batch = st.tokenizer(texts, padding=True, return_tensors="np")
    feed = {c: batch[c].astype(np.int64) for c in columns}
    feed["pooling_mask"] = batch["attention_mask"].astype(np.int64)
    return feed


def _fuse(st: Any, columns: tuple[str, ...], src: Path, dst: Path) -> bool:
    """Write ``src`` with attention, LayerNorm and GELU fused (onnxruntime's optimizer).

    The fused graph is kept only where it gives the unfused graph's vectors (within
    ``_FUSED_TOLERANCE``) on padded sample inputs; False (with one log line) otherwise.
    """
    import onnxruntime as ort
    from onnxruntime.transformers.optimizer import optimize_model

    config = getattr(_transformer(st), "config", None)
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    if not heads or not hidden:
        logger.info("no fused ONNX graph: the model's config names no heads or hidden size")
        return False

    def write(tmp: Path) -> None:
        fused = optimize_model(
            str(src), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
        )
        fused.save_model_to_file(str(tmp))
        feed = _sample_feed(st, columns)
        runs = [
            ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)[0]
            for p in (src, tmp)
        ]
        gap = float(np.abs(runs[0] - runs[1]).max())
        if gap > _FUSED_TOLERANCE:
            raise _FusionMismatch(f"the fused graph differs from the unfused one by {gap:.2g}")

    try:
        _write_atomically(dst, write)
    except _FusionMismatch as exc:
        logger.warning("ONNX fusion not used for this model: %s", exc)
        return False
    return True


class _FusionMismatch(Exception):
    """The fused graph does not give the unfused graph's vectors."""


def _quantize(src: Path, dst: Path, *, reduce_range: bool) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def write(tmp: Path) -> None:
        # Per-channel int8 weights on the matrix products only: per-tensor scales lose far
        # more (on MiniLM, min cosine to fp32 0.90 per tensor against 0.99 per channel).
        quantize_dynamic(
            str(src),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=reduce_range,
            op_types_to_quantize=["MatMul", "Attention"],
            # The fused graph's contrib ops defeat shape inference; their outputs are float.
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )

    _write_atomically(dst, write)


class OnnxRunner:
    """Runs an exported model with onnxruntime on the CPU.

    Args:
        st: The loaded sentence-transformers model (exported on first use).
        source: Where it was loaded from (a local folder or a hub id): fingerprints the weights.
        model_id: Its stable name.
        columns: Tokenizer outputs the model takes.
        quantized: Dynamic int8 quantisation of the weights.
    """

    def __init__(
        self,
        st: Any,
        source: str,
        model_id: str,
        columns: tuple[str, ...],
        *,
        quantized: bool,
    ) -> None:

        key = f"{weights_fingerprint(source, model_id)}-g{GRAPH_VERSION}-{'-'.join(columns)}"
        folder = cache_root() / "onnx" / key
        plain, fused = folder / "model.onnx", folder / "model_fused.onnx"
        if not plain.is_file():
            logger.info("exporting %s to ONNX at %s", model_id, plain)
            _export(st, columns, plain)
        unfusable = folder / "model_fused.skip"
        if not fused.is_file() and not unfusable.is_file() and not _fuse(st, columns, plain, fused):
            _write_atomically(unfusable, lambda tmp: tmp.write_text("fusion changed the vectors"))
        path = fused if fused.is_file() else plain
        if quantized:
            reduce_range = not _cpu.cpu_features().vnni
            source_path = path
            path = folder / f"{source_path.stem}_int8{'_7bit' if reduce_range else ''}.onnx"
            if not path.is_file():
                _quantize(source_path, path, reduce_range=reduce_range)
        self.columns = columns
        self.use_graph(path)

    def use_graph(self, path: Path) -> None:
        """Run the graph at ``path`` from now on (the benchmark compares graphs this way)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.path = path
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, features: dict[str, np.ndarray], prompt_length: int = 0) -> np.ndarray:
        """Sentence embeddings (not normalised) of padded int64 features.

        The first ``prompt_length`` tokens of each row are left out of the pooling.
        """
        feed = {c: features[c].astype(np.int64, copy=False) for c in self.columns}
        mask = features["attention_mask"].astype(np.int64, copy=False)
        feed["pooling_mask"] = pooling_mask(mask, prompt_length) if prompt_length else mask
        return self._session.run(None, feed)[0]
