"""The tests run without network, and the default model resolution does not need it."""

from __future__ import annotations

import socket
import time

import huggingface_hub.constants
import pytest
from pytest_socket import SocketConnectBlockedError

from llm_embedder_integrations import DEFAULT_MODEL, SHIPPED_MODEL, LLMEmbedder
from llm_embedder_integrations.encoder import resolve_model


@pytest.mark.parametrize("address", [("1.1.1.1", 443), ("8.8.8.8", 53), ("18.239.50.2", 443)])
def test_connections_to_public_addresses_are_blocked(address):
    # pytest-socket (pyproject addopts) allows only localhost; name lookups are not blocked,
    # so addresses are given as IPs here.
    with (
        pytest.warns(UserWarning, match=f'socket.connect\\(\\) with host "{address[0]}"'),
        pytest.raises(SocketConnectBlockedError, match=address[0]),
    ):
        socket.create_connection(address, timeout=1)


def test_localhost_stays_reachable():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=1):
            pass


def test_default_encoder_falls_back_offline_with_one_warning(monkeypatch, tmp_path):
    # An empty Hugging Face cache: BAAI/llm-embedder is not there, so resolution has to probe
    # the hub (blocked here) and fall back to the shipped model.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    began = time.perf_counter()
    with pytest.warns(UserWarning, match=f"{DEFAULT_MODEL} is not in the local") as record:
        encoder = LLMEmbedder()
    seconds = time.perf_counter() - began
    assert len([w for w in record if DEFAULT_MODEL in str(w.message)]) == 1
    assert encoder.model_id == SHIPPED_MODEL and encoder.resolved.local_files_only
    assert encoder.encode_queries(["does it work offline?"], task="qa").shape == (1, 384)
    print(f"LLMEmbedder() resolved offline in {seconds:.2f} s")


def test_hub_offline_setting_skips_the_probe(monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_probe(*args: object, **kwargs: object) -> None:
        raise AssertionError("HF_HUB_OFFLINE is set: the hub must not be probed")

    monkeypatch.setattr(socket, "create_connection", no_probe)
    with pytest.warns(UserWarning, match="using sentence-transformers/all-MiniLM-L6-v2"):
        assert resolve_model(None).model_id == SHIPPED_MODEL
