"""Fine-tune the shipped MiniLM as ``llm-embedder train --config examples/finetune.yaml`` does.

Then compare it with its base and BM25 on the TEST splits. Three stages, each resumable
(finished work in ``--workdir`` is reused):

1. ``convert``: the config's ``sources`` (the training-scale sources of ``<data>/train``:
   Natural Questions, CANARD, APIBench TorchHub, six novels; and the TRAIN split of each
   evaluation dataset), mined by the base model and BM25 with likely false negatives dropped,
   exactly as the command mines them (`source_records`), into ``data/records.jsonl``; what
   mining did per source goes to ``data/mining.json``.
2. ``train``: each variant trains on those records with the config's settings (`train`).
   (g) ``selected`` is the config as it is, so its run is the command's: the dev split held
   out, the teacher (``llm``, the shipped SmolLM2-135M by default) scoring ``teacher_queries``
   training records per source of the distilled tasks, distillation where it beats the base
   model, the dev curve, each task's step, then its interpolation weight and instruction switch
   chosen on the dev split. Its last checkpoint is (d), the recipe without selection. The
   other variants change a setting or two (`VARIANTS`); the teacher's scores are kept in
   ``teacher-scores/`` and shared by all of them.
3. ``eval``: the TEST splits (`run_benchmark`, exact search) for (a) BM25, (b) the base model
   without instructions, (c) with instructions, and (d)-(k) as `LLMEmbedder(path)` loads them.
   One table, MRR@10 / nDCG@10 per dataset, and a second of each system's MRR@10 minus the
   base's with its paired standard error over the test queries, written as markdown and JSON.

Usage:
    python benchmarks/finetune.py --workdir runs/finetune --variants selected   # the README's
    python benchmarks/finetune.py --workdir runs/seed7 --variants selected --seed 7
    python benchmarks/finetune.py --workdir runs/finetune --stage convert       # records only
    python benchmarks/finetune.py --workdir runs/uncapped --set max_group_queries=null
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
import yaml

from llm_embedder_integrations import SHIPPED_MODEL, LLMEmbedder
from llm_embedder_integrations._cpu import cpu_features
from llm_embedder_integrations.evaluation.datasets import load_dataset
from llm_embedder_integrations.evaluation.metrics import gain_by_group, paired_gain
from llm_embedder_integrations.evaluation.runner import (
    TASK_DATASETS,
    benchmark_dataset,
    cap_corpus,
    cap_queries,
)
from llm_embedder_integrations.training import TrainConfig, train, write_jsonl
from llm_embedder_integrations.training.selection import query_groups
from llm_embedder_integrations.training.train import TASK_SETTINGS, source_records

logger = logging.getLogger("finetune")

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "finetune.yaml"
"""The command's config, the default of ``--config``."""

MINED_BY = ("model", "sources", "source_queries", "source_docs", "group_size", "data_path")
"""The settings the mined records depend on: a work folder mined with others is refused."""

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

VARIANTS: dict[str, dict[str, Any]] = {
    "selected": {},
    "mixed-batches": {"homogeneous": False, "interpolate": False, "eval_steps": 10**9},
    "no-distillation": {"distillation": False, "interpolate": False, "eval_steps": 10**9},
    "layer-lr-decay": {"layer_lr_decay": 0.8},
    "instruction-warmup": {"instruction_warmup_steps": 25},
    "paper-temperature": {"temperature": 0.01, "step_per_task": False},
    "one-step": {"step_per_task": False},
}
"""The training runs, each the config with these settings changed: (g) the config as it is (its
last checkpoint is (d)), and the two ablations without selection; (h) is (g) with a lower
learning rate for the lower layers (each layer 0.8 times the one above, the embeddings lowest),
the question whether a gentler update of the encoder body keeps what the base model knows; (i)
is (g) after 25 steps that train only the instructions' token embeddings
(`instruction_warmup_steps`), the question whether fitting the instructions first removes their
cost. (k) is (g) with one best step (the best mean over tasks) for every task instead of each
task's own where it is better beyond the noise; (j) is (k) at the paper's temperature of 0.01
instead of the config's 0.05 (the one MiniLM was trained at: sentence-transformers' scale 20).
All train on the same records and hold out the same dev split."""


def base_config(args: argparse.Namespace) -> TrainConfig:
    """``--config`` with ``--seed``, ``--llm``, ``--teacher-queries`` and ``--set`` applied."""
    config = TrainConfig.from_yaml(
        args.config,
        seed=args.seed,
        llm=args.llm,
        teacher_queries=args.teacher_queries,
        show_progress=args.progress,
    )
    return TrainConfig.from_dict({**config.to_dict(), **args.set})


