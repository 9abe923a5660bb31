"""Array literals for the stores' queries: uuids and integers need no quoting, and pg8000 would
escape a list of strings character by character, in Python."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def int_array(values: Iterable[int]) -> str:
    """A ``bigint[]`` literal."""
    return "{" + ",".join(map(str, values)) + "}"


def held_arrays(held: Sequence[tuple[str, int]]) -> tuple[str, str]:
    """The task ids and tokens of held tasks as two array literals, in the same order."""
    ids = "{" + ",".join([task_id for task_id, _ in held]) + "}"
    return ids, int_array([token for _, token in held])
