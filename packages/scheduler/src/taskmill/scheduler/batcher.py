"""Group commit for submits: concurrent requests share one INSERT and one durable commit.

A durable commit waits for the disk (an fsync), and that wait, not CPU, bounds how many
single-task submits a second the database takes when each has its own commit. Here the first
request to arrive becomes the leader and inserts its tasks; requests arriving meanwhile queue
up, and when the leader's statement returns it hands leadership to the oldest of them, which
inserts everything queued by then in one statement. Under load every commit carries many
requests; alone, a request pays no delay. Each caller still gets its answer only after its
tasks are committed.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence

from taskmill.common.dberrors import QueryError
from taskmill.common.store import Decided, SubmitRow
from taskmill.scheduler.service import Submit

logger = logging.getLogger(__name__)


class _Waiting:
    """One caller's tasks and, once inserted, its outcome."""

    __slots__ = ("decided", "error", "lead", "ready", "tasks")

    def __init__(self, tasks: Sequence[SubmitRow]) -> None:
        self.tasks = tasks
        self.ready = threading.Event()
        self.lead = False
        self.decided: list[Decided | None] = []
        self.error: BaseException | None = None


class SubmitBatcher:
    """Wraps a submit function so that concurrent calls share statements.

    Args:
        submit: Inserts tasks in one statement and returns what the database decided for each
            (``SubmitStore.submit``).
        max_tasks: How many tasks one statement may carry (a larger single call still goes
            alone).
    """

    def __init__(self, submit: Submit, max_tasks: int = 1000) -> None:
        self._submit = submit
        self._max_tasks = max_tasks
        self._lock = threading.Lock()
        self._queue: deque[_Waiting] = deque()
        self._busy = False

    def __call__(self, tasks: Sequence[SubmitRow]) -> list[Decided | None]:
        """Inserts the tasks, possibly with other callers'; returns, for each task in order,
        what the database decided, or ``None`` when it was skipped."""
        me = _Waiting(tasks)
        with self._lock:
            self._queue.append(me)
            me.lead = not self._busy
            self._busy = True
        if not me.lead:
            me.ready.wait()
        if me.lead:
            self._lead()
        if me.error is not None:
            raise me.error
        return me.decided

    def _lead(self) -> None:
        group = self._take()
        try:
            self._insert(group)
        finally:
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.ready.set()
                else:
                    self._busy = False
            for waiting in group:
                waiting.lead = False
                waiting.ready.set()

    def _take(self) -> list[_Waiting]:
        with self._lock:
            group = [self._queue.popleft()]
            count = len(group[0].tasks)
            while self._queue and count + len(self._queue[0].tasks) <= self._max_tasks:
                count += len(self._queue[0].tasks)
                group.append(self._queue.popleft())
        return group

    def _insert(self, group: list[_Waiting]) -> None:
        try:
            decided = self._submit([task for waiting in group for task in waiting.tasks])
        except QueryError as exc:
            if len(group) == 1:
                group[0].error = exc
                return
            # One caller's tasks were refused: insert each caller's alone, so only it fails.
            logger.warning("a grouped insert failed (%s); inserting each request alone", exc)
            for waiting in group:
                self._insert([waiting])
            return
        except BaseException as exc:  # noqa: BLE001 - handed to every caller, who re-raises it
            for waiting in group:
                waiting.error = exc
            return
        # The answers come in the order of the tasks sent: each caller's are one slice.
        start = 0
        for waiting in group:
            end = start + len(waiting.tasks)
            waiting.decided = decided[start:end]
            start = end
