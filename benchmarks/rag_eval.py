"""RAGAS evaluation of the XQuAD RAG chain: offline metrics, then SmolLM2 as LLM judge.

    python benchmarks/rag_eval.py
    LLM_EMBEDDER_MAX_QUERIES=60 python benchmarks/rag_eval.py --judge-samples 5 --threads 1

The retriever is `LLMEmbedderRetriever` (k=3) over a Chroma store of all 240 XQuAD paragraphs;
the chain is ``rag_chain(retriever, LocalChatModel())`` with the shipped SmolLM2-135M-Instruct
(greedy, at most 48 new tokens). The questions are ``LLM_EMBEDDER_MAX_QUERIES`` (default 30) test
questions, evenly spaced over the test articles (`rag_samples`).

Part 1, offline, on every question: ID-based and string-based context precision and recall, and
the semantic similarity of the chain's answer to the reference answer under the same embeddings.

Part 2, LLM judge, on the first ``--judge-samples`` questions: faithfulness, answer relevancy,
LLM context precision and LLM context recall, judged by the same SmolLM2. A 135M model seldom
writes the JSON that ragas' prompts ask for: each NaN is a sample the judge could not score,
counted in the report's last column. On a CPU shared with other work, ``--threads 1`` avoids
threads waiting on each other (it was ~15x faster for generation on a busy 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from ragas.run_config import RunConfig

from llm_embedder_integrations import ChromaStore, LLMEmbedder
from llm_embedder_integrations.evaluation import evaluate_rag, load_dataset, rag_samples
from llm_embedder_integrations.langchain import (
    LLMEmbedderEmbeddings,
    LLMEmbedderRetriever,
    LocalChatModel,
    rag_chain,
)

JUDGE_METRICS = [
    "faithfulness",
    "answer_relevancy",
    "llm_context_precision_with_reference",
    "context_recall",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="embedder hub id or path; default: shipped")
    parser.add_argument("--judge-samples", type=int, default=3, help="questions for the judge")
    parser.add_argument("--k", type=int, default=3, help="paragraphs retrieved per question")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = int(os.environ.get("LLM_EMBEDDER_MAX_QUERIES", "30"))

    start = time.perf_counter()
    corpus = load_dataset("xquad", "all").corpus
    samples = rag_samples(load_dataset("xquad", "test"), limit=n)
    encoder = LLMEmbedder(args.model)
    store = ChromaStore(encoder)
    store.add(list(corpus.values()), task="qa", ids=list(corpus))
    retriever = LLMEmbedderRetriever(store=store, task="qa", k=args.k)
    embeddings = LLMEmbedderEmbeddings(encoder=encoder, task="qa")
    chat = LocalChatModel(max_new_tokens=48)
    chain = rag_chain(retriever, chat)
    print(
        f"XQuAD: {len(samples)} test questions, {len(corpus)} paragraphs indexed with "
        f"{encoder.model_id}, k={args.k}; setup {time.perf_counter() - start:.1f} s; "
        f"torch threads {torch.get_num_threads()}\n"
    )

    offline = evaluate_rag(retriever, samples, chain=chain, embeddings=embeddings)
    print("## Offline metrics (no LLM judge)\n")
    print(offline.to_markdown())
    print("\nFirst answers:")
    for row, sample in list(zip(offline.per_sample, samples, strict=True))[:5]:
        print(f"- {row['question']!r} -> {row['response']!r} (reference {sample.reference!r})")

    if args.judge_samples > 0:
        judge = LocalChatModel(max_new_tokens=128)
        judged = evaluate_rag(
            retriever,
            samples[: args.judge_samples],
            chain=chain,
            llm=judge,
            embeddings=embeddings,
            metrics=JUDGE_METRICS,
            run_config=RunConfig(max_workers=1, timeout=900, max_retries=1),
        )
        print(f"\n## LLM judge ({judge.llm.name if judge.llm else 'local'})\n")
        print(judged.to_markdown())
    print(f"\nTotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
