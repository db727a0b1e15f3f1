"""CPU speed of the encoder backends against the usual ways of embedding, and Chroma at 100k.

    python benchmarks/speed.py                      # 5,000 passages, 200 queries, 100k vectors
    python benchmarks/speed.py --passages 1000 --chroma 20000   # quicker

Everything runs in one process, on the same texts, in the order A B C ... A B C ... (two rounds,
the best round kept), so the ratios hold on a noisy machine; absolute times do not. Single
queries are timed per system in blocks (`query_latencies`). Each run's
CPU time (all threads) is kept too: on a machine shared with other work it measures the work
done better than the wall clock. The CPU's features (AVX2, AVX-512, VNNI, bf16, AMX) and what
``backend="auto"`` picks from them come first. Compared on all-MiniLM-L6-v2:

- our encoder: ``auto``, torch fp32, torch bf16, ONNX fp32 (the fused graph, and the unfused
  export for comparison), ONNX int8;
- LangChain's ``HuggingFaceEmbeddings.embed_documents`` (langchain-huggingface);
- LlamaIndex's ``HuggingFaceEmbedding.get_text_embedding_batch``;
- raw ``SentenceTransformer.encode`` (fp32).

Quality of each fast backend against torch fp32: top-10 agreement of retrieval over the
passages for 200 real questions (XQuAD), and MRR@10 over all XQuAD.
Chroma: add throughput, query p50/p95 and recall@10 of HNSW against exact search at 100k
vectors, every one the embedding of a real text of the data folder (`chroma_texts`): the
passages above, then every distinct sentence and line of all seven sources, then pairs and
triples of consecutive sentences until the count is reached. Queries are the XQuAD questions.
The index has Chroma's default HNSW settings (what `ChromaStore` creates unless told
otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_embedder_integrations import SHIPPED_MODEL, ChromaStore, LLMEmbedder, _cpu
from llm_embedder_integrations.encoder import shipped_model_path
from llm_embedder_integrations.evaluation import evaluate_rankings, load_dataset

SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")


def passages(n: int) -> list[str]:
    """Real passages: XQuAD paragraphs, LoCoMo turns, Gorilla API docs, Shakespeare chunks."""
    texts: list[str] = []
    for name in ("xquad", "gorilla_tensorflow", "locomo", "tinyshakespeare"):
        texts.extend(load_dataset(name, "all").corpus.values())
    return texts[:n]


def chroma_texts(first: list[str], n: int) -> tuple[list[str], dict[str, int]]:
    """``n`` distinct real texts: ``first``, then sentences and lines, then sentence pairs."""
    sentences: list[str] = []
    for name in (
        "xquad",
        "gorilla_tensorflow",
        "gorilla_torchhub",
        "locomo",
        "trec_cast",
        "sni",
        "tinyshakespeare",
    ):
        dataset = load_dataset(name, "all")
        for text in [*dataset.corpus.values(), *map(str, dataset.queries.values())]:
            sentences.extend(s.strip() for s in SENTENCE_BREAK.split(text))
    seen: set[str] = set()
    texts: list[str] = []
    counts = {"passages": 0, "sentences": 0, "sentence pairs": 0, "sentence triples": 0}

    def take(candidates: list[str], kind: str) -> None:
        for text in candidates:
            if len(texts) == n:
                return
            if len(text) >= 20 and text not in seen:
                seen.add(text)
                texts.append(text)
                counts[kind] += 1

    take(first, "passages")
    take(sentences, "sentences")
    take([f"{a} {b}" for a, b in zip(sentences, sentences[1:], strict=False)], "sentence pairs")
    triples = zip(sentences, sentences[1:], sentences[2:], strict=False)
    take([f"{a} {b} {c}" for a, b, c in triples], "sentence triples")
    return texts, counts


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def best_of(rounds: list[dict[str, float]], name: str) -> float:
    return min(r[name] for r in rounds)


def query_latencies(
    questions: list[str], query_runs: dict[str, Callable[[str], object]]
) -> dict[str, list[float]]:
    """Milliseconds of each single-query call, every system in a block of its own.

    Alternating systems query by query would measure their thread pools more than their
    encoders: torch's OpenMP threads keep spinning for a while after each call and take the
    cores from the onnxruntime call that follows (it measured 6.3 ms where ONNX alone takes
    2.4 ms). So each system answers all the questions in a row, after 5 warm-up calls, in two
    rounds of opposite order; an application uses one encoder, not all of them by turns.
    """
    latencies: dict[str, list[float]] = {name: [] for name in query_runs}
    names = list(query_runs)
    for order in (names, names[::-1]):
        for name in order:
            run = query_runs[name]
            for q in questions[:5]:
                run(q)
            for q in questions:
                start = time.perf_counter()
                run(q)
                latencies[name].append(1000 * (time.perf_counter() - start))
    return latencies


def encoder_table(
    args: argparse.Namespace,
    texts: list[str],
    questions: list[str],
    ours: dict[str, LLMEmbedder],
    doc_runs: dict[str, Callable[[list[str]], object]],
    query_runs: dict[str, Callable[[str], object]],
) -> dict[str, dict[str, float]]:
    """Throughput, query latency and agreement of every encoder; prints the table."""
    tokens = sum(ours["ours torch fp32"].count_tokens(texts))
    print(
        f"# Encoder speed: {len(texts)} passages, {tokens} tokens "
        f"(mean {tokens / len(texts):.0f}), {torch.get_num_threads()} threads, {cpu_name()}\n"
    )

    rounds: list[dict[str, float]] = []
    cpu_rounds: list[dict[str, float]] = []
    for _ in range(2):
        timings, cpu = {}, {}
        for name, run in doc_runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run(texts)
            timings[name] = time.perf_counter() - start
            cpu[name] = time.process_time() - start_cpu
        rounds.append(timings)
        cpu_rounds.append(cpu)

    latencies = query_latencies(questions[:100], query_runs)

    # Quality: retrieval agreement with torch fp32, and MRR@10 on all XQuAD.
    xquad = load_dataset("xquad", "all")
    ids = list(xquad.corpus)
    qids = list(xquad.queries)
    quality: dict[str, tuple[float, float]] = {}
    reference_top: dict[str, list[str]] = {}
    for name, enc in ours.items():
        keys = enc.encode([xquad.corpus[i] for i in ids])
        queries = enc.encode([xquad.queries[q] for q in qids])
        top = np.argsort(-(queries @ keys.T), axis=1)[:, :10]
        run = {q: [ids[j] for j in row] for q, row in zip(qids, top, strict=True)}
        mrr = evaluate_rankings(run, xquad.qrels, ks=(10,))["mrr@10"]
        if not reference_top:
            reference_top = run
        agree = np.mean([len(set(run[q]) & set(reference_top[q])) / 10 for q in qids])
        quality[name] = (float(agree), float(mrr))

    base = best_of(rounds, "LangChain HuggingFaceEmbeddings")
    base_cpu = best_of(cpu_rounds, "LangChain HuggingFaceEmbeddings")
    raw_time = best_of(rounds, "raw sentence-transformers fp32")
    print(
        "| encoder | passages/s | tokens/s | x LangChain | x LangChain, CPU time "
        "| embed_query p50 ms | p95 ms | top-10 agreement | XQuAD MRR@10 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    results: dict[str, dict[str, float]] = {}
    for name in doc_runs:
        t = best_of(rounds, name)
        cpu_ratio = base_cpu / best_of(cpu_rounds, name)
        p50, p95 = np.percentile(latencies[name], [50, 95])
        agree, mrr = quality.get(name, (float("nan"), float("nan")))
        results[name] = {
            "passages_per_s": len(texts) / t,
            "tokens_per_s": tokens / t,
            "x_langchain": base / t,
            "x_langchain_cpu_time": cpu_ratio,
            "query_p50_ms": p50,
            "query_p95_ms": p95,
            "top10_agreement": agree,
            "mrr@10": mrr,
        }
        q = f"{agree:.3f} | {mrr:.3f}" if name in quality else "- | -"
        print(
            f"| {name} | {len(texts) / t:.1f} | {tokens / t:.0f} | {base / t:.2f} "
            f"| {cpu_ratio:.2f} | {p50:.1f} | {p95:.1f} | {q} |"
        )
    overhead = best_of(rounds, "ours torch fp32") / raw_time - 1
    print(
        f"\nWrapper overhead, ours torch fp32 over raw sentence-transformers fp32: "
        f"{100 * overhead:+.1f}%"
    )

    return results


def chroma_table(
    args: argparse.Namespace, texts: list[str], questions: list[str], store_encoder: LLMEmbedder
) -> dict[str, Any]:
    """Chroma at ``args.chroma`` real vectors: add rate, query latency, recall of HNSW."""
    print(f"\n# Chroma at {args.chroma} vectors\n")
    corpus, counts = chroma_texts(texts, args.chroma)
    start = time.perf_counter()
    vectors = store_encoder.encode(corpus).astype(np.float32)
    print(
        f"{len(corpus)} real texts ({', '.join(f'{v} {k}' for k, v in counts.items())}), "
        f"encoded in {time.perf_counter() - start:.0f} s\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = ChromaStore(store_encoder, path=tmp)  # Chroma's default HNSW settings
        vids = [f"v{i}" for i in range(len(vectors))]
        start = time.perf_counter()
        step = 5000
        for s in range(0, len(vectors), step):
            store.add(
                corpus[s : s + step],
                task="qa",
                ids=vids[s : s + step],
                embeddings=vectors[s : s + step],
            )
        add_s = time.perf_counter() - start
        qvec = store_encoder.encode_queries(questions, task="qa")
        exact = [{vids[j] for j in np.argsort(-(vectors @ row))[:10]} for row in qvec]
        print(
            f"{len(vectors)} vectors added at {len(vectors) / add_s:.0f}/s; "
            f"{len(qvec)} queries, k=10, through ChromaStore.search_by_vectors\n"
        )
        store.search_by_vectors(qvec[:1], task="qa", k=10)  # the first search loads the index
        times, recall = [], []
        for row, truth in zip(qvec, exact, strict=True):
            start = time.perf_counter()
            found = store.search_by_vectors(row[None], task="qa", k=10)[0]
            times.append(1000 * (time.perf_counter() - start))
            recall.append(len({h.id for h in found} & truth) / 10)
        p50, p95 = np.percentile(times, [50, 95])
        print("| vectors | add/s | query p50 ms | query p95 ms | recall@10 HNSW vs exact |")
        print("|---|---|---|---|---|")
        print(
            f"| {len(vectors)} | {len(vectors) / add_s:.0f} | {p50:.2f} | {p95:.2f} "
            f"| {np.mean(recall):.3f} |"
        )
        result = {
            "vectors": len(vectors),
            "add_per_s": len(vectors) / add_s,
            "query_p50_ms": p50,
            "query_p95_ms": p95,
            "recall@10": float(np.mean(recall)),
        }
        result["server"] = chroma_server_table(store, corpus, vectors, qvec)
    return result


def chroma_server_table(
    embedded: ChromaStore, corpus: list[str], vectors: np.ndarray, qvec: np.ndarray
) -> dict[str, Any]:
    """The same vectors on a local ``chroma run`` server: query latency, embedded vs server.

    The server runs from the venv's ``chroma`` script on 127.0.0.1 (no network hop: what is
    measured is the HTTP round trip and serialisation). Queries alternate between the embedded
    store and the server, so both see the same machine load.
    """
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = Path(sys.executable).parent / "chroma"
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [str(script), "run", "--path", tmp, "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("chroma run did not start") from None
                    time.sleep(0.2)
            remote = ChromaStore.http(embedded.encoder, "127.0.0.1", port)
            vids = [f"v{i}" for i in range(len(vectors))]
            start = time.perf_counter()
            for s in range(0, len(vectors), 5000):
                remote.add(
                    corpus[s : s + 5000],
                    task="qa",
                    ids=vids[s : s + 5000],
                    embeddings=vectors[s : s + 5000],
                )
            add_s = time.perf_counter() - start
            for store in (embedded, remote):  # the first search loads the index
                store.search_by_vectors(qvec[:1], task="qa", k=10)
            times: dict[str, list[float]] = {"embedded": [], "server": []}
            agree = []
            for row in qvec:
                found = {}
                for name, store in (("embedded", embedded), ("server", remote)):
                    start = time.perf_counter()
                    found[name] = store.search_by_vectors(row[None], task="qa", k=10)[0]
                    times[name].append(1000 * (time.perf_counter() - start))
                same = {h.id for h in found["embedded"]} & {h.id for h in found["server"]}
                agree.append(len(same) / 10)
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(
        f"\nSame vectors on a local Chroma server (chroma run, HTTP on 127.0.0.1): added at "
        f"{len(vectors) / add_s:.0f}/s; {len(qvec)} queries, k=10, alternating\n"
    )
    print("| store | query p50 ms | query p95 ms |")
    print("|---|---|---|")
    result: dict[str, Any] = {"server_add_per_s": len(vectors) / add_s}
    for name, values in times.items():
        p50, p95 = np.percentile(values, [50, 95])
        print(f"| {name} | {p50:.2f} | {p95:.2f} |")
        result[f"{name}_query_p50_ms"] = p50
        result[f"{name}_query_p95_ms"] = p95
    result["top10_agreement"] = float(np.mean(agree))
    print(f"\ntop-10 agreement server vs embedded: {np.mean(agree):.3f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--chroma", type=int, default=100_000, help="vectors in the Chroma test")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument(
        "--only", choices=["encoders", "chroma"], default=None, help="run one of the two parts"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # truncation notes; this script measures, it does not index

    features = _cpu.cpu_features()
    choice = _cpu.choose_encoder(features)
    print(f"CPU: {features.summary()}")
    print(f"backend='auto' picks {choice.backend} {choice.precision}: {choice.reason}\n")
    texts = passages(args.passages)
    model_dir = str(shipped_model_path())
    unfused = LLMEmbedder(SHIPPED_MODEL, backend="onnx", show_progress=False)
    unfused._onnx.use_graph(unfused._onnx.path.with_name("model.onnx"))  # for comparison only
    ours = {
        "ours torch fp32": LLMEmbedder(SHIPPED_MODEL, backend="torch", show_progress=False),
        "ours torch bf16": LLMEmbedder(
            SHIPPED_MODEL, backend="torch", precision="bf16", show_progress=False
        ),
        "ours onnx fp32": LLMEmbedder(SHIPPED_MODEL, backend="onnx", show_progress=False),
        "ours onnx fp32, unfused graph": unfused,
        "ours onnx int8": LLMEmbedder(SHIPPED_MODEL, backend="onnx-int8", show_progress=False),
    }
    # The row auto picks on this CPU is named so (auto is always one of these).
    auto = f"ours {choice.backend.replace('-', ' ')} {choice.precision}"
    store_encoder = ours["ours onnx fp32"]
    ours = {(f"{k} (auto)" if k == auto else k): v for k, v in ours.items()}
    from langchain_huggingface import HuggingFaceEmbeddings
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from sentence_transformers import SentenceTransformer

    lc = HuggingFaceEmbeddings(model_name=model_dir, encode_kwargs={"batch_size": 32})
    li = HuggingFaceEmbedding(model_name=model_dir, embed_batch_size=32)
    raw = SentenceTransformer(model_dir, device="cpu")

    doc_runs: dict[str, Callable[[list[str]], object]] = {
        **{name: enc.encode for name, enc in ours.items()},
        "LangChain HuggingFaceEmbeddings": lc.embed_documents,
        "LlamaIndex HuggingFaceEmbedding": li.get_text_embedding_batch,
        "raw sentence-transformers fp32": lambda t: raw.encode(t, batch_size=32),
    }
    query_runs: dict[str, Callable[[str], object]] = {
        **{name: (lambda q, e=enc: e.encode([q])) for name, enc in ours.items()},
        "LangChain HuggingFaceEmbeddings": lc.embed_query,
        "LlamaIndex HuggingFaceEmbedding": li.get_query_embedding,
        "raw sentence-transformers fp32": lambda q: raw.encode([q]),
    }
    questions = list(load_dataset("xquad", "all").queries.values())[: args.queries]
    results: dict[str, Any] = {}
    if args.only != "chroma":
        results.update(encoder_table(args, texts, questions, ours, doc_runs, query_runs))
    if args.only != "encoders":
        results["chroma"] = chroma_table(args, texts, questions, store_encoder)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