def mined_records(args: argparse.Namespace, config: TrainConfig) -> Path:
    """``data/records.jsonl``: the config's sources, mined as the command mines them.

    Reused when it was mined with the same settings (`MINED_BY`).

    Raises:
        ValueError: If the work folder's records were mined with other settings.
    """
    data = args.workdir / "data"
    path, log = data / "records.jsonl", data / "mining.json"
    values = config.to_dict()  # plain data, as mining.json reads back
    settings = {name: values[name] for name in MINED_BY}
    if path.exists() and log.exists():
        mined = json.loads(log.read_text(encoding="utf-8"))
        if mined["settings"] != settings:
            raise ValueError(
                f"{path} was mined with {mined['settings']}, not {settings}: give another "
                "--workdir, or delete its data/ folder to mine again"
            )
        return path
    data.mkdir(parents=True, exist_ok=True)
    records, mining = source_records(config)
    if not records:
        raise ValueError(f"{args.config}: no `sources` to mine")
    tasks = {r.extra["source"]: r.task for r in records}
    for name, stats in mining.items():
        stats.update(task=tasks.get(name), records=stats["queries"])  # one record a query
    write_jsonl(records, path)
    log.write_text(json.dumps({"settings": settings, "sources": mining}, indent=2) + "\n")
    return path


def variant_config(args: argparse.Namespace, config: TrainConfig, name: str) -> TrainConfig:
    """The config of one variant: its settings (`VARIANTS`) on the mined records."""
    return TrainConfig.from_dict(
        {
            **config.to_dict(),
            "data": [str(args.workdir / "data" / "records.jsonl")],
            "sources": [],
            "output": str(args.workdir / "models" / name),
            "teacher_cache": str(args.workdir / "teacher-scores"),
            **VARIANTS[name],
        }
    )


def train_all(args: argparse.Namespace, config: TrainConfig) -> dict[str, dict[str, Any]]:
    """Train the variants (a finished one is reused); return their run summaries."""
    summaries: dict[str, dict[str, Any]] = {}
    for name in args.variants:
        if name == "no-distillation" and (not config.teacher_queries or not config.distillation):
            logger.info("(f) skipped: no task is distilled, so it would train exactly as (d)")
            continue
        output = args.workdir / "models" / name
        summary_path = args.workdir / f"train_{name}.json"
        if summary_path.exists() and (output / "llm_embedder_training.json").exists():
            summaries[name] = json.loads(summary_path.read_text())
            continue
        started = time.perf_counter()
        result = train(variant_config(args, config, name))
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
            "%s: %d steps in %.1f s (%.1f s in all), mean loss %.4f",
            name,
            result.global_step,
            result.seconds,
            summaries[name]["total_seconds"],
            result.train_loss,
        )
    return summaries


def stage_minutes(workdir: Path, variant: str = "selected") -> dict[str, float]:
    """Minutes per stage of a variant's run, from its files: mining, the teacher's scoring, the
    trainer's set-up (loading, the dev split, the teacher check), training with its dev
    evaluations, selection and saving, the test evaluation."""
    mining = json.loads((workdir / "data" / "mining.json").read_text())["sources"]
    run = json.loads((workdir / f"train_{variant}.json").read_text())
    results = workdir / "results.json"
    minutes = {
        "mining": sum(m["seconds"] for m in mining.values()) / 60,
        "teacher scoring": run["teacher_seconds"] / 60,
        "set-up": (
            run["total_seconds"]
            - run["teacher_seconds"]
            - run["train_seconds"]
            - run["selection_seconds"]
        )
        / 60,
        "training": run["train_seconds"] / 60,
        "selection and saving": run["selection_seconds"] / 60,
    }
    if results.exists():
        minutes["test evaluation"] = json.loads(results.read_text())["total_seconds"] / 60
    return minutes


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
    groups = query_groups({ds.name: ds})[ds.name]
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


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE (a TrainConfig setting), got {text!r}"
        )
    return key, yaml.safe_load(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="data, models and results")
    parser.add_argument(
        "--config",
        type=Path,
        default=CONFIG,
        help="the training config (default: examples/finetune.yaml, the command's)",
    )
    parser.add_argument(
        "--stage",
        choices=["convert", "train", "eval", "all"],
        default="all",
        help="what to run (convert: mine the records)",
    )
    parser.add_argument(
        "--set",
        type=_setting,
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="change a setting of the config (YAML values: dev_fraction=0.3, alphas=[0.5,1], "
        "max_group_queries=null)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="the dev split's and training order's seed"
    )
    parser.add_argument("--llm", default=None, help="the teacher: a causal LM's hub id or folder")
    parser.add_argument(
        "--teacher-queries",
        type=int,
        default=None,
        help="training records per source of each distilled task scored by the teacher",
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
    args = parser.parse_args(argv)
    args.set = dict(args.set)
    try:
        args.train_config = base_config(args)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
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
    config = args.train_config
    if args.stage in ("convert", "train", "all"):
        try:
            mined_records(args, config)
        except ValueError as exc:
            raise SystemExit(f"finetune.py: {exc}") from None
    if args.stage in ("train", "all"):
        train_all(args, config)
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
