"""Fine-tune the shipped MiniLM with LLM-Embedder's recipe and compare it on the test splits.

Three stages, each resumable (finished work in ``--workdir`` is reused):

1. ``prepare``: training records from the training-scale sources of ``<data>/train``
   (`TRAIN_SOURCES`: Natural Questions, CANARD, APIBench TorchHub, six novels) and the TRAIN split
   of each evaluation dataset (`TRAIN_SETS`), hard negatives mined by the base model and BM25,
   likely false negatives dropped (counts in ``data/mining.json``). For each task trained by
   distillation (qa, icl, chat, lrlm) a sample is scored by the teacher (``--llm``, the shipped
   SmolLM2-135M by default, in the dtype the CPU runs fastest) and the teacher's top-1 accuracy on
   the gold positives is compared with the base model's (``data/teacher.json``). Where the
   teacher wins, the file's dev split is held out first (whole groups, ``--dev-fraction``), then
   ``--scored-queries`` of its training records are scored; they train by distillation and its
   other training records by the contrastive loss.
2. ``train``: (g) the full recipe with model selection: a dev split per task and source, the
   dev curve, the best step, then the interpolation weight and instruction switch chosen per
   task on the dev split, losing on none of its sources.
   The same run's last checkpoint is (d), the recipe without selection. Ablations: (e) mixed-task
   batches, (f) contrastive loss only (skipped when no task is distilled: it would be (d)).
3. ``eval``: the TEST splits (`run_benchmark`, exact search) for (a) BM25, (b) the base model
   without instructions, (c) with instructions, and (d)-(g) as `LLMEmbedder(path)` loads them.
   One table, MRR@10 / nDCG@10 per dataset, and a second of each system's MRR@10 minus the
   base's with its paired standard error over the test queries, written as markdown and JSON.

Usage:
    python benchmarks/finetune.py --workdir runs/finetune                  # the README's table
    python benchmarks/finetune.py --workdir runs/finetune --stage prepare  # records only
    python benchmarks/finetune.py --workdir runs/finetune --variants selected   # (d) and (g)
    python benchmarks/finetune.py --workdir runs/uncapped --api-cap 0  # every query of every API
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
from llm_embedder_integrations._cpu import cpu_features, teacher_dtype
from llm_embedder_integrations.evaluation.datasets import load_dataset
from llm_embedder_integrations.evaluation.metrics import gain_by_group, paired_gain
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
    score_file,
    train,
    write_jsonl,
)
from llm_embedder_integrations.training.data import mine_records
from llm_embedder_integrations.training.selection import split_dev, st_encoder, teacher_quality
from llm_embedder_integrations.training.sources import load_training_source
from llm_embedder_integrations.training.train import TASK_SETTINGS, _load_model

logger = logging.getLogger("finetune")

# (file stem, task, source or dataset name, loader options)
TRAIN_SOURCES: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("nq_qed", "qa", "nq_qed", {}),
    ("canard", "convsearch", "canard", {}),
    ("torchhub_train", "tool", "gorilla_torchhub_train", {}),
    ("gutenberg", "lrlm", "gutenberg", {}),
)
"""The training-scale sources of ``<data>/train`` (never used for testing)."""

TRAIN_SETS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("xquad", "qa", "xquad", {}),
    ("torchhub", "tool", "gorilla_torchhub", {}),
    ("tensorflow", "tool", "gorilla_tensorflow", {}),
    ("locomo", "chat", "locomo", {}),
    ("trec_cast", "convsearch", "trec_cast", {"history": True}),
    ("sni", "icl", "sni", {}),
    ("tinyshakespeare", "lrlm", "tinyshakespeare", {}),
)
"""The train split of each evaluation dataset (its test split stays unseen)."""

SYSTEMS = (
    "bm25",
    "base",
    "base+instr",
    "finetuned",
    "mixed-batches",
    "no-distillation",
    "selected",
    "layer-lr-decay",
    "instruction-warmup",
    "paper-temperature",
    "one-step",
)
TITLES = {
    "bm25": "(a) BM25",
    "base": "(b) base",
    "base+instr": "(c) base+instr",
    "finetuned": "(d) fine-tuned",
    "mixed-batches": "(e) no homog.",
    "no-distillation": "(f) no distill.",
    "selected": "(g) selected",
    "layer-lr-decay": "(h) (g) + layer LR decay",
    "instruction-warmup": "(i) (g) + instruction warm-up",
    "paper-temperature": "(j) (k) at temperature 0.01",
    "one-step": "(k) (g), one best step",
}


def _spread(items: list[Any], n: int | None) -> list[Any]:
    """``n`` items evenly spread over ``items`` (all when n is None or larger)."""
    if n is None or n >= len(items):
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def _train_files(args: argparse.Namespace) -> tuple[tuple[str, str, str, dict[str, Any]], ...]:
    return TRAIN_SETS if args.no_sources else (*TRAIN_SOURCES, *TRAIN_SETS)


def _convert(args: argparse.Namespace, encoder: LLMEmbedder, data: Path) -> dict[str, Any]:
    """Write ``<stem>.jsonl`` for every source and train split; return the mining counts."""
    log_path = data / "mining.json"
    mining: dict[str, Any] = json.loads(log_path.read_text()) if log_path.exists() else {}
    for stem, task, name, options in _train_files(args):
        raw = data / f"{stem}.jsonl"
        if raw.exists() and stem in mining:
            continue
        started = time.perf_counter()
        if any(stem == s for s, *_ in TRAIN_SOURCES):
            ds = load_training_source(name, **options)
        else:
            ds = load_dataset(name, "train", **options)
        distilled = TASK_LOSS[task].distillation is not None
        # Twice the cap is converted: queries without an expected output are dropped.
        ds = cap_queries(ds, None if args.max_queries is None else 2 * args.max_queries)
        ds = cap_corpus(ds, args.max_docs)
        records, stats = mine_records(
            ds,
            encoder,
            negatives=args.group_size - 1,
            max_positives=1,
            answered_only=distilled,
            false_negative_margin=args.false_negative_margin,
        )
        records = _spread(records, args.max_queries)
        write_jsonl(records, raw)
        mining[stem] = {
            "task": task,
            "records": len(records),
            "negatives": stats.negatives,
            "dropped": stats.dropped,
            "seconds": time.perf_counter() - started,
        }
        log_path.write_text(json.dumps(mining, indent=2) + "\n")
        logger.info("%s: %s in %.1f s", raw.name, stats, mining[stem]["seconds"])
    return mining


def _reward(args: argparse.Namespace, holder: dict[str, LLMReward]) -> LLMReward:
    if "reward" not in holder:
        dtype = args.teacher_dtype or teacher_dtype("cuda" if torch.cuda.is_available() else "cpu")
        logger.info("teacher %s in %s", args.llm or "SmolLM2-135M (shipped)", dtype)
        holder["reward"] = LLMReward(LocalLLM(args.llm, dtype=dtype), batch_size=8)
    return holder["reward"]


def _score(args: argparse.Namespace, raw: Path, out: Path, holder: dict[str, LLMReward]) -> None:
    total = len(read_jsonl(raw))
    done = sum(1 for _ in out.open(encoding="utf-8")) if out.exists() else 0
    if done >= total:
        return
    started = time.perf_counter()
    n = score_file(raw, out, reward=_reward(args, holder), show_progress=args.progress)
    seconds = time.perf_counter() - started
    candidates = sum(len(r.keys) for r in read_jsonl(raw)[done:])
    logger.info(
        "%s: scored %d records (%d candidates) in %.1f s, %.2f candidates/s",
        out.name,
        n,
        candidates,
        seconds,
        candidates / max(seconds, 1e-9),
    )
    _append_log(raw.parent / "scoring.jsonl", out.stem, n, candidates, seconds)


def prepare(args: argparse.Namespace, data: Path, *, score: bool = True) -> list[Path]:
    """Convert, measure the teacher per task, score where it wins; return the training files."""
    data.mkdir(parents=True, exist_ok=True)
    encoder = LLMEmbedder(SHIPPED_MODEL, instructions=False, show_progress=args.progress)
    _convert(args, encoder, data)
    stems = [(stem, task) for stem, task, *_ in _train_files(args)]
    if not score:
        return [data / f"{stem}.jsonl" for stem, _ in stems]
    holder: dict[str, LLMReward] = {}
    teacher_path = data / "teacher.json"
    teacher: dict[str, Any] = json.loads(teacher_path.read_text()) if teacher_path.exists() else {}
    distilled = sorted({t for _, t in stems if TASK_LOSS[t].distillation is not None})
    if set(distilled) - set(teacher):
        # A sample of each distilled task, scored, then the teacher against the base model.
        samples = {}
        for stem, task in stems:
            if task not in distilled or task in teacher:
                continue
            sample = data / f"{stem}.sample.jsonl"
            if not sample.exists():
                write_jsonl(
                    _spread(read_jsonl(data / f"{stem}.jsonl"), args.teacher_sample), sample
                )
            scored = data / f"{stem}.sample.scored.jsonl"
            _score(args, sample, scored, holder)
            samples.setdefault(task, []).extend(read_jsonl(scored))
        model = _load_model(TrainConfig(model=SHIPPED_MODEL), "cpu")
        for task, records in samples.items():
            plain = teacher_quality(records, st_encoder(model, False))[task]
            instructed = teacher_quality(records, st_encoder(model, True))[task]
            teacher[task] = {
                "records": plain.records,
                "teacher_top1": plain.teacher,
                "base_top1": plain.student,
                "base+instr_top1": instructed.student,
                "distil": plain.teacher > max(plain.student, instructed.student),
            }
            logger.info("teacher on %s: %s", task, teacher[task])
        teacher_path.write_text(json.dumps(teacher, indent=2) + "\n")
    files: list[Path] = []
    for stem, task in stems:
        raw = data / f"{stem}.jsonl"
        if not teacher.get(task, {}).get("distil"):
            files.append(raw)  # trained with the contrastive loss (TrainConfig's "auto")
            continue
        kept = _hold_out_dev(args, raw)
        capped = data / f"{stem}.capped.jsonl"
        if not capped.exists():
            write_jsonl(_spread(read_jsonl(kept), args.scored_queries), capped)
        scored = data / f"{stem}.scored.jsonl"
        _score(args, capped, scored, holder)
        files.append(_merge_scored(kept, scored, _beside(raw, DISTILLED)))
    return files


DISTILLED = ".distil.jsonl"
"""Suffix of a distilled file's training records: the scored ones and the unscored rest."""


