"""Do a saved model's test rows change when long documents are cut into passages, as the demo does?

`benchmarks/finetune.py` ranks each test set's documents as they are, so an encoder sees only the
first ``max_length`` tokens of a longer one (BM25 reads all of it). The demo instead cuts such a
document into passages that fit (`demo.passages_within_limit`) and ranks a document by its best
passage (`demo.rank_documents`). This script ranks every test set that holds a document longer
than the limit both ways, for the base model and a saved model, and prints each one's MRR@10
and the saved model's paired difference from the base (per query, as the fine-tuning table's).

Usage:
    python benchmarks/long_documents.py --model runs/finetune/models/selected
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llm_embedder_integrations import SHIPPED_MODEL, LLMEmbedder
from llm_embedder_integrations.demo import (
    documents_cut,
    passages_within_limit,
    rank_documents,
)
from llm_embedder_integrations.evaluation.datasets import RetrievalDataset, load_dataset
from llm_embedder_integrations.evaluation.metrics import evaluate_rankings, paired_gain
from llm_embedder_integrations.evaluation.runner import TASK_DATASETS
from llm_embedder_integrations.store import ChromaStore

logger = logging.getLogger("long_documents")

WAYS = ("truncated", "passages")


def per_query_mrr(encoder: LLMEmbedder, ds: RetrievalDataset, passages: bool) -> dict[str, float]:
    """MRR@10 of each query, the documents whole (truncated) or cut into passages."""
    if ds.exclude or any(m.get("filter") for m in ds.metadata.values()):
        raise ValueError(f"{ds.name}: queries with a filter or exclusions are not supported here")
    if passages:
        texts, ids, metadatas = passages_within_limit(encoder, ds.corpus, ds.task)
    else:
        ids = list(ds.corpus)
        texts = [ds.corpus[d] for d in ids]
        metadatas = [{"document": d} for d in ids]
    qids = list(ds.queries)
    store = ChromaStore(encoder)
    try:
        store.add(texts, task=ds.task, ids=ids, metadatas=metadatas)
        questions = [ds.queries[q] for q in qids]
        ranked = rank_documents(store, questions, ds.task, len(ids), len(ds.corpus))
    finally:
        store.reset(ds.task)
    _, scores = evaluate_rankings(dict(zip(qids, ranked, strict=True)), ds.qrels, per_query=True)
    return {q: s["mrr@10"] for q, s in scores.items()}


def cut_documents(encoder: LLMEmbedder, ds: RetrievalDataset) -> tuple[int, int]:
    """How many of the documents are too long for ``encoder``, and how many passages all make."""
    _, ids, metadatas = passages_within_limit(encoder, ds.corpus, ds.task)
    return documents_cut(ids, metadatas), len(ids)


def measure(encoders: Mapping[str, LLMEmbedder]) -> dict[str, Any]:
    """Per-query MRR@10 of each encoder, both ways, on each test set with a long document."""
    first = next(iter(encoders.values()))
    rows: dict[str, Any] = {}
    for specs in TASK_DATASETS.values():
        for spec in specs:
            ds = load_dataset(spec.name, "test", **spec.options)
            cut, passages = cut_documents(first, ds)
            if not cut:
                logger.info("%s: every document fits %d tokens", spec.label, first.max_length)
                continue
            rows[f"{ds.task}: {spec.label}"] = {
                "documents": len(ds.corpus),
                "cut": cut,
                "passages": passages,
                "scores": {
                    name: {way: per_query_mrr(encoder, ds, way == "passages") for way in WAYS}
                    for name, encoder in encoders.items()
                },
            }
    return rows


def base_and_saved(model: str) -> dict[str, LLMEmbedder]:
    """The shipped base without instructions, and ``model`` as `LLMEmbedder(path)` loads it."""
    return {"base": LLMEmbedder(SHIPPED_MODEL, instructions=False), "saved": LLMEmbedder(model)}


def report(rows: Mapping[str, Any], base: str = "base", saved: str = "saved") -> str:
    """Markdown: each set's MRR@10 both ways, and the saved model's difference from the base."""

    def mean(values: Mapping[str, float]) -> float:
        return sum(values.values()) / len(values)

    cells = [f"{name}: {way}" for name in (base, saved) for way in WAYS]
    cells += [f"{saved} - {base}: {way}" for way in WAYS]
    lines = [
        "| task: dataset | documents cut (passages) | " + " | ".join(cells) + " |",
        "|" + "---|" * (2 + len(cells)),
    ]
    for label, row in rows.items():
        scores = row["scores"]
        values = [f"{mean(scores[name][way]):.4f}" for name in (base, saved) for way in WAYS]
        for way in WAYS:
            gain, error = paired_gain(scores[saved][way], scores[base][way])
            values.append(f"{gain:+.4f} ± {error:.4f}")
        lines.append(
            f"| {label} | {row['cut']} of {row['documents']} ({row['passages']}) | "
            + " | ".join(values)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a saved model's folder (or hub id)")
    parser.add_argument("--out", type=Path, help="also write the rows, per query, as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    encoders = base_and_saved(args.model)
    for name, encoder in encoders.items():
        print(f"{name}: {encoder}")
    rows = measure(encoders)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
