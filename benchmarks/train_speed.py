"""Training throughput of the recipe: queries/s per precision and setting, each step split in two.

    python benchmarks/train_speed.py                         # this machine's default settings
    python benchmarks/train_speed.py --batch-size 32 --group-size 9 --max-length 256 \\
        --profile runs/train_speed                           # the shape of a GPU run

Every setting trains the same batches through `build_trainer`, the code path of
``llm-embedder train``: ``--warmup`` untimed steps, then ``--steps`` timed ones, one setting after
another in one process, so the ratios hold on a noisy machine. The batches are real text (the
bundled XQuAD paragraphs, cut at random places and lengths, so the padded shapes vary from batch
to batch as in real data), half of them a distilled task (qa, random teacher scores) and half a
contrastive one (tool), drawn one task a batch.

For each setting: queries/s, the median step, the part of it spent collating the batch
(tokenising, in the main process) and the rest (the model's forward and backward pass, the loss
and the optimizer), and the peak GPU memory. With ``--profile DIR`` a few steps of each setting
are profiled (torch.profiler) and ``DIR/profile_<setting>.txt`` gets, per step, the CPU time, the
GPU kernels' time, the number of kernel launches, and the top operators: a step whose GPU is
idle most of the time is bound by the CPU that feeds it, not by the arithmetic.

Settings (``--settings``; the default is every one this machine can run):

- ``fp32``: plain fp32.
- ``tf32``: fp32 with TF32 matrix products (CUDA).
- ``bf16``: bf16 autocast (what ``precision="auto"`` picks on a GPU with bf16).
- ``bf16-workers``: bf16 with ``dataloader_num_workers`` = ``--workers`` (default "auto", the
  trainer's own choice), collating the next batches in other processes while the model works.
  Every other setting collates in the main process.
- ``bf16-no-cudnn-attention``: bf16 with cuDNN's attention kernel left out of PyTorch's choice
  of scaled-dot-product kernels (CUDA).
- ``fp16``: fp16 autocast with loss scaling (CUDA).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType
from transformers import TrainerCallback

from llm_embedder_integrations import SHIPPED_MODEL
from llm_embedder_integrations._cpu import cpu_features
from llm_embedder_integrations.evaluation.datasets import BUNDLED_DATA, load_dataset
from llm_embedder_integrations.training import TrainConfig, TrainingRecord
from llm_embedder_integrations.training.train import build_trainer

logger = logging.getLogger("train_speed")
CPU = DeviceType.CPU


@dataclass(frozen=True)
class Setting:
    """One way of training: TrainConfig overrides and the torch switches around the run."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    tf32: bool = False
    no_cudnn_attention: bool = False
    cuda_only: bool = False


SETTINGS = {
    s.name: s
    for s in (
        Setting("fp32", {"precision": "fp32", "dataloader_num_workers": 0}),
        Setting(
            "tf32", {"precision": "fp32", "dataloader_num_workers": 0}, tf32=True, cuda_only=True
        ),
        Setting("bf16", {"precision": "bf16", "dataloader_num_workers": 0}),
        Setting("bf16-workers", {"precision": "bf16", "dataloader_num_workers": None}),
        Setting(
            "bf16-no-cudnn-attention",
            {"precision": "bf16", "dataloader_num_workers": 0},
            no_cudnn_attention=True,
            cuda_only=True,
        ),
        Setting(
            "bf16-workers-no-cudnn-attention",
            {"precision": "bf16", "dataloader_num_workers": None},
            no_cudnn_attention=True,
            cuda_only=True,
        ),
        Setting("fp16", {"precision": "fp16", "dataloader_num_workers": 0}, cuda_only=True),
    )
}


def _words() -> list[str]:
    """The words of the XQuAD paragraphs bundled with the package, in order."""
    corpus = load_dataset("xquad", "all", data_path=BUNDLED_DATA).corpus
    return [word for paragraph in corpus.values() for word in paragraph.split()]