def _hold_out_dev(args: argparse.Namespace, raw: Path) -> Path:
    """Hold out a distilled file's dev split before scoring.

    Returns the file of its training records.

    The dev split is made here, as the trainer makes the others (`split_dev`: whole groups,
    seeded, ``--dev-fraction``), so that the teacher's scores all go to training records.
    """
    kept, dev = _beside(raw, ".train.jsonl"), _beside(raw, ".dev.jsonl")
    if not (kept.exists() and dev.exists()):
        train_part, dev_part = split_dev(
            read_jsonl(raw),
            fraction=args.dev_fraction,
            max_queries=args.dev_queries,
            min_queries=TrainConfig.dev_min_queries,
            seed=args.seed,
        )
        write_jsonl(dev_part, dev)
        write_jsonl(train_part, kept)
    return kept


def _beside(path: Path, suffix: str) -> Path:
    """The file of the same stem with another suffix (``nq_qed.jsonl`` -> ``nq_qed.dev.jsonl``)."""
    return path.with_name(path.name.split(".", 1)[0] + suffix)


def _merge_scored(kept: Path, scored: Path, out: Path) -> Path:
    """The training records with the scored ones in place of their unscored copies."""
    if not out.exists():
        by_id = {r.query_id: r for r in read_jsonl(scored)}
        write_jsonl([by_id.get(r.query_id, r) for r in read_jsonl(kept)], out)
    return out


