"""Loaders that turn the real data folder into retrieval datasets (corpus, queries, qrels).

The data folder holds one sub-folder per public source (see its ``README.md`` and each
``README.txt``). It is read in place, never copied: `data_dir` finds it from an explicit path, the
``LLM_EMBEDDER_DATA`` environment variable, or, only when the package runs from a source checkout,
``../shared/data`` beside that checkout. XQuAD also ships inside the package (CC BY-SA 4.0, see
``data/xquad/README.txt``): `dataset_root` falls back to that copy when no folder is found, so the
demo runs on a fresh machine.

Every dataset has a deterministic train/test split (fixed seed `SPLIT_SEED`). Sources made of
independent groups are split by group so that no group feeds both sides: XQuAD by article, Gorilla
by API (``api_call``), LoCoMo by conversation, TREC CAsT by topic. Sizes are balanced on the number
of queries: groups are shuffled and moved to the test side while it stays within the target share.
Each query's metadata names its group (``"group"``), so that a dev split carved from a train split
(`training.selection.split_dev`) is grouped the same way.

Example:
    >>> ds = load_dataset("xquad", "test")  # doctest: +SKIP
    >>> qid = next(iter(ds.queries))  # doctest: +SKIP
    >>> ds.queries[qid], [ds.corpus[d][:40] for d in ds.qrels[qid]]  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from .._validation import check_positive_int
from ..convsearch import conversational_query
from ..instructions import Task
from ..tools import render_tool_text

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "SPLIT_SEED",
    "RetrievalDataset",
    "BUNDLED_DATA",
    "data_dir",
    "dataset_root",
    "load_dataset",
    "render_tool",
]

logger = logging.getLogger(__name__)

Split = Literal["train", "test", "all"]

ENV_VAR = "LLM_EMBEDDER_DATA"
"""Environment variable naming the data folder."""

SPLIT_SEED = 0
"""Seed of every train/test split; fixed so that two loads give the same split."""

_SPLITS: tuple[str, ...] = get_args(Split)
_TASKS: tuple[str, ...] = get_args(Task)


@dataclass(frozen=True)
class RetrievalDataset:
    """One split of a retrieval dataset: documents, queries and their graded relevant documents.

    Attributes:
        name: Dataset name, one of `DATASETS`.
        task: LLM-Embedder task whose instructions fit the data: ``"qa"``, ``"convsearch"``,
            ``"chat"``, ``"lrlm"``, ``"icl"`` or ``"tool"``.
        corpus: Document id -> text.
        queries: Query id -> text.
        qrels: Query id -> ``{doc_id: grade}``; every id is in ``corpus``.
        metadata: Per-query extras (answers, conversation, history, rewrite, ...). A
            ``"filter"`` entry, when present, is a dict that the ``doc_metadata`` of a document
            must match for the query to see it (LoCoMo: a question searches its own conversation).
        exclude: Per query, document ids it must not retrieve (ICL: the example itself; long text:
            the query chunk and everything after it).
        doc_metadata: Per-document extras (conversation, session, position, title, api_call, ...).
        split: ``"train"``, ``"test"`` or ``"all"``.
    """

    name: str
    task: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    exclude: dict[str, set[str]] = field(default_factory=dict)
    doc_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    split: str = "all"

    def __post_init__(self) -> None:
        if self.task not in _TASKS:
            raise ValueError(f"`task` must be one of {_TASKS}, got {self.task!r}")
        if self.split not in _SPLITS:
            raise ValueError(f"`split` must be one of {_SPLITS}, got {self.split!r}")
        unknown_queries = sorted(set(self.qrels) - set(self.queries))
        if unknown_queries:
            raise ValueError(
                f"{self.name}: qrels name queries that are not in `queries`: {unknown_queries[:5]}"
            )
        missing = sorted(
            {doc for rel in self.qrels.values() for doc in rel if doc not in self.corpus}
        )
        if missing:
            raise ValueError(
                f"{self.name}: qrels name documents that are not in `corpus`: {missing[:5]} "
                f"({len(missing)} in all); every relevant document must be retrievable"
            )

    def __repr__(self) -> str:
        return (
            f"RetrievalDataset(name={self.name!r}, task={self.task!r}, split={self.split!r}, "
            f"{len(self.corpus)} documents, {len(self.queries)} queries)"
        )

    def candidate_ids(self, qid: str) -> list[str]:
        """Return the ids of the documents query ``qid`` may retrieve, in corpus order.

        Applies the query's ``metadata[qid]["filter"]`` (if any) against ``doc_metadata`` and
        removes ``exclude[qid]``.

        Args:
            qid: A query id of this dataset.

        Raises:
            KeyError: If ``qid`` is not a query of this dataset.
        """
        if qid not in self.queries:
            raise KeyError(f"{qid!r} is not a query of {self!r}")
        where = self.metadata.get(qid, {}).get("filter", {})
        banned = self.exclude.get(qid, set())
        return [
            doc
            for doc in self.corpus
            if doc not in banned
            and all(self.doc_metadata.get(doc, {}).get(k) == v for k, v in where.items())
        ]


# Files and splits --------------------------------------------------------------------------------


BUNDLED_DATA = Path(__file__).resolve().parents[1] / "data"
"""The data shipped inside the package, laid out like the data folder: ``xquad/`` only."""

_BUNDLED = frozenset({"xquad"})
_PROJECT = 'name = "llm-embedder-integrations"'


def _checkout_data_dir() -> Path | None:
    """``shared/data`` beside the source checkout this package runs from; None when installed.

    A checkout is recognised by this project's ``pyproject.toml`` next to the package folder, which
    an installed wheel (in site-packages) never has: an installed package therefore never looks
    for data at a path computed from its own location.
    """
    checkout = Path(__file__).resolve().parents[2]
    pyproject = checkout / "pyproject.toml"
    try:
        is_checkout = _PROJECT in pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    return checkout.parent / "shared" / "data" if is_checkout else None


def data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Return the data folder: ``path``, else ``$LLM_EMBEDDER_DATA``, else ``../shared/data``.

    The last default applies only when the package runs from a source checkout: the
    ``shared/data`` folder beside it. An installed package has no default.

    Args:
        path: An explicit data folder; takes precedence over the environment.

    Raises:
        FileNotFoundError: If the chosen folder does not exist, or none is given to an installed
            package; the message names the folder and the environment variable.
    """
    if path is not None:
        root, origin = Path(path), "the `data_path` argument"
    elif os.environ.get(ENV_VAR):
        root, origin = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        checkout = _checkout_data_dir()
        if checkout is None:
            raise FileNotFoundError(
                f"no data folder: set the environment variable {ENV_VAR} or pass `data_path` "
                "to the folder holding xquad/, gorilla/, locomo/, ... (an installed package has "
                "no default data folder)"
            )
        root, origin = checkout, f"the default beside the checkout ({ENV_VAR} is unset)"
    root = root.expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {str(root)!r} (from {origin}) does not exist: point the environment "
            f"variable {ENV_VAR} or the `data_path` argument at the folder holding xquad/, "
            "gorilla/, locomo/, ... (see its README.md)"
        )
    return root


