"""RAGAS evaluation of a LangChain retriever (and optionally a RAG chain) on labelled questions.

`evaluate_rag` runs the retriever on each question, optionally a chain that answers it, and
scores the results with ragas. Without an LLM the metrics are offline: ID- and string-based
context precision and recall, and (when a chain answers) the semantic similarity of the answer
to the reference under our embeddings. Given a LangChain chat model as judge, it adds
faithfulness, answer relevancy, and LLM context precision and recall.

Install with ``pip install "llm-embedder-integrations[eval,langchain]"``. ragas and LangChain
are imported when `evaluate_rag` runs, not when this module is imported.

Example:
    .. code-block:: python

        from llm_embedder_integrations.evaluation import evaluate_rag, load_dataset, rag_samples

        samples = rag_samples(load_dataset("xquad", "test"), limit=30)
        report = evaluate_rag(retriever, samples, chain=chain, embeddings=embeddings)
        print(report.to_markdown())
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._imports import require
from .datasets import RetrievalDataset

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseLanguageModel
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import Runnable
    from ragas.run_config import RunConfig

__all__ = ["METRICS", "RagReport", "RagSample", "evaluate_rag", "rag_samples"]

logger = logging.getLogger(__name__)

_DO_NOT_TRACK = "RAGAS_DO_NOT_TRACK"


@dataclass(frozen=True)
class _Metric:
    """A classic ragas metric class and what it needs to be computed."""

    path: str  # "module:Class"; the private modules avoid ragas.metrics' deprecation shim
    needs: frozenset[str]


# ragas' own metric names -> metric. Needs: columns every sample must have ("reference_context_ids",
# "reference_contexts", "reference"), or arguments of evaluate_rag ("chain" gives the response,
# "llm" the judge, "embeddings" the embeddings).
_TABLE: dict[str, _Metric] = {
    "id_based_context_precision": _Metric(
        "ragas.metrics._context_precision:IDBasedContextPrecision",
        frozenset({"reference_context_ids"}),
    ),
    "id_based_context_recall": _Metric(
        "ragas.metrics._context_recall:IDBasedContextRecall", frozenset({"reference_context_ids"})
    ),
    "non_llm_context_precision_with_reference": _Metric(
        "ragas.metrics._context_precision:NonLLMContextPrecisionWithReference",
        frozenset({"reference_contexts"}),
    ),
    "non_llm_context_recall": _Metric(
        "ragas.metrics._context_recall:NonLLMContextRecall", frozenset({"reference_contexts"})
    ),
    "semantic_similarity": _Metric(
        "ragas.metrics._answer_similarity:SemanticSimilarity",
        frozenset({"chain", "reference", "embeddings"}),
    ),
    "faithfulness": _Metric(
        "ragas.metrics._faithfulness:Faithfulness", frozenset({"chain", "llm"})
    ),
    "answer_relevancy": _Metric(
        "ragas.metrics._answer_relevance:ResponseRelevancy",
        frozenset({"chain", "llm", "embeddings"}),
    ),
    "llm_context_precision_with_reference": _Metric(
        "ragas.metrics._context_precision:LLMContextPrecisionWithReference",
        frozenset({"reference", "llm"}),
    ),
    "context_recall": _Metric(
        "ragas.metrics._context_recall:LLMContextRecall", frozenset({"reference", "llm"})
    ),
}

METRICS: tuple[str, ...] = tuple(_TABLE)
"""Names `evaluate_rag` accepts in ``metrics`` (ragas' own names, also the report's keys)."""

_HOW_TO_GET = {
    "reference_context_ids": "give every RagSample its `reference_context_ids`",
    "reference_contexts": "give every RagSample its `reference_contexts` (texts)",
    "reference": "give every RagSample its `reference` answer",
    "chain": "pass `chain=` (question in, answer string out)",
    "llm": "pass `llm=` (a LangChain chat model used as judge)",
    "embeddings": "pass `embeddings=` (e.g. LLMEmbedderEmbeddings)",
}


@dataclass(frozen=True)
class RagSample:
    """One labelled question: what should be retrieved, and optionally the expected answer.

    At least one of ``reference_contexts`` and ``reference_context_ids`` is required: the
    ID-based metrics compare ``Document.id`` with the ids, the string-based ones compare
    ``page_content`` with the texts.

    Attributes:
        question: The question given to the retriever and the chain.
        reference_contexts: Texts of the relevant passages.
        reference_context_ids: Ids of the relevant passages (as in ``Document.id``).
        reference: The expected answer; needed by semantic similarity and the LLM context metrics.
    """

    question: str
    reference_contexts: tuple[str, ...] = ()
    reference_context_ids: tuple[str, ...] = ()
    reference: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"`question` must be a non-empty string, got {self.question!r}")
        for name in ("reference_contexts", "reference_context_ids"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(
                    f"`{name}` must be a sequence of strings, not one string: {value!r}"
                )
            object.__setattr__(self, name, tuple(value))
        if not self.reference_contexts and not self.reference_context_ids:
            raise ValueError(
                f"RagSample for {self.question!r} has no reference: give `reference_contexts` "
                "(texts of the relevant passages) or `reference_context_ids` (their ids), or both"
            )
        if self.reference is not None and (
            not isinstance(self.reference, str) or not self.reference.strip()
        ):
            raise ValueError(
                f"`reference` must be a non-empty string or None, got {self.reference!r}"
            )


def rag_samples(dataset: RetrievalDataset, *, limit: int | None = None) -> list[RagSample]:
    """Build samples from a loaded dataset: its qrels, corpus texts and answers.

    The reference answer is the first of ``metadata[qid]["answers"]`` when the dataset has answers
    (XQuAD does), else None. Relevant documents are those with a positive grade.

    Args:
        dataset: For example ``load_dataset("xquad", "test")``.
        limit: Keep ``limit`` queries evenly spaced over the dataset's order (which groups the
            questions of one article together); None keeps all.

    Raises:
        ValueError: If ``limit`` is not positive, or a query has no relevant document.
    """
    if limit is not None and limit <= 0:
        raise ValueError(f"`limit` must be > 0 or None, got {limit}")
    qids = list(dataset.queries)
    if limit is not None and limit < len(qids):
        qids = [qids[i * len(qids) // limit] for i in range(limit)]
    samples = []
    for qid in qids:
        question = dataset.queries[qid]
        ids = tuple(doc for doc, grade in dataset.qrels.get(qid, {}).items() if grade > 0)
        if not ids:
            raise ValueError(f"{dataset!r}: query {qid!r} has no relevant document in its qrels")
        answers = dataset.metadata.get(qid, {}).get("answers") or [None]
        samples.append(
            RagSample(
                question=question,
                reference_contexts=tuple(dataset.corpus[doc] for doc in ids),
                reference_context_ids=ids,
                reference=answers[0],
            )
        )
    return samples


@dataclass
class RagReport:
    """Result of `evaluate_rag`.

    Attributes:
        scores: Metric -> mean over the samples where it produced a number (NaN if none did).
        failures: Metric -> number of samples where it gave NaN (the judge's output did not
            parse, the call timed out or failed, or there was nothing to score).
        per_sample: One dict per sample: question, retrieved ids, response, and each metric.
        n: Number of samples.
        timings: Seconds spent on ``retrieval``, ``generation`` (the chain) and ``scoring``.
    """

    scores: dict[str, float]
    failures: dict[str, int]
    per_sample: list[dict[str, Any]]
    n: int
    timings: dict[str, float] = field(default_factory=dict)

    def to_markdown(self) -> str:
        """A markdown table: metric, mean, samples scored, NaN/failures; then the timings."""
        lines = ["| metric | mean | scored | NaN / failed |", "|---|---|---|---|"]
        for name, score in self.scores.items():
            failed = self.failures[name]
            mean = "n/a" if math.isnan(score) else f"{score:.3f}"
            lines.append(f"| {name} | {mean} | {self.n - failed}/{self.n} | {failed} |")
        if self.timings:
            spent = ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items())
            lines += ["", f"{self.n} samples; {spent}."]
        return "\n".join(lines)


@contextlib.contextmanager
def _ragas_telemetry_off() -> Iterator[None]:
    """Set ``RAGAS_DO_NOT_TRACK=true`` for the block, then restore the previous value.

    ragas caches its reading of the variable, so the cache is cleared on entry and exit, and its
    buffered usage events are flushed (that is, dropped) while tracking is still off.
    """
    from ragas import _analytics

    previous = os.environ.get(_DO_NOT_TRACK)
    os.environ[_DO_NOT_TRACK] = "true"
    _analytics.do_not_track.cache_clear()
    try:
        yield
    finally:
        _analytics._analytics_batcher.flush()
        if previous is None:
            os.environ.pop(_DO_NOT_TRACK, None)
        else:
            os.environ[_DO_NOT_TRACK] = previous
        _analytics.do_not_track.cache_clear()


@contextlib.contextmanager
def _classic_api() -> Iterator[None]:
    """Silence ragas' deprecation notices for the classic API that `evaluate` still requires.

    ragas 0.4 marks ``evaluate`` and its LangChain wrappers deprecated in favour of metric
    collections that ``evaluate`` rejects; only those notices are filtered, only in this block.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"(evaluate\(\)|aevaluate\(\)|LangchainLLMWrapper|LangchainEmbeddingsWrapper)"
            r" is deprecated",
            category=DeprecationWarning,
        )
        yield


