"""The task model: statuses, the transitions between them, the task and worker records, and the
retry backoff."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple


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
    #: The fencing token of the task's latest claim (``None`` before its first).
    claim_token: int | None = None

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
            claim_token=row.get("claim_token"),
        )


#: The queue a task goes to when its submitter names none, and the one a worker serves unless
#: told otherwise.
DEFAULT_QUEUE = "default"


class ServedQueue(NamedTuple):
    """A queue a worker takes tasks from, and its weight in the worker's share of a claim: with
    weights ``a=3, b=1``, three tasks of ``a`` for each of ``b`` while both have tasks due."""

    name: str
    weight: int = 1


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
    concurrency: int | None = None  # its slots; the rest of capacity is queue (None: unknown)
    queues: tuple[ServedQueue, ...] = (ServedQueue(DEFAULT_QUEUE),)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Worker:
        """Builds a worker from a ``workers`` row returned as a dict."""
        return cls(
            id=row["id"],
            address=row["address"],
            hostname=row["hostname"],
            version=row["version"],
            capacity=row["capacity"],
            concurrency=row.get("concurrency"),
            free_slots=row["free_slots"],
            handlers=tuple(row["handlers"] or ()),
            coordinator_id=row["coordinator_id"],
            state=WorkerState(row["state"]),
            registered_at=row["registered_at"],
            last_heartbeat_at=row["last_heartbeat_at"],
            queues=tuple(
                ServedQueue(name, weight)
                for name, weight in zip(
                    row.get("queues") or (DEFAULT_QUEUE,),
                    row.get("queue_weights") or (1,),
                    strict=False,
                )
            ),
        )


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff between execution attempts: ``base * 2**(attempt-1)``, capped at
    ``maximum``, times a random factor in [0.5, 1]."""

    base: float = 1.0
    maximum: float = 300.0
