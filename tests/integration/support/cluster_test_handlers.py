"""Handlers the whole-cluster tests load into real workers: ``--handlers cluster_test_handlers``."""

from __future__ import annotations

import os
import time
from typing import Any, NoReturn

from taskmill.worker import TaskContext, task

#: The file each handler here appends a line to each time it runs:
#: ``<task id> <attempt> <start time, epoch seconds>``.
RUNS_FILE = "TASKMILL_TEST_RUNS_FILE"


def append_line(variable: str, line: str) -> None:
    """Appends ``line`` to the file the environment variable names."""
    descriptor = os.open(os.environ[variable], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line.encode())  # one short O_APPEND write: lines never mix
    finally:
        os.close(descriptor)


def _note_run(context: TaskContext) -> None:
    append_line(RUNS_FILE, f"{context.task_id} {context.attempt} {time.time():.6f}\n")


@task("test.record")
def record(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Notes that it ran, then sleeps for ``payload["seconds"]``, so runs can be counted."""
    _note_run(context)
    time.sleep(payload.get("seconds", 0))
    return payload


@task("test.record_and_fail")
def record_and_fail(payload: dict[str, Any], context: TaskContext) -> NoReturn:
    """Notes that it ran, then raises ``RuntimeError(payload["message"])``, so the attempts of a
    failing task can be timed."""
    _note_run(context)
    raise RuntimeError(payload["message"])
