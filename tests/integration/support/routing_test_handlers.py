"""Handlers for ``test_routing.py``: ``--handlers routing_test_handlers``.

Which commands a worker has is its own: the module registers one handler, ``note``, under each
command named in ``TASKMILL_TEST_ROUTING_COMMANDS`` (comma-separated), so each pool of workers
can be started with a handler set of its own from this one module (the builtins ``echo``,
``sleep`` and ``fail`` every worker has anyway).

``note`` appends a line to the file ``TASKMILL_TEST_ROUTING_FILE`` names as it enters and
another as it leaves, ``<enter|exit> <task id> <command> <worker>``, where ``<worker>`` is the
worker process's name from ``TASKMILL_TEST_ROUTING_WORKER``. The lines are short ``O_APPEND``
writes, so the file's order is the order the handlers got there in, whichever process wrote
them: how many ran at once, and which ran before which, is read from the order of the lines,
with no clock.
"""

from __future__ import annotations

import os
import time
from typing import Any

from cluster_test_handlers import append_line

from taskmill.worker import TaskContext, task

COMMANDS = "TASKMILL_TEST_ROUTING_COMMANDS"
WORKER = "TASKMILL_TEST_ROUTING_WORKER"
FILE = "TASKMILL_TEST_ROUTING_FILE"


def note(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Notes its entry, sleeps ``payload["seconds"]`` (default 0), notes its exit; returns the
    worker's name, so the task's result says where it ran too."""
    worker = os.environ.get(WORKER, "?")
    append_line(FILE, f"enter {context.task_id} {context.command} {worker}\n")
    seconds = float(payload.get("seconds", 0))
    if seconds:
        time.sleep(seconds)
    append_line(FILE, f"exit {context.task_id} {context.command} {worker}\n")
    return {"worker": worker}


for _command in filter(None, (c.strip() for c in os.environ.get(COMMANDS, "").split(","))):
    task(_command)(note)
