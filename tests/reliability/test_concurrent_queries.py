"""Eight threads query one LangChain retriever over a persistent store while a ninth adds to it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial

import pytest
from langchain_core.documents import Document

from llm_embedder_integrations import ChromaStore
from llm_embedder_integrations.langchain import LLMEmbedderRetriever

READERS = 8
QUERIES_PER_READER = 30  # 240 queries in all
BATCHES, BATCH = 12, 10  # 120 documents added while the readers run
K = 5
INITIAL = 80
SUBJECTS = ("river", "castle", "violin", "glacier", "orchard", "lighthouse", "comet", "bakery")
QUERIES = [f"Where is the {s}?" for s in SUBJECTS] + [f"history of the {s}" for s in SUBJECTS]
DEADLINE_S = 240  # a deadlock fails the test instead of hanging the run


def _doc(i: int) -> str:
    subject = SUBJECTS[i % len(SUBJECTS)]
    return f"Document {i} describes the {subject} seen from point number {i * 7 % 101}."


def _check(docs: list[Document], texts: dict[str, str]) -> None:
    assert len(docs) == K, f"{len(docs)} documents for k={K}"
    scores = [d.metadata["score"] for d in docs]
    assert all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in scores), scores
    assert scores == sorted(scores, reverse=True), scores
    for d in docs:
        assert d.id is not None and texts[d.id] == d.page_content, d.id  # id and text agree
    assert len({d.id for d in docs}) == K


@pytest.mark.parametrize("hybrid", [False, True], ids=["dense", "hybrid"])
def test_queries_during_writes_are_well_formed_and_the_count_is_right(encoder, tmp_path, hybrid):
    store = ChromaStore(encoder, path=tmp_path / "db", hybrid=hybrid)
    texts = {f"d{i}": _doc(i) for i in range(INITIAL + BATCHES * BATCH)}
    ids = list(texts)
    store.add([texts[i] for i in ids[:INITIAL]], task="qa", ids=ids[:INITIAL])
    retriever = LLMEmbedderRetriever(store=store, task="qa", k=K)
    start = threading.Barrier(READERS + 1)

    def read(reader: int) -> int:
        start.wait()
        for q in range(QUERIES_PER_READER):
            docs = retriever.invoke(QUERIES[(reader + q) % len(QUERIES)])
            if not hybrid:
                _check(docs, texts)
            else:  # fused scores are reciprocal-rank scores: positive and sorted
                assert len(docs) == K and all(d.metadata["score"] > 0 for d in docs)
                assert [d.metadata["score"] for d in docs] == sorted(
                    (d.metadata["score"] for d in docs), reverse=True
                )
                assert all(texts[d.id] == d.page_content for d in docs)
        return QUERIES_PER_READER

    def write() -> int:
        start.wait()
        for b in range(BATCHES):
            chunk = ids[INITIAL + b * BATCH : INITIAL + (b + 1) * BATCH]
            store.add([texts[i] for i in chunk], task="qa", ids=chunk)
        return BATCHES * BATCH

    results: dict[str, int] = {}
    errors: list[BaseException] = []

    def run(name: str, target: Callable[[], int]) -> None:
        try:
            results[name] = target()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(f"r{r}", partial(read, r)), daemon=True)
        for r in range(READERS)
    ]
    threads.append(threading.Thread(target=run, args=("writer", write), daemon=True))
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:  # daemon threads: a deadlock fails here instead of hanging the run
        thread.join(timeout=max(0.0, DEADLINE_S - (time.perf_counter() - began)))
    seconds = time.perf_counter() - began
    assert not [t for t in threads if t.is_alive()], f"threads still running after {seconds:.0f} s"
    if errors:
        raise errors[0]
    done = [results[f"r{r}"] for r in range(READERS)]
    added = results["writer"]
    assert sum(done) == READERS * QUERIES_PER_READER and added == BATCHES * BATCH
    assert store.count("qa") == INITIAL + BATCHES * BATCH
    reopened = ChromaStore(encoder, path=tmp_path / "db")
    assert reopened.count("qa") == INITIAL + BATCHES * BATCH
    last = ids[-1]
    assert reopened.search(texts[last], task="qa", k=1)[0].id == last
    print(f"{sum(done)} queries and {added} additions in {seconds:.1f} s")
