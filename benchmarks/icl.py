"""In-context example selection on Super-NaturalInstructions (sni_subset).

Part 1, retrieval: precision@k (k = 1, 3, 5) of the selected examples, relevant = an example of
the same task (and, for SST-2, the same label), for

* our selector (`ExampleBank`: examples stored as ``"input\\noutput"``, the query example itself
  excluded), and
* LangChain's ``SemanticSimilarityExampleSelector`` over ``InMemoryVectorStore`` with the same
  model (LLMEmbedderEmbeddings, task ``icl``; it embeds the input fields only).

Split ``test``: queries are the test lines and the bank the train lines. Split ``all``: every
line asks and the bank holds every line, itself included; "self@k" is the share of queries whose
own example (with its answer) is among the k selected.

Part 2, answers: few-shot accuracy of the local SmolLM2-135M-Instruct (greedy) on the arithmetic
(operators swapped) and SST-2 tasks with no examples, 3 retrieved examples, and 3 random examples
from the bank. Examples are given as chat turns (user: input, assistant: output) after the task
definition as system message.

On a CPU shared with other work, ``--threads 1`` avoids threads waiting on each other.

Usage:
    python benchmarks/icl.py                 # shipped MiniLM, instructions "auto"
    python benchmarks/icl.py --model BAAI/llm-embedder --instructions on
"""

from __future__ import annotations

import argparse
import random
import re
import time
from typing import Any

import torch

from llm_embedder_integrations import ChromaStore, LLMEmbedder
from llm_embedder_integrations.evaluation import RetrievalDataset, evaluate_rankings, load_dataset
from llm_embedder_integrations.evaluation.runner import cap_queries
from llm_embedder_integrations.icl import ExampleBank
from llm_embedder_integrations.llm import LocalLLM

KS = (1, 3, 5)
ANSWER_TASKS = {
    "task085_unnatural_addsub_arithmetic": "arithmetic",
    "task363_sst2_polarity_classification": "SST-2",
}


def examples_of(ds: RetrievalDataset) -> list[dict[str, Any]]:
    """The bank's examples: input, output, and the task and label as metadata."""
    out = []
    for doc_id, text in ds.corpus.items():
        input_text, output = text.split("\n", 1)
        meta = ds.doc_metadata[doc_id]
        out.append(
            {
                "id": doc_id,
                "input": input_text,
                "output": output,
                "task": meta["task"],
                "label": meta["label"] or "",
            }
        )
    return out


def task_qrels(ds: RetrievalDataset) -> dict[str, dict[str, int]]:
    """Relevant = any other example of the same task (label ignored)."""
    return {
        q: {
            d: 1
            for d, m in ds.doc_metadata.items()
            if m["task"] == ds.metadata[q]["task"] and d != q
        }
        for q in ds.queries
    }


