"""Handlers whose output a report cannot carry or the database cannot store, for
``test_bad_output.py``: ``--handlers cluster_test_handlers,bad_output_cluster_handlers``. Each
notes its run as ``cluster_test_handlers`` does, so runs can be counted."""

from __future__ import annotations

import os
from typing import Any, NoReturn

from cluster_test_handlers import record

from taskmill.worker import TaskContext, task

#: A file name as ``os.fsdecode`` reads bytes that are not UTF-8: with a lone surrogate.
_NAME = os.fsdecode(b"report-\xff.txt")


@task("bad.nul")
def nul(payload: Any, context: TaskContext) -> str:
    """Returns what ``printf 'a\\0b'`` prints: PostgreSQL's jsonb cannot store it."""
    record({}, context)
    return "a\x00b"


@task("bad.lone_surrogate")
def lone_surrogate(payload: Any, context: TaskContext) -> str:
    """Returns a file name with a lone surrogate."""
    record({}, context)
    return _NAME


@task("bad.raise_lone_surrogate")
def raise_lone_surrogate(payload: Any, context: TaskContext) -> NoReturn:
    record({}, context)
    raise FileNotFoundError(f"no such file: {_NAME}")
