"""``llm-embedder index`` / ``query`` end to end: the shipped model, a real Chroma in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_embedder_integrations import SHIPPED_MODEL, __version__
from llm_embedder_integrations.cli import main

MODEL = ["--model", SHIPPED_MODEL]

NOTES = {
    "paris.txt": "The Eiffel Tower is in Paris, the capital of France.",
    "sub/ocean.md": "# Oceans\n\nThe Pacific is the largest and deepest ocean on Earth.",
}
FAQ_JSONL = [
    {"text": "Reset your password from the account page, under Security.", "topic": "account"},
    {"text": "Invoices are sent on the first day of each month.", "topic": "billing"},
]
PEOPLE_CSV = "text,author\nPhotosynthesis turns light into chemical energy.,Ann\n"


@pytest.fixture
def docs(tmp_path) -> Path:
    root = tmp_path / "docs"
    for name, text in NOTES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "faq.jsonl").write_text("\n".join(json.dumps(r) for r in FAQ_JSONL) + "\n")
    (root / "people.csv").write_text(PEOPLE_CSV)
    (root / "image.png").write_bytes(b"\x89PNG not indexed")
    return root


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _query(capsys, store: Path, text: str, *extra: str) -> list[dict]:
    code, out, err = _run(capsys, "query", text, "--store", str(store), "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def _count(store: Path) -> int:
    import chromadb

    settings = chromadb.Settings(anonymized_telemetry=False)  # as the CLI opens it
    client = chromadb.PersistentClient(path=str(store), settings=settings)
    return client.get_collection("llm-embedder-qa").count()


def test_index_then_query_every_file_type(docs, tmp_path, capsys):
    store = tmp_path / "store"
    code, _, err = _run(capsys, "index", str(docs), "--store", str(store), *MODEL)
    assert code == 0
    assert "4 files added, 0 updated, 0 unchanged; 5 chunks written" in err
    assert _count(store) == 5

    hits = _query(capsys, store, "how do I change my password?", "-k", "2")
    assert len(hits) == 2
    assert hits[0]["text"] == FAQ_JSONL[0]["text"]
    meta = hits[0]["metadata"]
    assert meta["source"] == str((docs / "faq.jsonl").resolve())
    assert (meta["record"], meta["chunk"], meta["topic"]) == (1, 0, "account")
    assert hits[0]["score"] > hits[1]["score"]

    csv_hit = _query(capsys, store, "plants turn light into energy", "-k", "1")[0]
    assert csv_hit["metadata"]["author"] == "Ann" and csv_hit["metadata"]["record"] == 2
    md_hit = _query(capsys, store, "deepest ocean", "-k", "1")[0]
    assert md_hit["text"] == NOTES["sub/ocean.md"]

    code, out, _ = _run(capsys, "query", "Eiffel Tower", "--store", str(store), "-k", "1")
    assert code == 0
    assert out.startswith("1. [") and "paris.txt" in out and "Eiffel Tower is in Paris" in out


def test_hybrid_query_uses_fused_scores(docs, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["index", str(docs), "--store", str(store), *MODEL]) == 0
    capsys.readouterr()
    dense = _query(capsys, store, "Invoices", "-k", "3")
    hybrid = _query(capsys, store, "Invoices", "-k", "3", "--hybrid")
    assert hybrid[0]["text"] == FAQ_JSONL[1]["text"]
    assert hybrid[0]["score"] < 0.05 < dense[0]["score"]  # RRF scores are small


def test_reindex_skips_unchanged_files_and_replaces_a_changed_one(docs, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["index", str(docs), "--store", str(store), *MODEL]) == 0
    capsys.readouterr()
    code, _, err = _run(capsys, "index", str(docs), "--store", str(store))
    assert code == 0 and "0 files added, 0 updated, 4 unchanged; 0 chunks written" in err

    (docs / "paris.txt").write_text("Berlin is the capital of Germany and its largest city.")
    code, _, err = _run(capsys, "index", str(docs), "--store", str(store))
    assert code == 0 and "0 files added, 1 updated, 3 unchanged; 1 chunks written" in err
    assert _count(store) == 5
    texts = [h["text"] for h in _query(capsys, store, "capital city", "-k", "5")]
    assert "Berlin is the capital of Germany and its largest city." in texts
    assert NOTES["paris.txt"] not in texts


def test_long_texts_are_chunked(tmp_path, capsys):
    from llm_embedder_integrations import LLMEmbedder

    sentences = [f"Paragraph {i} talks about topic number {i} in some detail." for i in range(60)]
    sentences[37] = "The secret ingredient of the recipe is smoked paprika."
    (tmp_path / "long.txt").write_text(" ".join(sentences))
    store = tmp_path / "store"
    code, _, err = _run(
        capsys, "index", str(tmp_path / "long.txt"), "--store", str(store), *MODEL,
        "--chunk-tokens", "64",
    )  # fmt: skip
    assert code == 0 and "UserWarning" not in err  # no chunk was truncated
    hits = _query(capsys, store, "what is the secret ingredient?", "-k", "50")
    assert len(hits) >= 10
    assert "smoked paprika" in hits[0]["text"]
    tokenizer = LLMEmbedder(SHIPPED_MODEL, backend="onnx").tokenizer
    assert max(len(tokenizer(h["text"], add_special_tokens=False)["input_ids"]) for h in hits) <= 64
    assert sorted(h["metadata"]["chunk"] for h in hits) == list(range(len(hits)))


def test_missing_path_is_one_line_and_exit_2_with_nothing_lost(docs, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["index", str(docs), "--store", str(store), *MODEL]) == 0
    capsys.readouterr()
    missing = tmp_path / "nope.txt"
    code, out, err = _run(capsys, "index", str(docs), str(missing), "--store", str(store))
    assert code == 2 and out == ""
    assert err == f"llm-embedder index: {missing}: no such file or folder\n"
    assert _count(store) == 5


def test_a_malformed_or_undecodable_file_is_refused_before_any_write(docs, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["index", str(docs), "--store", str(store), *MODEL]) == 0
    capsys.readouterr()
    (docs / "paris.txt").write_text("Changed, but not written: another file is bad.")
    (docs / "bad.txt").write_bytes(b"caf\xe9 latin-1")
    code, _, err = _run(capsys, "index", str(docs), "--store", str(store))
    assert code == 2
    assert err.count("\n") == 1 and "bad.txt: not UTF-8 text (byte 3)" in err
    (docs / "bad.txt").unlink()
    (docs / "broken.jsonl").write_text('{"text": "fine"}\n{"txt": "no text field"}\n')
    code, _, err = _run(capsys, "index", str(docs), "--store", str(store))
    assert code == 2 and "broken.jsonl:2: each line must be a JSON string or an object" in err
    assert _count(store) == 5
    assert NOTES["paris.txt"] in [h["text"] for h in _query(capsys, store, "Eiffel", "-k", "5")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_refused(docs, tmp_path, capsys):
    (docs / "secret.txt").write_text("hidden")
    (docs / "secret.txt").chmod(0)
    code, _, err = _run(capsys, "index", str(docs), "--store", str(tmp_path / "s"), *MODEL)
    assert code == 2 and "secret.txt: cannot be read (Permission denied)" in err


def test_a_store_built_with_another_model_is_refused(docs, tmp_path, capsys, plain_bert):
    store = tmp_path / "store"
    assert main(["index", str(docs), "--store", str(store), *MODEL]) == 0
    capsys.readouterr()
    (docs / "new.txt").write_text("A new file that must not be written with another model.")
    code, _, err = _run(
        capsys, "index", str(docs), "--store", str(store), "--model", str(plain_bert)
    )
    assert code == 2 and err.count("\n") == 1
    assert "was built with model 'sentence-transformers/all-MiniLM-L6-v2'" in err
    assert _count(store) == 5
    code, _, err = _run(capsys, "query", "x", "--store", str(store), "--model", str(plain_bert))
    assert code == 2 and "was built with model" in err


def test_query_without_an_index_is_exit_2(tmp_path, capsys):
    code, _, err = _run(capsys, "query", "x", "--store", str(tmp_path / "none"))
    assert code == 2 and "no index there; build one with `llm-embedder index" in err
    assert not (tmp_path / "none").exists()
    code, _, err = _run(capsys, "query", "x", "--store", str(tmp_path), "--task", "nope")
    assert code == 2 and "unknown task 'nope'" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"llm-embedder {__version__}\n"


def test_the_installed_script_indexes_and_queries(docs, tmp_path):
    script = Path(sys.executable).parent / "llm-embedder"
    assert script.is_file(), f"{script} missing: install the package (pip install -e .)"
    store = tmp_path / "store"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [str(script), "index", str(docs), "--store", str(store), *MODEL],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "4 files added" in done.stderr and "\r" not in done.stderr  # no bar off a TTY
    done = subprocess.run(
        [str(script), "query", "deepest ocean", "--store", str(store), "-k", "1", "--json"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["text"] == NOTES["sub/ocean.md"]
    done = subprocess.run(
        [str(script), "index", str(tmp_path / "missing"), "--store", str(store)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"llm-embedder index: {tmp_path / 'missing'}: no such file or folder"
    ]
