"""End to end on real data: retrieval quality on XQuAD, the demo, the CLI, the RAG chain."""

from __future__ import annotations

import pytest

import llm_embedder_integrations
from llm_embedder_integrations import ChromaStore
from llm_embedder_integrations.cli import main
from llm_embedder_integrations.evaluation import evaluate_rankings, load_dataset


@pytest.fixture(scope="module")
def xquad(data_path):
    return load_dataset("xquad", "all", data_path=data_path)


@pytest.fixture(scope="module")
def xquad_store(encoder, xquad):
    store = ChromaStore(encoder)
    with pytest.warns(UserWarning, match="exceeded 256 tokens"):
        store.add(list(xquad.corpus.values()), task="qa", ids=list(xquad.corpus))
    return store


def test_minilm_without_instructions_reaches_mrr_090_on_all_xquad(xquad, xquad_store):
    qids = list(xquad.queries)
    assert len(qids) == 1190
    results = xquad_store.search_batch(
        [xquad.queries[q] for q in qids], task="qa", k=10, exact=True
    )
    run = {q: [h.id for h in hits] for q, hits in zip(qids, results, strict=True)}
    scores = evaluate_rankings(run, xquad.qrels, ks=(10,))
    assert scores["mrr@10"] >= 0.90  # measured 0.928


def test_rag_chain_answers_from_the_retrieved_paragraph(xquad_store):
    from llm_embedder_integrations.langchain import (
        LLMEmbedderRetriever,
        LocalChatModel,
        rag_chain,
    )

    retriever = LLMEmbedderRetriever(store=xquad_store, task="qa", k=2)
    chain = rag_chain(retriever, LocalChatModel(max_new_tokens=24))
    answer = chain.invoke("Where is Polonia's home venue located?")
    assert "Konwiktorska" in answer


def test_demo_prints_passages_answers_and_mrr(data_path, capsys):
    from llm_embedder_integrations import SHIPPED_MODEL

    assert (
        main(["demo", "--model", SHIPPED_MODEL, "--questions", "1", "--data", str(data_path)]) == 0
    )
    out = capsys.readouterr().out
    assert "Indexed 240 XQuAD paragraphs" in out
    assert "answer:" in out and "gold:" in out
    assert "MRR@10 = 0.928" in out


def test_public_api_is_what_all_says():
    import types

    public = {
        name
        for name, value in vars(llm_embedder_integrations).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert public == set(llm_embedder_integrations.__all__)


def test_core_imports_no_framework():
    import subprocess
    import sys

    code = (
        "import sys, llm_embedder_integrations, llm_embedder_integrations.evaluation; "
        "print(any(m.startswith(('langchain', 'llama_index')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
