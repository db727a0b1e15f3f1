#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then run the XQuAD RAG demo.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/llm-embedder" demo "$@"
