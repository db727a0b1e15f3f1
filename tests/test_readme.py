"""Every Python block of README.md and BENCHMARKS.md runs as written.

The blocks of one file run in order in one namespace, as a reader pasting them into one session
would, in a fresh process started in an empty temporary folder, with sockets to anything but
loopback blocked and the data folder set to the data bundled with the package (so the shipped
model and the bundled XQuAD are what they use). A block that is
not meant to run is preceded by ``<!-- not-run: reason -->``; it is still compiled.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "BENCHMARKS.md")

_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*not-run:(.*?)-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced Python block: where it starts, its code, and why it is not run (if so)."""

    line: int
    code: str
    not_run: str | None


def python_blocks(text: str, name: str = "<markdown>") -> list[Block]:
    """The ```python blocks of a Markdown text, each with its not-run reason if marked.

    Raises:
        ValueError: A not-run marker without a reason, a marker not followed by a Python block, or
            a fence left open; the message names the file and line.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = _MARKER.match(line.strip())
        if marker:
            reason = marker.group(1).strip()
            if not reason:
                raise ValueError(
                    f"{name}:{i + 1}: a not-run marker needs a reason: <!-- not-run: why -->"
                )
            pending = (i + 1, reason)
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip() and pending is not None:
                raise ValueError(
                    f"{name}:{pending[0]}: a not-run marker must be followed by a ```python block"
                )
            i += 1
            continue
        start = i
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            i += 1
        if i == len(lines):
            raise ValueError(f"{name}:{start + 1}: the ``` fence opened here is never closed")
        if fence.group(1) == "python":
            body = "\n".join(lines[start + 1 : i]) + "\n"
            blocks.append(Block(start + 2, body, pending[1] if pending else None))
        elif pending is not None:
            raise ValueError(
                f"{name}:{pending[0]}: a not-run marker must be followed by a ```python block"
            )
        pending = None
        i += 1
    return blocks


# The runner executes in the child process: allow connections to loopback only (as the test
# suite does), then exec each block with a file name that points back at the Markdown line.
_RUNNER = """
import sys
from pytest_socket import socket_allow_hosts

socket_allow_hosts(["127.0.0.1", "::1", "localhost"], allow_unix_socket=True)
import time

namespace = {"__name__": "__main__"}
for path, line, code in BLOCKS:
    print(f"--- running {path}:{line}", flush=True)
    start = time.perf_counter()
    exec(compile("\\n" * (line - 1) + code, path, "exec"), namespace)
    print(f"--- {path}:{line} took {time.perf_counter() - start:.1f} s", flush=True)
print("--- all blocks ran", flush=True)
"""


def run_blocks(doc: Path, blocks: list[Block], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the runnable blocks of ``doc`` in one fresh process started in ``cwd``."""
    runnable = [(str(doc), b.line, b.code) for b in blocks if b.not_run is None]
    script = cwd / "_run_blocks.py"
    script.write_text(f"BLOCKS = {runnable!r}\n{_RUNNER}", encoding="utf-8")
    from llm_embedder_integrations.evaluation.datasets import BUNDLED_DATA, ENV_VAR

    # The data a reader has: only what ships in the package (laid out like the data folder).
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env[ENV_VAR] = str(BUNDLED_DATA)
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True
    )


# The parser ------------------------------------------------------------------------------------


def test_parser_finds_python_blocks_with_their_lines_and_markers():
    text = (
        "# T\n"
        "```python\nx = 1\n```\n"
        "```bash\nls\n```\n"
        "<!-- not-run: needs a server -->\n"
        "```python\nserver()\n```\n"
    )
    blocks = python_blocks(text)
    assert blocks == [Block(3, "x = 1\n", None), Block(10, "server()\n", "needs a server")]


def test_parser_rejects_a_marker_without_reason():
    with pytest.raises(ValueError, match=r"doc.md:1: a not-run marker needs a reason"):
        python_blocks("<!-- not-run: -->\n```python\nx = 1\n```\n", "doc.md")


def test_parser_rejects_a_marker_before_something_else():
    with pytest.raises(ValueError, match=r"must be followed by a ```python block"):
        python_blocks("<!-- not-run: why -->\nsome prose\n```python\nx = 1\n```\n")


def test_parser_rejects_an_unclosed_fence():
    with pytest.raises(ValueError, match=r":2: the ``` fence opened here is never closed"):
        python_blocks("text\n```python\nx = 1\n")


def test_runner_reports_the_markdown_line_of_a_failing_block(tmp_path):
    # Plumbing: a made-up document whose second block fails on its second line.
    doc = tmp_path / "doc.md"
    doc.write_text("```python\nx = 1\n```\n\n```python\ny = x + 1\nraise KeyError(y)\n```\n")
    result = run_blocks(doc, python_blocks(doc.read_text(), str(doc)), tmp_path)
    assert result.returncode != 0
    assert f'File "{doc}", line 7' in result.stderr
    assert "KeyError: 2" in result.stderr


# The documents ---------------------------------------------------------------------------------


def test_readme_has_the_quickstarts_and_marks_the_server_block():
    blocks = python_blocks((ROOT / "README.md").read_text(encoding="utf-8"), "README.md")
    code = "".join(b.code for b in blocks if b.not_run is None)
    assert "Chroma.from_texts(" in code and "Settings.embed_model" in code
    assert "Settings.llm = LocalLlamaIndexLLM(" in code
    assert [b.not_run for b in blocks if "ChromaStore.http" in b.code] == [
        "needs a running Chroma server"
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", DOCS)
def test_every_python_block_runs(name, tmp_path):
    doc = ROOT / name
    blocks = python_blocks(doc.read_text(encoding="utf-8"), str(doc))
    for block in blocks:  # not-run blocks must still be valid Python
        compile("\n" * (block.line - 1) + block.code, str(doc), "exec")
    result = run_blocks(doc, blocks, tmp_path)
    assert result.returncode == 0, (
        f"a block of {name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    )
    ran = result.stdout.count("--- running ")
    assert ran == sum(b.not_run is None for b in blocks)
    assert "--- all blocks ran" in result.stdout


def test_llm_embedder_docstring_example_runs(encoder):
    # The example names BAAI/llm-embedder (skipped: not available offline); the rest runs on
    # the shipped model in its place.
    import doctest

    from llm_embedder_integrations import LLMEmbedder

    namespace = {"enc": encoder}
    ran = []
    for example in doctest.DocTestParser().get_examples(LLMEmbedder.__doc__):
        if not example.options.get(doctest.SKIP):
            exec(compile(example.source, "LLMEmbedder.__doc__", "single"), namespace)
            ran.append(example.source)
    assert any("encode_keys" in source for source in ran)
    assert float(namespace["q"][0] @ namespace["k"][0]) > 0.5