def _select(metrics: Sequence[str] | None, have: set[str]) -> list[str]:
    if metrics is None:
        chosen = [name for name, m in _TABLE.items() if m.needs <= have]
        if not chosen:
            raise ValueError(
                "no metric can be computed: the samples must all carry `reference_context_ids` "
                "or all carry `reference_contexts`"
            )
        logger.info("RAGAS metrics chosen from the inputs: %s", ", ".join(chosen))
        return chosen
    if isinstance(metrics, str):
        raise TypeError(f"`metrics` must be a sequence of names, not one string: {metrics!r}")
    if not metrics:
        raise ValueError(f"`metrics` is empty: pass None for the default, or names from {METRICS}")
    unknown = [name for name in metrics if name not in _TABLE]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {', '.join(METRICS)}")
    for name in metrics:
        missing = sorted(_TABLE[name].needs - have)
        if missing:
            fixes = "; ".join(_HOW_TO_GET[need] for need in missing)
            raise ValueError(f"metric {name!r} needs {', '.join(missing)}: {fixes}")
    return list(dict.fromkeys(metrics))


def _make_metric(name: str, llm: Any, embeddings: Any) -> Any:
    if name.startswith("non_llm_"):
        require("eval", "rapidfuzz")  # ragas' string similarity imports it lazily
    module, cls = _TABLE[name].path.split(":")
    metric_cls = getattr(importlib.import_module(module), cls)
    kwargs: dict[str, Any] = {}
    if "llm" in _TABLE[name].needs:
        kwargs["llm"] = llm
    if "embeddings" in _TABLE[name].needs:
        kwargs["embeddings"] = embeddings
    return metric_cls(**kwargs)


