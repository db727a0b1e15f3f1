"""The retrieval benchmark: BM25, the model without and with instructions, on the real datasets.

For every dataset of the chosen tasks (`TASK_DATASETS`) the runner encodes the corpus once per
instruction setting and the queries once, puts the corpus in a `ChromaStore` and ranks through
the store's own search (exact, HNSW, and hybrid for the ``+bm25`` rows; see `evaluation.ranking`,
which also ranks the BM25 baseline), then scores the rankings against the qrels with
`evaluate_rankings`.

In HNSW mode the exact rankings are computed as well, and each model row reports the recall@10
of HNSW against exact search: the mean overlap of the two top-10 id sets.

Example:
    >>> result = run_benchmark(BenchmarkConfig(tasks=("qa",), split="test"))  # doctest: +SKIP
    >>> print(result.table())  # doctest: +SKIP
    >>> result.save_json("retrieval.json")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from .._sampling import spread
from .._validation import check_positive_int
from ..encoder import LLMEmbedder
from ..lexical import BM25Index, Hybrid
from ..store import ChromaStore
from .datasets import RetrievalDataset, Split, load_dataset
from .metrics import evaluate_rankings
from .ranking import add_corpus, hnsw_overlap, rank_bm25, rank_with_store

__all__ = [
    "BENCHMARK_TASKS",
    "TASK_DATASETS",
    "BenchmarkConfig",
    "BenchmarkResult",
    "BenchmarkRow",
    "DatasetSpec",
    "benchmark_dataset",
    "cap_corpus",
    "cap_queries",
    "run_benchmark",
]

logger = logging.getLogger(__name__)

InstructionMode = Literal["auto", "on", "off", "both"]
SearchMode = Literal["exact", "hnsw"]

KS: tuple[int, ...] = (1, 5, 10)
"""Cut-offs of the reported metrics."""
HYBRID = Hybrid()
"""Fusion of the hybrid rows: the store's default (RRF, k=60, 50 candidates per ranking)."""


@dataclass(frozen=True)
class DatasetSpec:
    """One row group of the benchmark: a dataset loaded with some options, under a label."""

    label: str
    """Name shown in the table, e.g. ``"trec_cast/history"``."""
    name: str
    """Dataset name given to `load_dataset`."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Loader options, e.g. ``{"history": True}``."""


TASK_DATASETS: Mapping[str, tuple[DatasetSpec, ...]] = {
    "qa": (DatasetSpec("xquad", "xquad"),),
    "tool": (
        DatasetSpec("gorilla_torchhub", "gorilla_torchhub"),
        DatasetSpec("gorilla_tensorflow", "gorilla_tensorflow"),
    ),
    "chat": (DatasetSpec("locomo", "locomo"),),
    "convsearch": (
        DatasetSpec("trec_cast/raw", "trec_cast"),
        DatasetSpec("trec_cast/history", "trec_cast", {"history": True}),
        DatasetSpec("trec_cast/rewrite", "trec_cast", {"rewrite": True}),
    ),
    "icl": (DatasetSpec("sni", "sni"),),
    "lrlm": (DatasetSpec("tinyshakespeare", "tinyshakespeare"),),
}
"""The datasets of each LLM-Embedder task. ``trec_cast`` is run three ways: the raw utterance,
the utterance followed by the previous ones (most recent first), and the manual rewrite."""

BENCHMARK_TASKS: tuple[str, ...] = tuple(TASK_DATASETS)
"""Tasks `run_benchmark` knows, in the order they run; ``"all"`` selects every one."""


