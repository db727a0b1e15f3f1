"""The ``llm-embedder`` command (also ``python -m llm_embedder_integrations``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.model, questions=args.questions, data_path=args.data)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="llm-embedder", description="LLM-Embedder for LangChain and LlamaIndex."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="index XQuAD, answer questions with a RAG chain, print MRR@10"
    )
    demo.add_argument("--model", default=None, help="embedding model name or path")
    demo.add_argument("--questions", type=int, default=3, help="questions answered by the LLM")
    demo.add_argument("--data", default=None, help="data folder (default: $LLM_EMBEDDER_DATA)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
