"""Conversational search on TREC CAsT 2021: raw utterance, with history, manual rewrite.

    python benchmarks/convsearch.py
    python benchmarks/convsearch.py --model BAAI/llm-embedder

Every turn searches the distinct gold passages of all topics (split ``all``) with exact cosine
search through `ConversationalRetriever`: the raw utterance alone, the utterance followed by the
topic's previous utterances (most recent first: the format of
``load_dataset("trec_cast", history=True)``), and the manual rewrite (a human de-contextualised
query: an upper bound), plus the history cut to the last one or two utterances
(``max_history``). Each runs with the instructions off and on.
"""

from __future__ import annotations

import argparse

import torch

from llm_embedder_integrations import ChromaStore, LLMEmbedder
from llm_embedder_integrations.convsearch import ConversationalRetriever
from llm_embedder_integrations.evaluation import evaluate_rankings, load_dataset

METRICS = ("mrr@10", "recall@10", "ndcg@10", "hit_rate@1")


def score(searcher: ConversationalRetriever, turns, qids, qrels) -> dict[str, float]:
    hits = searcher.search_batch(turns, k=10)
    run_ = {q: [h.id for h in ranked] for q, ranked in zip(qids, hits, strict=True)}
    return evaluate_rankings(run_, qrels, ks=(1, 10))


def run(encoder: LLMEmbedder) -> dict[str, dict[str, float]]:
    ds = load_dataset("trec_cast", "all")
    searcher = ConversationalRetriever(ChromaStore(encoder), exact=True)
    searcher.add(list(ds.corpus.values()), ids=list(ds.corpus))
    qids = list(ds.queries)
    meta = ds.metadata
    raw = [(meta[q]["raw"], []) for q in qids]
    history = [(meta[q]["raw"], meta[q]["history"]) for q in qids]
    rewrite = [(meta[q]["rewrite"], []) for q in qids]
    loader = load_dataset("trec_cast", "all", history=True).queries
    if [searcher.query(*turn) for turn in history] != [loader[q] for q in qids]:
        raise RuntimeError("the history queries differ from load_dataset(history=True)'s")
    scores = {
        "raw utterance": score(searcher, raw, qids, ds.qrels),
        "with history": score(searcher, history, qids, ds.qrels),
    }
    for last in (1, 2):
        recent = ConversationalRetriever(searcher.store, max_history=last, exact=True)
        scores[f"with the last {last} utterance(s)"] = score(recent, history, qids, ds.qrels)
    scores["manual rewrite"] = score(searcher, rewrite, qids, ds.qrels)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="hub id or path; default: the encoder's")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_dataset("trec_cast", "all")
    print(f"TREC CAsT 2021: {len(ds.queries)} turns, {len(ds.corpus)} passages")
    print("| query | instructions | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for instructions in (False, True):
        encoder = LLMEmbedder(args.model, instructions=instructions)
        for name, result in run(encoder).items():
            cells = " | ".join(f"{result[m]:.3f}" for m in METRICS)
            print(f"| {name} | {'on' if instructions else 'off'} | {cells} |")
    print(f"model: {encoder.model_id}")


if __name__ == "__main__":
    main()