def _append_log(path: Path, stem: str, records: int, candidates: int, seconds: float) -> None:
    with path.open("a", encoding="utf-8") as f:
        entry = {"file": stem, "records": records, "candidates": candidates, "seconds": seconds}
        f.write(json.dumps(entry) + "\n")


VARIANTS: dict[str, dict[str, Any]] = {
    "selected": {},
    "mixed-batches": {"homogeneous": False, "interpolate": False, "eval_steps": 10**9},
    "no-distillation": {"distillation": False, "interpolate": False, "eval_steps": 10**9},
    "layer-lr-decay": {"layer_lr_decay": 0.8},
    "instruction-warmup": {"instruction_warmup_steps": 25},
    "paper-temperature": {"temperature": 0.01, "step_per_task": False},
    "one-step": {"step_per_task": False},
}
"""The training runs: (g) the full recipe with selection (its last checkpoint is (d)), and the
two ablations without selection; (h) is (g) with a lower learning rate for the lower layers
(each layer 0.8 times the one above, the embeddings lowest), the issue's question whether a
gentler update of the encoder body keeps what the base model knows; (i) is (g) after 25 steps
that train only the instructions' token embeddings (`instruction_warmup_steps`), the issue's
question whether fitting the instructions first removes their cost. (k) is (g) with one best
step (the best mean over tasks) for every task instead of each task's own; (j) is (k) at the
paper's temperature of 0.01 instead of the ``--temperature`` of the others (0.05, the one
MiniLM was trained at: sentence-transformers' scale 20). All hold out the same dev
split, so they train on the same records."""


