"""The task model: statuses, the transitions between them, the task and worker records, and the
values the task store takes and returns (new tasks, outcomes, claims)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from json.encoder import encode_basestring as _string
from typing import Any, NamedTuple

#: One encoder for every call: ``json.dumps`` with options builds a new one each time.
_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class TaskStatus(StrEnum):
    """A task's status; each value is the string stored in the database."""

    SCHEDULED = "scheduled"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """Whether the task can never change again."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})

#: Every allowed transition, from status to the statuses it may move to. A dispatched task may
#: finish without a separate "running" report having been applied, because a worker batches its
#: reports and a short task's start and end travel together.
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.SCHEDULED: frozenset({TaskStatus.DISPATCHED, TaskStatus.CANCELLED}),
    TaskStatus.DISPATCHED: frozenset(
        {
            TaskStatus.SCHEDULED,
            TaskStatus.RUNNING,
            TaskStatus.SUCCEEDED,
            TaskStatus.FAILED,
            TaskStatus.CANCELLED,
        }
    ),
    TaskStatus.RUNNING: frozenset(
        {TaskStatus.SCHEDULED, TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED}
    ),
    TaskStatus.SUCCEEDED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}


def can_transition(current: TaskStatus, new: TaskStatus) -> bool:
    """Whether a task in ``current`` may move to ``new``."""
    return new in TRANSITIONS[current]


class WorkerState(StrEnum):
    """A worker's state in the fleet; each value is the string stored in the database."""

    ACTIVE = "active"
    DRAINING = "draining"
    DEAD = "dead"


@dataclass(frozen=True)
class TaskError:
    """Why an attempt failed.

    Attributes:
        type: The exception class name, or a reason such as ``timeout`` or ``worker_lost``.
        message: The human-readable message.
        traceback: The formatted traceback, truncated; empty when there is none.
    """

    type: str
    message: str
    traceback: str = ""

    def to_json(self) -> dict[str, str]:
        """The error as stored in the ``error`` column."""
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_json(cls, value: Any) -> TaskError | None:
        """Reads the ``error`` column; ``None`` stays ``None``."""
        if not isinstance(value, dict):
            return None
        return cls(
            str(value.get("type", "")),
            str(value.get("message", "")),
            str(value.get("traceback", "")),
        )


