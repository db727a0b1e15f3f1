"""A LlamaIndex query engine over XQuAD paragraphs, fully offline.

    python examples/llama_index_query_engine.py "Who designed the Eiffel Tower?"

Paragraphs are embedded with LLM-Embedder's key instruction (task "qa") into a Chroma vector
store; questions get the query instruction; SmolLM2-135M-Instruct writes the answer.
"""

from __future__ import annotations

import sys
import tempfile

import chromadb
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.vector_stores.chroma import ChromaVectorStore

from llm_embedder_integrations.evaluation import load_dataset
from llm_embedder_integrations.llama_index import LLMEmbedderEmbedding, LocalLlamaIndexLLM


def main(question: str) -> None:
    corpus = load_dataset("xquad", "all").corpus
    client = chromadb.PersistentClient(path=tempfile.mkdtemp(prefix="xquad-li-"))
    collection = client.get_or_create_collection(
        "xquad", configuration={"hnsw": {"space": "cosine"}}
    )
    index = VectorStoreIndex(
        [TextNode(id_=pid, text=text) for pid, text in corpus.items()],
        storage_context=StorageContext.from_defaults(
            vector_store=ChromaVectorStore(chroma_collection=collection)
        ),
        embed_model=LLMEmbedderEmbedding(task="qa"),
    )
    engine = index.as_query_engine(llm=LocalLlamaIndexLLM(max_new_tokens=64), similarity_top_k=2)
    response = engine.query(question)
    for hit in response.source_nodes:
        print(f"[{hit.score:.3f}] {hit.node.node_id}: {hit.node.get_content()[:100]}...")
    print("Answer:", response.response)


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "What is the main railway station of Warsaw called?")
