from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from llm_embedder_integrations.training.losses import (
    TASK_LOSS,
    ContrastiveLoss,
    KLDistillationLoss,
    LLMEmbedderLoss,
    MultiTaskLoss,
    StabilizedDistillationLoss,
    TaskLossConfig,
    contrastive_fallback,
    contrastive_loss,
    gather_with_grad,
    in_batch_false_negatives,
    kl_distillation_loss,
    stabilized_distillation_loss,
)

B, G, D, T = 3, 4, 8, 0.01


def embeddings(seed: int, n_queries: int = B, group: int = G, n_groups: int | None = None):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(n_queries, D, generator=gen, dtype=torch.float64), dim=-1)
    k = F.normalize(
        torch.randn((n_groups or n_queries) * group, D, generator=gen, dtype=torch.float64), dim=-1
    )
    teacher = torch.randn(n_queries, group, generator=gen, dtype=torch.float64)
    return q.requires_grad_(), k.requires_grad_(), teacher


# Naive references: one query, one key at a time ---------------------------------------------------


def dot(a, b):
    return sum(a[i] * b[i] for i in range(a.shape[0]))


def log_sum_exp(values):
    top = max(v.item() for v in values)
    return top + torch.log(sum(torch.exp(v - top) for v in values))


def naive_contrastive(q, k, group, temp, offset=0, mask=None):
    total = 0
    for j in range(q.shape[0]):
        target = (offset + j) * group
        logits = [
            dot(q[j], k[i]) / temp
            for i in range(k.shape[0])
            if mask is None or i == target or not mask[j, i]
        ]
        total = total + log_sum_exp(logits) - dot(q[j], k[target]) / temp
    return total / q.shape[0]


def naive_kl(q, k, teacher, temp, teacher_temp):
    total = 0
    for j in range(q.shape[0]):
        student = [dot(q[j], k[j * G + i]) / temp for i in range(G)]
        lse = log_sum_exp(student)
        t = [math.exp(teacher[j, i].item() / teacher_temp) for i in range(G)]
        z = sum(t)
        for i in range(G):
            p = t[i] / z
            total = total + p * (math.log(p) - (student[i] - lse))
    return total / q.shape[0]


def naive_stabilized(q, k, teacher, temp, offset=0, mask=None):
    n, group = teacher.shape
    total = 0
    for j in range(n):
        start = (offset + j) * group
        scores = [teacher[j, i].item() for i in range(group)]
        w = [math.exp(s) / sum(math.exp(x) for x in scores) for s in scores]
        ranked = sorted(range(group), key=lambda i: -scores[i])
        for rank, i in enumerate(ranked):
            above = {start + r for r in ranked[:rank]}
            logits = [
                dot(q[j], k[c]) / temp
                for c in range(k.shape[0])
                if c not in above and (mask is None or not mask[j, c])
            ]
            ce = log_sum_exp(logits) - dot(q[j], k[start + i]) / temp
            total = total + w[i] * ce / n
    return total


