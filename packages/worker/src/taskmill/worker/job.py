"""A task the worker holds: where it is, its cancellation flag, and its span."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from opentelemetry.trace import Span

from taskmill.common.attempts import Assignment
from taskmill.worker.context import CancelEvent
from taskmill.worker.registry import Handler

logger = logging.getLogger(__name__)


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
    gated: bool = False  # whether it runs only once its start is recorded
    gate: threading.Event | None = None  # what a slot waiting for that waits on
    asked: bool = False  # whether its start was asked for
    deferred: bool = False  # whether the window held its ask back when it was queued
    recorded: bool = False
    started_at: float | None = None  # when its handler started, for a final report to carry


def unstarted(job: Job) -> bool:
    """Whether a held job has not begun: queued, or in a slot still waiting for its start."""
    return job.state is JobState.QUEUED or (
        job.state is JobState.RUNNING and job.gated and job.started_at is None
    )


def sort_out(
    held: Mapping[str, Job], assignments: Sequence[Assignment]
) -> tuple[list[Assignment], list[Job]]:
    """Of newly assigned tasks, those to hold, and the queued jobs they replace: a task held
    under an earlier claim that was given back and claimed again for this worker (its old copy
    is stale). A repeat of a claim already held, or of a task already running, is skipped."""
    fresh: dict[str, Assignment] = {}
    replaced: list[Job] = []
    for assignment in assignments:
        job = held.get(assignment.task_id)
        if job is not None and _supersedes(assignment, job):
            replaced.append(job)
        elif job is not None:
            logger.warning(
                "task %s attempt %d is already held (attempt %d); skipping the repeat",
                assignment.task_id,
                assignment.attempt,
                job.assignment.attempt,
            )
            continue
        fresh.setdefault(assignment.task_id, assignment)
    return list(fresh.values()), replaced


def _supersedes(assignment: Assignment, held: Job) -> bool:
    """Whether an assignment is a new claim of a task held queued under an earlier one."""
    token = held.assignment.token
    return held.state is JobState.QUEUED and bool(token) and assignment.token not in (0, token)
