"""Conversational search over TREC CAsT 2021 passages, with LangChain, fully offline.

    python examples/conversational_search.py          # walks through one topic
    python examples/conversational_search.py 106      # another topic number

Passages are stored with LLM-Embedder's convsearch key instruction. Each user turn is searched
twice: alone, and as the conversation (current utterance, then the previous ones most recent
first) through the LangChain retriever, which takes ``{"question": ..., "history": [...]}``.
The history finds follow-ups that the utterance alone misses ("No, I meant for lobular.") and
pushes others down; over all of TREC CAsT 2021 it raises recall@10 and, with a model not trained
for it, lowers MRR@10 (see benchmarks/convsearch.py).
"""

from __future__ import annotations

import sys

from llm_embedder_integrations import ChromaStore, LLMEmbedder
from llm_embedder_integrations.convsearch import ConversationalRetriever
from llm_embedder_integrations.evaluation import load_dataset
from llm_embedder_integrations.langchain import LLMEmbedderConversationalRetriever


def rank_of(gold: str, ids: list[str]) -> str:
    return str(ids.index(gold) + 1) if gold in ids else "-"


def main(topic: int | None) -> None:
    ds = load_dataset("trec_cast", "all")
    searcher = ConversationalRetriever(ChromaStore(LLMEmbedder()), exact=True)
    searcher.add(list(ds.corpus.values()), ids=list(ds.corpus))
    retriever = LLMEmbedderConversationalRetriever(searcher=searcher, k=10)

    topic = topic or ds.metadata[next(iter(ds.queries))]["topic"]
    turns = [q for q in ds.queries if ds.metadata[q]["topic"] == topic]
    if not turns:
        raise SystemExit(
            f"no topic {topic}; topics: {sorted({m['topic'] for m in ds.metadata.values()})}"
        )
    print(
        f"topic {topic}: {len(turns)} turns over {len(ds.corpus)} passages "
        "(gold passage rank: alone / with history)"
    )
    history: list[str] = []
    for qid in turns:
        utterance = ds.metadata[qid]["raw"]
        gold = next(iter(ds.qrels[qid]))
        alone = [d.id for d in retriever.invoke(utterance)]
        docs = retriever.invoke({"question": utterance, "history": history})
        with_history = [d.id for d in docs]
        print(f"\n[{rank_of(gold, alone)} / {rank_of(gold, with_history)}] {utterance}")
        print(f"   top passage: {docs[0].page_content[:110]}...")
        history.append(utterance)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