@dataclass(frozen=True)
class BenchmarkConfig:
    """What `run_benchmark` runs.

    Attributes:
        tasks: Task names of `BENCHMARK_TASKS`, or ``("all",)``; normalised to the task tuple.
        model: Embedding model (hub id or directory); None resolves the package default
            (BAAI/llm-embedder where it can be loaded, else the shipped all-MiniLM-L6-v2).
        instructions: ``"both"``: one row without and one with LLM-Embedder's instructions;
            ``"on"``/``"off"``: one row; ``"auto"``: one row with the encoder's own choice.
        split: Dataset split: ``"test"``, ``"train"`` or ``"all"``.
        search: ``"exact"``: brute-force cosine over the encoded corpus; ``"hnsw"``: Chroma's
            HNSW index, with the exact rankings computed too for the HNSW-vs-exact recall.
        bm25: Add the BM25 baseline rows.
        max_queries: Queries per dataset at most (evenly spread over the dataset); None for all.
        max_docs: Documents per dataset at most, for quick runs (see `cap_corpus`: the judged
            documents are kept, the search gets easier); None for all.
        data_path: Data folder; None uses `data_dir`'s choice.
        batch_size: Texts per forward pass of the encoder.
        device: Encoder device; None picks the best available.
        show_progress: Encoder progress bars; None shows them for inputs of more than 8 batches.
    """

    tasks: tuple[str, ...] = ("all",)
    model: str | None = None
    instructions: InstructionMode = "both"
    split: Split = "test"
    search: SearchMode = "exact"
    bm25: bool = True
    max_queries: int | None = None
    max_docs: int | None = None
    data_path: str | None = None
    batch_size: int = 32
    device: str | None = None
    show_progress: bool | None = None

    def __post_init__(self) -> None:
        tasks = (self.tasks,) if isinstance(self.tasks, str) else tuple(self.tasks)
        unknown = [t for t in tasks if t != "all" and t not in TASK_DATASETS]
        if unknown or not tasks:
            raise ValueError(
                f"`tasks` must name tasks among {('all', *BENCHMARK_TASKS)}, got {self.tasks!r}"
            )
        chosen = BENCHMARK_TASKS if "all" in tasks else tuple(dict.fromkeys(tasks))
        object.__setattr__(self, "tasks", chosen)
        for name, allowed in (
            ("instructions", get_args(InstructionMode)),
            ("split", get_args(Split)),
            ("search", get_args(SearchMode)),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}")
        if self.max_queries is not None:
            check_positive_int(self.max_queries, "max_queries")
        if self.max_docs is not None:
            check_positive_int(self.max_docs, "max_docs")
        check_positive_int(self.batch_size, "batch_size")

    def datasets(self) -> list[tuple[str, DatasetSpec]]:
        """The ``(task, spec)`` pairs to run, in order."""
        return [(task, spec) for task in self.tasks for spec in TASK_DATASETS[task]]


@dataclass(frozen=True)
class BenchmarkRow:
    """The scores of one system on one dataset.

    Attributes:
        dataset: Dataset label (`DatasetSpec.label`).
        task: LLM-Embedder task of the dataset.
        system: ``"bm25"``, ``"model"`` (no instructions) or ``"model+instr"``.
        search: How the ranking was made: ``"bm25"``, ``"exact"`` or ``"hnsw"``.
        metrics: ``evaluate_rankings`` at cut-offs 1, 5 and 10 (``"mrr@10"``, ``"hit_rate@1"``...).
        corpus_size: Documents in the corpus.
        queries: Queries scored.
        seconds: Wall time of this row: encoding (or indexing), searching and scoring. A corpus
            shared with an earlier dataset of the run (the ``trec_cast`` variants) is encoded
            once, by the first.
        hnsw_recall: HNSW mode only: mean over queries of |top-10 HNSW ∩ top-10 exact| /
            |top-10 exact|.
        exact_metrics: HNSW mode only: the metrics of the exact rankings.
        query_mrr: MRR@10 of each judged query, to compare two systems query by query
            (`evaluation.metrics.paired_gain`); left out of `to_dict`.
    """

    dataset: str
    task: str
    system: str
    search: str
    metrics: dict[str, float]
    corpus_size: int
    queries: int
    seconds: float
    hnsw_recall: float | None = None
    exact_metrics: dict[str, float] | None = None
    query_mrr: dict[str, float] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The row as plain JSON-ready data (without the per-query scores)."""
        row = dataclasses.asdict(self)
        del row["query_mrr"]
        return row


_COLUMNS: tuple[tuple[str, str], ...] = (
    ("mrr@10", "MRR@10"),
    ("hit_rate@1", "hit@1"),
    ("hit_rate@5", "hit@5"),
    ("hit_rate@10", "hit@10"),
    ("ndcg@10", "nDCG@10"),
    ("recall@10", "R@10"),
)


@dataclass(frozen=True)
class BenchmarkResult:
    """The rows of one benchmark run, with what produced them.

    Attributes:
        config: The run's configuration.
        model_id: The embedding model's name.
        rows: One row per (dataset, system), datasets in run order, BM25 first.
        seconds: Wall time of the whole run, model loading included.
        environment: Device, torch threads, versions.
    """

    config: BenchmarkConfig
    model_id: str
    rows: list[BenchmarkRow]
    seconds: float
    environment: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """A markdown table: one line per dataset and system.

        Columns: MRR@10, hit rate @1/@5/@10, nDCG@10, recall@10, in HNSW mode the HNSW-vs-exact
        recall@10, then corpus size, queries and seconds.
        """
        hnsw = any(r.hnsw_recall is not None for r in self.rows)
        head = ["dataset", "system", *(title for _, title in _COLUMNS)]
        head += ["HNSW/exact@10"] if hnsw else []
        head += ["corpus", "queries", "seconds"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        for row in self.rows:
            cells = [row.dataset, row.system, *(f"{row.metrics[key]:.3f}" for key, _ in _COLUMNS)]
            if hnsw:
                cells.append("-" if row.hnsw_recall is None else f"{row.hnsw_recall:.3f}")
            cells += [str(row.corpus_size), str(row.queries), f"{row.seconds:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Every figure of the run as JSON-ready data."""
        return {
            "model": self.model_id,
            "config": dataclasses.asdict(self.config),
            "seconds": self.seconds,
            "environment": dict(self.environment),
            "rows": [row.to_dict() for row in self.rows],
        }

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write `to_dict` to ``path`` (parent folders created); return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return target