@dataclass(frozen=True)
class Task:
    """One task as stored in the ``tasks`` table."""

    id: uuid.UUID
    seq: int
    command: str
    payload: Any
    status: TaskStatus
    queue: str
    priority: int
    attempt: int
    max_attempts: int
    timeout_seconds: float | None
    created_at: datetime
    scheduled_at: datetime
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: str | None
    lease_expires_at: datetime | None
    cancel_requested_at: datetime | None
    result: Any
    error: TaskError | None
    idempotency_key: str | None
    trace_context: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Task:
        """Builds a task from a ``tasks`` row returned as a dict."""
        return cls(
            id=row["id"],
            seq=row["seq"],
            command=row["command"],
            payload=row["payload"],
            status=TaskStatus(row["status"]),
            queue=row["queue"],
            priority=row["priority"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            timeout_seconds=row["timeout_seconds"],
            created_at=row["created_at"],
            scheduled_at=row["scheduled_at"],
            dispatched_at=row["dispatched_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            worker_id=row["worker_id"],
            lease_expires_at=row["lease_expires_at"],
            cancel_requested_at=row["cancel_requested_at"],
            result=row["result"],
            error=TaskError.from_json(row["error"]),
            idempotency_key=row["idempotency_key"],
            trace_context=row["trace_context"],
        )


@dataclass(frozen=True)
class Worker:
    """One worker as stored in the ``workers`` table."""

    id: str
    address: str
    hostname: str
    version: str
    capacity: int
    free_slots: int
    handlers: tuple[str, ...]
    coordinator_id: str
    state: WorkerState
    registered_at: datetime
    last_heartbeat_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Worker:
        """Builds a worker from a ``workers`` row returned as a dict."""
        return cls(
            id=row["id"],
            address=row["address"],
            hostname=row["hostname"],
            version=row["version"],
            capacity=row["capacity"],
            free_slots=row["free_slots"],
            handlers=tuple(row["handlers"] or ()),
            coordinator_id=row["coordinator_id"],
            state=WorkerState(row["state"]),
            registered_at=row["registered_at"],
            last_heartbeat_at=row["last_heartbeat_at"],
        )


@dataclass(frozen=True)
class NewTask:
    """A task to insert.

    Attributes:
        command: The handler name.
        payload: Any JSON value.
        queue: The queue name.
        priority: Higher runs first.
        max_attempts: How many execution attempts the task may have.
        timeout_seconds: Bound on one attempt's run time, or ``None``.
        scheduled_at: When the task becomes due; ``None`` means ``delay_seconds`` from now.
        delay_seconds: Used when ``scheduled_at`` is ``None``; measured by the database clock.
        idempotency_key: Makes the submit safe to repeat.
        request_hash: Identifies the submitted body, to tell a retry from a reused key.
        trace_context: The W3C ``traceparent`` of the submitting span.
        id: The new task's id.
    """

    command: str
    payload: Any = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 1
    timeout_seconds: float | None = None
    scheduled_at: datetime | None = None
    delay_seconds: float = 0.0
    idempotency_key: str | None = None
    request_hash: str | None = None
    trace_context: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True)
class Outcome:
    """A worker's report of how one attempt ended (or that it started).

    Attributes:
        task_id: The task.
        attempt: The attempt the report is about.
        status: ``RUNNING``, ``SUCCEEDED``, ``FAILED`` or ``CANCELLED``.
        at: When it happened.
        result: The JSON result of a succeeded attempt.
        error: The error of a failed attempt.
        retryable: Whether a failed attempt may be retried when attempts remain.
        started_at: When a final attempt started, if its ``running`` report was folded into
            this one (the worker never sent it on its own).
    """

    task_id: uuid.UUID
    attempt: int
    status: TaskStatus
    at: datetime
    result: Any = None
    error: TaskError | None = None
    retryable: bool = True
    started_at: datetime | None = None


class ClaimedTask(NamedTuple):
    """What the coordinator needs of a claimed task to assign it (see ``TaskStore.claim_due``).

    A named tuple rather than a frozen dataclass: the claim builds one per dispatched task
    straight from the claim's row, and a frozen dataclass's ``__init__`` cost ~1 us more a task.
    The id and the payload stay the text the database sent: the assignment carries text, so
    parsing them only to print them again was the larger part of the coordinator's dispatch CPU.

    Attributes:
        id: The task's id, as the database writes a uuid (lowercase, with hyphens).
        worker_id: The worker whose slot it fills.
        command: The handler name.
        payload_json: The JSON payload, as compact JSON text.
        attempt: The attempt this dispatch starts (already counted).
        max_attempts: How many attempts the task may have.
        timeout_seconds: Bound on the attempt's run time, or ``None``.
        queue: The queue name.
        trace_context: The W3C ``traceparent`` stored with the task.
        scheduled_at: When the task became due, in seconds since the epoch.
        lease_expires_at: When the lease runs out, in seconds since the epoch.
    """

    id: str
    worker_id: str
    command: str
    payload_json: str
    attempt: int
    max_attempts: int
    timeout_seconds: float | None
    queue: str
    trace_context: str | None
    scheduled_at: float
    lease_expires_at: float


class Report(NamedTuple):
    """A worker's status report as the coordinator applies it (see ``TaskStore.apply_reports``).

    The lean form of an :class:`Outcome`: the id and the result stay text and the times epoch
    seconds, as they travel to the database, which checks and parses them anyway. A named tuple,
    as it is built once per report on the coordinator's hot path.

    Attributes:
        task_id: The task's id in its canonical form (lowercase, with hyphens).
        attempt: The attempt the report is about.
        status: ``RUNNING``, ``SUCCEEDED``, ``FAILED`` or ``CANCELLED``.
        at: When it happened, in seconds since the epoch.
        result_json: The JSON result of a succeeded attempt, as text; empty means ``null``.
        error: The error of a failed attempt.
        started_at: When a final attempt started, in seconds since the epoch, if its
            ``running`` report was folded into this one.
        retryable: Whether a failed attempt may be retried when attempts remain.
    """

    task_id: str
    attempt: int
    status: TaskStatus
    at: float
    result_json: str = ""
    error: TaskError | None = None
    started_at: float | None = None
    retryable: bool = True

    @classmethod
    def from_outcome(cls, outcome: Outcome) -> Report:
        """The report of an outcome."""
        # Read by value: a caller's status may be another enum of the same strings.
        status = TaskStatus(outcome.status)
        return cls(
            str(outcome.task_id),
            outcome.attempt,
            status,
            outcome.at.timestamp(),
            _json(outcome.result) if status is TaskStatus.SUCCEEDED else "",
            outcome.error,
            None if outcome.started_at is None else outcome.started_at.timestamp(),
            outcome.retryable,
        )

    def to_json_text(self) -> str:
        """The report as the report queries take it: one JSON object.

        Written with one format, where ``json.dumps`` of a dict cost the coordinator ~4 us a
        report. Strings go through the JSON encoder's escaping (the id too, so no text can add
        a field), and the result goes as a JSON string, which the query casts to jsonb.
        """
        task_id, attempt, status, at, result_json, error, started_at, retryable = self
        text = f'{{"id":{_string(task_id)},"attempt":{attempt:d},"at":{at!r}'
        if status is TaskStatus.RUNNING:
            return text + "}"
        if started_at is not None:
            text += f',"started_at":{started_at!r}'
        if status is TaskStatus.SUCCEEDED:
            return f'{text},"result":{_string(result_json)}}}' if result_json else text + "}"
        if status is TaskStatus.FAILED:
            error_json = _json((error or TaskError("error", "")).to_json())
            return f'{text},"error":{error_json},"retryable":{"true" if retryable else "false"}}}'
        return text + "}"


@dataclass(frozen=True)
class Applied:
    """What a batch of reports changed (see ``TaskStore.apply_reports``).

    Attributes:
        changed: The ids of the tasks that changed; the other reports were stale or duplicates.
        refused: The reports the database refused (a result that is not JSON, a time out of
            range), by task id, with the database's reason. The others were still applied.
    """

    changed: set[str]
    refused: dict[str, str]


@dataclass(frozen=True)
class Claim:
    """What a coordinator's claim took, and when it is worth claiming again.

    Attributes:
        tasks: The claimed tasks, in slot order.
        next_due_in: Seconds until the earliest task still scheduled is due, by the database
            clock: negative when one is due already (another coordinator holds it), ``None``
            when none is scheduled.
    """

    tasks: list[ClaimedTask]
    next_due_in: float | None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff between execution attempts: ``base * 2**(attempt-1)``, capped at
    ``maximum``, times a random factor in [0.5, 1]."""

    base: float = 1.0
    maximum: float = 300.0
