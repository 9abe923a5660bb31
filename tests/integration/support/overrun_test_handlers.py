"""A handler that outlives its timeout, for ``test_timeout_retry.py``:
``--handlers overrun_test_handlers``."""

from __future__ import annotations

import os
import time
from typing import Any

from taskmill.worker import TaskContext, task

#: The file ``test.overrun`` appends a line to when a run starts and when it ends:
#: ``<task id> <attempt> start|end <epoch seconds>``.
RUNS_FILE = "TASKMILL_TEST_OVERRUN_FILE"


def _note(context: TaskContext, event: str) -> None:
    line = f"{context.task_id} {context.attempt} {event} {time.time():.6f}\n".encode()
    descriptor = os.open(os.environ[RUNS_FILE], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)  # one short O_APPEND write: lines from workers never mix
    finally:
        os.close(descriptor)


@task("test.overrun")
def overrun(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Sleeps ``payload["seconds"]`` deaf to its cancellation flag, as a thread handler stuck in
    a call it cannot leave would; notes its start and its end."""
    _note(context, "start")
    time.sleep(payload["seconds"])
    _note(context, "end")
    return payload