def _distilled(files: list[Path]) -> bool:
    return any(f.name.endswith(DISTILLED) for f in files)


def dev_files(files: list[Path]) -> list[Path]:
    """The dev splits held out before scoring (`_hold_out_dev`)."""
    return [_beside(f, ".dev.jsonl") for f in files if f.name.endswith(DISTILLED)]


def train_settings(args: argparse.Namespace, files: list[Path]) -> dict[str, Any]:
    """The `TrainConfig` settings every variant shares (the output folder aside)."""
    return {
        "data": tuple(str(f) for f in files),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "group_size": args.group_size,
        "lr": args.lr,
        "temperature": args.temperature,
        "max_length": args.max_length,
        "save_steps": 10**9,
        "save_total_limit": 1,
        "logging_steps": 5,
        "eval_steps": args.eval_steps,
        "dev_fraction": args.dev_fraction,
        "dev_max_queries": args.dev_queries,
        "dev_distractors": args.dev_distractors,
        "alphas": tuple(args.alphas),
        "dev_data": tuple(str(f) for f in dev_files(files)),
        "max_group_queries": {"tool": args.api_cap} if args.api_cap else None,
        "show_progress": args.progress,
        "seed": args.seed,
    }


def train_all(args: argparse.Namespace, files: list[Path]) -> dict[str, dict[str, Any]]:
    """Train the variants (a finished one is reused); return their run summaries."""
    summaries: dict[str, dict[str, Any]] = {}
    for name in args.variants:
        if name == "no-distillation" and not _distilled(files):
            logger.info("(f) skipped: no task is distilled, so it would train exactly as (d)")
            continue
        output = args.workdir / "models" / name
        summary_path = args.workdir / f"train_{name}.json"
        if summary_path.exists() and (output / "llm_embedder_training.json").exists():
            summaries[name] = json.loads(summary_path.read_text())
            continue
        settings = {**train_settings(args, files), "output": str(output)}
        config = TrainConfig(**{**settings, **VARIANTS[name]})
        started = time.perf_counter()
        result = train(config)
        summaries[name] = {
            "global_step": result.global_step,
            "train_loss": result.train_loss,
            "seconds": result.seconds,
            "total_seconds": time.perf_counter() - started,
            "queries_per_second": result.samples_per_second,
            "examples": result.examples,
            "losses": [(h["step"], h["loss"]) for h in result.log_history if "loss" in h],
            **result.summary,
        }
        summary_path.write_text(json.dumps(summaries[name], indent=2) + "\n")
        logger.info(
            "%s: %d steps in %.1f s (%.1f s with selection), mean loss %.4f",
            name,
            result.global_step,
            result.seconds,
            summaries[name]["total_seconds"],
            result.train_loss,
        )
    return summaries


def _model_paths(args: argparse.Namespace) -> dict[str, Path]:
    """The trained systems to evaluate: (d) is the selected run's last checkpoint."""
    paths: dict[str, Path] = {}
    models = args.workdir / "models"
    if "selected" in args.variants:
        checkpoints = sorted(
            (models / "selected").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])
        )
        if checkpoints:
            paths["finetuned"] = checkpoints[-1]
        paths["selected"] = models / "selected"
    for name in (v for v in VARIANTS if v != "selected"):  # the runs without a (d) of their own
        if name in args.variants and (models / name / "llm_embedder_training.json").exists():
            paths[name] = models / name
    return paths


