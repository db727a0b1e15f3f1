"""The ONNX backends and the embedding cache."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_embedder_integrations import SHIPPED_MODEL, LLMEmbedder, _cpu, _onnx
from llm_embedder_integrations.cache import EmbeddingCache
from llm_embedder_integrations.encoder import shipped_model_path

TEXTS = [
    "The Eiffel Tower is in Paris, the capital of France.",
    "Speaker 1: did you paint again?\nSpeaker 2: yes, a sunrise over the lake.",
    "tf.keras.applications.MobileNetV2: image classification model pretrained on ImageNet.",
    "short",
]


@pytest.fixture(scope="module")
def torch_encoder():
    return LLMEmbedder(SHIPPED_MODEL, backend="torch")


@pytest.fixture
def model_copy(tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(shipped_model_path(), dst, ignore=shutil.ignore_patterns("onnx"))
    return dst


def fake_cpu(monkeypatch, flags: str) -> None:
    """Make every CPU-dependent choice see a CPU with these /proc/cpuinfo flags."""
    features = _cpu.parse_cpu_flags(frozenset(flags.split()), "Fake CPU")
    monkeypatch.setattr(_cpu, "cpu_features", lambda cpuinfo=None: features)


AVX2_ONLY = "fpu sse avx avx2 fma"
AVX512_VNNI = "fpu sse avx avx2 avx512f avx512bw avx512_vnni"
AVX512_BF16 = "fpu sse avx avx2 avx512f avx512bw avx512_vnni avx512_bf16"


def test_auto_is_torch_bf16_on_a_native_bf16_cpu_and_onnx_fp32_on_others(monkeypatch):
    fake_cpu(monkeypatch, AVX512_BF16)
    native = LLMEmbedder(SHIPPED_MODEL)
    assert (native.backend, native.dtype) == ("torch", torch.bfloat16)
    fake_cpu(monkeypatch, AVX2_ONLY)
    emulated = LLMEmbedder(SHIPPED_MODEL)
    assert (emulated.backend, emulated.dtype) == ("onnx", torch.float32)
    assert LLMEmbedder(SHIPPED_MODEL, precision="bf16").backend == "torch"


def test_auto_logs_what_it_chose_and_why(monkeypatch, caplog):
    fake_cpu(monkeypatch, AVX2_ONLY)
    with caplog.at_level(logging.INFO, logger="llm_embedder_integrations.encoder"):
        LLMEmbedder(SHIPPED_MODEL)
    lines = [r.getMessage() for r in caplog.records if "backend='auto'" in r.getMessage()]
    assert len(lines) == 1
    assert "Fake CPU: AVX2 yes, AVX-512 no, VNNI no, bf16 no, AMX no -> onnx fp32" in lines[0]


@pytest.mark.parametrize("backend", ["torch", "onnx", "onnx-int8"])
def test_a_backend_chosen_by_the_user_keeps_fp32_on_any_cpu(monkeypatch, backend):
    fake_cpu(monkeypatch, AVX512_BF16)
    assert LLMEmbedder(SHIPPED_MODEL, backend=backend).dtype == torch.float32


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse avx2", (True, False, False, False, False)),
        ("fpu sse avx2 avx_vnni", (True, False, True, False, False)),
        ("fpu sse avx2 avx512f avx512bw avx512_vnni", (True, True, True, False, False)),
        ("fpu sse avx2 avx512f avx512_bf16 avx512_vnni", (True, True, True, True, False)),
        ("fpu sse avx2 avx512f amx_bf16 amx_tile amx_int8", (True, True, False, True, True)),
        ("fp asimd evtstrm aes", (False, False, False, False, False)),
    ],
)
def test_cpu_features_are_read_from_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
    found = _cpu.cpu_features(cpuinfo)
    assert (found.avx2, found.avx512, found.vnni, found.bf16, found.amx) == expected
    assert found.name == "Some CPU"


def test_unreadable_cpu_flags_count_as_absent(tmp_path):
    found = _cpu.cpu_features(tmp_path / "absent")
    assert (found.avx2, found.avx512, found.vnni, found.bf16, found.amx) == (False,) * 5
    assert _cpu.choose_encoder(found).precision == "fp32"


@pytest.mark.parametrize(("flags", "dtype"), [(AVX2_ONLY, "fp32"), (AVX512_BF16, "bf16")])
def test_teacher_dtype_is_bf16_only_where_the_cpu_computes_it(monkeypatch, flags, dtype):
    fake_cpu(monkeypatch, flags)
    assert _cpu.teacher_dtype("cpu") == dtype


@pytest.mark.parametrize(("flags", "dtype"), [(AVX2_ONLY, "fp32"), (AVX512_BF16, "bf16")])
def test_training_autocasts_to_bf16_only_where_the_cpu_computes_it(
    monkeypatch, caplog, flags, dtype
):
    fake_cpu(monkeypatch, flags)
    with caplog.at_level(logging.INFO, logger="llm_embedder_integrations._cpu"):
        assert _cpu.training_precision("cpu") == dtype
    assert f"training precision auto on cpu: {dtype} (CPU Fake CPU" in caplog.text


def test_auto_bf16_vectors_agree_with_fp32(monkeypatch, torch_encoder):
    fake_cpu(monkeypatch, AVX512_BF16)
    cosine = (LLMEmbedder(SHIPPED_MODEL).encode(TEXTS) * torch_encoder.encode(TEXTS)).sum(axis=1)
    assert cosine.min() > 0.99


def test_onnx_fp32_gives_the_torch_vectors(torch_encoder):
    onnx = LLMEmbedder(SHIPPED_MODEL, backend="onnx")
    np.testing.assert_allclose(onnx.encode(TEXTS), torch_encoder.encode(TEXTS), atol=1e-5)


def test_onnx_int8_stays_close_to_fp32(torch_encoder):
    int8 = LLMEmbedder(SHIPPED_MODEL, backend="onnx-int8")
    cosine = (int8.encode(TEXTS) * torch_encoder.encode(TEXTS)).sum(axis=1)
    assert cosine.min() > 0.97


def test_export_goes_to_the_user_cache_and_is_redone_when_weights_change(
    model_copy, tmp_path, monkeypatch
):
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("LLM_EMBEDDER_CACHE", str(cache))
    first = LLMEmbedder(model_copy, backend="onnx")
    path = first._onnx.path
    assert path.is_relative_to(cache) and path.is_file()
    assert not (model_copy / "onnx").exists()  # nothing written into the model's folder
    assert path.stat().st_mode & 0o777 == 0o644
    mtime = path.stat().st_mtime_ns
    assert LLMEmbedder(model_copy, backend="onnx")._onnx.path == path
    assert path.stat().st_mtime_ns == mtime  # reused

    weights = model_copy / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    changed = LLMEmbedder(model_copy, backend="onnx")._onnx.path
    assert changed != path and changed.is_file()  # re-exported for the changed weights


def test_cache_folder_follows_xdg_when_not_overridden(tmp_path, monkeypatch):
    monkeypatch.delenv("LLM_EMBEDDER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _onnx.cache_root() == tmp_path / "xdg" / "llm-embedder"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _onnx.cache_root() == Path.home() / ".cache" / "llm-embedder"


_EXPORT_ONE = """
import sys
from llm_embedder_integrations import LLMEmbedder
enc = LLMEmbedder(sys.argv[1], backend="onnx")
print(enc._onnx.path)
print(float(enc.encode(["Paris is the capital of France."])[0, 0]))
"""


def test_two_processes_exporting_at_once_both_succeed(model_copy, tmp_path):
    env = {**os.environ, "LLM_EMBEDDER_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _EXPORT_ONE, str(model_copy)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
    paths = {out.split()[0] for out, _ in outs}
    values = {out.split()[1] for out, _ in outs}
    assert len(paths) == 1 and len(values) == 1
    folder = Path(paths.pop()).parent
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model_fused.onnx"]


def test_the_onnx_graph_is_fused_and_gives_the_torch_vectors(torch_encoder):
    import onnx

    enc = LLMEmbedder(SHIPPED_MODEL, backend="onnx")
    assert enc._onnx.path.name == "model_fused.onnx"
    ops = {node.op_type for node in onnx.load(str(enc._onnx.path)).graph.node}
    assert {"Attention", "SkipLayerNormalization", "BiasGelu"} <= ops
    np.testing.assert_allclose(enc.encode(TEXTS), torch_encoder.encode(TEXTS), atol=1e-5)


def test_a_fusion_that_changes_the_vectors_is_not_used(model_copy, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LLM_EMBEDDER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_onnx, "_FUSED_TOLERANCE", -1.0)  # any difference counts as a change
    with caplog.at_level(logging.WARNING, logger="llm_embedder_integrations._onnx"):
        enc = LLMEmbedder(model_copy, backend="onnx")
    assert enc._onnx.path.name == "model.onnx"
    assert any("fusion not used" in r.getMessage() for r in caplog.records)
    assert not list(enc._onnx.path.parent.glob("model_fused.onnx"))
    reference = LLMEmbedder(model_copy, backend="torch")
    np.testing.assert_allclose(enc.encode(TEXTS), reference.encode(TEXTS), atol=1e-5)


@pytest.mark.parametrize(
    ("flags", "name"),
    [(AVX512_VNNI, "model_fused_int8.onnx"), (AVX2_ONLY, "model_fused_int8_7bit.onnx")],
)
def test_int8_keeps_7_bit_weights_on_a_cpu_without_vnni(monkeypatch, torch_encoder, flags, name):
    fake_cpu(monkeypatch, flags)
    int8 = LLMEmbedder(SHIPPED_MODEL, backend="onnx-int8")
    assert int8._onnx.path.name == name
    cosine = (int8.encode(TEXTS) * torch_encoder.encode(TEXTS)).sum(axis=1)
    assert cosine.min() > 0.97


def test_onnx_refuses_a_non_fp32_precision():
    with pytest.raises(ValueError, match="fp32"):
        LLMEmbedder(SHIPPED_MODEL, backend="onnx", precision="bf16")


def test_unknown_backend():
    with pytest.raises(ValueError, match="`backend` must be"):
        LLMEmbedder(SHIPPED_MODEL, backend="tensorrt")


def test_cache_returns_the_same_vectors_without_encoding_again(tmp_path, monkeypatch):
    enc = LLMEmbedder(SHIPPED_MODEL, backend="torch", cache=tmp_path / "cache.sqlite")
    first = enc.encode_keys(TEXTS, task="qa")
    assert len(enc.cache) == len(TEXTS)

    def fail(*args, **kwargs):  # plumbing check: a cache hit must not reach the model
        raise AssertionError("encoded although cached")

    monkeypatch.setattr(enc, "_encode_new", fail)
    np.testing.assert_array_equal(enc.encode_keys(TEXTS[::-1], task="qa"), first[::-1])


def test_cache_mixes_hits_and_misses_in_order(tmp_path, torch_encoder):
    enc = LLMEmbedder(SHIPPED_MODEL, backend="torch", cache=tmp_path / "c.sqlite")
    enc.encode(TEXTS[:2])
    out = enc.encode([TEXTS[2], TEXTS[0], TEXTS[3], TEXTS[1]])
    np.testing.assert_allclose(
        out, torch_encoder.encode([TEXTS[2], TEXTS[0], TEXTS[3], TEXTS[1]]), atol=1e-6
    )


def test_cache_keys_include_the_instruction_and_the_backend(tmp_path):
    path = tmp_path / "c.sqlite"
    enc = LLMEmbedder(SHIPPED_MODEL, instructions=True, backend="torch", cache=path)
    enc.encode_keys(TEXTS[:1], task="qa")
    enc.encode_queries(TEXTS[:1], task="qa")
    LLMEmbedder(SHIPPED_MODEL, instructions=True, backend="onnx", cache=path).encode_keys(
        TEXTS[:1], task="qa"
    )
    assert len(EmbeddingCache(path)) == 3


def test_cache_persists_across_reopening(tmp_path):
    path = tmp_path / "c.sqlite"
    vectors = LLMEmbedder(SHIPPED_MODEL, backend="torch", cache=path).encode(TEXTS)
    reopened = EmbeddingCache(path)
    assert len(reopened) == len(TEXTS)
    enc = LLMEmbedder(SHIPPED_MODEL, backend="torch", cache=reopened)
    np.testing.assert_array_equal(enc.encode(TEXTS), vectors)


def test_cache_path_that_is_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match="give a file path"):
        EmbeddingCache(tmp_path)