def synthetic_records(
    queries_per_task: int, group_size: int, max_length: int, seed: int = 0
) -> list[TrainingRecord]:
    """Real-text records of two tasks: qa (with teacher scores) and tool (contrastive).

    Queries are 8-40 words; keys from a quarter of ``max_length`` words to ``max_length`` (cut
    to ``max_length`` tokens in training), so batches pad to varying lengths.
    """
    words = _words()
    rng = random.Random(seed)

    def text(low: int, high: int) -> str:
        n = rng.randint(low, high)
        start = rng.randrange(len(words) - n)
        return " ".join(words[start : start + n])

    records = []
    for task in ("qa", "tool"):
        for i in range(queries_per_task):
            keys = [text(max_length // 4, max_length) for _ in range(group_size + 2)]
            records.append(
                TrainingRecord(
                    query=text(8, 40),
                    task=task,
                    pos=keys[:1],
                    neg=keys[1:],
                    teacher_scores=[rng.random() for _ in keys] if task == "qa" else None,
                    query_id=f"{task}-{i}",
                )
            )
    return records


class _StepTimer(TrainerCallback):
    """The wall clock at the end of every optimizer step (after the GPU has finished it)."""

    def __init__(self, profiler: Any = None) -> None:
        self.ends: list[float] = []
        self.profiler = profiler

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        if self.profiler is not None:
            self.profiler.step()


class _TimedCollator:
    """Times each call of the collator it wraps (in the main process: with workers, no times)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds: list[float] = []

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        started = time.perf_counter()
        batch = self.inner(features)
        self.seconds.append(time.perf_counter() - started)
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextlib.contextmanager
def _switches(setting: Setting) -> Iterator[None]:
    """TF32 and the attention kernels for the duration of one setting's run."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    cudnn = torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = setting.tf32
    torch.backends.cudnn.allow_tf32 = setting.tf32
    try:
        if setting.no_cudnn_attention:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
            with sdpa_kernel(backends):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def _profile_summary(profiler: Any, steps: int) -> str:
    """Per-step CPU time, GPU kernel time and launches, then the top operators both ways."""
    events = profiler.key_averages()
    # kernels only: an operator's row repeats the time of the kernels it launched
    device_total = sum(e.self_device_time_total for e in events if e.device_type != CPU) / 1e3
    launches = sum(e.count for e in events if "LaunchKernel" in e.key)
    cpu_total = sum(e.self_cpu_time_total for e in events) / 1e3
    lines = [
        f"per step: CPU {cpu_total / steps:.1f} ms, GPU kernels {device_total / steps:.1f} ms, "
        f"{launches / steps:.0f} kernel launches",
        "",
        events.table(sort_by="self_cpu_time_total", row_limit=20),
    ]
    if device_total:
        lines.append(events.table(sort_by="self_device_time_total", row_limit=20))
    return "\n".join(lines)


def run_setting(
    setting: Setting, records: list[TrainingRecord], args: argparse.Namespace, folder: str
) -> dict[str, Any]:
    """Train ``--warmup + --steps`` steps in ``setting``; the timed steps' figures."""
    overrides = dict(setting.overrides)
    if overrides.get("dataloader_num_workers", 0) is None:
        overrides["dataloader_num_workers"] = "auto" if args.workers is None else args.workers
    config = TrainConfig(
        output=os.path.join(folder, setting.name),
        model=args.model,
        max_steps=args.warmup + args.steps + (args.profile_steps if args.profile else 0),
        batch_size=args.batch_size,
        group_size=args.group_size,
        max_length=args.max_length,
        distillation=True,
        dev_fraction=0.0,
        save_steps=10**9,
        logging_steps=10**9,
        show_progress=False,
        device=args.device,
        **overrides,
    )
    trainer = build_trainer(config, records)
    collator = _TimedCollator(trainer.data_collator)
    trainer.data_collator = collator
    profiler = None
    if args.profile:
        from torch.profiler import ProfilerActivity, profile, schedule

        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        skip = args.warmup + args.steps
        profiler = profile(
            activities=activities,
            schedule=schedule(wait=skip, warmup=1, active=args.profile_steps - 1, repeat=1),
        )
    timer = _StepTimer(profiler)
    trainer.add_callback(timer)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with _switches(setting), profiler or contextlib.nullcontext():
        started = time.perf_counter()
        trainer.train()
    total = time.perf_counter() - started
    steps = [b - a for a, b in zip(timer.ends, timer.ends[1:], strict=False)][args.warmup - 1 :][
        : args.steps
    ]
    collate = collator.seconds[args.warmup : args.warmup + args.steps]
    step = statistics.median(steps)
    result = {
        "setting": setting.name,
        "queries_per_second": args.batch_size * len(steps) / sum(steps),
        "step_ms": step * 1e3,
        "slowest_step_ms": max(steps) * 1e3,
        "collate_ms": statistics.median(collate) * 1e3 if collate else None,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30
        if torch.cuda.is_available()
        else None,
        "seconds": total,
        "trainer_queries_per_second": args.batch_size * config.max_steps / total,
    }
    if profiler is not None:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        text = _profile_summary(profiler, args.profile_steps - 1)
        (Path(args.profile) / f"profile_{setting.name}.txt").write_text(text + "\n")
        result["profile"] = text.splitlines()[0]
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    """One row per setting; the ratio is to the first setting."""
    first = results[0]["queries_per_second"]
    lines = [
        "| setting | queries/s | ratio | step ms | collate ms | rest ms | peak GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        collate = r["collate_ms"]
        split = f"{collate:.1f} | {r['step_ms'] - collate:.1f}" if collate is not None else "- | -"
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        ratio = r["queries_per_second"] / first
        lines.append(
            f"| {r['setting']} | {r['queries_per_second']:.1f} | {ratio:.2f} | "
            f"{r['step_ms']:.1f} | {split} | {peak} |"
        )
    return "\n".join(lines)


def machine() -> str:
    """The machine's line: CPU features, cores, torch, and the GPU if any."""
    parts = [
        f"CPU: {cpu_features().summary()}",
        f"{os.cpu_count()} cores",
        f"torch {torch.__version__}",
    ]
    if torch.cuda.is_available():
        parts.append(f"GPU: {torch.cuda.get_device_name()}")
    parts.append(f"Python {platform.python_version()}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=SHIPPED_MODEL, help="model to train (name or path)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), help="default: all")
    parser.add_argument("--batch-size", type=int, default=16, help="queries per step")
    parser.add_argument("--group-size", type=int, default=4, help="keys per query")
    parser.add_argument("--max-length", type=int, default=128, help="token limit of every text")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument(
        "--workers", type=int, default=None, help="collating processes of bf16-workers (auto)"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--profile", default=None, help="folder for per-setting profiles")
    parser.add_argument(
        "--profile-steps", type=int, default=4, help="steps profiled (first untimed)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error(f"--warmup must be >= 1, got {args.warmup}")
    if args.profile and args.profile_steps < 2:
        parser.error(f"--profile-steps must be >= 2, got {args.profile_steps}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("sentence_transformers", "llm_embedder_integrations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cuda = args.device != "cpu" and torch.cuda.is_available()
    names = args.settings or [n for n, s in SETTINGS.items() if cuda or not s.cuda_only]
    print(machine())
    print(
        f"shape: {args.batch_size} queries x {args.group_size} keys, up to {args.max_length} "
        f"tokens; {args.warmup} warm-up + {args.steps} timed steps per setting"
    )
    steps = args.warmup + args.steps + args.profile_steps + 1
    records = synthetic_records(
        (steps // 2 + 2) * args.batch_size, args.group_size, args.max_length
    )
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            try:
                result = run_setting(SETTINGS[name], records, args, folder)
            except Exception:  # one setting this machine cannot run must not lose the others
                logger.exception("%s failed; the other settings go on", name)
                continue
            logger.info("%s", json.dumps(result))
            results.append(result)
    if not results:
        print("no setting ran")
        return 1
    print(markdown(results))
    if args.out:
        args.out.write_text(json.dumps({"machine": machine(), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