def evaluate_rag(
    retriever: BaseRetriever,
    samples: Sequence[RagSample],
    *,
    chain: Runnable | None = None,
    llm: BaseLanguageModel | None = None,
    embeddings: Embeddings | None = None,
    k: int | None = None,
    metrics: Sequence[str] | None = None,
    run_config: RunConfig | None = None,
    show_progress: bool = False,
) -> RagReport:
    """Retrieve (and answer) each sample's question, then score the results with ragas.

    Retrieved ids come from ``Document.id``, retrieved contexts from ``page_content``. ragas
    itself reaches no network: every metric that needs an LLM or embeddings gets the ones passed
    here (ragas' OpenAI defaults are never used), and its usage tracking is switched off for the
    duration of the call (``RAGAS_DO_NOT_TRACK=true``, restored afterwards; the variable is
    process-wide, so it also covers other threads meanwhile).

    Args:
        retriever: Any LangChain retriever, e.g. ``LLMEmbedderRetriever``.
        samples: Labelled questions, e.g. from `rag_samples`.
        chain: A Runnable answering a question with a string, e.g. ``rag_chain(retriever, chat)``;
            enables the metrics that score the answer.
        llm: A LangChain chat model used as judge (wrapped with ragas' ``LangchainLLMWrapper``);
            enables faithfulness, answer relevancy and the LLM context metrics.
        embeddings: LangChain embeddings (wrapped with ``LangchainEmbeddingsWrapper``) for
            semantic similarity and answer relevancy.
        k: Documents per question, passed as ``retriever.invoke(question, k=k)`` (our retriever
            and LangChain's vector-store retrievers accept it) and cut to ``k``; None keeps the
            retriever's own setting.
        metrics: Names from `METRICS`; None computes every metric the inputs allow.
        run_config: ragas' timeouts, retries and concurrency (``RunConfig``); None uses ragas'
            defaults. With a local judge, ``RunConfig(max_workers=1, timeout=...)`` avoids
            timeouts from many generations sharing a CPU.
        show_progress: Show ragas' progress bar.

    Returns:
        The report: mean per metric over the samples it scored, NaN counts, per-sample rows.

    Raises:
        ValueError: If ``samples`` is empty, ``k`` is not positive, a metric is unknown or lacks
            what it needs, or an ID-based metric meets a document without ``id``.
        TypeError: If a sample is not a `RagSample` or the chain does not return a string.
    """
    require("eval", "ragas")
    samples = list(samples)
    if not samples:
        raise ValueError("`samples` is empty: pass at least one RagSample (see rag_samples)")
    for i, sample in enumerate(samples):
        if not isinstance(sample, RagSample):
            raise TypeError(f"samples[{i}] must be a RagSample, got {type(sample).__name__}")
    if k is not None and k <= 0:
        raise ValueError(f"`k` must be > 0 or None, got {k}")

    have = {
        column
        for column in ("reference_context_ids", "reference_contexts", "reference")
        if all(getattr(s, column) for s in samples)
    }
    have |= {
        name
        for name, value in (("chain", chain), ("llm", llm), ("embeddings", embeddings))
        if value is not None
    }
    names = _select(metrics, have)
    needs = set().union(*(_TABLE[name].needs for name in names))

    timings: dict[str, float] = {}
    start = time.perf_counter()
    retrieved = []
    for sample in samples:
        docs = retriever.invoke(sample.question, **({"k": k} if k is not None else {}))
        retrieved.append(docs[:k] if k is not None else docs)
    timings["retrieval"] = time.perf_counter() - start
    if "reference_context_ids" in needs:
        for sample, docs in zip(samples, retrieved, strict=True):
            if any(doc.id is None for doc in docs):
                raise ValueError(
                    f"the retriever returned a Document without `id` for {sample.question!r}: "
                    "the ID-based metrics compare Document.id with the reference ids; give the "
                    "documents ids, or pass `metrics` without the id_based_* ones"
                )

    responses: list[str | None] = [None] * len(samples)
    if chain is not None:
        start = time.perf_counter()
        for i, sample in enumerate(samples):
            answer = chain.invoke(sample.question)
            if not isinstance(answer, str):
                raise TypeError(
                    f"`chain` must return the answer as a string, got {type(answer).__name__}: "
                    "end it with StrOutputParser()"
                )
            responses[i] = answer
        timings["generation"] = time.perf_counter() - start

    with _ragas_telemetry_off(), _classic_api():
        from ragas import EvaluationDataset, SingleTurnSample, evaluate
        from ragas.embeddings import LangchainEmbeddingsWrapper
        from ragas.llms import LangchainLLMWrapper

        dataset = EvaluationDataset(
            samples=[
                SingleTurnSample(
                    user_input=sample.question,
                    retrieved_contexts=[doc.page_content for doc in docs],
                    retrieved_context_ids=[doc.id for doc in docs]
                    if "reference_context_ids" in needs
                    else None,
                    reference_contexts=list(sample.reference_contexts) or None,
                    reference_context_ids=list(sample.reference_context_ids) or None,
                    response=response,
                    reference=sample.reference,
                )
                for sample, docs, response in zip(samples, retrieved, responses, strict=True)
            ]
        )
        judge = LangchainLLMWrapper(llm) if llm is not None and "llm" in needs else None
        ragas_embeddings = (
            LangchainEmbeddingsWrapper(embeddings)
            if embeddings is not None and "embeddings" in needs
            else None
        )
        scorers = [_make_metric(name, judge, ragas_embeddings) for name in names]
        # ragas' LangChain wrapper sets the model's temperature per call and puts the old value
        # back; concurrent calls can leave it changed, so the caller's value is restored here.
        temperature = getattr(llm, "temperature", None)
        start = time.perf_counter()
        try:
            result = evaluate(
                dataset,
                metrics=scorers,
                run_config=run_config,
                show_progress=show_progress,
            )
        finally:
            if temperature is not None:
                setattr(llm, "temperature", temperature)  # noqa: B010 - not every model has it
        timings["scoring"] = time.perf_counter() - start

    per_sample = []
    for sample, docs, response, row in zip(
        samples, retrieved, responses, result.scores, strict=True
    ):
        per_sample.append(
            {
                "question": sample.question,
                "retrieved_context_ids": [doc.id for doc in docs],
                "response": response,
                **{name: float(row[name]) for name in names},
            }
        )
    scores: dict[str, float] = {}
    failures: dict[str, int] = {}
    for name in names:
        values = [row[name] for row in per_sample]
        valid = [v for v in values if not math.isnan(v)]
        failures[name] = len(values) - len(valid)
        scores[name] = sum(valid) / len(valid) if valid else math.nan
        if failures[name]:
            logger.warning("%s: %d of %d samples gave NaN", name, failures[name], len(values))
    return RagReport(scores, failures, per_sample, len(samples), timings)