# Capping ---------------------------------------------------------------------------------------


def cap_queries(ds: RetrievalDataset, max_queries: int | None) -> RetrievalDataset:
    """Keep at most ``max_queries`` queries, evenly spread over the dataset's query order.

    The corpus is unchanged; qrels, metadata and exclusions follow the kept queries.
    """
    if max_queries is None:
        return ds
    check_positive_int(max_queries, "max_queries")
    if len(ds.queries) <= max_queries:
        return ds
    kept = spread(list(ds.queries), max_queries)
    return dataclasses.replace(
        ds,
        queries={q: ds.queries[q] for q in kept},
        qrels={q: ds.qrels[q] for q in kept if q in ds.qrels},
        metadata={q: ds.metadata[q] for q in kept if q in ds.metadata},
        exclude={q: ds.exclude[q] for q in kept if q in ds.exclude},
    )


def cap_corpus(ds: RetrievalDataset, max_docs: int | None) -> RetrievalDataset:
    """Keep every judged document and fill up to ``max_docs`` with others, evenly spread.

    For quick runs only: a smaller corpus makes the search easier, so the scores are not
    comparable with a full run. Documents named in the qrels are always kept, even beyond
    ``max_docs``; the corpus order is kept.
    """
    if max_docs is None:
        return ds
    check_positive_int(max_docs, "max_docs")
    if len(ds.corpus) <= max_docs:
        return ds
    judged = {doc for rel in ds.qrels.values() for doc in rel}
    others = [doc for doc in ds.corpus if doc not in judged]
    room = max_docs - len(judged)
    kept = judged | set(spread(others, room) if room > 0 else ())
    return dataclasses.replace(
        ds,
        corpus={d: t for d, t in ds.corpus.items() if d in kept},
        doc_metadata={d: m for d, m in ds.doc_metadata.items() if d in kept},
        exclude={q: banned & kept for q, banned in ds.exclude.items()},
    )


# Running -------------------------------------------------------------------------------------


def _fingerprint(ds: RetrievalDataset) -> int:
    return hash((ds.task, tuple(ds.corpus.items())))


def _system_name(encoder: LLMEmbedder) -> str:
    return "model+instr" if encoder.instructions else "model"


