"""The ``llm-embedder`` command (also ``python -m llm_embedder_integrations``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .indexing import SourceFile
    from .store import ChromaStore
    from .training.train import TrainConfig

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.model, questions=args.questions, data_path=args.data)
    return 0


def _quiet_bm25s() -> None:
    """Keep bm25s' DEBUG lines out of the log (BM25 ranks in `eval` and mines in `train`)."""
    from ._imports import is_available

    if is_available("bm25s"):
        import bm25s  # noqa: F401  (on import it sets its logger to DEBUG: quiet it after)

        logging.getLogger("bm25s").setLevel(logging.WARNING)


def _eval(args: argparse.Namespace) -> int:
    from .evaluation.runner import BenchmarkConfig, run_benchmark

    config = BenchmarkConfig(
        tasks=tuple(args.task),
        model=args.model,
        instructions=args.instructions,
        split=args.split,
        search=args.search,
        bm25=args.bm25,
        max_queries=args.max_queries,
        max_docs=args.max_docs,
        data_path=args.data,
    )
    result = run_benchmark(config, progress=lambda line: print(line, file=sys.stderr))
    print(result.table())
    print(
        f"\nmodel {result.model_id}, split {config.split}, {config.search} search, "
        f"{result.seconds:.1f} s in all"
    )
    if args.json:
        print(f"every figure written to {result.save_json(args.json)}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from .training.reward import score_file

    if args.batch_size < 1:
        raise SystemExit(f"--batch-size must be >= 1, got {args.batch_size}")
    done = score_file(
        args.input,
        args.output,
        llm=args.llm,
        batch_size=args.batch_size,
        task=args.task,
        dtype=args.dtype,
    )
    print(f"scored {done} records into {args.output}", file=sys.stderr)
    return 0


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """The `TrainConfig` of ``llm-embedder train``: the YAML file, then the flags given."""
    from .training.train import TrainConfig

    flags = {
        "model": args.model,
        "data": tuple(args.data) if args.data else None,
        "sources": tuple(args.sources) if args.sources else None,
        "teacher_queries": args.teacher_queries,
        "llm": args.llm,
        "teacher_dtype": args.teacher_dtype,
        "output": args.output,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "group_size": args.group_size,
        "lr": args.lr,
        "temperature": args.temperature,
        "max_length": args.max_length,
        "device": args.device,
        "precision": args.precision,
        "seed": args.seed,
        "resume": args.resume,
        "homogeneous": False if args.no_homogeneous else None,
        "distillation": False if args.no_distillation else None,
        "gradient_checkpointing": True if args.gradient_checkpointing else None,
        "show_progress": False if args.no_progress else None,
    }
    if args.config:
        return TrainConfig.from_yaml(args.config, **flags)
    return TrainConfig.from_dict({}, **flags)


def _train(args: argparse.Namespace) -> int:
    from .training.train import train

    try:
        config = _train_config(args)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"llm-embedder train: {exc}") from exc
    try:
        result = train(config)
    except ValueError as exc:  # bad data or settings (TrainingDataError included), named
        raise SystemExit(f"llm-embedder train: {exc}") from exc
    if os.environ.get("RANK", "0") != "0":  # under torchrun, the first process reports
        return 0
    print(
        f"trained {result.global_step} steps ({result.epochs:.2f} epochs, "
        f"{result.samples_per_second:.1f} queries/s, final mean loss {result.train_loss:.4f}); "
        f"model saved to {result.output}",
        file=sys.stderr,
    )
    return 0


def _open_index(args: argparse.Namespace, *, create: bool) -> tuple[ChromaStore, str]:
    """The store at ``--store`` with the model given, else the one recorded in it."""
    import chromadb

    from .encoder import LLMEmbedder
    from .indexing import IndexingError, open_store, recorded_model

    if not create and not os.path.isdir(args.store):
        raise IndexingError(
            f"{args.store}: no index there; build one with `llm-embedder index PATH... "
            f"--task {args.task} --store {args.store}`"
        )
    os.makedirs(args.store, exist_ok=True)
    client = chromadb.PersistentClient(
        path=args.store, settings=chromadb.Settings(anonymized_telemetry=False)
    )
    recorded = recorded_model(client, args.task)
    if not create and recorded is None:
        raise IndexingError(
            f"{args.store}: holds no {args.task!r} index; build one with `llm-embedder index "
            f"PATH... --task {args.task} --store {args.store}`"
        )
    model = args.model or recorded
    encoder = LLMEmbedder(model, show_progress=False)
    return open_store(args.store, encoder, client=client), encoder.model_id


