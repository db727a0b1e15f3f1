"""Evaluation: IR metrics over rankings, and loaders of the real data sets."""

from __future__ import annotations

from .datasets import DATASETS, RetrievalDataset, data_dir, load_dataset
from .metrics import evaluate_per_query, evaluate_rankings

__all__ = [
    "DATASETS",
    "RetrievalDataset",
    "data_dir",
    "evaluate_per_query",
    "evaluate_rankings",
    "load_dataset",
]
