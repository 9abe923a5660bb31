"""A task the worker holds: where it is, its cancellation flag, and its span."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import Enum

from opentelemetry.trace import Span

from taskmill.common.attempts import Assignment
from taskmill.worker.context import CancelEvent
from taskmill.worker.registry import Handler


class JobState(Enum):
    """Where a held task is: waiting for a slot, in one (``OVERDUE`` once past its timeout with
    its report held back until its function returns), or settled."""

    QUEUED = "queued"
    RUNNING = "running"
    OVERDUE = "overdue"  # past its timeout; its report waits for the function to return
    DONE = "done"


@dataclass(eq=False, slots=True)
class Job:
    """A task the worker holds, its cancellation flag, and its ``execute`` span once it runs."""

    assignment: Assignment
    handler: Handler | None
    cancel: CancelEvent = field(default_factory=CancelEvent)
    state: JobState = JobState.QUEUED
    timeout: float | None = None
    span: Span | None = None
    traceparent: str = ""  # what its reports carry, once the span exists
    recording: bool = False  # whether its span records: only then are spans ended or made
    # A start recorded before it happens (``starts.py``): the gate opens on the answer, or when
    # the job is settled; ``recorded`` says whether it may run.
    gate: threading.Event | None = None
    recorded: bool = False
    started_at: float | None = None  # when its handler started, for a final report to carry
