"""The executor's bookkeeping: the tasks a worker holds and the room they take.

Not thread-safe: every method expects the executor's lock held, as its callers settle, queue
and begin jobs in one hold of it (see ``executor.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from taskmill.common.attempts import Assignment, Outcome
from taskmill.worker.emitter import Emitter
from taskmill.worker.execution import UNKNOWN_COMMAND, WORKER_SHUTDOWN
from taskmill.worker.job import Job, JobState
from taskmill.worker.registry import Handler
from taskmill.worker.starts import StartRecords


class Holding:
    """The held tasks (queued, in a slot, or past their timeout with the report waiting) and
    the counts that make the worker's room.

    Args:
        handlers: The handlers by command name.
        capacity: How many tasks the worker can hold at once.
        starts: The starts recorded ahead (``starts.py``), told of each job held and settled.
        emitter: Reports each job's outcome as it is settled.
        changed: Notified on each settling while ``waiting`` is set.

    Attributes:
        jobs: The held tasks by id; a settled one is removed.
        queued: How many held tasks wait for a slot.
        busy: Slot threads inside a handler, including ones whose task timed out.
        draining: Set once the worker stops accepting: it has no room any more.
        waiting: Set once ``drain`` or ``stop`` may wait on ``changed``; never cleared, as a
            stopped executor runs nothing hot.
    """

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        capacity: int,
        starts: StartRecords,
        emitter: Emitter,
        changed: threading.Condition,
    ) -> None:
        self.handlers = dict(handlers)
        self.capacity = capacity
        self.jobs: dict[str, Job] = {}
        self.queued = 0
        self.busy = 0
        self.draining = False
        self.waiting = False
        self._starts = starts
        self._emitter = emitter
        self._changed = changed

    def free(self) -> int:
        """How many more tasks fit now (0 while draining)."""
        if self.draining:
            return 0
        return max(0, self.capacity - self.queued - self.busy)

    def running(self) -> list[Job]:
        """The jobs in a slot: running, or past their timeout with the report waiting."""
        return [job for job in self.jobs.values() if job.state is not JobState.QUEUED]

    def hold(self, assignment: Assignment) -> Job | None:
        """Holds a new task; returns its job for the queue, or ``None`` when it was settled."""
        job = Job(assignment, self.handlers.get(assignment.command))
        self.jobs[assignment.task_id] = job
        if job.handler is None:
            self._emitter.begin(job)
            message = f"no handler is registered for command {assignment.command!r}"
            self.settle(job, Outcome.failed(UNKNOWN_COMMAND, message))
            return None
        job.timeout = assignment.timeout_seconds or job.handler.timeout
        self.queued += 1
        self._starts.hold(job)
        return job

    def settle(self, job: Job, outcome: Outcome) -> None:
        """Reports a job's outcome and lets it go."""
        job.state = JobState.DONE
        self.jobs.pop(job.assignment.task_id, None)
        if job.asked:
            self._starts.settled(job)
            if job.gate is not None:
                job.gate.set()  # a slot waiting for its start's answer stops waiting
        self._emitter.settled(job, outcome)
        if self.waiting:
            self._changed.notify_all()

    def drop(self, job: Job, outcome: Outcome) -> None:
        """Settles a job wherever it is; one still queued gives its place back."""
        if job.state is JobState.QUEUED:
            self.queued -= 1
        self.settle(job, outcome)

    def abandon(self) -> None:
        """Lets every held job go unreported (the worker stops without draining): their flags
        set, the slots waiting for a start's answer woken, their spans ended."""
        message = "the worker stopped without draining"
        for job in self.jobs.values():
            job.cancel.set()
            job.state = JobState.DONE
            if job.gate is not None:
                job.gate.set()
            if job.span is not None:
                self._emitter.tracer.finish(job.span, Outcome.failed(WORKER_SHUTDOWN, message))
        self.jobs.clear()
