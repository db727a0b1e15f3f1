"""Tool routing on Gorilla APIBench: the router (embeddings) against BM25 on the same tool texts.

Every API doc of a hub is one tool (TorchHub 94, TensorFlow Hub 696), indexed once through
`ToolRouter.add_tools` from the Gorilla records; a user instruction is relevant to every doc with
its ``api_call``. Reported: accuracy@1 and @5 (a relevant tool ranked first / in the top 5),
nDCG@5, the time to index, and the p50 / p95 latency of one `route` call over the 696 tools.

Two tool texts are compared: name, domain, functionality and description (the text of
`evaluation.datasets`), and the same with the parameters line the router adds.

On a CPU shared with other work, ``--threads 1`` avoids threads waiting on each other.

Usage:
    python benchmarks/tools.py                         # shipped MiniLM, instructions "auto"
    python benchmarks/tools.py --model BAAI/llm-embedder --instructions on
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from typing import Any

import torch

from llm_embedder_integrations import ChromaStore, LLMEmbedder
from llm_embedder_integrations.evaluation import data_dir, evaluate_rankings, load_dataset
from llm_embedder_integrations.evaluation.datasets import RetrievalDataset
from llm_embedder_integrations.evaluation.runner import cap_corpus, cap_queries
from llm_embedder_integrations.lexical import BM25Index
from llm_embedder_integrations.tools import ToolRouter

API_FILES = {"torchhub": "torchhub_api.jsonl", "tensorflow": "tensorflowhub_api.jsonl"}
KS = (1, 5)


def gorilla_tools(framework: str, *, parameters: bool) -> list[dict[str, Any]]:
    """The hub's API records as router dicts, named by their dataset doc id."""
    path = data_dir() / "gorilla" / "api" / API_FILES[framework]
    with path.open(encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    tools = []
    for i, record in enumerate(records):
        tool = {"name": f"{framework}-{i}", **record}
        if not parameters:
            tool["api_arguments"] = None
        tools.append(tool)
    return tools


def scores(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    got = evaluate_rankings(run, qrels, ks=KS)
    return {"acc@1": got["hit_rate@1"], "acc@5": got["hit_rate@5"], "ndcg@5": got["ndcg@5"]}


def bm25_run(router: ToolRouter, queries: dict[str, str], k: int) -> dict[str, list[str]]:
    index = BM25Index({name: router.text(name) for name in router.names})
    matrix = index.scores(list(queries.values()))
    return {
        qid: [index.ids[j] for j in row.argsort()[::-1][:k]]
        for qid, row in zip(queries, matrix, strict=True)
    }


def percentiles(times: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    cuts = statistics.quantiles(times, n=20)
    return statistics.median(times) * 1000, cuts[18] * 1000


def route_latency(router: ToolRouter, requests: list[str], n: int) -> dict:
    """Times of one `route` call, and of its index search alone (query already encoded)."""
    requests = requests[:n]
    router.route(requests[0], k=5)  # warm-up
    full, search = [], []
    for request in requests:
        start = time.perf_counter()
        router.route(request, k=5)
        full.append(time.perf_counter() - start)
    vectors = router.store.encoder.encode_queries(requests, task=router.task)
    for vector in vectors:
        start = time.perf_counter()
        router.store.search_by_vectors(vector[None, :], task=router.task, k=5)
        search.append(time.perf_counter() - start)
    return {
        "tools": len(router),
        "n": len(requests),
        "route": percentiles(full),
        "search": percentiles(search),
    }


def _cap_tools(splits: dict[str, RetrievalDataset], max_tools: int | None) -> set[str] | None:
    """The tools of a quick run: every one judged for a kept query, others up to ``max_tools``."""
    if max_tools is None:
        return None
    return {doc for ds in splits.values() for doc in cap_corpus(ds, max_tools).corpus}


def routing_rows(
    encoder: LLMEmbedder,
    *,
    max_queries: int | None = None,
    max_tools: int | None = None,
    latency_requests: int = 200,
) -> tuple[list[tuple], dict]:
    """Router and BM25 scores per hub, split and tool text; route latency over TensorFlow Hub.

    ``max_queries`` and ``max_tools`` make a quick run (the judged tools of the kept queries
    and others up to ``max_tools``); its scores are not comparable with a full run.
    """
    rows, latency = [], {}
    for framework in ("torchhub", "tensorflow"):
        splits = {
            s: cap_queries(load_dataset(f"gorilla_{framework}", s), max_queries)
            for s in ("test", "all")
        }
        kept = _cap_tools(splits, max_tools)
        if kept is not None:
            splits = {
                s: dataclasses.replace(ds, corpus={d: t for d, t in ds.corpus.items() if d in kept})
                for s, ds in splits.items()
            }
        for parameters in (False, True):
            router = ToolRouter(ChromaStore(encoder), exact=True)  # quality: exact search
            tools = gorilla_tools(framework, parameters=parameters)
            if kept is not None:
                tools = [t for t in tools if t["name"] in kept]
            start = time.perf_counter()
            router.add_tools(tools)
            index_s = time.perf_counter() - start
            if splits["all"].corpus.keys() != set(router.names):
                raise RuntimeError("the Gorilla files and the dataset's doc ids disagree")
            if not parameters and any(router.text(d) != t for d, t in splits["all"].corpus.items()):
                raise RuntimeError("the router's tool text differs from the dataset's")
            text = "+ parameters" if parameters else "name, domain, functionality, description"
            for split, ds in splits.items():
                qids = list(ds.queries)
                routed = router.route_batch([ds.queries[q] for q in qids], k=max(KS))
                run = {q: [m.name for m in row] for q, row in zip(qids, routed, strict=True)}
                ours = scores(run, ds.qrels)
                bm25 = scores(bm25_run(router, ds.queries, max(KS)), ds.qrels)
                rows.append((framework, split, len(qids), text, ours, bm25))
            if framework == "tensorflow" and parameters:
                router.exact = False  # latency: the HNSW index, as a router uses by default
                requests = list(splits["all"].queries.values())
                latency = route_latency(router, requests, latency_requests)
                latency["index_s"] = index_s
    return rows, latency


def routing_table(rows: list[tuple]) -> str:
    lines = [
        "| hub | split | queries | tool text | router acc@1 | acc@5 | nDCG@5 "
        "| BM25 acc@1 | acc@5 | nDCG@5 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for framework, split, n, text, ours, bm25 in rows:
        cells = [f"{ours[m]:.3f}" for m in ("acc@1", "acc@5", "ndcg@5")]
        cells += [f"{bm25[m]:.3f}" for m in ("acc@1", "acc@5", "ndcg@5")]
        lines.append(f"| {framework} | {split} | {n} | {text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latency_line(latency: dict) -> str:
    return (
        f"Latency over {latency['tools']} TensorFlow Hub tools ({latency['n']} requests, k=5, "
        f"HNSW): route (encode + search) p50 {latency['route'][0]:.1f} ms, "
        f"p95 {latency['route'][1]:.1f} ms; index search alone p50 {latency['search'][0]:.2f} ms, "
        f"p95 {latency['search'][1]:.2f} ms. Indexing the tools took {latency['index_s']:.1f} s."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model name or path (default: auto)")
    parser.add_argument("--instructions", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--latency-requests", type=int, default=200)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    instructions = {"auto": "auto", "on": True, "off": False}[args.instructions]
    encoder = LLMEmbedder(args.model, instructions=instructions, show_progress=False)
    rows, latency = routing_rows(encoder, latency_requests=args.latency_requests)
    print(
        f"Model: {encoder.model_id} ({encoder.backend} backend), instructions "
        f"{'on' if encoder.instructions else 'off'}, torch threads {torch.get_num_threads()}\n"
    )
    print(routing_table(rows))
    print(f"\n{latency_line(latency)}")


if __name__ == "__main__":
    main()