def assert_same(fast, naive, inputs):
    assert fast.detach().item() == pytest.approx(float(naive.detach()), rel=1e-9, abs=1e-9)
    grads_fast = torch.autograd.grad(fast, inputs)
    grads_naive = torch.autograd.grad(naive, inputs)
    for a, b in zip(grads_fast, grads_naive, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


# Contrastive --------------------------------------------------------------------------------------


@pytest.mark.parametrize("temp", [T, 1.0])
def test_contrastive_matches_naive_values_and_gradients(temp):
    q, k, _ = embeddings(0)
    loss = contrastive_loss(q, k, group_size=G, temperature=temp)
    assert_same(loss, naive_contrastive(q, k, G, temp), (q, k))


@pytest.mark.parametrize("temp", [T, 1.0])
def test_contrastive_with_offset_and_false_negatives_matches_naive(temp):
    q, k, _ = embeddings(1, n_queries=2, n_groups=5)
    mask = torch.zeros(2, 5 * G, dtype=torch.bool)
    mask[0, [0, 9, 13]] = True  # other groups' keys and an own hard negative (group 2 = 8..11)
    mask[1, [2, 19]] = True
    kwargs = {"group_size": G, "query_offset": 2, "temperature": temp}
    loss = contrastive_loss(q, k, false_negatives=mask, **kwargs)
    assert_same(loss, naive_contrastive(q, k, G, temp, offset=2, mask=mask), (q, k))
    unmasked = contrastive_loss(q, k, **kwargs)
    assert unmasked.item() >= loss.item()  # a removed negative can only lower the loss
    if temp == 1.0:
        assert unmasked.item() > loss.item() + 0.01


def test_contrastive_rejects_a_masked_positive_and_ragged_groups():
    q, k, _ = embeddings(2)
    mask = torch.zeros(B, B * G, dtype=torch.bool)
    mask[1, G] = True
    with pytest.raises(ValueError, match=r"masks the positive of local queries \[1\]"):
        contrastive_loss(q, k, group_size=G, false_negatives=mask)
    with pytest.raises(ValueError, match="not a whole number of groups of 5"):
        contrastive_loss(q, k, group_size=5)
    with pytest.raises(ValueError, match="need 16 keys"):
        contrastive_loss(q, k, group_size=G, query_offset=1)


def test_false_negative_mask_marks_other_groups_only():
    keys = ["a", "x", "b", "a", "c", "y"]
    mask = in_batch_false_negatives([{"a"}, {"b", "a"}, {"c"}], keys, group_size=2)
    assert mask.tolist() == [
        [False, False, False, True, False, False],
        [True, False, False, False, False, False],
        [False, False, False, False, False, False],
    ]


# KL distillation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("temp", "teacher_temperature"), [(T, 1.0), (T, 0.1), (1.0, 0.1)])
def test_kl_distillation_matches_naive(temp, teacher_temperature):
    q, k, teacher = embeddings(3)
    loss = kl_distillation_loss(
        q, k, teacher, temperature=temp, teacher_temperature=teacher_temperature
    )
    assert_same(loss, naive_kl(q, k, teacher, temp, teacher_temperature), (q, k))


def test_kl_distillation_is_zero_when_student_equals_teacher():
    q, k, _ = embeddings(4)
    student = torch.einsum("bd,bgd->bg", q, k.view(B, G, D)) / T
    assert kl_distillation_loss(q, k, student.detach()).item() == pytest.approx(0, abs=1e-12)


def test_kl_distillation_uses_own_keys_only():
    q, k, teacher = embeddings(5, n_groups=4)
    with pytest.raises(ValueError, match="own keys only: expected 3 x 4 = 12 keys, got 16"):
        kl_distillation_loss(q, k, teacher)


# Stabilized distillation -------------------------------------------------------------------------


@pytest.mark.parametrize("temp", [T, 1.0])
def test_stabilized_distillation_matches_naive(temp):
    q, k, teacher = embeddings(6)
    loss = stabilized_distillation_loss(q, k, teacher, temperature=temp)
    assert_same(loss, naive_stabilized(q, k, teacher, temp), (q, k))


def test_stabilized_distillation_with_offset_and_mask_matches_naive():
    q, k, teacher = embeddings(7, n_queries=2, n_groups=4)
    mask = in_batch_false_negatives(
        [{"k0", "k13"}, {"k2"}], [f"k{i}" for i in range(16)], group_size=G, query_offset=1
    )
    assert mask.sum() == 3
    kwargs = {"query_offset": 1, "temperature": 1.0}
    loss = stabilized_distillation_loss(q, k, teacher, false_negatives=mask, **kwargs)
    assert_same(loss, naive_stabilized(q, k, teacher, 1.0, offset=1, mask=mask), (q, k))
    assert stabilized_distillation_loss(q, k, teacher, **kwargs).item() > loss.item() + 0.01


def test_stabilized_distillation_with_one_hot_weights_is_contrastive():
    q, k, _ = embeddings(8)
    best = [2, 0, 3]  # the dominant key of each query, anywhere in its group
    teacher = torch.zeros(B, G, dtype=torch.float64)
    teacher[range(B), best] = 1000.0
    stabilized = stabilized_distillation_loss(q, k, teacher)
    # The same keys with each dominant key moved to the front of its group.
    order = [j * G + i for j in range(B) for i in [best[j]] + [x for x in range(G) if x != best[j]]]
    contrastive = contrastive_loss(q, k[order], group_size=G)
    assert_same(stabilized, contrastive, (q, k))


def test_stabilized_distillation_refuses_to_mask_own_keys():
    q, k, teacher = embeddings(9)
    mask = torch.zeros(B, B * G, dtype=torch.bool)
    mask[0, 3] = True
    with pytest.raises(ValueError, match="own group"):
        stabilized_distillation_loss(q, k, teacher, false_negatives=mask)


# Per-task settings -------------------------------------------------------------------------------


def test_task_loss_table_follows_the_paper():
    rows = {
        task: (c.positive, c.contrastive, c.distillation, c.teacher_temperature, c.weights)
        for task, c in TASK_LOSS.items()
    }
    assert rows == {
        "qa": ("first", False, "stabilized", 1.0, (0.0, 1.0)),
        "convsearch": ("first", True, None, 1.0, (1.0, 0.0)),
        "chat": ("teacher", False, "kl", 0.1, (0.0, 1.0)),
        "lrlm": ("teacher", False, "kl", 0.1, (0.0, 1.0)),
        "icl": ("random", False, "stabilized", 1.0, (0.0, 1.0)),
        "tool": ("first", True, None, 1.0, (1.0, 0.0)),
    }
    assert (TASK_LOSS["lrlm"].max_samples, TASK_LOSS["lrlm"].min_teacher_spread) == (10_000, 0.1)
    assert {c.temperature for c in TASK_LOSS.values()} == {0.01}
    both = TaskLossConfig("first", contrastive=True, distillation="stabilized")
    assert both.weights == (0.2, 1.0)


def test_task_loss_table_is_frozen():
    table: Any = TASK_LOSS
    with pytest.raises(TypeError):
        table["qa"] = TASK_LOSS["tool"]
    config: Any = TASK_LOSS["qa"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.contrastive = True


def test_task_loss_config_rejects_bad_values():
    with pytest.raises(ValueError, match="at least one term"):
        TaskLossConfig("first", contrastive=False, distillation=None)
    with pytest.raises(ValueError, match="`teacher_temperature` must be > 0, got 0"):
        TaskLossConfig("first", contrastive=True, distillation="kl", teacher_temperature=0)
    best: Any = "best"
    with pytest.raises(ValueError, match="`positive` must be"):
        TaskLossConfig(best, contrastive=True, distillation=None)


# Modules over the real model ---------------------------------------------------------------------


QUERIES = ["where is the eiffel tower?", "who wrote hamlet?"]
KEYS = [
    ["The Eiffel Tower is in Paris.", "Bananas are yellow.", "Rome is in Italy."],
    ["Hamlet was written by Shakespeare.", "Cats sleep a lot.", "Goethe wrote Faust."],
]


@pytest.fixture(scope="module")
def columns(encoder):
    st = encoder._st
    texts = [QUERIES] + [[group[i] for group in KEYS] for i in range(3)]
    features = [st.tokenize(col) for col in texts]
    with torch.no_grad():
        emb = [st(dict(f))["sentence_embedding"] for f in features]
    return st, features, emb


TEACHER = torch.tensor([[-1.0, -3.0, -2.0], [-0.5, -2.5, -0.7]])


def test_module_forward_embeds_the_columns_with_the_model(columns):
    st, features, emb = columns
    q = F.normalize(emb[0], dim=-1)
    k = F.normalize(torch.stack(emb[1:], dim=1).reshape(-1, emb[0].shape[1]), dim=-1)
    with torch.no_grad():
        got = LLMEmbedderLoss(st, "qa")([dict(f) for f in features], TEACHER)
    expected = stabilized_distillation_loss(q, k, TEACHER)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() > 0


def test_modules_call_the_pure_losses(columns):
    st, _, emb = columns
    q = F.normalize(emb[0], dim=-1)
    k = F.normalize(torch.stack(emb[1:], dim=1).reshape(-1, emb[0].shape[1]), dim=-1)
    contrastive = contrastive_loss(q, k, group_size=3)
    kl = kl_distillation_loss(q, k, TEACHER, teacher_temperature=0.1)
    stabilized = stabilized_distillation_loss(q, k, TEACHER)
    cases = [
        (ContrastiveLoss(st), contrastive),
        (KLDistillationLoss(st, teacher_temperature=0.1), kl),
        (StabilizedDistillationLoss(st), stabilized),
        (LLMEmbedderLoss(st, "tool"), contrastive),
        (LLMEmbedderLoss(st, "convsearch"), contrastive),
        (LLMEmbedderLoss(st, "chat"), kl),
        (LLMEmbedderLoss(st, "lrlm"), kl),
        (LLMEmbedderLoss(st, "qa"), stabilized),
        (LLMEmbedderLoss(st, "icl"), stabilized),
    ]
    for module, expected in cases:
        got = module.compute_loss_from_embeddings(emb, TEACHER)
        assert got.item() == pytest.approx(expected.item(), rel=1e-6), module.get_config_dict()
    assert len({round(x.item(), 4) for x in (contrastive, kl, stabilized)}) == 3


def test_combined_terms_use_the_weights(columns):
    st, features, emb = columns
    config = TaskLossConfig("first", contrastive=True, distillation="stabilized")
    both = LLMEmbedderLoss(st, config).compute_loss_from_embeddings(emb, TEACHER)
    c = ContrastiveLoss(st).compute_loss_from_embeddings(emb)
    s = StabilizedDistillationLoss(st).compute_loss_from_embeddings(emb, TEACHER)
    assert both.item() == pytest.approx(0.2 * c.item() + 1.0 * s.item(), rel=1e-6)


def test_distillation_without_teacher_scores_says_how_to_get_them(columns):
    st, features, emb = columns
    with pytest.raises(ValueError, match="llm-embedder score"):
        LLMEmbedderLoss(st, "qa").compute_loss_from_embeddings(emb)
    with pytest.raises(ValueError, match="no loss settings for task 'poetry'"):
        LLMEmbedderLoss(st, "poetry")


# Multi-task loss ----------------------------------------------------------------------------------


def random_columns(n: int, group: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 16, generator=g) for _ in range(group + 1)]


def test_multitask_loss_on_one_task_equals_llm_embedder_loss():
    columns = random_columns(4, 3)
    labels = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    relevant = [{"k0"}, {"k3", "k0"}, {"k6"}, {"k9"}]
    ids = [f"k{i}" for i in range(12)]
    mask = in_batch_false_negatives(relevant, ids, group_size=3)
    ours = MultiTaskLoss(torch.nn.Identity(), {"qa": TASK_LOSS["qa"]})
    value = ours.compute_loss_from_embeddings(
        columns,
        labels,
        tasks=["qa"] * 4,
        key_ids=[ids[i * 3 : i * 3 + 3] for i in range(4)],
        relevant_ids=[sorted(r) for r in relevant],
    )
    reference = LLMEmbedderLoss(torch.nn.Identity(), "qa").compute_loss_from_embeddings(
        columns, labels, mask
    )
    assert mask.any()
    torch.testing.assert_close(value, reference)


def test_mixed_batch_loss_is_the_query_weighted_mean_over_task_blocks():
    columns = random_columns(5, 2, seed=3)
    labels = torch.randn(5, 2, generator=torch.Generator().manual_seed(4))
    loss = MultiTaskLoss(torch.nn.Identity(), {"qa": TASK_LOSS["qa"], "tool": TASK_LOSS["tool"]})
    value = loss.compute_loss_from_embeddings(columns, labels, tasks=["qa"] * 2 + ["tool"] * 3)
    query = torch.nn.functional.normalize(columns[0], dim=-1)
    keys = torch.nn.functional.normalize(torch.stack(columns[1:], dim=1), dim=-1).reshape(10, -1)
    # Every key of the batch is an in-batch negative of both blocks; offsets place the targets.
    qa = stabilized_distillation_loss(query[:2], keys, labels[:2], query_offset=0)
    tool = contrastive_loss(query[2:], keys, group_size=2, query_offset=2)
    torch.testing.assert_close(value, (2 * qa + 3 * tool) / 5)


def test_unscored_queries_of_a_distilled_task_train_with_its_contrastive_term():
    columns = random_columns(5, 2, seed=7)
    labels = torch.randn(5, 2, generator=torch.Generator().manual_seed(8))
    labels[3:] = float("nan")  # the teacher scored the first three queries only
    loss = MultiTaskLoss(torch.nn.Identity(), {"chat": TASK_LOSS["chat"]})
    value = loss.compute_loss_from_embeddings(columns, labels, tasks=["chat"] * 5)
    query = torch.nn.functional.normalize(columns[0], dim=-1)
    keys = torch.nn.functional.normalize(torch.stack(columns[1:], dim=1), dim=-1).reshape(10, -1)
    kl = kl_distillation_loss(query[:3], keys[:6], labels[:3], teacher_temperature=0.1)
    contrastive = contrastive_loss(query[3:], keys, group_size=2, query_offset=3)
    torch.testing.assert_close(value, (3 * kl + 2 * contrastive) / 5)
    assert torch.isfinite(value)
    every = labels.clone()
    every[:] = float("nan")
    alone = loss.compute_loss_from_embeddings(columns, every, tasks=["chat"] * 5)
    torch.testing.assert_close(alone, contrastive_loss(query, keys, group_size=2))
    shuffled = labels[[3, 0, 1, 2, 4]]
    with pytest.raises(ValueError, match="must follow its scored ones.*TaskDataCollator"):
        loss.compute_loss_from_embeddings(columns, shuffled, tasks=["chat"] * 5)


def test_contrastive_fallback_keeps_everything_but_the_distillation_term():
    fallback = contrastive_fallback(TASK_LOSS["lrlm"])
    assert (fallback.contrastive, fallback.distillation) == (True, None)
    assert fallback.min_teacher_spread == TASK_LOSS["lrlm"].min_teacher_spread
    assert contrastive_fallback(TASK_LOSS["tool"]) is TASK_LOSS["tool"]


def test_multitask_loss_with_one_task_needs_no_task_column():
    columns = random_columns(4, 3, seed=5)
    labels = torch.randn(4, 3, generator=torch.Generator().manual_seed(6))
    one = MultiTaskLoss(torch.nn.Identity(), {"icl": TASK_LOSS["icl"]})
    torch.testing.assert_close(
        one.compute_loss_from_embeddings(columns, labels),
        one.compute_loss_from_embeddings(columns, labels, tasks=["icl"] * 4),
    )
    two = MultiTaskLoss(torch.nn.Identity(), {"qa": TASK_LOSS["qa"], "tool": TASK_LOSS["tool"]})
    with pytest.raises(ValueError, match="`tasks` must give the task of each query.*qa, tool"):
        two.compute_loss_from_embeddings(columns, labels)
    with pytest.raises(ValueError, match="3 tasks given for 4 queries"):
        two.compute_loss_from_embeddings(columns, labels, tasks=["qa"] * 3)


# Distributed: 2 processes, gloo, CPU -------------------------------------------------------------


def _worker(rank: int, world: int, init_file: str, out_dir: str, body: Any) -> None:
    """Run ``body(rank, world)`` in a gloo process group; save each loss's mean over the
    processes and the gradients of this process's inputs."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        for name, (loss, inputs) in body(rank, world).items():
            grads = torch.autograd.grad(loss, inputs)
            total = loss.detach().clone()
            dist.all_reduce(total)
            results[name] = (total / world, grads)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def on_processes(body: Any, world: int, tmp_path) -> list[dict[str, Any]]:
    """The results of `_worker` on ``world`` processes, by rank."""
    import torch.multiprocessing as mp

    args = (world, str(tmp_path / "init"), str(tmp_path), body)
    mp.spawn(_worker, args=args, nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(world)]


def _pure_losses(rank: int, world: int) -> dict[str, Any]:
    q_all, k_all, teacher_all = embeddings(10, n_queries=2 * world, group=G)
    n = q_all.shape[0] // world
    q = q_all.detach()[rank * n : (rank + 1) * n].clone().requires_grad_()
    k = k_all.detach()[rank * n * G : (rank + 1) * n * G].clone().requires_grad_()
    teacher = teacher_all[rank * n : (rank + 1) * n]
    contrastive = contrastive_loss(q, gather_with_grad(k), group_size=G, query_offset=rank * n)
    stabilized = stabilized_distillation_loss(
        q, gather_with_grad(k), teacher, query_offset=rank * n
    )
    return {"contrastive": (contrastive, (q, k)), "stabilized": (stabilized, (q, k))}


def test_gathered_keys_give_the_loss_and_gradients_of_one_big_batch(tmp_path):
    world = 2
    results = on_processes(_pure_losses, world, tmp_path)
    q, k, teacher = embeddings(10, n_queries=2 * world, group=G)
    n = q.shape[0] // world
    full = {
        "contrastive": contrastive_loss(q, k, group_size=G),
        "stabilized": stabilized_distillation_loss(q, k, teacher),
    }
    grads = {name: torch.autograd.grad(loss, (q, k)) for name, loss in full.items()}
    for rank in range(world):
        for name, loss in full.items():
            mean_loss, (gq, gk) = results[rank][name]
            assert mean_loss.item() == pytest.approx(loss.item(), rel=1e-12)
            # Each process averages its own queries; the gathered keys sum the gradients of all
            # processes: world x the gradient of the mean over the whole batch.
            fq, fk = grads[name]
            torch.testing.assert_close(gq, world * fq[rank * n : (rank + 1) * n])
            torch.testing.assert_close(gk, world * fk[rank * n * G : (rank + 1) * n * G])


def test_gather_is_the_identity_without_distributed():
    t = torch.ones(2, 3)
    assert gather_with_grad(t) is t


def _multitask_batch(world: int):
    """Columns of ``2 * world`` queries with 3 keys each; some relevant keys sit in another
    process's groups, so the false-negative mask crosses processes."""
    gen = torch.Generator().manual_seed(11)
    n, group = 2 * world, 3
    columns = [torch.randn(n, D, generator=gen, dtype=torch.float64) for _ in range(group + 1)]
    labels = torch.randn(n, group, generator=gen, dtype=torch.float64)
    key_ids = [[f"d{j * group + i}" for i in range(group)] for j in range(n)]
    key_ids[2][1] = "d0"  # query 2 (process 1) holds a copy of query 0's positive
    relevant = [["d0"], ["d3"], ["d6"], ["d9", "d1"]]  # query 3 also finds query 0's d1
    return columns, labels, key_ids, relevant


def _multitask_losses(rank: int, world: int) -> dict[str, Any]:
    columns, labels, key_ids, relevant = _multitask_batch(world)
    rows = slice(2 * rank, 2 * rank + 2)
    out = {}
    for task in ("qa", "tool", "chat"):
        local = [c[rows].clone().requires_grad_() for c in columns]
        loss = MultiTaskLoss(torch.nn.Identity(), {task: TASK_LOSS[task]})
        value = loss.compute_loss_from_embeddings(
            local,
            labels[rows],
            tasks=[task] * 2,
            key_ids=key_ids[rows],
            relevant_ids=relevant[rows],
        )
        out[task] = (value, local)
    return out


def test_multitask_loss_across_processes_equals_one_process_with_the_whole_batch(tmp_path):
    """Keys, their ids and the false-negative mask are gathered; KL distillation gathers none."""
    world = 2
    results = on_processes(_multitask_losses, world, tmp_path)
    columns, labels, key_ids, relevant = _multitask_batch(world)
    for task in ("qa", "tool", "chat"):
        whole = [c.clone().requires_grad_() for c in columns]
        loss = MultiTaskLoss(torch.nn.Identity(), {task: TASK_LOSS[task]})
        value = loss.compute_loss_from_embeddings(
            whole, labels, tasks=[task] * 4, key_ids=key_ids, relevant_ids=relevant
        )
        unmasked = loss.compute_loss_from_embeddings(whole, labels, tasks=[task] * 4)
        if task == "chat":  # KL distillation reads each query's own keys: no mask
            assert value.item() == unmasked.item()
        else:
            assert abs(value.item() - unmasked.item()) > 1e-3  # the mask matters here
        full = torch.autograd.grad(value, whole)
        for rank in range(world):
            mean_loss, grads = results[rank][task]
            assert mean_loss.item() == pytest.approx(value.item(), rel=1e-12)
            # As for the pure losses: each process's gradient is world x that of the whole mean.
            for got, reference in zip(grads, full, strict=True):
                torch.testing.assert_close(got, world * reference[2 * rank : 2 * rank + 2])
