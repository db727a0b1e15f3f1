"""Memory retrieval: does returning chunk_i with chunk_i+1 find more evidence at equal budget?

    python benchmarks/memory.py                    # LoCoMo table, then the Tiny Shakespeare demo
    python benchmarks/memory.py --skip-shakespeare --model BAAI/llm-embedder

LoCoMo (``load_dataset("locomo", "all")``): each conversation is added to a memory session by
session, as it happened (``add_messages``: one chunk per pair of consecutive turns, task
``chat``). Each question searches its own conversation. A question's evidence turn is found when
a returned chunk holds it; evidence recall is the share of a question's evidence turns found,
averaged over questions. Rows compare, for each k: plain top-k chunks, plain top-2k chunks, and
top-k hits each with its next chunk (about the same context budget as top-2k: the mean number of
chunks and tokens returned are printed beside each row).

Tiny Shakespeare: the first 90% of the plays is the history (128-token chunks, task ``lrlm``); a
passage from the rest is the current context; the retrieved chunk and its continuation are shown.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from llm_embedder_integrations import ChromaStore, LLMEmbedder
from llm_embedder_integrations.evaluation import data_dir, load_dataset
from llm_embedder_integrations.memory import MemoryHit, MemoryRetriever

KS = (1, 2, 4, 8)


@dataclass
class Row:
    method: str
    k: int
    chunks: float
    tokens: float
    recall: float
    found_all: float


def load_locomo_memory(store: ChromaStore, conversations: int | None = None):
    """Add the LoCoMo conversations (the first ``conversations``, or all) to ``store``'s chat
    memory; return what scoring needs."""
    ds = load_dataset("locomo", "all")
    if conversations is not None:
        kept = sorted({m["conversation"] for m in ds.doc_metadata.values()})[:conversations]
        docs = {d for d, m in ds.doc_metadata.items() if m["conversation"] in kept}
        qids = {q for q, m in ds.metadata.items() if m["conversation"] in kept}
        ds = dataclasses.replace(
            ds,
            corpus={d: t for d, t in ds.corpus.items() if d in docs},
            queries={q: t for q, t in ds.queries.items() if q in qids},
            qrels={q: r for q, r in ds.qrels.items() if q in qids},
            metadata={q: m for q, m in ds.metadata.items() if q in qids},
            doc_metadata={d: m for d, m in ds.doc_metadata.items() if d in docs},
        )
    turns: dict[str, list[str]] = defaultdict(list)  # conversation -> turn doc ids in order
    in_corpus = ((d, ds.doc_metadata[d]) for d in ds.corpus)
    for doc_id, meta in sorted(
        in_corpus, key=lambda item: (item[1]["conversation"], item[1]["position"])
    ):
        turns[meta["conversation"]].append(doc_id)
    memory = MemoryRetriever(store, task="chat")
    for conv, doc_ids in turns.items():
        sessions: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for doc_id in doc_ids:
            speaker, _, text = ds.corpus[doc_id].partition(": ")
            sessions[ds.doc_metadata[doc_id]["session"]].append((speaker, text))
        for session, messages in sorted(sessions.items()):
            memory.add_messages(messages, source_id=conv, metadata={"session": session})
    return ds, turns


def covered_turns(
    results: list[MemoryHit], turns: list[str], tokens: dict[str, int], cap: int | None = None
) -> tuple[set[str], int, int]:
    """Turn ids held by the returned chunks, and the number of chunks and tokens returned.

    With ``cap``, chunks are taken in rank order (each result's hit chunks, then its neighbours)
    until ``cap`` chunks are taken.
    """
    found: set[str] = set()
    n_chunks = n_tokens = 0
    ordered = [
        chunk
        for r in results
        for chunk in sorted(
            r.chunks,
            key=lambda c: (c.metadata["position"] not in r.hit_positions, c.metadata["position"]),
        )
    ]
    for chunk in ordered[:cap]:
        first = int(chunk.metadata["first_utterance"])
        found.update(turns[first : first + int(chunk.metadata["utterances"])])
        n_chunks += 1
        n_tokens += tokens[chunk.id]
    return found, n_chunks, n_tokens


def locomo_table(encoder: LLMEmbedder, conversations: int | None = None) -> list[Row]:
    store = ChromaStore(encoder)
    start = time.perf_counter()
    ds, turns = load_locomo_memory(store, conversations)
    # Token counts of the stored chunks, to report the context budget of each method.
    got = store.collection("chat").get(include=["documents"])
    counts = encoder.count_tokens(got["documents"])
    tokens = dict(zip(got["ids"], counts, strict=True))
    print(
        f"LoCoMo: {len(ds.queries)} questions, {sum(len(t) for t in turns.values())} turns in "
        f"{len(got['ids'])} chunks (mean {statistics.mean(counts):.0f} tokens), "
        f"indexed in {time.perf_counter() - start:.0f} s"
    )
    plain = MemoryRetriever(store, task="chat", next_chunks=0, exact=True)
    with_next = MemoryRetriever(store, task="chat", next_chunks=1, exact=True)
    by_conv: dict[str, list[str]] = defaultdict(list)
    for qid in ds.queries:
        by_conv[ds.metadata[qid]["conversation"]].append(qid)
    qids = list(ds.queries)
    vectors = dict(
        zip(qids, encoder.encode_queries([ds.queries[q] for q in qids], task="chat"), strict=True)
    )

    rows = []
    for k in KS:
        for method, memory, depth, cap in (
            ("plain top-2k", plain, 2 * k, None),
            ("top-k + next", with_next, k, None),
            ("hits + next, capped at 2k chunks", with_next, 2 * k, 2 * k),
        ):
            recalls, alls, chunks, budgets = [], [], [], []
            for conv, conv_qids in by_conv.items():
                batch = memory.search_by_vectors(
                    np.stack([vectors[q] for q in conv_qids]), depth, where={"source_id": conv}
                )
                for qid, results in zip(conv_qids, batch, strict=True):
                    found, n_chunks, n_tokens = covered_turns(results, turns[conv], tokens, cap)
                    evidence = set(ds.qrels[qid])
                    recalls.append(len(evidence & found) / len(evidence))
                    alls.append(float(evidence <= found))
                    chunks.append(n_chunks)
                    budgets.append(n_tokens)
            rows.append(
                Row(
                    method,
                    k,
                    statistics.mean(chunks),
                    statistics.mean(budgets),
                    statistics.mean(recalls),
                    statistics.mean(alls),
                )
            )
    return rows


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| k | method | chunks returned | tokens returned | evidence recall | all evidence |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.k} | {r.method} | {r.chunks:.2f} | {r.tokens:.0f} | {r.recall:.3f} | "
        f"{r.found_all:.3f} |"
        for r in rows
    ]
    return "\n".join(lines)


def shakespeare_demo(encoder: LLMEmbedder, width: int = 300) -> None:
    text = (data_dir() / "long_text" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    boundary = text.index("\n\n", int(0.9 * len(text))) + 2
    memory = MemoryRetriever(ChromaStore(encoder), task="lrlm", next_chunks=1)
    start = time.perf_counter()
    memory.add_text(text[:boundary], source_id="plays")
    print(
        f"\nTiny Shakespeare: {memory.count()} chunks of <= 128 tokens as history, "
        f"indexed in {time.perf_counter() - start:.0f} s"
    )
    query = text[boundary:].split("\n\n", 3)
    passage = "\n\n".join(query[:3])
    print(f"\nCurrent context:\n{passage[:width]}\n")
    for result in memory.search(passage, k=2):
        hit, *after = result.chunks
        print(f"--- retrieved chunk {result.hit_position} (score {result.score:.3f}):")
        print(hit.text[:width])
        for chunk in after:
            print(f"--- its continuation, chunk {chunk.metadata['position']}:")
            print(chunk.text[:width])
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="hub id or path; default: the encoder's")
    parser.add_argument("--instructions", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--skip-shakespeare", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    instructions = {"auto": "auto", "on": True, "off": False}[args.instructions]
    encoder = LLMEmbedder(args.model, instructions=instructions)
    print(f"encoder: {encoder!r}")
    print(markdown_table(locomo_table(encoder)))
    if not args.skip_shakespeare:
        shakespeare_demo(encoder)


if __name__ == "__main__":
    main()
