"""Handlers the whole-cluster tests load into real workers: ``--handlers cluster_test_handlers``."""

from __future__ import annotations

import os
import time
from typing import Any

from taskmill.worker import TaskContext, task

#: The file ``test.record`` appends a line to each time it runs: ``<task id> <attempt>``.
RUNS_FILE = "TASKMILL_TEST_RUNS_FILE"


@task("test.record")
def record(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Notes that it ran, then sleeps for ``payload["seconds"]``, so runs can be counted."""
    line = f"{context.task_id} {context.attempt}\n".encode()
    descriptor = os.open(os.environ[RUNS_FILE], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)  # one short O_APPEND write: lines from workers never mix
    finally:
        os.close(descriptor)
    time.sleep(payload.get("seconds", 0))
    return payload
