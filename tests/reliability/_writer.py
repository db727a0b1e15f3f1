"""Child process of the kill test: adds synthetic documents to a persistent store in one call.

Usage: ``python _writer.py STORE_DIR N [START]``. It adds documents ``START..N-1`` (ids
``doc-00000``...) with one ``store.add`` call. Around each chunk the store commits it prints
``writing <total>`` (before) and ``committed <total>`` (after), so that the parent can kill it
mid-way, even in the middle of a commit.
"""

from __future__ import annotations

import sys
from typing import Any

from llm_embedder_integrations import SHIPPED_MODEL, ChromaStore, LLMEmbedder

COLORS = ("red", "green", "blue", "yellow", "black", "white", "grey")
ANIMALS = ("fox", "owl", "horse", "otter", "whale", "crow", "lynx", "goat", "moth", "seal", "wolf")
PLACES = ("river", "old mill", "harbour", "forest", "market", "bridge", "library", "dune")


def synthetic(i: int) -> str:
    """The text of document ``i``: a short sentence (12 tokens), unique per ``i``."""
    return f"Note {i}: {COLORS[i % 7]} {ANIMALS[i % 11]} at the {PLACES[i % 8]}."


def doc_id(i: int) -> str:
    """The id of document ``i``."""
    return f"doc-{i:05d}"


def main() -> None:
    path, total = sys.argv[1], int(sys.argv[2])
    start = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    encoder = LLMEmbedder(SHIPPED_MODEL, backend="onnx-int8", batch_size=128)
    store = ChromaStore(encoder, path=path)
    collection = store.collection("qa")  # the object store.add writes through
    upsert = collection.upsert
    done = [store.count("qa")]

    def reporting_upsert(**kwargs: Any) -> None:
        print(f"writing {done[0] + len(kwargs['ids'])}", flush=True)
        upsert(**kwargs)
        done[0] += len(kwargs["ids"])
        print(f"committed {done[0]}", flush=True)

    collection.upsert = reporting_upsert
    print("ready", flush=True)
    indices = range(start, total)
    store.add([synthetic(i) for i in indices], task="qa", ids=[doc_id(i) for i in indices])
    print("finished", flush=True)


if __name__ == "__main__":
    main()