def expects_instructions(path: Path) -> bool:
    """Whether a trained model must load with instructions.

    A checkpoint must; a selected model must where its selection kept them for some task (the
    selection may turn them off for every task).
    """
    settings = path / TASK_SETTINGS
    if not settings.exists():
        return True
    tasks = json.loads(settings.read_text(encoding="utf-8")).get("tasks", {})
    return any(choice.get("instructions") for choice in tasks.values())


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """MRR@10 and nDCG@10 of every system on the TEST split of every dataset."""
    encoders = {
        "base": LLMEmbedder(SHIPPED_MODEL, instructions=False),
        "base+instr": LLMEmbedder(SHIPPED_MODEL, instructions=True),
    }
    for name, path in _model_paths(args).items():
        encoder = LLMEmbedder(str(path))
        if expects_instructions(path) and not encoder.instructions:
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
            scores: dict[str, dict[str, Any]] = {}
            per_query: dict[str, dict[str, float]] = {}
            for index, (name, encoder) in enumerate(encoders.items()):
                rows = benchmark_dataset(
                    ds, [encoder], label=spec.label, bm25=index == 0, cache=cache
                )
                for row in rows:
                    if row.system not in ("bm25", "model", "model+instr"):
                        continue  # the runner's BM25 + dense hybrid rows: not compared here
                    system = "bm25" if row.system == "bm25" else name
                    scores[system] = {k: row.metrics[k] for k in ("mrr@10", "ndcg@10")}
                    per_query[system] = row.query_mrr
                    seconds[system] = seconds.get(system, 0.0) + row.seconds
            groups = _query_groups(ds)
            for system, values in per_query.items():
                if system != "base":  # MRR@10 against the base, paired by query
                    scores[system]["gain"] = list(paired_gain(values, per_query["base"]))
                    scores[system]["by_group"] = split_by_group(values, per_query["base"], groups)
            table[f"{task}: {spec.label}"] = scores
            logger.info("%s: %s", spec.label, json.dumps(scores))
    return {"table": table, "seconds": seconds, "total_seconds": time.perf_counter() - started}


def _query_groups(ds: Any) -> dict[str, str] | None:
    """Each test query's group (article, dialogue, API), or None where the set has none."""
    groups = {q: str(m["group"]) for q, m in ds.metadata.items() if "group" in m}
    return groups if groups.keys() >= ds.queries.keys() else None


def split_by_group(
    system: dict[str, float], base: dict[str, float], groups: dict[str, str] | None, top: int = 5
) -> dict[str, Any]:
    """Where a system's MRR@10 difference from the base sits.

    How many queries and groups (articles, dialogues, APIs; queries where the set has no
    groups) rank higher and lower, and the ``top`` groups that lose most, each with its share
    of the row's difference (`gain_by_group`: the shares add up to it) and its query count.
    """
    shares = gain_by_group(system, base, groups)
    diffs = [system[q] - base[q] for q in base]
    return {
        "unit": "query" if groups is None else "group",
        "queries": len(diffs),
        "queries_higher": sum(d > 0 for d in diffs),
        "queries_lower": sum(d < 0 for d in diffs),
        "groups": len(shares),
        "higher": sum(share > 0 for share, _ in shares.values()),
        "lower": sum(share < 0 for share, _ in shares.values()),
        "largest_losses": [
            [group, share, n]
            for group, (share, n) in sorted(shares.items(), key=lambda item: item[1][0])[:top]
            if share < 0
        ],
    }


def losses_markdown(table: dict[str, dict[str, Any]], system: str = "selected") -> str:
    """The rows where ``system`` trails the base, and the groups that carry the loss."""
    head = (
        "| task: dataset | difference | queries lower / higher | groups lower / higher "
        "| largest losses (share of the difference, queries) |"
    )
    lines = [head, "|---|---|---|---|---|"]
    for label, scores in table.items():
        row = scores.get(system)
        if row is None or "by_group" not in row or row["gain"][0] >= 0:
            continue
        split = row["by_group"]
        groups = (
            f"{split['lower']} / {split['higher']} of {split['groups']}"
            if split["unit"] == "group"
            else "(no groups)"
        )
        losses = ", ".join(f"{g} {share:+.4f} ({n})" for g, share, n in split["largest_losses"])
        lines.append(
            f"| {label} | {row['gain'][0]:+.3f} ± {row['gain'][1]:.3f} "
            f"| {split['queries_lower']} / {split['queries_higher']} of {split['queries']} "
            f"| {groups} | {losses} |"
        )
    if len(lines) == 2:
        return f"{TITLES[system]} is at or above the base on every row."
    return "\n".join(lines)