def precision(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> list[float]:
    got = evaluate_rankings(run, qrels, ks=KS)
    return [got[f"precision@{k}"] for k in KS]


def ours(bank: ExampleBank, ds: RetrievalDataset, k: int) -> dict[str, list[str]]:
    qids = list(ds.queries)
    # The query as an example dict: its id is excluded, as is any example with its input.
    queries = [{"id": q, "input": ds.queries[q]} for q in qids]
    selected = bank.select_batch(queries, k)
    return {q: [s.id for s in row] for q, row in zip(qids, selected, strict=True)}


def langchain_baseline(encoder: LLMEmbedder, ds: RetrievalDataset, k: int) -> dict[str, list[str]]:
    from langchain_core.example_selectors import SemanticSimilarityExampleSelector
    from langchain_core.vectorstores import InMemoryVectorStore

    from llm_embedder_integrations.langchain import LLMEmbedderEmbeddings

    selector = SemanticSimilarityExampleSelector.from_examples(
        examples_of(ds),
        LLMEmbedderEmbeddings(encoder=encoder, task="icl"),
        InMemoryVectorStore,
        k=k,
        input_keys=["input"],
    )
    return {
        q: [e["id"] for e in selector.select_examples({"input": t})] for q, t in ds.queries.items()
    }


def self_rate(run: dict[str, list[str]], k: int) -> float:
    return sum(q in ids[:k] for q, ids in run.items()) / len(run)


def parse_answer(task: str, text: str) -> str:
    """The model's answer in the gold format: a signed integer, or POS / NEG."""
    if task.startswith("task085"):
        found = re.search(r"-?\d+", text.replace(",", ""))
        return found.group(0) if found else ""
    upper = text.upper()
    pos, neg = "POS" in upper, "NEG" in upper
    return "POS" if pos and not neg else "NEG" if neg and not pos else ""


def answer_accuracy(
    llm: LocalLLM, bank: ExampleBank, ds: RetrievalDataset, bank_ids: list[str], max_queries: int
) -> dict[tuple[str, str], tuple[float, int]]:
    """Accuracy per (task, condition) over the queries of the two answer tasks."""
    examples = {e["id"]: e for e in examples_of(ds)}
    qids = [q for q in ds.queries if ds.metadata[q]["task"] in ANSWER_TASKS][:max_queries]
    retrieved = bank.select_batch([{"id": q, "input": ds.queries[q]} for q in qids], 3)
    correct: dict[tuple[str, str], list[bool]] = {}
    for qid, chosen in zip(qids, retrieved, strict=True):
        meta = ds.metadata[qid]
        rng = random.Random(qid)
        shots = {
            "k=0": [],
            "retrieved k=3": [s.example for s in chosen],
            "random k=3": [examples[i] for i in rng.sample([i for i in bank_ids if i != qid], 3)],
        }
        for condition, demos in shots.items():
            messages = [{"role": "system", "content": meta["definition"]}]
            for demo in demos:
                messages += [
                    {"role": "user", "content": demo["input"]},
                    {"role": "assistant", "content": demo["output"]},
                ]
            messages.append({"role": "user", "content": ds.queries[qid]})
            text = llm.chat(messages, max_new_tokens=10)
            ok = parse_answer(meta["task"], text) in meta["answers"]
            correct.setdefault((ANSWER_TASKS[meta["task"]], condition), []).append(ok)
    return {key: (sum(v) / len(v), len(v)) for key, v in correct.items()}


def selection_table(
    encoder: LLMEmbedder, max_queries: int | None = None
) -> tuple[str, dict[str, RetrievalDataset], dict[str, ExampleBank]]:
    """Precision@k of our selector and LangChain's on splits test and all, as markdown.

    Also returns the datasets and the filled banks, for `answers_table`.
    """
    lines = [
        "| split | queries | selector | relevant | P@1 | P@3 | P@5 | self@5 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    datasets = {s: cap_queries(load_dataset("sni", s), max_queries) for s in ("test", "all")}
    banks = {}
    for split, ds in datasets.items():
        bank = ExampleBank(ChromaStore(encoder), output_keys=["output"], exact=True)
        bank.add(examples_of(ds))
        banks[split] = bank
        runs = {
            "ours": ours(bank, ds, max(KS)),
            "LangChain semantic": langchain_baseline(encoder, ds, max(KS)),
        }
        for name, run in runs.items():
            for relevant, qrels in (("task", task_qrels(ds)), ("task+label", ds.qrels)):
                cells = " | ".join(f"{p:.3f}" for p in precision(run, qrels))
                lines.append(
                    f"| {split} | {len(ds.queries)} | {name} | {relevant} | {cells} "
                    f"| {self_rate(run, 5):.3f} |"
                )
    return "\n".join(lines), datasets, banks


def answers_table(
    llm: LocalLLM,
    datasets: dict[str, RetrievalDataset],
    banks: dict[str, ExampleBank],
    max_queries: int = 1000,
) -> str:
    """Few-shot accuracy with no, retrieved and random examples, as markdown."""
    lines = [
        "| split | task | queries | k=0 | retrieved k=3 | random k=3 |",
        "|---|---|---|---|---|---|",
    ]
    for split, ds in datasets.items():
        got = answer_accuracy(llm, banks[split], ds, list(ds.corpus), max_queries)
        for task in ANSWER_TASKS.values():
            if (task, "k=0") not in got:
                continue  # a capped run may hold no query of this task
            n = got[(task, "k=0")][1]
            cells = " | ".join(
                f"{got[(task, c)][0]:.3f}" for c in ("k=0", "retrieved k=3", "random k=3")
            )
            lines.append(f"| {split} | {task} | {n} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model name or path (default: auto)")
    parser.add_argument("--instructions", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--max-queries", type=int, default=1000, help="cap on the queries answered by the LLM"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    instructions = {"auto": "auto", "on": True, "off": False}[args.instructions]
    encoder = LLMEmbedder(args.model, instructions=instructions, show_progress=False)
    start = time.perf_counter()

    print(
        f"Model: {encoder.model_id} ({encoder.backend} backend), instructions "
        f"{'on' if encoder.instructions else 'off'}, torch threads {torch.get_num_threads()}\n"
    )
    table, datasets, banks = selection_table(encoder)
    print(table)
    llm = LocalLLM()
    print(f"\nFew-shot answers, {llm.name}, greedy:\n")
    print(answers_table(llm, datasets, banks, args.max_queries))
    print(f"\nTotal time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
