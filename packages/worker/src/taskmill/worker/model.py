"""The worker's domain types: what it is asked to run, and what it reports back.

They are ``NamedTuple``s rather than the frozen dataclasses used elsewhere: every task makes an
assignment, an outcome and two reports on the worker's hot path, and a frozen dataclass sets
each field through ``object.__setattr__``, which makes it two to three times dearer to build.
A ``NamedTuple`` is as immutable and reads its fields as fast.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from taskmill.common.models import TaskError


class ReportStatus(StrEnum):
    """The state of an attempt, as a worker reports it."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: The task is given back unstarted (the worker is draining); its attempt does not count.
    REJECTED = "rejected"


class Assignment(NamedTuple):
    """One attempt of one task, handed to this worker.

    Attributes:
        task_id: The task's UUID in text form.
        command: The handler's name.
        payload_json: The payload as JSON text.
        attempt: The 1-based attempt number.
        max_attempts: How many attempts the task may have in all.
        timeout_seconds: The task's timeout, or ``None`` for the handler's default.
        queue: The task's queue.
        traceparent: The W3C trace context of the dispatch.
    """

    task_id: str
    command: str
    payload_json: str = "null"
    attempt: int = 1
    max_attempts: int = 1
    timeout_seconds: float | None = None
    queue: str = "default"
    traceparent: str = ""


class Outcome(NamedTuple):
    """How an attempt ended."""

    status: ReportStatus
    result_json: str = ""
    error: TaskError | None = None

    @classmethod
    def succeeded(cls, result_json: str) -> Outcome:
        """The handler returned ``result_json``."""
        return cls(ReportStatus.SUCCEEDED, result_json=result_json)

    @classmethod
    def failed(cls, type_: str, message: str, traceback: str = "") -> Outcome:
        """The attempt failed."""
        return cls(ReportStatus.FAILED, error=TaskError(type_, message, traceback))

    @classmethod
    def cancelled(cls) -> Outcome:
        """The attempt stopped after a cancellation request."""
        return cls(ReportStatus.CANCELLED)

    @classmethod
    def rejected(cls) -> Outcome:
        """The task is given back before it started."""
        return cls(ReportStatus.REJECTED)


class Report(NamedTuple):
    """One state change of one attempt, waiting to be sent to the coordinator.

    Attributes:
        task_id: The task.
        attempt: The attempt from the assignment.
        status: The new state.
        result_json: The result as JSON text, for ``SUCCEEDED``.
        error: The failure, for ``FAILED``.
        occurred_at: When it happened, in seconds since the epoch.
        traceparent: The W3C trace context to report under.
    """

    task_id: str
    attempt: int
    status: ReportStatus
    occurred_at: float
    result_json: str = ""
    error: TaskError | None = None
    traceparent: str = ""
