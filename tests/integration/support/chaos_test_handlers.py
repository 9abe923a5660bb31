"""Handlers the chaos test loads into real workers: ``--handlers chaos_test_handlers``."""

from __future__ import annotations

import time
from typing import Any

from cluster_test_handlers import _note_run

from taskmill.worker import TaskContext, task


@task("chaos.run")
def run(payload: dict[str, Any], context: TaskContext) -> None:
    """Notes that it ran, then sleeps for ``payload["seconds"]``: the test counts each task's
    executions from the notes, whatever the cluster itself recorded."""
    _note_run(context)
    time.sleep(payload["seconds"])
