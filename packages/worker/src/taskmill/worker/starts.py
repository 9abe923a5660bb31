"""Starts recorded before they happen: how a task that may run at most once survives its
worker's crash without running twice.

A worker's ``running`` report usually travels with, or after, the task's end (it is folded
into the final report); a worker killed meanwhile leaves its task ``dispatched``, which
recovery gives to another worker, as it cannot tell a task that started from one still
queued. So a task with no retry left (its attempt is its last) runs only once the database has
recorded its start under its claim's token: when a slot takes it, the executor sends its
``running`` report at once (``Reporter.ask``) and the slot waits for the answer. A task whose
start is not recorded (its token is stale: given to another worker, recovered) is dropped
unrun. A task with a retry left starts at once, as before: a lost worker's task is retried
anyway.

The start is asked only when a slot takes the task, not ahead of it, so ``running`` still means
a slot is on it, and a worker killed fails only the tasks its slots held. The price is one
round trip to the database before each such start (the asks of all slots go in one batch),
and a row write of its own for its ``running`` report; the final report carries the time the
handler started, which replaces the time the start was recorded.

Not thread-safe: the executor calls it with its lock held.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection

from taskmill.common.attempts import Report, ReportStatus
from taskmill.worker.job import Job


class StartRecords:
    """Records the starts of the tasks that may run at most once before they run.

    Args:
        ask: Sends a ``running`` report whose answer comes back to :meth:`answer`; ``None``
            starts every task at once (nothing to record them with).
    """

    def __init__(self, ask: Callable[[Report], None] | None) -> None:
        self._ask = ask
        self._waiting: dict[int, Job] = {}  # asked, not answered, by token

    def hold(self, job: Job) -> None:
        """Takes a newly queued job: one that may run only once will wait for its start."""
        assignment = job.assignment
        if self._ask is None or not assignment.token:
            return  # no coordinator to record it with: a worker test, or one older than tokens
        if assignment.attempt < assignment.max_attempts:
            return  # a retry follows a lost worker anyway: no need to wait
        job.gate = threading.Event()

    def begin(self, job: Job) -> None:
        """A slot took the job: asks for its start to be recorded."""
        assert self._ask is not None
        assignment = job.assignment
        self._waiting[assignment.token] = job
        self._ask(
            Report(  # positional, as on every hot path
                assignment.task_id,
                assignment.attempt,
                ReportStatus.RUNNING,
                time.time(),
                "",
                None,
                job.traceparent or assignment.traceparent,  # the execute span's, as it exists
                None,
                True,
                assignment.token,
            )
        )

    def answer(self, recorded: Collection[int], stale: Collection[int]) -> list[Job]:
        """Opens the gates of the jobs whose start is recorded; returns the stale ones, for the
        executor to drop (their gates open when they are settled)."""
        for token in recorded:
            job = self._waiting.pop(token, None)
            if job is not None and job.gate is not None:
                job.recorded = True
                job.gate.set()
        return [job for token in stale if (job := self._waiting.pop(token, None)) is not None]
