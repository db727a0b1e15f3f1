"""Argument checks shared by the package, with one wording for each kind of error.

Counts and sizes (``k``, ``chunk_tokens``, ``max_queries``...) must be real ints: ``True`` and
``2.0`` are rejected rather than read as 1 and 2. Each error quotes the value received.
"""

from __future__ import annotations

import math
from typing import overload

__all__ = [
    "check_int_at_least_zero",
    "check_k",
    "check_number",
    "check_positive_int",
    "check_text",
]


@overload
def check_positive_int(value: object, name: str) -> int: ...
@overload
def check_positive_int(value: object, name: str, *, allow_none: bool) -> int | None: ...
def check_positive_int(value: object, name: str, *, allow_none: bool = False) -> int | None:
    """Return ``value`` if it is an int >= 1 (or None, when ``allow_none``).

    Raises:
        ValueError: ``"`{name}` must be a positive int, got {value!r}"`` (``"... positive int
            or None"`` when None is allowed).
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive int{' or None' if allow_none else ''}, got {value!r}"
        )
    return value


def check_k(k: object) -> int:
    """Return the number of results ``k`` if it is a positive int (see `check_positive_int`)."""
    return check_positive_int(k, "k")


def check_int_at_least_zero(value: object, name: str, *, allow_none: bool = False) -> int | None:
    """Return ``value`` if it is an int >= 0 (or None, when ``allow_none``).

    Raises:
        ValueError: ``"`{name}` must be an int >= 0, got {value!r}"`` (``"... >= 0 or None"``
            when None is allowed).
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"`{name}` must be an int >= 0{' or None' if allow_none else ''}, got {value!r}"
        )
    return value


def check_number(
    value: object,
    name: str,
    *,
    low: float,
    strict: bool = False,
    high: float | None = None,
    allow_none: bool = False,
) -> float | None:
    """Return ``value`` if it is a finite number within the bounds (or None, when ``allow_none``).

    The bounds: ``>= low`` (``> low`` when ``strict``), and ``<= high`` when ``high`` is given.

    Raises:
        ValueError: ``"`{name}` must be a number > 0, got {value!r}"``, the bounds as asked
            (``"... >= 0 and <= 1"``, ``"... >= 0 or None"``).
    """
    if value is None and allow_none:
        return None
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if strict else value >= low)
        and (high is None or value <= high)
    ):
        return value
    bound = f"> {low}" if strict else f">= {low}"
    bound += "" if high is None else f" and <= {high}"
    bound += " or None" if allow_none else ""
    raise ValueError(f"`{name}` must be a number {bound}, got {value!r}")


def check_text(text: object, name: str = "text") -> str:
    """Return ``text`` if it is a string with some non-white-space content.

    Raises:
        TypeError: ``text`` is bytes (decode it) or not a string.
        ValueError: ``text`` is empty or only white space.
    """
    if isinstance(text, bytes):
        raise TypeError(f"`{name}` is bytes; decode it first (e.g. text.decode('utf-8'))")
    if not isinstance(text, str):
        raise TypeError(f"`{name}` must be a string, got {type(text).__name__}: {text!r}")
    if not text.strip():
        raise ValueError(f"`{name}` is empty or only white space; give some text")
    return text