def markdown(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """One line per dataset, one column per system: MRR@10 / nDCG@10."""
    systems = [s for s in SYSTEMS if all(s in scores for scores in table.values())]
    head = ["task: dataset", *(TITLES[s] for s in systems)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for label, scores in table.items():
        cells = [f"{scores[s]['mrr@10']:.3f} / {scores[s]['ndcg@10']:.3f}" for s in systems]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def gains_markdown(table: dict[str, dict[str, dict[str, Any]]]) -> str:
    """MRR@10 of each system minus the base's, with its paired standard error over the queries."""
    systems = [
        s
        for s in SYSTEMS
        if s != "base" and all("gain" in scores.get(s, {}) for scores in table.values())
    ]
    head = ["task: dataset", *(TITLES[s] + " - (b)" for s in systems)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for label, scores in table.items():
        cells = [f"{scores[s]['gain'][0]:+.3f} ± {scores[s]['gain'][1]:.3f}" for s in systems]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="data, models and results")
    parser.add_argument(
        "--stage",
        choices=["convert", "prepare", "train", "eval", "all"],
        default="all",
        help="what to run (convert: the records without teacher scores)",
    )
    parser.add_argument(
        "--max-queries", type=int, default=600, help="training queries per source or train split"
    )
    parser.add_argument(
        "--max-docs",
        type=int,
        default=None,
        help="documents per source searched for negatives, judged ones kept (quick runs)",
    )
    parser.add_argument(
        "--no-sources",
        action="store_true",
        help="train on the evaluation datasets' train splits alone, not on <data>/train",
    )
    parser.add_argument(
        "--scored-queries",
        type=int,
        default=200,
        help="training queries per distilled file (each one scored by the LLM)",
    )
    parser.add_argument(
        "--teacher-sample",
        type=int,
        default=40,
        help="records per file scored to measure the teacher against the base model",
    )
    parser.add_argument(
        "--llm",
        default=None,
        help="teacher: a Hugging Face causal LM name or path (default SmolLM2)",
    )
    parser.add_argument(
        "--teacher-dtype",
        default=None,
        choices=["fp32", "bf16"],
        help="teacher dtype (default: bf16 where the CPU or GPU runs it natively, else fp32)",
    )
    parser.add_argument(
        "--api-cap",
        type=int,
        default=30,
        help="train on at most N queries per API of each tool source, the dev split drawn "
        "first (TrainConfig.max_group_queries); 0: no cap (default: 30)",
    )
    parser.add_argument("--group-size", type=int, default=4, help="keys per query (1 + negatives)")
    parser.add_argument(
        "--false-negative-margin",
        type=float,
        default=0.2,
        help="drop a mined negative that the base model scores this far above the positive",
    )
    parser.add_argument("--epochs", type=float, default=1.0, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=16, help="queries per batch")
    parser.add_argument("--lr", type=float, default=3e-5, help="peak learning rate")
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.05,
        help="student temperature (MiniLM was trained at 0.05; the paper's 0.01 suits BGE)",
    )
    parser.add_argument("--max-length", type=int, default=128, help="training token limit")
    parser.add_argument("--eval-steps", type=int, default=50, help="dev evaluation every N steps")
    parser.add_argument(
        "--dev-fraction",
        type=float,
        default=0.2,
        help="share of each source's records held out as its dev split (whole groups)",
    )
    parser.add_argument(
        "--dev-queries", type=int, default=100, help="dev queries per task and source at most"
    )
    parser.add_argument(
        "--dev-distractors",
        type=int,
        default=TrainConfig.dev_distractors,
        help="training keys of the same source pooled into each dev set, at most",
    )
    parser.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=list(TrainConfig.alphas),
        help="interpolation weights tried per task (0, the base model, is always tried)",
    )
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
        help="training runs to make and compare (default: all)",
    )
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy CPU)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=TrainConfig.seed,
        help="the dev split's and the training order's seed, to repeat a run in another folder "
        f"(default: {TrainConfig.seed})",
    )
    args = parser.parse_args(argv)
    if args.api_cap < 0:
        parser.error(f"--api-cap must be a number of queries >= 0, got {args.api_cap}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("sentence_transformers", "httpx", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logger.info("CPU: %s", cpu_features().summary())
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
        text = markdown(result["table"]) + "\n\n" + gains_markdown(result["table"])
        if any("selected" in scores for scores in result["table"].values()):
            text += "\n\n" + losses_markdown(result["table"])
        (args.workdir / "results.md").write_text(text + "\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
