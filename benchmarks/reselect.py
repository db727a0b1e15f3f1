"""Re-run the per-task choice of a finished fine-tuning run at another rule, and test it.

`benchmarks/finetune.py` keeps, in its selected model's ``llm_embedder_training.json``, the
dev score of every query at every interpolation weight, with and without instructions. This
script applies `choose_per_task` to that grid at another ``--selection-se`` (how many standard
errors a simpler choice may trail the best by), saves the chosen model as the trainer would
(`save_selected`), and evaluates it on the TEST splits like the benchmark's (g).

The errors are those of a sample of the dev split's groups, as the trainer measures them; a run
saved before the trainer recorded its groups has its dev split drawn again from its files
(`split_off_dev`, seeded: the same split). ``--per-query`` measures them per query instead.

Each task's fine-tuned weights are recovered from the saved folder: a task saved at weight
``a`` of its step holds ``base + a * (tuned - base)``, so ``tuned = base + (saved - base) / a``.
Every step a new choice needs must have been saved by some task at a weight above 0.

Usage:
    python benchmarks/reselect.py --workdir runs/finetune --selection-se 2 --out runs/se2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import finetune  # noqa: E402  (beside this script)

from llm_embedder_integrations import SHIPPED_MODEL  # noqa: E402
from llm_embedder_integrations.instructions import TASKS, prompts_for  # noqa: E402
from llm_embedder_integrations.training import TrainConfig  # noqa: E402
from llm_embedder_integrations.training.selection import (  # noqa: E402
    Selection,
    choose_per_task,
    dev_groups,
)
from llm_embedder_integrations.training.train import (  # noqa: E402
    TASK_SETTINGS,
    _load_model,
    read_records,
    save_selected,
    source_records,
    split_off_dev,
)

logger = logging.getLogger("reselect")

State = Mapping[str, torch.Tensor]


def recover_tuned(base: State, saved: State, alpha: float) -> dict[str, torch.Tensor]:
    """The fine-tuned weights behind ``saved = base + alpha * (tuned - base)``."""
    if not 0 < alpha <= 1:
        raise ValueError(f"a saved weight must be in (0, 1] to recover from, got {alpha}")
    return {k: base[k] + (saved[k] - base[k]) / alpha for k in base}


def step_weights(
    folder: Path, settings: Mapping[str, Mapping[str, Any]], base: State
) -> dict[int, dict[str, torch.Tensor]]:
    """Each saved step's fine-tuned weights, from the first task saved at a weight above 0.

    ``settings`` is the folder's per-task choices (``llm_embedder.json``'s ``tasks``).
    """
    from sentence_transformers import SentenceTransformer

    states: dict[int, dict[str, torch.Tensor]] = {}
    for choice in settings.values():
        if choice["alpha"] > 0 and choice["step"] not in states:
            saved = SentenceTransformer(str(folder / choice["model"]), device="cpu").state_dict()
            states[choice["step"]] = recover_tuned(base, saved, choice["alpha"])
    return states


def run_groups(summary: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The groups of a run's dev queries (``{dev set name: {query id: group}}``).

    Those the run saved, else those of its dev split drawn again from its files. Dev queries
    are numbered in their split's order, so the check against the grid's queries catches a
    split of other sizes, not one of the same sizes: the files, settings and `split_dev` must
    be those of the run.
    """
    saved = summary["selection"].get("groups")
    if saved:
        return saved
    config = TrainConfig.from_dict(summary["config"])
    records = [r for path in config.data for r in read_records(path)] + source_records(config)[0]
    groups = dev_groups(split_off_dev(config, records)[1])
    scored = summary["selection"]["queries"]["0.00"]["plain"]
    for name, queries in scored.items():
        if set(groups.get(name, ())) != set(queries):
            raise ValueError(
                f"the dev split drawn again does not hold the run's {name} queries: were its "
                "files or settings changed since?"
            )
    return groups


def reselect(workdir: Path, se: float, out: Path, *, per_query: bool = False) -> dict[str, Any]:
    """Choose again at ``se``, save the model under ``out/models/selected``; its choices."""
    from sentence_transformers import SentenceTransformer

    folder = workdir / "models" / "selected"
    settings = json.loads((folder / TASK_SETTINGS).read_text(encoding="utf-8"))["tasks"]
    summary = json.loads((folder / "llm_embedder_training.json").read_text(encoding="utf-8"))
    grid = {float(a): v for a, v in summary["selection"]["grid"].items()}
    queries = {float(a): v for a, v in summary["selection"]["queries"].items()}
    tasks = {name: name.split("/", 1)[0] for name in grid[0.0]["plain"]}
    choices = {
        task: dataclasses.replace(choice, step=settings[task]["step"])
        for task, choice in choose_per_task(
            grid,
            tasks,
            queries=queries,
            groups=None if per_query else run_groups(summary),
            se=se,
            serve=TASKS,
        ).items()
    }
    base = _load_model(TrainConfig(model=SHIPPED_MODEL), "cpu").state_dict()
    states = step_weights(folder, settings, base)
    model = SentenceTransformer(str(folder), device="cpu")
    model.prompts = {**(model.prompts or {}), **prompts_for(TASKS)}  # a task may turn them on
    target = out / "models" / "selected"
    target.mkdir(parents=True, exist_ok=True)
    return save_selected(
        model,
        target,
        base,
        next(iter(states.values())),
        Selection(tasks=choices),
        base_model=SHIPPED_MODEL,
        task_weights={t: (c.step, states[c.step]) for t, c in choices.items() if c.alpha > 0},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a finished finetune run")
    parser.add_argument("--selection-se", type=float, required=True, help="the rule's errors")
    parser.add_argument("--out", type=Path, required=True, help="where the new model goes")
    parser.add_argument(
        "--per-query", action="store_true", help="errors per dev query, not per group"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    chosen = reselect(args.workdir, args.selection_se, args.out, per_query=args.per_query)
    for task, choice in chosen["tasks"].items():
        logger.info("%s: %s", task, {k: choice[k] for k in ("alpha", "step", "instructions")})
    return finetune.main(["--workdir", str(args.out), "--stage", "eval", "--variants", "selected"])


if __name__ == "__main__":
    sys.exit(main())
