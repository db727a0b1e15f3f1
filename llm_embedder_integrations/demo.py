"""The main job: index XQuAD paragraphs, answer questions through a LangChain RAG chain.

It prints the retrieved passages and the local LLM's answers for a few questions, and the
retrieval MRR@10 of all questions against their gold paragraphs. Without a data folder it reads
the copy of XQuAD bundled with the package (CC BY-SA 4.0, see ``data/xquad/README.txt``).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from .encoder import LLMEmbedder
from .evaluation.datasets import BUNDLED_DATA, dataset_root, load_dataset
from .evaluation.metrics import evaluate_rankings
from .memory import chunk_text
from .store import ChromaStore

__all__ = ["documents_cut", "passages_within_limit", "rank_documents", "run_demo"]


def passages_within_limit(
    encoder: LLMEmbedder, corpus: Mapping[str, str], task: str = "qa"
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Texts, ids and metadata to index ``corpus`` with nothing cut off by the token limit.

    A document that fits the encoder's ``max_length`` (with the task's key instruction) is one
    passage under its own id; a longer one is cut with the memory chunker into the fewest
    passages of about equal length that each fit, ``"{id}~0"``, ``"{id}~1"``, .... Every
    passage's metadata names its document (``"document"``) and, for ``"title#n"`` ids, the title.
    """
    prefix = encoder.instruction(task, "key")

    def count(texts: list[str]) -> list[int]:  # special tokens included, nothing cut
        return [len(ids) for ids in encoder.tokenizer(texts, verbose=False)["input_ids"]]

    # Special tokens plus the instruction's own, and one token of slack where the two join.
    overhead = count([prefix])[0] + 1
    lengths = count([prefix + text for text in corpus.values()])
    texts: list[str] = []
    ids: list[str] = []
    metadatas: list[dict[str, Any]] = []
    for (doc_id, text), length in zip(corpus.items(), lengths, strict=True):
        meta = {"document": doc_id, "title": doc_id.split("#")[0]}
        if length <= encoder.max_length:
            pieces, piece_ids = [text], [doc_id]
        else:  # balanced pieces (no short tail), with slack for cuts at word boundaries
            budget = encoder.max_length - overhead
            parts = math.ceil((length - overhead) / budget)
            size = min(budget, math.ceil((length - overhead) / parts) + 16)
            pieces = chunk_text(text, encoder.tokenizer, size)
            piece_ids = [f"{doc_id}~{j}" for j in range(len(pieces))]
        texts += pieces
        ids += piece_ids
        metadatas += [dict(meta) for _ in pieces]
    return texts, ids, metadatas


def documents_cut(ids: Sequence[str], metadatas: Sequence[Mapping[str, Any]]) -> int:
    """How many documents `passages_within_limit` cut into passages, from its ids and metadata."""
    return len({m["document"] for i, m in zip(ids, metadatas, strict=True) if i != m["document"]})


def rank_documents(
    store: ChromaStore,
    queries: Sequence[str],
    task: str,
    passages: int,
    documents: int,
    k: int = 10,
) -> list[list[str]]:
    """Each query's ``k`` best documents, a document ranked by its best passage.

    ``store``'s ``task`` collection holds ``passages`` passages of ``documents`` documents (as
    `passages_within_limit` cuts them, or one a document), each naming its document in
    ``metadata["document"]``. The search is exact: a few hundred passages need no HNSW, and the
    figures repeat exactly.
    """
    # Each passage beyond a document's first can take one place: this many hits always hold
    # the k best distinct documents.
    depth = min(passages, k + passages - documents)
    ranked: list[list[str]] = []
    for first in range(0, len(queries), 200):  # Chroma answers a bounded number of hits a call
        batch = list(queries[first : first + 200])
        for hits in store.search_batch(batch, task=task, k=depth, exact=True):
            ranked.append(list(dict.fromkeys(h.metadata["document"] for h in hits))[:k])
    return ranked


