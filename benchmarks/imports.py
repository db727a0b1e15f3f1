"""Import time of each public module against its framework's base import, in fresh processes.

    .venv/bin/python benchmarks/imports.py [--rounds 7] [--json out.json]

Each round starts one fresh interpreter per module, in turn (base, ours, base, ours, ...), and
times the ``import`` statement inside it: wall-clock seconds and the CPU seconds the process spent
(user + system), so interpreter start-up is not counted. The table gives the median over the
rounds and the extra cost of our module over its base. On a machine shared with other work the
wall-clock figures swell with waiting; the CPU seconds show the work an import does. The last
column lists the heavy libraries (torch, sentence-transformers, transformers, chromadb,
onnxruntime, bm25s) that the import loaded: they should load on first use, so it should be empty.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass

HEAVY = (
    "torch",
    "sentence_transformers",
    "transformers",
    "chromadb",
    "onnxruntime",
    "bm25s",
    "numba",
    "langchain_chroma",
    "llama_index.vector_stores.chroma",
)

# (our module, the framework import it is compared with; None: a bare interpreter)
MODULES: tuple[tuple[str, str | None], ...] = (
    ("llm_embedder_integrations", None),
    ("llm_embedder_integrations.evaluation", None),
    ("llm_embedder_integrations.langchain", "langchain_core.embeddings"),
    ("llm_embedder_integrations.llama_index", "llama_index.core"),
)

_CHILD = """
import json, resource, sys, time

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

start_wall, start_cpu = time.perf_counter(), cpu()
if MODULE:
    __import__(MODULE)
wall, used = time.perf_counter() - start_wall, cpu() - start_cpu
heavy = [name for name in HEAVY if name in sys.modules]
print(json.dumps({"wall": wall, "cpu": used, "heavy": heavy}))
"""


@dataclass(frozen=True)
class Sample:
    """One import in one fresh interpreter."""

    wall: float
    cpu: float
    heavy: tuple[str, ...]


def time_import(module: str | None) -> Sample:
    """Import ``module`` in a fresh interpreter; its wall and CPU seconds and heavy modules."""
    code = f"MODULE = {module!r}\nHEAVY = {HEAVY!r}\n{_CHILD}"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return Sample(float(found["wall"]), float(found["cpu"]), tuple(found["heavy"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="fresh processes per module")
    parser.add_argument("--json", default=None, help="write every measurement to this file")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")

    names = sorted({m for pair in MODULES for m in pair if m is not None}) + [None]
    runs: dict[str | None, list[Sample]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            runs[name].append(time_import(name))

    def median(name: str | None, key: str) -> float:
        return statistics.median(getattr(r, key) for r in runs[name])

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {args.rounds} rounds")
    print(
        "| module | base import | wall s | base wall s | extra wall s "
        "| CPU s | base CPU s | extra CPU s | heavy libraries loaded |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for module, base in MODULES:
        heavy = sorted({h for r in runs[module] for h in r.heavy})
        wall, base_wall = median(module, "wall"), median(base, "wall")
        cpu, base_cpu = median(module, "cpu"), median(base, "cpu")
        print(
            f"| `{module}` | {f'`{base}`' if base else '(none)'} | {wall:.2f} | {base_wall:.2f} "
            f"| {wall - base_wall:+.2f} | {cpu:.2f} | {base_cpu:.2f} | {cpu - base_cpu:+.2f} "
            f"| {', '.join(heavy) or 'none'} |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({str(k): [vars(r) for r in v] for k, v in runs.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
