"""Does a fine-tuning run's qa model gain on XQuAD articles it never saw? Test, dev and trained.

`benchmarks/finetune.py` reports XQuAD's test row below the base while the dev split's XQuAD
questions gain. This script tells a real loss from a draw of articles: it scores the saved
model's qa weights, at several interpolation weights, on three sets of XQuAD articles, each
ranked as the test split is (its questions against all its articles' paragraphs, nothing else):

* ``test``: the test split's articles (what the benchmark's row measures);
* ``dev``: the articles of the run's dev split (never trained on; the selection saw them);
* ``trained``: the other articles of the train split (most of their questions were training
  queries).

For each, the base model's MRR@10 and each weight's difference from it with its standard error
over articles (`paired_gain`), then how that difference splits over the articles
(`gain_by_group`), and the articles never trained on (test and dev) together.

Usage:
    python benchmarks/xquad_articles.py --workdir runs/finetune
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reselect import recover_tuned  # noqa: E402  (beside this script)

from llm_embedder_integrations import SHIPPED_MODEL  # noqa: E402
from llm_embedder_integrations.evaluation.datasets import RetrievalDataset, load_dataset  # noqa: E402
from llm_embedder_integrations.evaluation.metrics import gain_by_group, paired_gain  # noqa: E402
from llm_embedder_integrations.training import TrainConfig  # noqa: E402
from llm_embedder_integrations.training.selection import (  # noqa: E402
    dev_query_scores,
    interpolate,
    st_encoder,
)
from llm_embedder_integrations.training.train import TASK_SETTINGS, _load_model  # noqa: E402

logger = logging.getLogger("xquad_articles")

DEV_SET = "qa/xquad"
"""The run's dev set of XQuAD questions (`dev_set_name`)."""


def articles(ds: RetrievalDataset, titles: set[str], split: str) -> RetrievalDataset:
    """The questions of ``titles`` against all those articles' paragraphs, nothing else."""
    corpus = {d: text for d, text in ds.corpus.items() if ds.doc_metadata[d]["title"] in titles}
    queries = {q: text for q, text in ds.queries.items() if ds.metadata[q]["title"] in titles}
    return RetrievalDataset(
        "xquad",
        "qa",
        corpus,
        queries,
        {q: ds.qrels[q] for q in queries},
        {q: ds.metadata[q] for q in queries},
        doc_metadata={d: ds.doc_metadata[d] for d in corpus},
        split=split,
    )


def dev_titles(summary: dict[str, Any]) -> set[str]:
    """The XQuAD articles of a run's dev split, as its selection recorded them."""
    groups = summary["selection"].get("groups", {}).get(DEV_SET)
    if not groups:
        raise ValueError(
            f"the run's summary records no groups for {DEV_SET!r}: re-run the fine-tuning "
            "benchmark (runs since the selection measured errors over groups record them)"
        )
    return set(groups.values())


def measure(workdir: Path, alphas: tuple[float, ...]) -> dict[str, Any]:
    """Per-query MRR@10 of the base and of the qa weights at ``alphas``, on the three sets."""
    from sentence_transformers import SentenceTransformer

    folder = workdir / "models" / "selected"
    qa = json.loads((folder / TASK_SETTINGS).read_text(encoding="utf-8"))["tasks"]["qa"]
    summary = json.loads((folder / "llm_embedder_training.json").read_text(encoding="utf-8"))
    model = _load_model(TrainConfig(model=SHIPPED_MODEL), "cpu")
    base = {k: v.clone() for k, v in model.state_dict().items()}
    if qa["alpha"] <= 0:
        raise ValueError("the run's qa task kept the base model: there is nothing to measure")
    saved = SentenceTransformer(str(folder / qa["model"]), device="cpu").state_dict()
    tuned = recover_tuned(base, saved, qa["alpha"])
    train = load_dataset("xquad", "train")
    dev = dev_titles(summary)
    sets = {
        "test": load_dataset("xquad", "test"),
        "dev": articles(train, dev, "train"),
        "trained": articles(train, {m["title"] for m in train.metadata.values()} - dev, "train"),
    }
    scores: dict[str, Any] = {}
    for name, state in [
        ("base", base),
        *((f"{a:.2f}", interpolate(base, tuned, a)) for a in alphas),
    ]:
        model.load_state_dict(state)
        with torch.no_grad():
            scores[name] = dev_query_scores(st_encoder(model, qa["instructions"]), sets)
    titles = {name: {q: ds.metadata[q]["title"] for q in ds.queries} for name, ds in sets.items()}
    return {"qa": qa, "scores": scores, "titles": titles}


def report(measured: dict[str, Any]) -> str:
    """Markdown: each set's base and differences, then the chosen weight's split by article."""
    scores, titles, qa = measured["scores"], measured["titles"], measured["qa"]
    weights = [w for w in scores if w != "base"]
    sets = dict(titles)
    sets["never trained (test + dev)"] = {**titles["test"], **titles["dev"]}

    def pooled(weight: str, name: str) -> dict[str, float]:
        parts = ["test", "dev"] if name not in titles else [name]
        return {q: v for part in parts for q, v in scores[weight][part].items()}

    head = "| articles | questions | articles | base | " + " | ".join(
        f"alpha {w} - base" for w in weights
    )
    lines = [head + " |", "|" + "---|" * (4 + len(weights))]
    for name, groups in sets.items():
        base = pooled("base", name)
        cells = []
        for w in weights:
            mean, error = paired_gain(pooled(w, name), base, groups)
            cells.append(f"{mean:+.4f} ± {error:.4f}")
        lines.append(
            f"| {name} | {len(base)} | {len(set(groups.values()))} "
            f"| {sum(base.values()) / len(base):.4f} | " + " | ".join(cells) + " |"
        )
    chosen = f"{qa['alpha']:.2f}"
    if chosen in scores:
        lines += [
            "",
            f"Each article's share of the difference at the saved weight (alpha {chosen}):",
        ]
        for name in titles:
            shares = gain_by_group(scores[chosen][name], scores["base"][name], titles[name])
            moved = sorted(((s, g, n) for g, (s, n) in shares.items() if s), reverse=True)
            text = ", ".join(f"{g} {s:+.4f} ({n})" for s, g, n in moved) or "none moves"
            lines.append(f"- {name}: {text}; {sum(not s for s, _ in shares.values())} unchanged")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a finished finetune run")
    parser.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=[0.25, 0.5, 0.75, 1.0],
        help="interpolation weights of the run's qa weights to score",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    text = report(measure(args.workdir, tuple(args.alphas)))
    (args.workdir / "xquad_articles.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
