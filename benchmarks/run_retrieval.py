"""Execute benchmarks/retrieval.ipynb (or another benchmark notebook) and save its outputs.

    python benchmarks/run_retrieval.py                       # every query, saved in place
    python benchmarks/run_retrieval.py --max-queries 10 --max-docs 100 --output /tmp/small.ipynb
    python benchmarks/run_retrieval.py --notebook benchmarks/finetune.ipynb

The notebook runs in the ``python3`` kernel of the interpreter running this script (jupyter_client
resolves the kernel's ``python`` to ``sys.executable``), so run it with the project's virtual
environment. ``--max-queries`` and ``--max-docs`` set ``LLM_EMBEDDER_MAX_QUERIES`` and
``LLM_EMBEDDER_MAX_DOCS`` for a quick run (full scale unsets them). The same table
without the charts: ``llm-embedder eval --hnsw``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbclient
import nbformat

NOTEBOOK = Path(__file__).resolve().parent / "retrieval.ipynb"


def _relative_paths(nb: nbformat.NotebookNode) -> None:
    """Show the checkout's files relative to it, and the home folder as ``~``, in outputs."""
    root, home = f"{NOTEBOOK.parents[1]}/", f"{Path.home()}/"
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = output["text"].replace(root, "").replace(home, "~/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-queries", type=int, default=None, help="queries per dataset")
    parser.add_argument("--max-docs", type=int, default=None, help="documents per dataset")
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK, help="the notebook to run")
    parser.add_argument("--output", type=Path, default=None, help="where to save it (in place)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)

    for option, variable in (
        ("max_queries", "LLM_EMBEDDER_MAX_QUERIES"),
        ("max_docs", "LLM_EMBEDDER_MAX_DOCS"),
    ):
        value = getattr(args, option)
        if value is None:
            os.environ.pop(variable, None)
        elif value < 1:
            parser.error(f"--{option.replace('_', '-')} must be a positive int, got {value}")
        else:
            os.environ[variable] = str(value)
    notebook = args.notebook.resolve()
    nb = nbformat.read(notebook, as_version=4)
    started = time.perf_counter()
    nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=args.timeout,
        resources={"metadata": {"path": str(notebook.parent)}},
    ).execute()
    _relative_paths(nb)
    output = args.output or notebook
    nbformat.write(nb, output)
    print(f"executed in {time.perf_counter() - started:.0f} s; saved {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
