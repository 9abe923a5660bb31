"""A handler that outlives its timeout for as long as the test says, for the timeout tests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from taskmill.worker import TaskContext, task


@dataclass
class Hold:
    """What the test and one run of ``test.hold_past_timeout`` share.

    Attributes:
        release: Set by the test to let the handler return.
        flagged_at: When the handler saw its cancellation flag set (epoch seconds).
        returned_at: When it returned (epoch seconds), the last thing it does.
    """

    release: threading.Event = field(default_factory=threading.Event)
    flagged_at: float | None = None
    returned_at: float | None = None


#: By task id; the test puts a task's ``Hold`` here before assigning it.
HOLDS: dict[str, Hold] = {}


@task("test.hold_past_timeout")
def hold_past_timeout(payload: Any, context: TaskContext) -> str:
    """Keeps its slot after its cancellation flag is set (by a timeout or a cancel), deaf to it,
    until the test releases it."""
    hold = HOLDS[context.task_id]
    if context.cancelled.wait(30):
        hold.flagged_at = time.time()
    hold.release.wait(30)
    hold.returned_at = time.time()
    return "released late"
