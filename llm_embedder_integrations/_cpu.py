"""What the CPU can do, read once, and every choice that follows from it.

One place decides, from the CPU's instruction sets, which encoder backend and precision
``backend="auto"`` uses and which dtype an LLM teacher should score in on the CPU. Tests fake
the CPU by patching :func:`cpu_features` (every caller goes through this module's attribute).

Why the features matter (measured on all-MiniLM-L6-v2, 2 cores; see BENCHMARKS.md):

- bf16 matrix products run in hardware only with AVX512-BF16 or AMX; elsewhere oneDNN emulates
  them, slower than fp32. An LLM teacher therefore scores in bf16 only on such a CPU, and
  training autocasts to bf16 only there (2.2x fp32 with AVX512-BF16).
- int8 matrix products accumulate exactly with VNNI (AVX512-VNNI or AVX-VNNI). Without it,
  x86 onnxruntime multiplies uint8 activations by int8 weights with an instruction that can
  saturate, so the opt-in int8 graph keeps its weights to 7 bits there (``reduce_range``).
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "CpuFeatures",
    "EncoderChoice",
    "choose_encoder",
    "cpu_features",
    "parse_cpu_flags",
    "teacher_dtype",
    "training_precision",
]

logger = logging.getLogger(__name__)

EncoderBackend = Literal["torch", "onnx", "onnx-int8"]


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's name and the instruction sets that change what runs fastest."""

    name: str
    """Model name as the system reports it (``"unknown"`` when it does not)."""
    avx2: bool
    """AVX2 (256-bit integer and float vectors)."""
    avx512: bool
    """AVX-512 Foundation (512-bit vectors)."""
    vnni: bool
    """Int8 dot products accumulating in int32 (AVX512-VNNI or AVX-VNNI)."""
    bf16: bool
    """bf16 dot products in hardware (AVX512-BF16 or AMX-BF16)."""
    amx: bool
    """AMX tile matrix units (Sapphire Rapids and later)."""
    source: str = "/proc/cpuinfo"
    """Where the flags were read (``"none"``: unknown, every feature taken as absent)."""

    def summary(self) -> str:
        """One line: the name and each feature as yes/no."""
        marks = ", ".join(
            f"{label} {'yes' if value else 'no'}"
            for label, value in (
                ("AVX2", self.avx2),
                ("AVX-512", self.avx512),
                ("VNNI", self.vnni),
                ("bf16", self.bf16),
                ("AMX", self.amx),
            )
        )
        return f"{self.name}: {marks}"


def parse_cpu_flags(flags: set[str] | frozenset[str], name: str = "unknown") -> CpuFeatures:
    """Features from a set of lower-case flag names as Linux spells them in /proc/cpuinfo."""
    return CpuFeatures(
        name=name,
        avx2="avx2" in flags,
        avx512="avx512f" in flags,
        vnni=bool({"avx512_vnni", "avx512vnni", "avx_vnni", "avxvnni"} & flags),
        bf16=bool({"avx512_bf16", "avx512bf16", "amx_bf16"} & flags),
        amx="amx_tile" in flags,
    )


def _read_linux(cpuinfo: Path) -> CpuFeatures | None:
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    name = "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = set(value.split())
        elif key == "model name" and name == "unknown":
            name = value.strip()
    if not flags:
        return None
    features = parse_cpu_flags(frozenset(flags), name)
    return CpuFeatures(**{**features.__dict__, "source": str(cpuinfo)})


def _read_macos() -> CpuFeatures | None:
    """Intel Macs list their features through sysctl; Apple silicon has none of these."""
    try:
        out = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string", "machdep.cpu.features",
             "machdep.cpu.leaf7_features"],
            capture_output=True, text=True, timeout=2, check=False,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.splitlines()
    if not lines:
        return None
    flags = {f.lower().replace(".", "_") for f in " ".join(lines[1:]).split()}
    features = parse_cpu_flags(frozenset(flags), lines[0].strip() or "unknown")
    return CpuFeatures(**{**features.__dict__, "source": "sysctl"})


