"""A handler that outlives its timeout, for ``test_timeout_retry.py``:
``--handlers overrun_test_handlers``."""

from __future__ import annotations

import time
from typing import Any

from cluster_test_handlers import append_line

from taskmill.worker import TaskContext, task

#: The file ``test.overrun`` appends a line to when a run starts and when it ends:
#: ``<task id> <attempt> start|end <epoch seconds>``.
RUNS_FILE = "TASKMILL_TEST_OVERRUN_FILE"


def _note(context: TaskContext, event: str) -> None:
    append_line(RUNS_FILE, f"{context.task_id} {context.attempt} {event} {time.time():.6f}\n")


@task("test.overrun")
def overrun(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Sleeps ``payload["seconds"]`` deaf to its cancellation flag, as a thread handler stuck in
    a call it cannot leave would; notes its start and its end."""
    _note(context, "start")
    time.sleep(payload["seconds"])
    _note(context, "end")
    return payload
