"""LLM reward: how much a candidate key helps an LLM produce the expected output.

The reward of a candidate ``C`` for a query with expected output ``O`` is the mean
log-likelihood of O's tokens given the candidate and the query,
``r(C | O) = mean_i log p_LLM(o_i | C, query, o_<i)``, computed with any Hugging Face causal LM
(by default the SmolLM2-135M shipped offline, through `LocalLLM`). Prompts follow the paper's code
(FlagEmbedding ``research/llm_embedder``, LM scoring): see `TEMPLATES`; long-range LM data puts
the candidate chunk's tokens, the record's ``context`` and the query chunk before the
continuation. Only the output tokens are scored, and logits are computed only at the positions
that predict them.

`score_file` fills ``teacher_scores`` of a JSON Lines training file; it appends to its output and
resumes after an interruption.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F

from ..llm import LocalLLM
from .data import TrainingDataError, TrainingRecord, _numbered_records

__all__ = ["TEMPLATES", "LLMReward", "score_file"]

logger = logging.getLogger(__name__)

_KNOWLEDGE = "Knowledge: {key}\n\nQuestion: {query}\n\nAnswer: {answer}"

TEMPLATES: Mapping[str, str] = MappingProxyType(
    {
        "qa": _KNOWLEDGE,
        "convsearch": _KNOWLEDGE,
        "icl": "{key}\n{query}\n{answer}",
        "chat": "{key}\nSpeaker 1: {query}\nSpeaker 2: {answer}",
    }
)
"""Prompt of each task with an expected output; ``{answer}`` is last and is what gets scored.
Long-range LM (``lrlm``) concatenates tokens instead. Tools have no expected LLM output."""

_STRIPPED = frozenset({"qa", "convsearch"})  # the paper's code strips key, query and answer there


def _check_task(task: str) -> None:
    if task != "lrlm" and task not in TEMPLATES:
        raise ValueError(
            f"task {task!r} has no LLM reward: only tasks with an expected LLM output "
            f"({', '.join([*TEMPLATES, 'lrlm'])}) are scored; tools are trained "
            "contrastively without teacher scores"
        )


class LLMReward:
    """Scores candidate keys by the LLM log-likelihood of the expected output.

    Args:
        llm: A `LocalLLM`, a model name or path for one, or None for the shipped SmolLM2
            (bf16 on CUDA, fp32 on CPU).
        model: Instead of ``llm``: an already loaded Hugging Face causal LM (any device and
            dtype, e.g. one loaded with ``device_map``)...
        tokenizer: ...and its fast tokenizer.
        batch_size: Candidates per forward pass.
        key_max_length: Keys are cut to this many LLM tokens (as the paper's code: 512).
        max_length: Longer inputs lose their first tokens (the output is always kept whole).
        answer_logits_only: Apply the LM head only at the positions that predict output tokens
            (faster; same values). Models that post-process logits (soft-capping, logit scale)
            always use the full forward.
        seed: Seed of the choice of one answer when a record has several.
    """

    def __init__(
        self,
        llm: LocalLLM | str | os.PathLike[str] | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        batch_size: int = 16,
        key_max_length: int = 512,
        max_length: int = 2048,
        answer_logits_only: bool = True,
        seed: int = 0,
    ) -> None:
        for name, value in (
            ("batch_size", batch_size),
            ("key_max_length", key_max_length),
            ("max_length", max_length),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        if model is not None or tokenizer is not None:
            if model is None or tokenizer is None or llm is not None:
                raise ValueError("pass either `llm`, or both `model` and `tokenizer`")
            self.model, self.tokenizer = model, tokenizer
            self.name = str(getattr(model, "name_or_path", type(model).__name__))
        else:
            local = llm if isinstance(llm, LocalLLM) else LocalLLM(llm)
            self.model, self.tokenizer, self.name = local.hf_model, local.tokenizer, local.name
        if not getattr(self.tokenizer, "is_fast", False):
            raise TypeError(
                f"{self.name}: the LLM reward needs a fast (Rust) tokenizer to locate the "
                "answer tokens; load the model with its tokenizer.json"
            )
        if self.tokenizer.pad_token_id is None:
            raise ValueError(
                f"{self.name}: the tokenizer has no pad token; set tokenizer.pad_token = "
                "tokenizer.eos_token"
            )
        self.batch_size = batch_size
        self.key_max_length = key_max_length
        self.max_length = max_length
        self.seed = seed
        config = self.model.config
        post_processed = any(
            getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale")
        )
        self.answer_logits_only = answer_logits_only and not post_processed
        if answer_logits_only and post_processed:
            logger.warning(
                "%s post-processes its logits; computing full logits instead of answer-only",
                self.name,
            )
        probe = self.tokenizer("a")["input_ids"]
        bos = self.tokenizer.bos_token_id
        self._bos = [bos] if bos is not None and probe and probe[0] == bos else []
        self._eos = self.tokenizer.eos_token_id

    @property
    def device(self) -> torch.device:
        """Device of the LLM's input embeddings (where the inputs go)."""
        return self.model.get_input_embeddings().weight.device

    # Inputs --------------------------------------------------------------------------------------

    def _cut_key(self, key: str) -> str:
        ids = self.tokenizer.encode(key, add_special_tokens=False)
        if len(ids) <= self.key_max_length:
            return key
        return self.tokenizer.decode(ids[: self.key_max_length])

    def encode(
        self, task: str, query: str, key: str, answer: str, context: str = ""
    ) -> tuple[list[int], int]:
        """Token ids of one candidate's prompt and the number of answer tokens at its end.

        Args:
            task: ``qa``, ``convsearch``, ``icl``, ``chat`` or ``lrlm``.
            query: The query (the context chunk for ``lrlm``).
            key: The candidate.
            answer: The expected output.
            context: ``lrlm`` only: text between the candidate and the query chunk.

        Raises:
            ValueError: For a task without an expected output (``tool``) or an empty answer.
        """
        if not answer.strip():
            raise ValueError("the expected output (`answer`) is empty; nothing to score")
        key = self._cut_key(key)
        if task == "lrlm":
            pieces = [
                self.tokenizer.encode(text, add_special_tokens=False)
                for text in (key, context, query, answer)
            ]
            ids = self._bos + pieces[0] + pieces[1] + pieces[2] + pieces[3]
            n_answer = len(pieces[3])
        elif task in TEMPLATES:
            if task in _STRIPPED:
                key, query, answer = key.strip(), query.strip(), answer.strip()
            text = TEMPLATES[task].format(key=key, query=query, answer=answer)
            start = len(text) - len(answer)
            enc = self.tokenizer(text, return_offsets_mapping=True)
            ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
            if self._eos is not None and len(ids) > 1 and ids[-1] == self._eos:
                ids, offsets = ids[:-1], offsets[:-1]
            first = next((i for i, (a, b) in enumerate(offsets) if b > start and b > a), len(ids))
            n_answer = len(ids) - first
        else:
            _check_task(task)
        if n_answer < 1 or n_answer >= len(ids):
            raise ValueError(
                f"could not place the answer {answer[:40]!r} after a prompt: {n_answer} answer "
                f"tokens of {len(ids)}"
            )
        if len(ids) > self.max_length:
            if n_answer >= self.max_length:
                raise ValueError(
                    f"the answer alone has {n_answer} tokens, more than max_length="
                    f"{self.max_length}; raise max_length"
                )
            ids = self._bos + ids[len(ids) - self.max_length + len(self._bos) :]
        return ids, n_answer

    def answer_of(self, record: TrainingRecord) -> str:
        """The answer scored for ``record``: its only one, or one drawn with a per-record seed.

        Raises:
            ValueError: If the record has no answer.
        """
        if not record.answers:
            raise ValueError(
                f"record {record.query[:60]!r} has no `answers`: the LLM reward needs the "
                "expected output (convert with answered_only=True to skip such queries)"
            )
        if len(record.answers) == 1:
            return record.answers[0]
        return random.Random(f"{self.seed}\x00{record.query}").choice(record.answers)

    # Scoring -------------------------------------------------------------------------------------

    def score_encoded(self, items: Sequence[tuple[list[int], int]]) -> list[float]:
        """Mean answer log-likelihood of each ``(ids, n_answer)``, in batches of similar length."""
        order = sorted(range(len(items)), key=lambda i: -len(items[i][0]))
        out = [0.0] * len(items)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, value in zip(idx, self._score_batch([items[i] for i in idx]), strict=True):
                out[i] = value
        return out

    def score(
        self, task: str, query: str, keys: Sequence[str], answer: str, context: str = ""
    ) -> list[float]:
        """Reward of each key for ``query`` and its expected output ``answer``."""
        return self.score_encoded([self.encode(task, query, k, answer, context) for k in keys])

    def score_record(self, record: TrainingRecord) -> list[float]:
        """Reward of each key of ``record`` (``pos + neg``, or ``history``), in order."""
        _check_task(record.task)
        context = record.extra.get("context") or ""
        if not isinstance(context, str):
            raise TrainingDataError(
                f"must be a string, got {type(context).__name__}", field="context"
            )
        return self.score(record.task, record.query, record.keys, self.answer_of(record), context)

    @torch.inference_mode()
    def _score_batch(self, batch: Sequence[tuple[list[int], int]]) -> list[float]:
        device = self.device
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        rows: list[int] = []
        cols: list[int] = []
        targets: list[int] = []
        for b, (ids, n_answer) in enumerate(batch):
            n = len(ids)
            input_ids[b, :n] = torch.tensor(ids)
            attention[b, :n] = 1
            rows += [b] * n_answer
            cols += range(n - n_answer - 1, n - 1)
            targets += ids[n - n_answer :]
        input_ids, attention = input_ids.to(device), attention.to(device)
        r, c = torch.tensor(rows), torch.tensor(cols)
        if self.answer_logits_only:
            hidden = self.model.base_model(
                input_ids=input_ids, attention_mask=attention, use_cache=False
            ).last_hidden_state
            head = self.model.get_output_embeddings()
            picked = hidden[r.to(hidden.device), c.to(hidden.device)]
            logits = head(picked.to(head.weight.device))
        else:
            full = self.model(input_ids=input_ids, attention_mask=attention, use_cache=False)
            logits = full.logits[r.to(full.logits.device), c.to(full.logits.device)]
        logp = F.log_softmax(logits.float(), dim=-1)
        out = logp.device
        token = logp.gather(1, torch.tensor(targets, device=out)[:, None]).squeeze(1)
        sums = torch.zeros(len(batch), device=out).index_add_(0, r.to(out), token)
        counts = torch.tensor([n for _, n in batch], device=out, dtype=torch.float32)
        return (sums / counts).tolist()


# Files -------------------------------------------------------------------------------------------


def _completed_lines(path: Path) -> list[dict[str, Any]]:
    """Records already written to ``path``; a truncated last line is cut off the file.

    Raises:
        TrainingDataError: If a complete (newline-terminated) line is not a JSON object.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    done: list[dict[str, Any]] = []
    keep = 0
    for number, line in enumerate(data.splitlines(keepends=True), start=1):
        if not line.endswith(b"\n"):
            break  # cut by an interruption: dropped and redone
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TrainingDataError(
                f"is not valid JSON ({exc}); the output is damaged: delete it and rerun",
                path=path,
                line=number,
            ) from None
        if not isinstance(obj, dict):
            raise TrainingDataError("is not a JSON object", path=path, line=number)
        done.append(obj)
        keep += len(line)
    if keep < len(data):
        logger.info("%s: dropping an incomplete last line (%d bytes)", path, len(data) - keep)
        with path.open("r+b") as f:
            f.truncate(keep)
    return done


def _teacher_dtype() -> str:
    from .._cpu import teacher_dtype

    return teacher_dtype("cuda" if torch.cuda.is_available() else "cpu")


def score_file(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    reward: LLMReward | None = None,
    llm: LocalLLM | str | os.PathLike[str] | None = None,
    batch_size: int = 16,
    task: str | None = None,
    show_progress: bool = True,
    dtype: str | None = None,
) -> int:
    """Fill ``teacher_scores`` of every record of a training file, resuming where it stopped.

    The output is written append-only, one line per record, flushed after each. On a rerun the
    records already in ``out_path`` are skipped (a truncated last line, left by a kill, is
    dropped and redone), so an interrupted run continues and ends with the same file as an
    uninterrupted one. The LLM is loaded only if something is left to score.

    Args:
        in_path: JSON Lines training file.
        out_path: Output file (created, or continued).
        reward: The scorer; built from ``llm`` and ``batch_size`` when None.
        llm: LLM name or path (None: the shipped SmolLM2), used when ``reward`` is None.
        batch_size: Candidates per forward pass, used when ``reward`` is None.
        task: Task of records without a ``task`` field.
        show_progress: Show a progress bar.
        dtype: The LLM's dtype when it is loaded here (``llm`` a name or path): ``"fp32"``,
            ``"bf16"``...; None takes bf16 where the device runs it natively (a GPU, or a CPU
            with AVX512-BF16 or AMX) and fp32 elsewhere, where bf16 is emulated and slow.

    Returns:
        The number of records scored by this call.

    Raises:
        TrainingDataError: On a bad input record (file and line named) or an output that does
            not continue the input.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    if in_path.resolve() == out_path.resolve():
        raise ValueError(f"the output must be another file than the input {str(in_path)!r}")
    done = _completed_lines(out_path)
    total = sum(1 for line in in_path.open(encoding="utf-8") if line.strip())
    if len(done) > total:
        raise TrainingDataError(
            f"has {len(done)} records but the input {str(in_path)!r} has {total}: it is the "
            "output of another file; delete it or choose another output",
            path=out_path,
        )
    from tqdm.auto import tqdm

    scored = 0
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        out_path.open("a", encoding="utf-8") as out,
        tqdm(
            total=total,
            initial=len(done),
            unit="query",
            desc="scoring",
            disable=not show_progress,
        ) as bar,
    ):
        for index, (number, record) in enumerate(_numbered_records(in_path, task=task)):
            if index < len(done):
                if done[index].get("query") != record.query:
                    raise TrainingDataError(
                        f"record {index + 1} of the output does not match line {number} of "
                        f"{str(in_path)!r} (another query): the output belongs to another "
                        "input; delete it or choose another output",
                        path=out_path,
                        line=index + 1,
                    )
                continue
            if reward is None:
                if not isinstance(llm, LocalLLM):
                    llm = LocalLLM(llm, dtype=dtype or _teacher_dtype())
                reward = LLMReward(llm, batch_size=batch_size)
            try:
                scores = reward.score_record(record)
            except (ValueError, TrainingDataError) as exc:
                raise TrainingDataError(str(exc), path=in_path, line=number) from exc
            scored_record = dataclasses.replace(record, teacher_scores=scores)
            out.write(json.dumps(scored_record.to_dict(), ensure_ascii=False) + "\n")
            out.flush()
            scored += 1
            bar.update(1)
    return scored