@functools.cache
def _detect(cpuinfo: str) -> CpuFeatures:
    found = _read_linux(Path(cpuinfo))
    if found is None and platform.system() == "Darwin":
        found = _read_macos()
    if found is None:
        name = platform.processor() or platform.machine() or "unknown"
        found = CpuFeatures(name, False, False, False, False, False, source="none")
    return found


def cpu_features(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> CpuFeatures:
    """The CPU's features, read once per process (Linux: ``cpuinfo``; macOS: sysctl).

    Where they cannot be read, every feature is taken as absent: the choices made from them
    are then the ones that are safe everywhere (fp32, 7-bit int8 weights).
    """
    return _detect(os.fspath(cpuinfo))


def teacher_dtype(device: str = "cpu") -> str:
    """The dtype an LLM teacher should score in on ``device``: ``"bf16"`` or ``"fp32"``.

    On a CPU, bf16 only where it runs in hardware (measured on SmolLM2-135M: ~1.8x fp32 there,
    log-likelihood ranks unchanged); emulated bf16 is several times slower than fp32. On CUDA,
    bf16 where the GPU supports it, else fp32 (fp16 overflows in log-softmax).
    """
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if device == "cpu":
        return "bf16" if cpu_features().bf16 else "fp32"
    return "fp32"


@dataclass(frozen=True)
class EncoderChoice:
    """What ``backend="auto"`` runs on the CPU, and why."""

    backend: EncoderBackend
    precision: Literal["fp32", "bf16"]
    reason: str


def training_precision(device: str = "cpu") -> Literal["bf16", "fp16", "fp32"]:
    """The autocast precision of ``precision="auto"`` training on ``device``, logged once a run.

    On CUDA bf16 where the GPU supports it, else fp16 (with loss scaling). On a CPU bf16 only
    where it runs in hardware: there the fine-tuning benchmark's steps take 0.45 times as long
    as in fp32; emulated bf16 is slower than fp32.
    """
    if device.startswith("cuda"):
        import torch

        precision: Literal["bf16", "fp16", "fp32"] = (
            "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        )
        why = "the GPU supports bf16" if precision == "bf16" else "the GPU has no bf16"
    else:
        features = cpu_features()
        precision = "bf16" if features.bf16 else "fp32"
        why = f"CPU {features.summary()}"
    logger.info("training precision auto on %s: %s (%s)", device, precision, why)
    return precision


def choose_encoder(features: CpuFeatures | None = None) -> EncoderChoice:
    """The encoder backend and precision for ``backend="auto"`` on this CPU.

    torch bf16 where bf16 runs in hardware (measured 3.1x LangChain's HuggingFaceEmbeddings at
    top-10 agreement 0.995 with fp32), the fused ONNX fp32 graph elsewhere (the torch vectors
    exactly, a fraction of the per-call overhead).

    int8 is never chosen: no recipe measured on XQuAD kept top-10 agreement with fp32 >= 0.99
    at a speed-up. Dynamic per-channel int8 of every matrix product: 0.934; leaving the
    feed-forward outputs in fp32 0.951, layer 0 0.946, the attention outputs 0.933, the last
    layer 0.936; feed-forward layers only 0.941; SmoothQuant (alpha 0.5) 0.904. Rounding the
    weights alone to per-channel int8, activations kept in fp32, already gives 0.983, so no
    per-channel int8 weights can meet the bar; 8-bit weights in blocks of 32 with blockwise
    int8 activations (onnxruntime's MatMulNBits) meet it (0.990) but run slower than fp32.
    """
    f = cpu_features() if features is None else features
    if f.bf16:
        return EncoderChoice("torch", "bf16", "native bf16 (AVX512-BF16 or AMX)")
    return EncoderChoice(
        "onnx", "fp32", "no native bf16 (emulated bf16 is slower than fp32); int8 loses rankings"
    )