def dataset_root(name: str, path: str | os.PathLike[str] | None = None) -> Path:
    """The folder dataset ``name`` is read from: `data_dir`, else the copy in the package.

    A dataset shipped with the package (XQuAD) falls back to `BUNDLED_DATA`, with one warning,
    when no ``path`` is given and `data_dir` finds no folder; an explicit ``path`` that does not
    exist stays an error.

    Raises:
        FileNotFoundError: As `data_dir`, for a dataset the package does not ship.
    """
    try:
        return data_dir(path)
    except FileNotFoundError as exc:
        if path is not None or name not in _BUNDLED:
            raise
        logger.warning("%s; reading %s from the copy bundled with the package", exc, name)
        return BUNDLED_DATA


def _file(root: Path, *parts: str) -> Path:
    path = root.joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is missing from the data folder {str(root)!r}; see "
            f"{parts[0]}/README.txt there, or set {ENV_VAR} to a complete copy"
        )
    return path


# Parsed files are cached by path; loaders must treat them as read-only.
@functools.lru_cache(maxsize=32)
def _read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


@functools.lru_cache(maxsize=32)
def _read_jsonl(path: Path) -> tuple[dict[str, Any], ...]:
    with path.open(encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


@functools.lru_cache(maxsize=4)
def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _test_groups(sizes: Mapping[str, int], test_fraction: float) -> set[str]:
    """Choose the test groups: shuffled, each taken while the test share stays <= the target.

    Args:
        sizes: Group -> number of queries.
        test_fraction: Target share of the queries on the test side.

    Returns:
        The test groups; never empty, never all groups (given two groups or more).
    """
    order = sorted(sizes)
    random.Random(SPLIT_SEED).shuffle(order)
    target = test_fraction * sum(sizes.values())
    chosen: set[str] = set()
    total = 0
    for group in order:
        if total + sizes[group] <= target:
            chosen.add(group)
            total += sizes[group]
    if not chosen:  # every group is bigger than the target: take the smallest
        chosen.add(min(order, key=lambda g: sizes[g]))
    return chosen


def _keep(is_test: bool, split: Split) -> bool:
    return split == "all" or is_test == (split == "test")


# XQuAD -------------------------------------------------------------------------------------------


def _load_xquad(root: Path, split: Split) -> RetrievalDataset:
    """XQuAD (English SQuAD v1.1 dev subset): paragraphs for questions, split by article."""
    articles = _read_json(_file(root, "xquad", "xquad.en.json"))["data"]
    sizes: dict[str, int] = defaultdict(int)
    for article in articles:
        sizes[article["title"]] += sum(len(p["qas"]) for p in article["paragraphs"])
    test = _test_groups(sizes, 0.3)
    corpus, queries, qrels, metadata, doc_metadata = {}, {}, {}, {}, {}
    for article in articles:
        title = article["title"]
        if not _keep(title in test, split):
            continue
        for i, paragraph in enumerate(article["paragraphs"]):
            pid = f"{title}#{i}"
            corpus[pid] = paragraph["context"]
            doc_metadata[pid] = {"title": title, "position": i}
            for qa in paragraph["qas"]:
                qid = qa["id"]
                queries[qid] = qa["question"]
                qrels[qid] = {pid: 1}
                metadata[qid] = {
                    "title": title,
                    "group": title,
                    "answers": [a["text"] for a in qa["answers"]],
                }
    return RetrievalDataset(
        "xquad", "qa", corpus, queries, qrels, metadata, doc_metadata=doc_metadata, split=split
    )


# Gorilla -----------------------------------------------------------------------------------------

_GORILLA_FILES = {
    "torchhub": ("torchhub_api.jsonl", "torchhub_eval.json"),
    "tensorflow": ("tensorflowhub_api.jsonl", "tensorflow_eval.json"),
}
_INSTRUCTION = re.compile(r"###\s*Instruction:\s*")
_OUTPUT = re.compile(r"###\s*Output")


def render_tool(doc: Mapping[str, Any]) -> str:
    r"""Render a Gorilla-style API doc as the text given to the embedder.

    The layout is the API name, then ``Domain:``, ``Functionality:`` and ``Description:`` lines
    (a line is left out when its field is empty). A readable rendering retrieves far better than
    a JSON dump of the whole record. This is `llm_embedder_integrations.tools.render_tool_text`
    without the parameters line.

    Args:
        doc: An API record with ``api_name`` and optionally ``domain``, ``functionality`` and
            ``description``.

    Returns:
        For example ``"slow_r50\nDomain: Video Classification\nFunctionality: 3D ResNet\n
        Description: The 3D ResNet model is ..."``.

    Raises:
        ValueError: If ``doc`` has no ``api_name``.
    """
    name = str(doc.get("api_name") or "").strip()
    if not name:
        raise ValueError(
            f"a tool needs an `api_name` to be rendered; got the keys {sorted(doc)}: "
            "add the tool's name under `api_name`"
        )
    return render_tool_text(
        name,
        domain=doc.get("domain"),
        functionality=doc.get("functionality"),
        description=doc.get("description"),
    )


def _normalise_call(call: str) -> str:
    return " ".join(call.split())


def _gorilla_query(code: str) -> str:
    """Return an APIBench row's instruction: the text before ``###Output`` (the answer)."""
    return _INSTRUCTION.sub("", _OUTPUT.split(code, maxsplit=1)[0]).strip()


def _load_gorilla(root: Path, split: Split, framework: str) -> RetrievalDataset:
    """Gorilla APIBench: user instructions for the ML-hub API docs they need, split by API."""
    api_file, eval_file = _GORILLA_FILES[framework]
    docs = _read_jsonl(_file(root, "gorilla", "api", api_file))
    rows = _read_jsonl(_file(root, "gorilla", "apibench", eval_file))

    corpus, doc_metadata = {}, {}
    by_call: dict[str, dict[str, int]] = defaultdict(dict)
    for i, doc in enumerate(docs):
        doc_id = f"{framework}-{i}"
        call = _normalise_call(doc["api_call"])
        corpus[doc_id] = render_tool(doc)
        doc_metadata[doc_id] = {
            "api_call": call,
            "api_name": doc["api_name"],
            "domain": doc.get("domain"),
            "framework": doc.get("framework"),
        }
        by_call[call][doc_id] = 1

    calls = [_normalise_call(row["api_data"]["api_call"]) for row in rows]
    sizes: dict[str, int] = defaultdict(int)
    for call in calls:
        sizes[call] += 1
    test = _test_groups(sizes, 0.3)
    queries, qrels, metadata = {}, {}, {}
    for i, (row, call) in enumerate(zip(rows, calls, strict=True)):
        if not _keep(call in test, split):
            continue
        if call not in by_call:
            raise ValueError(
                f"gorilla {eval_file} line {i + 1}: api_call {call!r} matches no API doc of "
                f"{api_file}; the two files must come from the same Gorilla commit"
            )
        qid = f"{framework}-q{i}"
        queries[qid] = _gorilla_query(row["code"])
        qrels[qid] = dict(by_call[call])
        metadata[qid] = {
            "api_call": call,
            "group": call,
            "api_name": row["api_data"].get("api_name"),
            "domain": row["api_data"].get("domain"),
        }
    return RetrievalDataset(
        f"gorilla_{framework}",
        "tool",
        corpus,
        queries,
        qrels,
        metadata,
        doc_metadata=doc_metadata,
        split=split,
    )


def _load_gorilla_torchhub(root: Path, split: Split) -> RetrievalDataset:
    """Gorilla TorchHub: 94 API docs, 186 instructions."""
    return _load_gorilla(root, split, "torchhub")


def _load_gorilla_tensorflow(root: Path, split: Split) -> RetrievalDataset:
    """Gorilla TensorFlow Hub: 696 API docs, 688 instructions."""
    return _load_gorilla(root, split, "tensorflow")


# LoCoMo ------------------------------------------------------------------------------------------

_SESSION_KEY = re.compile(r"session_(\d+)")
_EVIDENCE = re.compile(r"D:?(\d+):(\d+)")


@dataclass(frozen=True)
class _Turn:
    dia_id: str
    session: int
    text: str


@functools.lru_cache(maxsize=8)
def _locomo_conversation(
    path: Path,
) -> tuple[tuple[_Turn, ...], dict[int, str], tuple[tuple[dict[str, Any], tuple[str, ...]], ...]]:
    """Parse one LoCoMo file: its turns, session dates and (qa, valid evidence ids) pairs.

    Evidence strings are read leniently (``"D8:6; D9:17"`` holds two ids, ``"D:11:26"`` means
    ``D11:26``); ids that name no turn of the conversation are dropped with one warning.
    """
    raw = _read_json(path)
    sessions = sorted(
        int(m.group(1))
        for key, value in raw.items()
        if (m := _SESSION_KEY.fullmatch(key)) and isinstance(value, list)
    )
    turns = []
    for n in sessions:
        for turn in raw[f"session_{n}"]:
            text = f"{turn['speaker']}: {turn['text']}"
            if turn.get("blip_caption"):
                text += f" [shares {turn['blip_caption']}]"
            turns.append(_Turn(turn["dia_id"], n, text))
    known = {t.dia_id for t in turns}
    questions, dropped = [], []
    for qa in raw["qa"]:
        evidence: list[str] = []
        for item in qa.get("evidence", []):
            found = [f"D{s}:{t}" for s, t in _EVIDENCE.findall(item)]
            dropped += [item] if not found else [e for e in found if e not in known]
            evidence += [e for e in found if e in known and e not in evidence]
        questions.append((qa, tuple(evidence)))
    if dropped:
        logger.warning(
            "LoCoMo %s: dropped evidence ids that name no turn of the conversation: %s",
            path.stem,
            dropped,
        )
    dates = {n: raw.get(f"session_{n}_date_time", "") for n in sessions}
    return tuple(turns), dates, tuple(questions)


def _load_locomo(
    root: Path, split: Split, *, level: Literal["turn", "session"] = "turn"
) -> RetrievalDataset:
    """LoCoMo: questions about very long conversations, labelled with evidence turns.

    All conversations share one corpus; each query carries ``metadata[qid]["filter"] =
    {"conversation": conv_id}`` and must only search its own conversation (see
    `RetrievalDataset.candidate_ids`). Questions left without a valid evidence turn are skipped.

    Args:
        root: Data folder.
        split: Split by conversation (about 40% of the questions in test).
        level: ``"turn"``: one document per turn (id ``"{conv}/{dia_id}"``, text
            ``"{speaker}: {text}"`` plus ``" [shares {caption}]"`` for a shared image);
            ``"session"``: one document per session (id ``"{conv}/session_{n}"``, its turns
            joined with newlines), relevant = the sessions of the evidence turns.
    """
    if level not in ("turn", "session"):
        raise ValueError(f"`level` must be 'turn' or 'session', got {level!r}")
    folder = _file(root, "locomo", "README.txt").parent
    paths = sorted(folder.glob("conv-*.json"))
    if not paths:
        raise FileNotFoundError(f"no conv-*.json file in {str(folder)!r}; see README.txt there")
    parsed = {p.stem: _locomo_conversation(p) for p in paths}
    sizes = {conv: sum(1 for _, ev in qs if ev) for conv, (_, _, qs) in parsed.items()}
    test = _test_groups(sizes, 0.4)

    corpus, queries, qrels, metadata, doc_metadata = {}, {}, {}, {}, {}
    for conv, (turns, dates, questions) in parsed.items():
        if not _keep(conv in test, split):
            continue
        if level == "turn":
            for position, turn in enumerate(turns):
                doc_id = f"{conv}/{turn.dia_id}"
                corpus[doc_id] = turn.text
                doc_metadata[doc_id] = {
                    "conversation": conv,
                    "session": turn.session,
                    "position": position,
                    "date_time": dates[turn.session],
                }
        else:
            for position, n in enumerate(dates):
                doc_id = f"{conv}/session_{n}"
                corpus[doc_id] = "\n".join(t.text for t in turns if t.session == n)
                doc_metadata[doc_id] = {
                    "conversation": conv,
                    "session": n,
                    "position": position,
                    "date_time": dates[n],
                }
        for i, (qa, evidence) in enumerate(questions):
            if not evidence:
                continue
            qid = f"{conv}/q{i}"
            queries[qid] = qa["question"]
            if level == "turn":
                qrels[qid] = {f"{conv}/{e}": 1 for e in evidence}
            else:
                sessions = dict.fromkeys(int(e[1:].split(":")[0]) for e in evidence)
                qrels[qid] = {f"{conv}/session_{n}": 1 for n in sessions}
            metadata[qid] = {
                "conversation": conv,
                "group": conv,
                "filter": {"conversation": conv},
                "category": qa.get("category"),
                "answers": [str(qa["answer"])] if "answer" in qa else [],
                "evidence": list(evidence),
            }
            if "adversarial_answer" in qa:
                metadata[qid]["adversarial_answer"] = str(qa["adversarial_answer"])
    return RetrievalDataset(
        "locomo", "chat", corpus, queries, qrels, metadata, doc_metadata=doc_metadata, split=split
    )


# TREC CAsT ---------------------------------------------------------------------------------------


def _cast_passage_ids(topics: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Map each distinct canonical passage text to a stable id ``"{doc}-{passage_id}"``.

    The 2021 file gives two different passages the same ``(canonical_result_id, passage_id)``
    (topic 106, turns 4 and 5); the second text gets the id suffixed ``"~2"``.
    """
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for topic in topics:
        for turn in topic["turn"]:
            text = turn["passage"]
            if text in ids:
                continue
            base = f"{turn['canonical_result_id']}-{turn['passage_id']}"
            doc_id, n = base, 1
            while doc_id in taken:
                n += 1
                doc_id = f"{base}~{n}"
            ids[text] = doc_id
            taken.add(doc_id)
    return ids


def _load_trec_cast(
    root: Path, split: Split, *, history: bool = False, rewrite: bool = False
) -> RetrievalDataset:
    """TREC CAsT 2021 (manual evaluation topics): conversational questions for their gold passage.

    Query ids are ``"{topic}_{turn}"`` as in the TREC qrels. The corpus holds the distinct
    canonical passages of the split's topics.

    Args:
        root: Data folder.
        split: Split by topic (about 30% of the turns in test).
        history: Query = the current raw utterance followed by the topic's previous raw
            utterances, most recent first, joined with single spaces (the format the data
            README measured).
        rewrite: Query = the manual rewrite (gold de-contextualised query: an upper bound).
    """
    if history and rewrite:
        raise ValueError(
            "`history` and `rewrite` exclude each other: the manual rewrite already resolves "
            "the context; pass one of them"
        )
    topics = _read_json(_file(root, "trec_cast", "2021", "2021_manual_evaluation_topics_v1.0.json"))
    passage_ids = _cast_passage_ids(topics)
    test = _test_groups({str(t["number"]): len(t["turn"]) for t in topics}, 0.3)

    corpus, queries, qrels, metadata, doc_metadata = {}, {}, {}, {}, {}
    for topic in topics:
        number = topic["number"]
        if not _keep(str(number) in test, split):
            continue
        previous: list[str] = []
        for turn in topic["turn"]:
            qid = f"{number}_{turn['number']}"
            doc_id = passage_ids[turn["passage"]]
            corpus[doc_id] = turn["passage"]
            doc_metadata[doc_id] = {
                "topic": number,
                "canonical_result_id": turn["canonical_result_id"],
                "passage_id": turn["passage_id"],
            }
            raw = turn["raw_utterance"]
            if rewrite:
                queries[qid] = turn["manual_rewritten_utterance"]
            elif history:
                queries[qid] = conversational_query(raw, previous)
            else:
                queries[qid] = raw
            qrels[qid] = {doc_id: 1}
            metadata[qid] = {
                "topic": number,
                "group": str(number),
                "turn": turn["number"],
                "raw": raw,
                "rewrite": turn["manual_rewritten_utterance"],
                "automatic_rewrite": turn.get("automatic_rewritten_utterance"),
                "history": list(previous),
            }
            previous.append(raw)
    return RetrievalDataset(
        "trec_cast",
        "convsearch",
        corpus,
        queries,
        qrels,
        metadata,
        doc_metadata=doc_metadata,
        split=split,
    )


# Super-NaturalInstructions -----------------------------------------------------------------------


def _load_sni(root: Path, split: Split) -> RetrievalDataset:
    r"""Super-NaturalInstructions subset: demonstrations for in-context learning.

    Every line is an example ``"{input}\n{output}"`` (the first output if several). A query is a
    line's input; its relevant examples are the other lines of the same task and, where the line
    has a label (SST-2), the same label. ``exclude[qid]`` holds the line itself.

    The split is drawn per (task, label), about 30% of the lines to test. ``"test"``: queries are
    the test lines and the corpus is the train lines (the example bank a user would have);
    ``"train"``: both come from the train lines; ``"all"``: both are all lines.
    """
    rows = _read_jsonl(_file(root, "sni_subset", "sni_icl_subset.jsonl"))
    definitions = _read_json(_file(root, "sni_subset", "task_definitions.json"))
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        groups[(row["task"], row.get("label") or "")].append(row["id"])
    test_ids: set[str] = set()
    for (task, label), ids in sorted(groups.items()):
        order = sorted(ids)
        random.Random(f"{SPLIT_SEED}/{task}/{label}").shuffle(order)
        test_ids.update(order[: max(1, round(0.3 * len(order)))])

    def example(row: Mapping[str, Any]) -> str:
        output = row["output"]
        return f"{row['input']}\n{output[0] if isinstance(output, list) else output}"

    bank = [r for r in rows if split == "all" or (r["id"] not in test_ids)]
    asked = [r for r in rows if _keep(r["id"] in test_ids, split)]
    corpus = {r["id"]: example(r) for r in bank}
    doc_metadata = {r["id"]: {"task": r["task"], "label": r.get("label")} for r in bank}
    queries, qrels, metadata, exclude = {}, {}, {}, {}
    for row in asked:
        qid = row["id"]
        queries[qid] = row["input"]
        qrels[qid] = {
            r["id"]: 1
            for r in bank
            if r["id"] != qid and r["task"] == row["task"] and r.get("label") == row.get("label")
        }
        exclude[qid] = {qid}
        metadata[qid] = {
            "task": row["task"],
            "label": row.get("label"),
            "answers": list(row["output"]) if isinstance(row["output"], list) else [row["output"]],
            "definition": definitions.get(row["task"]),
        }
    return RetrievalDataset(
        "sni", "icl", corpus, queries, qrels, metadata, exclude, doc_metadata, split=split
    )


# Long text ---------------------------------------------------------------------------------------


def _load_tinyshakespeare(
    root: Path, split: Split, *, chunk_words: int = 96, n_queries: int = 200
) -> RetrievalDataset:
    """Tiny Shakespeare as long-range memory: a chunk asks for the chunks before it.

    The text is cut into consecutive chunks of ``chunk_words`` whitespace-separated words (the
    original spacing and newlines kept), ids ``"chunk-{i:05d}"``. Queries are ``n_queries`` chunks
    spread evenly over the split (each with at least two earlier chunks of the split); query
    ``"query-{i:05d}"`` is the text of chunk i, and ``exclude`` bans chunk i and every later chunk.

    The label is a proxy: the relevant document is the previous chunk, the obvious neighbour.
    LLM-Embedder's real long-range-LM labels (chunks whose use helps an LLM predict the
    continuation) come from LLM rewards, computed elsewhere.

    Args:
        root: Data folder.
        split: ``"train"`` is the first 90% of the chunks, ``"test"`` the last 10%.
        chunk_words: Words per chunk (96 is about 128 BERT tokens).
        n_queries: Queries per split at most.
    """
    check_positive_int(chunk_words, "chunk_words")
    check_positive_int(n_queries, "n_queries")
    text = _read_text(_file(root, "long_text", "tinyshakespeare.txt"))
    words = [m.span() for m in re.finditer(r"\S+", text)]
    chunks = [
        text[words[i][0] : words[min(i + chunk_words, len(words)) - 1][1]]
        for i in range(0, len(words), chunk_words)
    ]
    boundary = round(0.9 * len(chunks))
    first, stop = {"train": (0, boundary), "test": (boundary, len(chunks))}.get(
        split, (0, len(chunks))
    )
    corpus = {f"chunk-{i:05d}": chunks[i] for i in range(first, stop)}
    doc_metadata = {f"chunk-{i:05d}": {"position": i} for i in range(first, stop)}
    eligible = list(range(first + 2, stop))
    if len(eligible) <= n_queries:
        picked = eligible
    elif n_queries == 1:
        picked = [eligible[-1]]
    else:
        picked = [eligible[j * (len(eligible) - 1) // (n_queries - 1)] for j in range(n_queries)]
    queries, qrels, metadata, exclude = {}, {}, {}, {}
    for i in picked:
        qid = f"query-{i:05d}"
        queries[qid] = chunks[i]
        qrels[qid] = {f"chunk-{i - 1:05d}": 1}
        metadata[qid] = {"position": i, "chunk_id": f"chunk-{i:05d}"}
        exclude[qid] = {f"chunk-{j:05d}" for j in range(i, stop)}
    return RetrievalDataset(
        "tinyshakespeare",
        "lrlm",
        corpus,
        queries,
        qrels,
        metadata,
        exclude,
        doc_metadata,
        split=split,
    )


# Registry ----------------------------------------------------------------------------------------

_LOADERS: dict[str, Callable[..., RetrievalDataset]] = {
    "xquad": _load_xquad,
    "gorilla_torchhub": _load_gorilla_torchhub,
    "gorilla_tensorflow": _load_gorilla_tensorflow,
    "locomo": _load_locomo,
    "trec_cast": _load_trec_cast,
    "sni": _load_sni,
    "tinyshakespeare": _load_tinyshakespeare,
}

DATASETS: tuple[str, ...] = tuple(_LOADERS)
"""Names accepted by `load_dataset`."""


def _options(loader: Callable[..., RetrievalDataset]) -> tuple[str, ...]:
    return tuple(
        name
        for name, p in inspect.signature(loader).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    )


def load_dataset(
    name: str,
    split: Split = "test",
    *,
    data_path: str | os.PathLike[str] | None = None,
    **options: Any,
) -> RetrievalDataset:
    """Load one split of a real retrieval dataset from the data folder.

    Datasets and their options:

    * ``xquad`` (qa): paragraphs for SQuAD questions; ``metadata[qid]["answers"]``.
    * ``gorilla_torchhub``, ``gorilla_tensorflow`` (tool): API docs rendered by `render_tool`;
      every doc with the query's ``api_call`` is relevant. The whole API set is the corpus of
      every split; only the queries are split (by API).
    * ``locomo`` (chat): conversation turns; option ``level="turn" | "session"``. A query must
      only search its own conversation (``metadata[qid]["filter"]``).
    * ``trec_cast`` (convsearch): options ``history=False``, ``rewrite=False``.
    * ``sni`` (icl): demonstrations; the query's own line is in ``exclude``.
    * ``tinyshakespeare`` (lrlm): options ``chunk_words=96``, ``n_queries=200``.

    Args:
        name: One of `DATASETS`.
        split: ``"train"``, ``"test"`` or ``"all"``; fixed seed, so repeated loads agree.
        data_path: Data folder; defaults to `dataset_root`'s choice (`data_dir`, and for
            ``xquad`` the copy bundled with the package when no folder is found).
        **options: The dataset's options listed above.

    Returns:
        The dataset split.

    Raises:
        ValueError: For an unknown name, split or option, or a bad option value.
        FileNotFoundError: If the data folder or one of its files is missing.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if split not in _SPLITS:
        raise ValueError(f"`split` must be one of {_SPLITS}, got {split!r}")
    loader = _LOADERS[name]
    accepted = _options(loader)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"dataset {name!r} takes no option(s) {unknown}; its options are "
            f"{list(accepted) or 'none'}"
        )
    return loader(dataset_root(name, data_path), split, **options)
