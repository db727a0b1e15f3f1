"""Every notebook of benchmarks/ must still run: each is executed at small scale, in a copy."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
NOTEBOOKS = sorted(BENCHMARKS.glob("*.ipynb"))
MAX_QUERIES = "10"
"""Queries per dataset in the small-scale run (``LLM_EMBEDDER_MAX_QUERIES``)."""
MAX_DOCS = "100"
"""Documents per dataset in the small-scale run (``LLM_EMBEDDER_MAX_DOCS``)."""

_WHICH_PYTHON = "import sys; print(sys.prefix)"

# What a notebook's outputs must contain, beyond running without error.
EXPECTED_OUTPUTS = {
    "retrieval.ipynb": [
        "| trec_cast/history | model+instr |",
        "| tinyshakespeare | bm25 |",
        "| locomo | model |",
        "image/png",
    ],
    "finetune.ipynb": [
        "| qa: xquad |",
        "| (g) selected |",
        "| (d) fine-tuned |",
        "chosen alpha",
        "skipped in a smoke run: it ranks the whole test sets",
        "image/png",
    ],
}


def test_notebooks_found():
    assert "retrieval.ipynb" in [p.name for p in NOTEBOOKS]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch, data_path):
    # The kernel inherits this environment: small scale, real data, no hub access.
    monkeypatch.setenv("LLM_EMBEDDER_MAX_QUERIES", MAX_QUERIES)
    monkeypatch.setenv("LLM_EMBEDDER_MAX_DOCS", MAX_DOCS)
    monkeypatch.setenv("LLM_EMBEDDER_DATA", str(data_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(_WHICH_PYTHON))
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        # Run from the notebook's folder, as Jupyter does; the executed copy goes to tmp_path.
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    nbformat.write(nb, tmp_path / path.name)

    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
    shown = "\n".join(
        str(out.get("text", "")) + "".join(f"{k}\n{v}" for k, v in out.get("data", {}).items())
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    for expected in EXPECTED_OUTPUTS.get(path.name, []):
        assert expected in shown
    # "python3" must resolve to this interpreter's environment (the venv with the package).
    kernel_prefix = "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip()
    assert kernel_prefix == sys.prefix
