"""The main job: index XQuAD paragraphs, answer questions through a LangChain RAG chain.

It prints the retrieved passages and the local LLM's answers for a few questions, and the
retrieval MRR@10 of all questions against their gold paragraphs.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

from .encoder import LLMEmbedder
from .evaluation.datasets import load_dataset
from .evaluation.metrics import evaluate_rankings
from .store import ChromaStore

__all__ = ["run_demo"]


def run_demo(
    model: str | None = None,
    *,
    questions: int = 3,
    data_path: str | os.PathLike[str] | None = None,
    seed: int = 0,
    out: Callable[[str], None] = print,
) -> dict[str, float]:
    """Run the demo and return the retrieval scores of all questions.

    Args:
        model: Embedding model; None resolves the default (BAAI/llm-embedder, else the shipped
            all-MiniLM-L6-v2).
        questions: How many questions to answer with the LLM (0 skips the LLM).
        data_path: The real-data folder; default from ``LLM_EMBEDDER_DATA``.
        seed: Picks the questions shown.
        out: Where lines are printed.
    """
    from .langchain import LLMEmbedderRetriever, LocalChatModel, rag_chain

    ds = load_dataset("xquad", "all", data_path=data_path)
    encoder = LLMEmbedder(model)
    out(f"Embedding model: {encoder}")
    store = ChromaStore(encoder)
    ids = list(ds.corpus)
    start = time.perf_counter()
    store.add(
        [ds.corpus[i] for i in ids],
        task=ds.task,
        ids=ids,
        metadatas=[{"title": i.split("#")[0]} for i in ids],
    )
    out(f"Indexed {len(ids)} XQuAD paragraphs in {time.perf_counter() - start:.1f} s")

    qids = list(ds.queries)
    start = time.perf_counter()
    results = store.search_batch([ds.queries[q] for q in qids], task=ds.task, k=10)
    run = {q: [h.id for h in hits] for q, hits in zip(qids, results, strict=True)}
    scores = evaluate_rankings(run, ds.qrels, ks=(1, 10))
    out(f"Searched {len(qids)} questions in {time.perf_counter() - start:.1f} s")

    if questions > 0:
        retriever = LLMEmbedderRetriever(store=store, task=ds.task, k=2)
        chain = rag_chain(retriever, LocalChatModel(max_new_tokens=48))
        for qid in random.Random(seed).sample(qids, min(questions, len(qids))):
            question = ds.queries[qid]
            out(f"\nQ: {question}")
            for doc in retriever.invoke(question):
                mark = "*" if doc.id in ds.qrels[qid] else " "
                out(f"  {mark} [{doc.metadata['score']:.3f}] {doc.page_content[:110]}...")
            out(f"  answer: {chain.invoke(question)}")
            out(f"  gold:   {ds.metadata[qid]['answers'][0]}")
        out("\n(* marks the gold paragraph)")
    out(
        f"\nRetrieval over all {len(qids)} questions: MRR@10 = {scores['mrr@10']:.3f}, "
        f"hit_rate@1 = {scores['hit_rate@1']:.3f}, hit_rate@10 = {scores['hit_rate@10']:.3f}"
    )
    return scores
