"""Route each request to the right tool among many, then run it (LangChain and LlamaIndex).

    python examples/tool_router_agent.py "how much is 12.5 * 4 + 3"
    python examples/tool_router_agent.py --gorilla "classify the birds in my photos"

A ``ToolRouter`` indexes the tools once (task "tool": name, description and parameters) and
returns the few that fit a request. Here the best one is executed directly: every tool takes the
request text, so no tool-calling LLM is needed. With a chat model that calls tools, wrap it in
``ToolRoutedChatModel(router=router, chat_model=model, k=3)`` (LangChain) or pass
``LLMEmbedderToolRetriever(router)`` as an agent's ``tool_retriever`` (LlamaIndex): the model then
sees only the routed tools. ``--gorilla`` also indexes the 696 TensorFlow Hub APIs of Gorilla and
times a route over them.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import operator
import re
import time

from langchain_core.tools import tool
from llama_index.core.tools import FunctionTool

from llm_embedder_integrations import ChromaStore, LLMEmbedder
from llm_embedder_integrations.llama_index import LLMEmbedderToolRetriever
from llm_embedder_integrations.tools import ToolRouter

_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
}


def _arith(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arith(node.left), _arith(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arith(node.operand))
    raise ValueError("not plain arithmetic")


@tool
def calculator(request: str) -> str:
    """Evaluate an arithmetic expression (numbers with + - * /) and return the result."""
    found = re.search(r"[-\d.(][\d.\s+\-*/()]*", request)
    return str(_arith(ast.parse(found.group(0).strip(), mode="eval").body)) if found else "?"


@tool
def word_counter(request: str) -> str:
    """Count the words and characters of a text."""
    text = request.split(":", 1)[-1]
    return f"{len(text.split())} words, {len(text.strip())} characters"


@tool
def clock(request: str) -> str:
    """Tell the current date and time (UTC)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@tool
def temperature_converter(request: str) -> str:
    """Convert a temperature between degrees Celsius and Fahrenheit."""
    found = re.search(r"(-?\d+(?:\.\d+)?)\s*°?\s*([CF])", request, re.IGNORECASE)
    if not found:
        return "give a temperature such as 20 C or 68 F"
    value, unit = float(found.group(1)), found.group(2).upper()
    return f"{value * 9 / 5 + 32:.1f} F" if unit == "C" else f"{(value - 32) * 5 / 9:.1f} C"


@tool
def text_reverser(request: str) -> str:
    """Reverse a piece of text, letter by letter."""
    return request.split(":", 1)[-1].strip()[::-1]


TOOLS = [calculator, word_counter, clock, temperature_converter, text_reverser]


def gorilla_demo(request: str) -> None:
    import json

    from llm_embedder_integrations.evaluation import data_dir

    path = data_dir() / "gorilla" / "api" / "tensorflowhub_api.jsonl"
    apis = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    router = ToolRouter(ChromaStore(LLMEmbedder()))
    start = time.perf_counter()
    router.add_tools([{"name": f"tfhub-{i}", **api} for i, api in enumerate(apis)])
    print(f"\nIndexed {len(router)} TensorFlow Hub APIs in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    matches = router.route(request, k=3)
    print(f"Routed in {(time.perf_counter() - start) * 1000:.0f} ms:")
    for m in matches:
        print(f"  [{m.score:.3f}] {router.tool(m.name)['api_call']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("request", nargs="*")
    parser.add_argument("--gorilla", action="store_true", help="also route over Gorilla APIs")
    args = parser.parse_args()
    requests = (
        [" ".join(args.request)]
        if args.request
        else [
            "how much is 12.5 * 4 + 3",
            "what time is it now?",
            "convert 30 C to fahrenheit",
            "how many words are in this: the quick brown fox jumps",
        ]
    )

    router = ToolRouter(ChromaStore(LLMEmbedder()))
    router.add_tools(TOOLS)
    for request in requests:
        best, *others = router.route(request, k=3)
        answer = router.tool(best.name).invoke({"request": request})
        alternatives = ", ".join(f"{m.name} {m.score:.2f}" for m in others)
        print(f"{request!r} -> {best.name} ({best.score:.2f}; then {alternatives}): {answer}")

    # LlamaIndex: the same routing as an agent's tool retriever.
    li_router = ToolRouter(ChromaStore(LLMEmbedder()))
    li_router.add_tools([FunctionTool.from_defaults(t.func, name=t.name) for t in TOOLS])
    retriever = LLMEmbedderToolRetriever(li_router, similarity_top_k=1)
    [found] = retriever.retrieve(requests[0])
    print(
        f"\nLlamaIndex: {requests[0]!r} -> {found.metadata.name}: "
        f"{found.call(request=requests[0]).content}"
    )

    if args.gorilla:
        gorilla_demo(" ".join(args.request) or "detect the objects in a street photo")


if __name__ == "__main__":
    main()