def benchmark_dataset(
    ds: RetrievalDataset,
    encoders: Sequence[LLMEmbedder],
    *,
    label: str | None = None,
    bm25: bool = True,
    search: SearchMode = "exact",
    cache: dict[Any, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[BenchmarkRow]:
    """Score BM25 and each encoder on one dataset.

    Args:
        ds: The dataset (already capped, if wanted).
        encoders: One encoder per model row; its ``instructions`` setting names the row
            (``"model"`` or ``"model+instr"``).
        label: Dataset label of the rows; default ``ds.name``.
        bm25: Add the BM25 row first.
        search: ``"exact"`` or ``"hnsw"`` (see `BenchmarkConfig.search`).
        cache: A dict shared by the calls of one run: corpus embeddings and BM25 indexes are
            reused when a later dataset has the same corpus. None caches nothing.
        progress: Called with one line per finished row.

    Returns:
        The rows, BM25 first, then one per encoder.
    """
    if search not in get_args(SearchMode):
        raise ValueError(f"`search` must be one of {get_args(SearchMode)}, got {search!r}")
    label = label or ds.name
    cache = {} if cache is None else cache
    qids = list(ds.queries)
    doc_ids = list(ds.corpus)
    corpus_key = _fingerprint(ds)
    rows: list[BenchmarkRow] = []

    def finish(
        system: str, how: str, run: Mapping[str, Sequence[str]], start: float, **extra: Any
    ) -> None:
        metrics, per_query = evaluate_rankings(run, ds.qrels, KS, per_query=True)
        row = BenchmarkRow(
            dataset=label,
            task=ds.task,
            system=system,
            search=how,
            metrics=metrics,
            corpus_size=len(doc_ids),
            queries=len(qids),
            seconds=time.perf_counter() - start,
            query_mrr={q: scores["mrr@10"] for q, scores in per_query.items()},
            **extra,
        )
        rows.append(row)
        if progress is not None:
            note = "" if row.hnsw_recall is None else f"  HNSW/exact@10 {row.hnsw_recall:.3f}"
            progress(
                f"{label:<20} {system:<12} MRR@10 {row.metrics['mrr@10']:.3f}  "
                f"nDCG@10 {row.metrics['ndcg@10']:.3f}{note}  "
                f"({len(qids)} queries, {len(doc_ids)} docs, {row.seconds:.1f} s)"
            )

    if bm25:
        start = time.perf_counter()
        index = cache.get(("bm25", corpus_key))
        if index is None:
            index = cache[("bm25", corpus_key)] = BM25Index(ds.corpus)
        finish("bm25", "bm25", rank_bm25(ds, qids=qids, index=index), start)

    for encoder in encoders:
        start = time.perf_counter()
        key = (
            encoder.model_id,
            str(encoder.dtype),
            encoder.max_length,
            encoder.instruction(ds.task, "key"),
            corpus_key,
        )
        doc_vectors = cache.get(key)
        if doc_vectors is None:
            texts = [ds.corpus[d] for d in doc_ids]
            doc_vectors = cache[key] = encoder.encode_keys(texts, task=ds.task)
        query_vectors = encoder.encode_queries([ds.queries[q] for q in qids], task=ds.task)
        system = _system_name(encoder)
        store = ChromaStore(encoder)
        try:
            add_corpus(store, ds, doc_vectors)
            exact = rank_with_store(ds, store, query_vectors, qids=qids, exact=True)
            if search == "exact":
                finish(system, "exact", exact, start)
            else:
                approximate = rank_with_store(ds, store, query_vectors, qids=qids)
                finish(
                    system,
                    "hnsw",
                    approximate,
                    start,
                    hnsw_recall=hnsw_overlap(approximate, exact),
                    exact_metrics=evaluate_rankings(exact, ds.qrels, KS),
                )
            if bm25:
                hybrid_start = time.perf_counter()
                fused = rank_with_store(
                    ds, store, query_vectors, qids=qids, exact=search == "exact", hybrid=HYBRID
                )
                finish(f"{system}+bm25", "hybrid", fused, hybrid_start)
        finally:
            store.reset(ds.task)
    return rows


def _encoders(config: BenchmarkConfig) -> list[LLMEmbedder]:
    settings: dict[str, list[bool | Literal["auto"]]] = {
        "both": [False, True],
        "on": [True],
        "off": [False],
        "auto": ["auto"],
    }
    encoders: list[LLMEmbedder] = []
    for setting in settings[config.instructions]:
        # The first encoder resolves the model (maybe a fallback, with a warning); the others
        # load the model it settled on (the weights are shared, loaded once per process).
        model = encoders[0].model_id if encoders else config.model
        encoders.append(
            LLMEmbedder(
                model,
                instructions=setting,
                batch_size=config.batch_size,
                device=config.device,
                show_progress=config.show_progress,
            )
        )
    return encoders


def _environment(encoder: LLMEmbedder) -> dict[str, Any]:
    import torch

    from .. import __version__

    return {
        "device": encoder.device.type,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "llm_embedder_integrations": __version__,
        "max_length": encoder.max_length,
    }


def run_benchmark(
    config: BenchmarkConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    """Run the retrieval benchmark.

    Every dataset of ``config.tasks`` is loaded (split ``config.split``, capped to
    ``config.max_queries`` and ``config.max_docs``), then scored with BM25 and the model in each
    instruction setting. Corpora are encoded once per instruction setting; nothing is kept between
    runs.

    Args:
        config: What to run; default `BenchmarkConfig()` (every task, test split, exact search,
            BM25 plus the model without and with instructions).
        progress: Called with one line per finished row (e.g. ``print``).

    Returns:
        The rows and the run's metadata; ``.table()`` renders markdown, ``.save_json(path)``
        writes every figure.

    Raises:
        FileNotFoundError: If the data folder or a dataset file is missing.
    """
    config = config or BenchmarkConfig()
    started = time.perf_counter()
    encoders = _encoders(config)
    cache: dict[Any, Any] = {}
    rows: list[BenchmarkRow] = []
    for _task, spec in config.datasets():
        ds = load_dataset(spec.name, config.split, data_path=config.data_path, **spec.options)
        ds = cap_corpus(cap_queries(ds, config.max_queries), config.max_docs)
        rows += benchmark_dataset(
            ds,
            encoders,
            label=spec.label,
            bm25=config.bm25,
            search=config.search,
            cache=cache,
            progress=progress,
        )
    return BenchmarkResult(
        config=config,
        model_id=encoders[0].model_id,
        rows=rows,
        seconds=time.perf_counter() - started,
        environment=_environment(encoders[0]),
    )
