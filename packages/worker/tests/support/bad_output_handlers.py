"""Handlers whose output a report cannot carry or the database cannot store, for
``test_bad_output.py``. Imported by name, so process=True children can find them."""

from __future__ import annotations

import os
from typing import Any, NoReturn

from taskmill.worker import task

#: What ``os.fsdecode`` makes of a byte that is not UTF-8: a lone surrogate, ``"\udcff"``.
LONE_SURROGATE = os.fsdecode(b"\xff")


@task("bad.lone_surrogate")
def lone_surrogate(payload: Any) -> dict[str, str]:
    """Returns a file name as ``os.fsdecode`` reads it."""
    return {"name": "report" + LONE_SURROGATE + ".txt"}


@task("bad.lone_surrogate_in_process", process=True)
def lone_surrogate_in_process(payload: Any) -> list[str]:
    return [LONE_SURROGATE]


@task("bad.nul")
def nul(payload: Any) -> str:
    """Returns what ``printf 'a\\0b'`` prints."""
    return "a\x00b"


@task("bad.infinity")
def infinity(payload: Any) -> dict[str, float]:
    return {"ratio": float("inf")}


@task("bad.large")
def large(payload: dict[str, int]) -> str:
    """Returns ``payload["chars"]`` two-byte characters."""
    return "é" * payload["chars"]


class SurrogateError(Exception):
    """An exception whose message holds a lone surrogate."""


@task("bad.raise_lone_surrogate")
def raise_lone_surrogate(payload: Any) -> NoReturn:
    raise SurrogateError(f"cannot open {LONE_SURROGATE}.txt\x00")