def _index(args: argparse.Namespace) -> int:
    from .indexing import find_files, index_paths

    find_files(args.paths)  # a missing path fails before the store is created or opened
    store, model_id = _open_index(args, create=True)

    def bar(files: Iterable[SourceFile]) -> Iterable[SourceFile]:
        from tqdm.auto import tqdm

        return tqdm(files, desc="indexing", unit="file")

    report = index_paths(
        args.paths,
        store,
        task=args.task,
        chunk_tokens=args.chunk_tokens,
        progress=bar if sys.stderr.isatty() else None,
    )
    print(
        f"{report.summary()}; {store.count(args.task)} chunks in {args.store} "
        f"(task {args.task}, model {model_id})",
        file=sys.stderr,
    )
    return 0


def _query(args: argparse.Namespace) -> int:
    import json

    from ._validation import check_k

    try:
        check_k(args.k)
    except ValueError as exc:
        raise SystemExit(f"llm-embedder query: -k must be a positive int, got {args.k}") from exc
    store, _ = _open_index(args, create=False)
    hits = store.search(args.text, task=args.task, k=args.k, hybrid=args.hybrid or None)
    if args.json:
        rows = [
            {"id": h.id, "score": h.score, "text": h.text, "metadata": h.metadata} for h in hits
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for rank, hit in enumerate(hits, 1):
        where = hit.metadata.get("source", "")
        record = hit.metadata.get("record")
        if record is not None and not str(where).endswith((".txt", ".md")):
            where = f"{where}:{record}"
        text = " ".join(hit.text.split())
        print(
            f"{rank}. [{hit.score:.3f}] {where}\n   {text[:300]}{'...' if len(text) > 300 else ''}"
        )
    if not hits:
        print("no results", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="llm-embedder", description="LLM-Embedder for LangChain and LlamaIndex."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    from .indexing import SUFFIXES

    index = sub.add_parser(
        "index",
        help=f"index your files and folders ({', '.join(SUFFIXES)}) into a persistent store",
    )
    index.add_argument("paths", nargs="+", metavar="PATH", help="files and folders to index")
    index.add_argument("--task", default="qa", help="LLM-Embedder task (default: qa)")
    index.add_argument("--store", required=True, help="directory of the store (created if new)")
    index.add_argument(
        "--model",
        default=None,
        help="embedding model name or path (default: the one the store was built with, "
        "else BAAI/llm-embedder or the shipped MiniLM)",
    )
    index.add_argument(
        "--chunk-tokens", type=int, default=128, help="most tokens per chunk (default: 128)"
    )
    index.set_defaults(func=_index)

    query = sub.add_parser("query", help="search a store built with `llm-embedder index`")
    query.add_argument("text", help="what to search for")
    query.add_argument("--task", default="qa", help="LLM-Embedder task (default: qa)")
    query.add_argument("--store", required=True, help="directory of the store")
    query.add_argument("-k", type=int, default=5, help="number of results (default: 5)")
    query.add_argument("--json", action="store_true", help="print the results as JSON")
    query.add_argument("--hybrid", action="store_true", help="fuse the dense ranking with BM25's")
    query.add_argument(
        "--model", default=None, help="embedding model (default: the one the store records)"
    )
    query.set_defaults(func=_query)

    demo = sub.add_parser(
        "demo", help="index XQuAD, answer questions with a RAG chain, print MRR@10"
    )
    demo.add_argument("--model", default=None, help="embedding model name or path")
    demo.add_argument("--questions", type=int, default=3, help="questions answered by the LLM")
    demo.add_argument("--data", default=None, help="data folder (default: $LLM_EMBEDDER_DATA)")
    demo.set_defaults(func=_demo)

    from .evaluation.runner import BENCHMARK_TASKS

    bench = sub.add_parser(
        "eval",
        help="retrieval benchmark: BM25 and the model without/with instructions on real data",
    )
    bench.add_argument(
        "--task",
        nargs="+",
        default=["all"],
        choices=["all", *BENCHMARK_TASKS],
        help="tasks to run (default: all)",
    )
    bench.add_argument("--model", default=None, help="embedding model name or path")
    bench.add_argument(
        "--instructions",
        default="both",
        choices=["auto", "on", "off", "both"],
        help="model rows without and/or with LLM-Embedder's instructions (default: both)",
    )
    bench.add_argument(
        "--split", default="test", choices=["test", "train", "all"], help="dataset split"
    )
    search = bench.add_mutually_exclusive_group()
    search.add_argument(
        "--exact",
        dest="search",
        action="store_const",
        const="exact",
        help="brute-force cosine search (default)",
    )
    search.add_argument(
        "--hnsw",
        dest="search",
        action="store_const",
        const="hnsw",
        help="Chroma HNSW search; also reports its recall@10 against exact search",
    )
    bench.set_defaults(search="exact")
    bench.add_argument(
        "--no-bm25", dest="bm25", action="store_false", help="leave out the BM25 rows"
    )
    bench.add_argument(
        "--max-queries", type=int, default=None, help="queries per dataset at most (default: all)"
    )
    bench.add_argument(
        "--max-docs",
        type=int,
        default=None,
        help="documents per dataset at most, judged ones kept (quick runs; the search gets easier)",
    )
    bench.add_argument("--json", default=None, help="write every figure to this JSON file")
    bench.add_argument("--data", default=None, help="data folder (default: $LLM_EMBEDDER_DATA)")
    bench.set_defaults(func=_eval)

    score = sub.add_parser(
        "score",
        help="fill the teacher_scores of a JSON Lines training file with LLM rewards (resumable)",
    )
    score.add_argument("input", help="JSON Lines training file")
    score.add_argument("output", help="output file; an interrupted run continues where it stopped")
    score.add_argument(
        "--llm", default=None, help="causal LM name or path (default: the shipped SmolLM2)"
    )
    score.add_argument("--batch-size", type=int, default=16, help="candidates per forward pass")
    score.add_argument("--task", default=None, help="task of records without a `task` field")
    score.add_argument(
        "--dtype",
        default=None,
        choices=["fp32", "bf16", "fp16"],
        help="LLM dtype (default: bf16 where the GPU or CPU runs it natively, else fp32)",
    )
    score.set_defaults(func=_score)

    train = sub.add_parser(
        "train",
        help="fine-tune with LLM-Embedder's recipe (also under torchrun for several GPUs)",
    )
    train.add_argument("--config", default=None, help="YAML config (see examples/train.yaml)")
    train.add_argument("--model", default=None, help="model to fine-tune (name or path)")
    train.add_argument("--data", nargs="+", default=None, help="JSON Lines training file(s)")
    train.add_argument(
        "--sources",
        nargs="+",
        default=None,
        help="sources to convert and train on (nq_qed canard gorilla_torchhub_train gutenberg, "
        "or an evaluation dataset's train split)",
    )
    train.add_argument(
        "--teacher-queries",
        type=int,
        default=None,
        help="records per source of each distilled task scored by the teacher before training "
        "(0: none; the teacher is then measured against the base and distils where it is better)",
    )
    train.add_argument(
        "--llm", default=None, help="teacher: causal LM name or path (default: the shipped SmolLM2)"
    )
    train.add_argument(
        "--teacher-dtype",
        default=None,
        choices=["fp32", "bf16"],
        help="teacher dtype (default: bf16 where the GPU or CPU runs it natively, else fp32)",
    )
    train.add_argument("--output", default=None, help="directory of the trained model")
    train.add_argument("--epochs", type=float, default=None, help="passes over the data")
    train.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    train.add_argument("--batch-size", type=int, default=None, help="queries per batch and GPU")
    train.add_argument("--group-size", type=int, default=None, help="keys per query (1 + negs)")
    train.add_argument("--lr", type=float, default=None, help="peak learning rate")
    train.add_argument(
        "--temperature", type=float, default=None, help="student temperature (paper: 0.01)"
    )
    train.add_argument("--max-length", type=int, default=None, help="token limit per text")
    train.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    train.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"])
    train.add_argument("--seed", type=int, default=None, help="seed of order and negatives")
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        help="continue from the last checkpoint in --output, or from the one given",
    )
    train.add_argument(
        "--no-homogeneous", action="store_true", help="mixed-task batches (ablation)"
    )
    train.add_argument(
        "--no-distillation",
        action="store_true",
        help="contrastive loss only; no teacher scores needed",
    )
    train.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute activations"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if args.func in (_eval, _train) and not args.verbose:
        _quiet_bm25s()
    if args.func in (_index, _query):
        from .indexing import IndexingError
        from .instructions import get_instruction
        from .store import StoreMismatchError

        try:
            get_instruction(args.task)
        except ValueError as exc:
            print(f"llm-embedder {args.command}: {exc}", file=sys.stderr)
            return 2
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        if not sys.stderr.isatty():  # model-loading bars only on a terminal
            hf_logging.disable_progress_bar()
        try:
            return int(args.func(args))
        except (IndexingError, StoreMismatchError, OSError) as exc:
            print(f"llm-embedder {args.command}: {exc}", file=sys.stderr)
            return 2
        finally:
            if bars:
                hf_logging.enable_progress_bar()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