@contextlib.contextmanager
def _progress_bars(show: bool) -> Iterator[None]:
    """Hide the libraries' progress bars (model loading) unless ``show``; restore them after."""
    if show:
        yield
        return
    import functools

    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )
    from transformers import modeling_gguf_pytorch_utils as gguf_loading
    from transformers.utils import logging as hf_logging

    hub_was_off = are_progress_bars_disabled()
    transformers_was_on = hf_logging.is_progress_bar_enabled()
    disable_progress_bars()
    hf_logging.disable_progress_bar()
    # The GGUF loader calls tqdm directly, outside transformers' switch.
    gguf_tqdm = gguf_loading.tqdm
    gguf_loading.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        gguf_loading.tqdm = gguf_tqdm
        if not hub_was_off:
            enable_progress_bars()
        if transformers_was_on:
            hf_logging.enable_progress_bar()


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
        data_path: A data folder holding ``xquad/xquad.en.json``; None takes
            ``LLM_EMBEDDER_DATA`` (or, in a checkout, ``../shared/data``), else the copy of XQuAD
            bundled with the package.
        seed: Picks the questions shown.
        out: Where lines are printed.
    """
    from .langchain import LLMEmbedderRetriever, LocalChatModel, rag_chain

    root = dataset_root("xquad", data_path)
    ds = load_dataset("xquad", "all", data_path=root)
    source = "the copy bundled with the package (CC BY-SA 4.0)" if root == BUNDLED_DATA else root
    progress = sys.stderr.isatty()  # progress bars on a terminal only, never into a log
    with _progress_bars(progress):
        encoder = LLMEmbedder(model, show_progress=progress)
        out(f"Embedding model: {encoder}")
        out(f"Corpus: XQuAD from {source}")
        store = ChromaStore(encoder)
        start = time.perf_counter()
        texts, ids, metadatas = passages_within_limit(encoder, ds.corpus, ds.task)
        store.add(texts, task=ds.task, ids=ids, metadatas=metadatas)
        split = documents_cut(ids, metadatas)
        out(
            f"Indexed {len(ds.corpus)} XQuAD paragraphs in {time.perf_counter() - start:.1f} s"
            + (
                f" ({split} longer than {encoder.max_length} tokens cut into passages that fit: "
                f"{len(ids)} passages)"
                if split
                else ""
            )
        )

        qids = list(ds.queries)
        start = time.perf_counter()
        texts_asked = [ds.queries[q] for q in qids]
        ranked = rank_documents(store, texts_asked, ds.task, len(ids), len(ds.corpus))
        run = dict(zip(qids, ranked, strict=True))
        scores = evaluate_rankings(run, ds.qrels, ks=(1, 10))
        out(f"Searched {len(qids)} questions in {time.perf_counter() - start:.1f} s")

        if questions > 0:
            retriever = LLMEmbedderRetriever(store=store, task=ds.task, k=2)
            chain = rag_chain(retriever, LocalChatModel(max_new_tokens=48))
            for qid in random.Random(seed).sample(qids, min(questions, len(qids))):
                question = ds.queries[qid]
                out(f"\nQ: {question}")
                for doc in retriever.invoke(question):
                    mark = "*" if doc.metadata["document"] in ds.qrels[qid] else " "
                    out(f"  {mark} [{doc.metadata['score']:.3f}] {doc.page_content[:110]}...")
                out(f"  answer: {chain.invoke(question)}")
                out(f"  gold:   {ds.metadata[qid]['answers'][0]}")
            out("\n(* marks the gold paragraph)")
    out(
        f"\nRetrieval over all {len(qids)} questions: MRR@10 = {scores['mrr@10']:.3f}, "
        f"hit_rate@1 = {scores['hit_rate@1']:.3f}, hit_rate@10 = {scores['hit_rate@10']:.3f}"
    )
    return scores
