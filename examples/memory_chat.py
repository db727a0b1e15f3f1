"""A long chat that remembers: LangChain, LLM-Embedder's memory (task "chat") and a local LLM.

    python examples/memory_chat.py
    python examples/memory_chat.py --memory ./chat-memory "Where did Caroline move from?"

The memory first receives a long real conversation (LoCoMo conv-26, Caroline and Melanie, 19
sessions), one exchange at a time as it happened. Then each new user turn retrieves the earlier
exchanges most relevant to it, each with the exchange that followed it (chunk_i with chunk_i+1);
they go into the prompt together with the last few turns, SmolLM2-135M-Instruct answers, and the
new exchange is added to the memory in its turn. With ``--memory DIR`` the memory persists:
run the script again and it still knows what was said.

The shipped SmolLM2-135M only shows the plumbing (its answers are weak); pass any LangChain chat
model in its place for real answers.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from operator import itemgetter

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from llm_embedder_integrations import ChromaStore, LLMEmbedder
from llm_embedder_integrations.evaluation import load_dataset
from llm_embedder_integrations.langchain import (
    LLMEmbedderMemoryRetriever,
    LocalChatModel,
    format_documents,
)
from llm_embedder_integrations.memory import MemoryRetriever

CONVERSATION = "conv-26"
RECENT_TURNS = 4
SYSTEM = "You are a helpful assistant with a long memory. Answer in one short sentence."
TURN = "Earlier parts of our conversation:\n{memory}\n\nNow answer this: {question}"
DEFAULT_TURNS = [
    "Hi! I'm Sam, and my favourite colour is teal.",
    "What did Caroline research?",
    "Where did Caroline move from four years ago?",
    "Remind me, what is my favourite colour?",
]


def replay_history(retriever: LLMEmbedderMemoryRetriever) -> None:
    """Add the LoCoMo conversation exchange by exchange, session by session."""
    ds = load_dataset("locomo", "all")
    sessions: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for doc_id, meta in sorted(ds.doc_metadata.items(), key=lambda item: item[1]["position"]):
        if meta["conversation"] == CONVERSATION:
            speaker, _, text = ds.corpus[doc_id].partition(": ")
            sessions[meta["session"]].append((speaker, text))
    for session, turns in sorted(sessions.items()):
        for i in range(0, len(turns), 2):  # one exchange as it happens
            exchange = turns[i : i + 2]
            retriever.add_messages(exchange, source_id="chat", metadata={"session": session})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("turns", nargs="*", help="user turns (default: a short scripted chat)")
    parser.add_argument("--memory", default=None, help="directory that keeps the memory")
    args = parser.parse_args()

    store = ChromaStore(LLMEmbedder(), path=args.memory or tempfile.mkdtemp(prefix="chat-memory-"))
    memory = MemoryRetriever(store, task="chat", next_chunks=1)
    retriever = LLMEmbedderMemoryRetriever(memory=memory, k=3)
    if memory.count() == 0:
        replay_history(retriever)
    print(f"memory: {memory.count()} chunks in {store.path}")

    prompt = ChatPromptTemplate.from_messages(
        [("system", SYSTEM), MessagesPlaceholder("recent"), ("human", TURN)]
    )
    chain = (
        {
            "memory": itemgetter("question") | retriever | format_documents,
            "recent": itemgetter("recent"),
            "question": itemgetter("question"),
        }
        | prompt
        | LocalChatModel(max_new_tokens=48).bind(stop=["\n"])
        | StrOutputParser()
    )

    recent: list[BaseMessage] = []
    for question in args.turns or DEFAULT_TURNS:
        print(f"\nUser: {question}")
        for doc in retriever.invoke(question):
            first = doc.page_content.splitlines()[0]
            print(f"  memory [{doc.metadata['positions']}] {first[:90]}")
        answer = chain.invoke({"question": question, "recent": recent[-RECENT_TURNS:]})
        print(f"Assistant: {answer}")
        exchange = [HumanMessage(question), AIMessage(answer)]
        retriever.add_messages(exchange, source_id="chat")  # remembered from now on
        recent.extend(exchange)


if __name__ == "__main__":
    main()
