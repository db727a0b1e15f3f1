"""``ChromaStore.http`` against a real Chroma server that this module starts and stops."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_embedder_integrations import ChromaStore, StoreMismatchError

DOCS = [
    "The Eiffel Tower is in Paris, the capital of France.",
    "Berlin is the capital of Germany and its largest city.",
    "Photosynthesis turns light into chemical energy in plants.",
    "The Pacific is the largest and deepest ocean on Earth.",
    "Mount Everest is the highest mountain above sea level.",
    "Error code E1234 means the printer ran out of toner.",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ChromaServer:
    """``chroma run`` from the venv's script, on a free port, over a folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> None:
        script = Path(sys.executable).parent / "chroma"
        if not script.is_file():
            pytest.fail(f"{script} missing: chromadb installs it")
        self.process = subprocess.Popen(
            [str(script), "run", "--path", str(self.path), "--host", "127.0.0.1",
             "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace")
                pytest.fail(f"chroma run exited with {self.process.returncode}: {err[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"chroma run did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.process = None

    def store(self, encoder, **kwargs) -> ChromaStore:
        return ChromaStore.http(encoder, "127.0.0.1", self.port, **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = ChromaServer(tmp_path_factory.mktemp("chroma-server"))
    server.start()
    yield server
    server.stop()


def test_add_and_search_match_an_embedded_store(server, encoder):
    remote = server.store(encoder, name="search")
    ids = remote.add(DOCS, task="qa", metadatas=[{"n": i} for i in range(len(DOCS))])
    assert remote.count("qa") == len(DOCS)
    local = ChromaStore(encoder)
    assert local.add(DOCS, task="qa") == ids
    for query in ["highest mountain", "capital of Germany", "plants and light"]:
        got = remote.search(query, task="qa", k=3)
        want = local.search(query, task="qa", k=3)
        assert [h.id for h in got] == [h.id for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
    top = remote.search("highest mountain", task="qa", k=1, where={"n": 4})[0]
    assert (top.text, top.metadata) == (DOCS[4], {"n": 4})


def test_hybrid_on_the_server_fuses_bm25(server, encoder):
    remote = server.store(encoder, name="hybrid", hybrid=True)
    remote.add(DOCS, task="qa")
    local = ChromaStore(encoder, hybrid=True)
    local.add(DOCS, task="qa")
    got = remote.search("E1234", task="qa", k=3)
    assert got[0].text == DOCS[5]
    assert got[0].score == pytest.approx(2 / 61)  # first in both rankings, rrf_k 60
    assert [h.id for h in got] == [h.id for h in local.search("E1234", task="qa", k=3)]
    dense_only = remote.search("E1234", task="qa", k=1, hybrid=False)[0]
    assert dense_only.score > 0.05


def test_the_model_check_holds_on_the_server(server, encoder, encoder_instr):
    server.store(encoder, name="model-check").add(DOCS[:2], task="tool")
    other = server.store(encoder_instr, name="model-check")
    with pytest.raises(StoreMismatchError, match="was built with model"):
        other.add(DOCS[2:3], task="tool")
    assert server.store(encoder, name="model-check").count("tool") == 2


def test_data_survives_a_server_restart(server, encoder):
    server.store(encoder, name="restart").add(DOCS, task="qa")
    server.stop()
    server.start()
    reopened = server.store(encoder, name="restart")
    assert reopened.count("qa") == len(DOCS)
    assert reopened.search("deepest ocean", task="qa", k=1)[0].text == DOCS[3]


def test_a_server_down_mid_add_is_a_clear_error_and_loses_nothing(server, encoder, monkeypatch):
    store = server.store(encoder, name="down")
    store.add(DOCS, task="qa")
    step = min(512, store.client.get_max_batch_size())
    texts = [f"Log line {i}: the service answered request {i} in {i % 97} ms." for i in range(
        2 * step + 10
    )]  # fmt: skip
    calls = []
    encode_keys = encoder.encode_keys

    def stop_after_first_chunk(items, task="qa"):
        """Plumbing: the server goes down once the first chunk is stored."""
        calls.append(len(items))
        if len(calls) == 2:
            server.stop()
        return encode_keys(items, task=task)

    monkeypatch.setattr(encoder, "encode_keys", stop_after_first_chunk)
    try:
        with pytest.raises(ConnectionError, match=rf"the first {step} of {len(texts)} texts were "
                           "stored and are kept, the rest were not"):  # fmt: skip
            store.add(texts, task="qa")
    finally:
        monkeypatch.undo()
        server.start()
    store = server.store(encoder, name="down")
    assert store.count("qa") == len(DOCS) + step
    assert store.search("deepest ocean", task="qa", k=1)[0].text == DOCS[3]
    store.add(texts, task="qa")  # the retry completes it without duplicates
    assert store.count("qa") == len(DOCS) + len(texts)
