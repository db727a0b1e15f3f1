"""Evaluation: IR metrics over rankings, and loaders of the real data sets."""

from __future__ import annotations

from .datasets import DATASETS, RetrievalDataset, data_dir, load_dataset
from .metrics import evaluate_per_query, evaluate_rankings
from .ragas import RagReport, RagSample, evaluate_rag, rag_samples
from .runner import BenchmarkConfig, BenchmarkResult, run_benchmark

__all__ = [
    "DATASETS",
    "BenchmarkConfig",
    "BenchmarkResult",
    "RagReport",
    "RagSample",
    "RetrievalDataset",
    "data_dir",
    "evaluate_per_query",
    "evaluate_rag",
    "evaluate_rankings",
    "load_dataset",
    "rag_samples",
    "run_benchmark",
]
