"""Array literals for the stores' queries: uuids and integers need no quoting, and pg8000 would
escape a list of strings character by character, in Python."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def int_array(values: Iterable[int]) -> str:
    """A ``bigint[]`` literal."""
    return "{" + ",".join(map(str, values)) + "}"


def text_array(values: Iterable[str]) -> str:
    """A ``text[]`` literal, every element quoted (names the caller did not check may hold
    commas, braces or quotes)."""
    quoted = (value.replace("\\", "\\\\").replace('"', '\\"') for value in values)
    return "{" + ",".join(f'"{value}"' for value in quoted) + "}"


def held_arrays(held: Sequence[tuple[str, int]]) -> tuple[str, str]:
    """The task ids and tokens of held tasks as two array literals, in the same order."""
    ids = "{" + ",".join([task_id for task_id, _ in held]) + "}"
    return ids, int_array([token for _, token in held])
