"""Deterministic thinning of ordered items, shared by the evaluation caps and the trainer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def spread(items: Sequence[T], n: int) -> list[T]:
    """``n`` items evenly spread over ``items`` (first and last included), in order."""
    if len(items) <= n:
        return list(items)
    if n == 1:
        return [items[0]]
    return [items[j * (len(items) - 1) // (n - 1)] for j in range(n)]
