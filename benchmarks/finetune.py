"""Fine-tune the shipped MiniLM with LLM-Embedder's recipe and compare it on the test splits.

Three stages, each resumable (finished work in ``--workdir`` is reused):

1. ``prepare``: the TRAIN split of each task's dataset (`TRAIN_SETS`) is converted to training
   records, hard negatives mined by the base model; every judged document of a query is kept in
   ``relevant_ids`` for the in-batch false-negative mask. The tasks trained by distillation (qa,
   icl, chat, lrlm) get teacher scores from the shipped SmolLM2-135M (`score_file`, bf16 on the
   CPU), for a capped number of queries.
2. ``train``: three runs with the same data and settings: (d) the full recipe, (e) without
   homogeneous batches (mixed-task batches), (f) without distillation (contrastive loss only).
3. ``eval``: the TEST splits (`run_benchmark`, exact search) for (a) BM25, (b) the base model
   without instructions, (c) with instructions, (d)-(f) the fine-tuned models with
   instructions. One table, MRR@10 / nDCG@10 per dataset, written as markdown and JSON.

Scoring is the slow part on a CPU (SmolLM2 runs ~0.3-17 candidates/s on 2 busy cores, by text
length): a ``<stem>.scored.jsonl`` already in ``<workdir>/data`` (scored elsewhere, e.g. on a GPU
with ``llm-embedder score``) is used as it is.

Usage:
    python benchmarks/finetune.py --workdir runs/finetune --max-queries 300 \
        --scored-queries 200 --epochs 2 --lr 3e-5                    # the README's table
    python benchmarks/finetune.py --workdir runs/finetune --stage convert    # records only
    python benchmarks/finetune.py --workdir runs/finetune --variants finetuned   # (d) only

On a shared CPU, ``--threads 1`` (one torch thread) was 2-5x faster than the default here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from llm_embedder_integrations import SHIPPED_MODEL, LLMEmbedder
from llm_embedder_integrations.evaluation.datasets import load_dataset
from llm_embedder_integrations.evaluation.runner import (
    TASK_DATASETS,
    benchmark_dataset,
    cap_corpus,
    cap_queries,
)
from llm_embedder_integrations.llm import LocalLLM
from llm_embedder_integrations.training import (
    TASK_LOSS,
    LLMReward,
    TrainConfig,
    read_jsonl,
    records_from_dataset,
    score_file,
    train,
    write_jsonl,
)

logger = logging.getLogger("finetune")

# (file stem, task, dataset name, loader options)
TRAIN_SETS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("xquad", "qa", "xquad", {}),
    ("torchhub", "tool", "gorilla_torchhub", {}),
    ("tensorflow", "tool", "gorilla_tensorflow", {}),
    ("locomo", "chat", "locomo", {}),
    ("trec_cast", "convsearch", "trec_cast", {"history": True}),
    ("sni", "icl", "sni", {}),
    ("tinyshakespeare", "lrlm", "tinyshakespeare", {}),
)
"""The training sets: the train split of each evaluation dataset (test splits stay unseen)."""

SYSTEMS = ("bm25", "base", "base+instr", "finetuned", "mixed-batches", "no-distillation")
TITLES = {
    "bm25": "(a) BM25",
    "base": "(b) base",
    "base+instr": "(c) base+instr",
    "finetuned": "(d) fine-tuned",
    "mixed-batches": "(e) no homog.",
    "no-distillation": "(f) no distill.",
}


def _spread(items: list[Any], n: int | None) -> list[Any]:
    """``n`` items evenly spread over ``items`` (all when n is None or larger)."""
    if n is None or n >= len(items):
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def prepare(args: argparse.Namespace, data: Path, *, score: bool = True) -> list[Path]:
    """Convert the train splits and score the distillation tasks; return the training files."""
    data.mkdir(parents=True, exist_ok=True)
    encoder = LLMEmbedder(SHIPPED_MODEL, instructions=False)
    files: list[Path] = []
    reward: LLMReward | None = None
    for stem, task, name, options in TRAIN_SETS:
        distilled = TASK_LOSS[task].distillation is not None
        cap = args.scored_queries if distilled else args.max_queries
        raw = data / f"{stem}.jsonl"
        if not raw.exists():
            started = time.perf_counter()
            ds = load_dataset(name, "train", **options)
            # Twice the cap is converted: queries without an expected output are dropped.
            ds = cap_queries(ds, None if cap is None else 2 * cap)
            records = records_from_dataset(
                ds,
                encoder,
                negatives=args.group_size - 1,
                max_positives=1,
                answered_only=distilled,
            )
            records = _spread(records, cap)
            for record in records:
                grades = ds.qrels.get(str(record.query_id), {})
                record.extra["relevant_ids"] = sorted(d for d, g in grades.items() if g > 0)
            write_jsonl(records, raw)
            logger.info(
                "%s: %d records in %.1f s", raw.name, len(records), time.perf_counter() - started
            )
        if not distilled:
            files.append(raw)
            continue
        if not score:
            continue
        scored = data / f"{stem}.scored.jsonl"
        total = len(read_jsonl(raw))
        done = sum(1 for line in scored.open(encoding="utf-8")) if scored.exists() else 0
        if done < total:
            if reward is None:
                reward = LLMReward(LocalLLM(dtype=args.teacher_dtype), batch_size=8)
            started = time.perf_counter()
            n = score_file(raw, scored, reward=reward, show_progress=args.progress)
            seconds = time.perf_counter() - started
            candidates = sum(len(r.keys) for r in read_jsonl(raw)[done:])
            logger.info(
                "%s: scored %d records (%d candidates) in %.1f s, %.2f candidates/s",
                scored.name,
                n,
                candidates,
                seconds,
                candidates / max(seconds, 1e-9),
            )
            _append_log(data / "scoring.jsonl", stem, n, candidates, seconds)
        files.append(scored)
    return files


def _append_log(path: Path, stem: str, records: int, candidates: int, seconds: float) -> None:
    with path.open("a", encoding="utf-8") as f:
        entry = {"file": stem, "records": records, "candidates": candidates, "seconds": seconds}
        f.write(json.dumps(entry) + "\n")


VARIANTS: dict[str, dict[str, bool]] = {
    "finetuned": {},
    "mixed-batches": {"homogeneous": False},
    "no-distillation": {"distillation": False},
}
"""The three training runs: the full recipe and the two ablations (same data, same settings)."""


def train_all(args: argparse.Namespace, files: list[Path]) -> dict[str, dict[str, Any]]:
    """Train the three variants (a finished one is reused); return their run summaries."""
    summaries: dict[str, dict[str, Any]] = {}
    for name in args.variants:
        changes = VARIANTS[name]
        output = args.workdir / "models" / name
        summary_path = args.workdir / f"train_{name}.json"
        if summary_path.exists() and (output / "llm_embedder_training.json").exists():
            summaries[name] = json.loads(summary_path.read_text())
            continue
        config = TrainConfig(
            data=tuple(str(f) for f in files),
            output=str(output),
            epochs=args.epochs,
            batch_size=args.batch_size,
            group_size=args.group_size,
            lr=args.lr,
            max_length=args.max_length,
            save_steps=10_000,
            logging_steps=5,
            show_progress=args.progress,
            **changes,
        )
        result = train(config)
        summaries[name] = {
            "config": config.to_dict(),
            "global_step": result.global_step,
            "train_loss": result.train_loss,
            "seconds": result.seconds,
            "queries_per_second": result.samples_per_second,
            "examples": result.examples,
            "losses": [(h["step"], h["loss"]) for h in result.log_history if "loss" in h],
        }
        summary_path.write_text(json.dumps(summaries[name], indent=2) + "\n")
        logger.info(
            "%s: %d steps in %.1f s, mean loss %.4f",
            name,
            result.global_step,
            result.seconds,
            result.train_loss,
        )
    return summaries


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """MRR@10 and nDCG@10 of every system on the TEST split of every dataset."""
    encoders = {
        "base": LLMEmbedder(SHIPPED_MODEL, instructions=False),
        "base+instr": LLMEmbedder(SHIPPED_MODEL, instructions=True),
    }
    for name in args.variants:
        encoder = LLMEmbedder(str(args.workdir / "models" / name))
        if not encoder.instructions:
            raise RuntimeError(f"{name}: the trained model did not load with its instructions")
        encoders[name] = encoder
    cache: dict[Any, Any] = {}
    table: dict[str, dict[str, dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    for task, specs in TASK_DATASETS.items():
        for spec in specs:
            ds = load_dataset(spec.name, "test", **spec.options)
            ds = cap_corpus(cap_queries(ds, args.eval_queries), args.eval_docs)
            scores: dict[str, dict[str, float]] = {}
            for index, (name, encoder) in enumerate(encoders.items()):
                rows = benchmark_dataset(
                    ds, [encoder], label=spec.label, bm25=index == 0, cache=cache
                )
                for row in rows:
                    if row.system not in ("bm25", "model", "model+instr"):
                        continue  # the runner's BM25 + dense hybrid rows: not compared here
                    system = "bm25" if row.system == "bm25" else name
                    scores[system] = {k: row.metrics[k] for k in ("mrr@10", "ndcg@10")}
                    seconds[system] = seconds.get(system, 0.0) + row.seconds
            table[f"{task}: {spec.label}"] = scores
            logger.info("%s: %s", spec.label, json.dumps(scores))
    return {"table": table, "seconds": seconds, "total_seconds": time.perf_counter() - started}


def markdown(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """One line per dataset, one column per system: MRR@10 / nDCG@10."""
    systems = [s for s in SYSTEMS if all(s in scores for scores in table.values())]
    head = ["task: dataset", *(TITLES[s] for s in systems)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for label, scores in table.items():
        cells = [f"{scores[s]['mrr@10']:.3f} / {scores[s]['ndcg@10']:.3f}" for s in systems]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="data, models and results")
    parser.add_argument(
        "--stage",
        choices=["convert", "prepare", "train", "eval", "all"],
        default="all",
        help="what to run (convert: the records without teacher scores)",
    )
    parser.add_argument(
        "--max-queries", type=int, default=200, help="training queries per contrastive dataset"
    )
    parser.add_argument(
        "--scored-queries",
        type=int,
        default=120,
        help="training queries per distillation dataset (each one scored by the LLM)",
    )
    parser.add_argument("--group-size", type=int, default=4, help="keys per query (1 + negatives)")
    parser.add_argument("--teacher-dtype", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--epochs", type=float, default=1.0, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=16, help="queries per batch")
    parser.add_argument("--lr", type=float, default=2e-5, help="peak learning rate")
    parser.add_argument("--max-length", type=int, default=128, help="training token limit")
    parser.add_argument(
        "--eval-queries", type=int, default=None, help="test queries per dataset (all: None)"
    )
    parser.add_argument(
        "--eval-docs",
        type=int,
        default=None,
        help="test documents per dataset, judged ones kept (a quick run; scores not comparable)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="training runs to make and compare (default: all three)",
    )
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy CPU)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.workdir / "data"
    if args.stage in ("convert", "prepare", "all"):
        files = prepare(args, data, score=args.stage != "convert")
    if args.stage in ("train", "all"):
        files = prepare(args, data)  # reuses what is done
        train_all(args, files)
    if args.stage in ("eval", "all"):
        result = evaluate(args)
        (args.workdir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
        text = markdown(result["table"])
        (args.workdir / "results.md").write_text(text + "\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
