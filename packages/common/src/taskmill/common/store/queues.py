"""Queues as the HTTP API shows and steers them, and why a due task still waits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from taskmill.common.db import Connection, Database
from taskmill.common.errors import TaskNotFound
from taskmill.common.models import Task


@dataclass(frozen=True)
class QueueStats:
    """One queue as it stands.

    Attributes:
        name: The queue's name.
        scheduled: Its tasks waiting to be claimed, due or not.
        due: Those of them whose time has come.
        running: Its tasks dispatched or running.
        oldest_due_age_seconds: How long its longest-waiting due task has been due, or
            ``None`` when none is due.
        workers: The active workers that serve it.
        paused: Whether claims leave its tasks alone.
        max_concurrency: The most of its tasks dispatched or running at once, cluster-wide, or
            ``None`` for no limit.
    """

    name: str
    scheduled: int
    due: int
    running: int
    oldest_due_age_seconds: float | None
    workers: int
    paused: bool
    max_concurrency: int | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> QueueStats:
        """Builds the queue from a row of ``list_queues`` or ``get_queue``."""
        return cls(
            name=row["name"],
            scheduled=int(row["scheduled"]),
            due=int(row["due"]),
            running=int(row["running"]),
            oldest_due_age_seconds=row["oldest_due_age_seconds"],
            workers=int(row["workers"]),
            paused=bool(row["paused"]),
            max_concurrency=row["max_concurrency"],
        )


class WaitingReason(StrEnum):
    """What holds a scheduled, due task back; each value is the one the API shows."""

    QUEUE_PAUSED = "queue_paused"
    QUEUE_AT_LIMIT = "queue_at_limit"
    NO_WORKER = "no_worker"
    WAITING_FOR_SLOT = "waiting_for_slot"


@dataclass(frozen=True)
class Waiting:
    """Why a scheduled, due task has not been claimed yet.

    Attributes:
        reason: The first reason that holds, in the order the claim applies them.
        message: The reason in words, naming the queue and what would let the task go.
    """

    reason: WaitingReason
    message: str

    @classmethod
    def of(cls, reason: WaitingReason, task: Task, limit: int | None) -> Waiting:
        """The reason with its message, for ``task`` (whose queue has ``limit``)."""
        queue, command = task.queue, task.command
        messages = {
            WaitingReason.QUEUE_PAUSED: f"queue {queue!r} is paused; resuming it lets its "
            "tasks be claimed again",
            WaitingReason.QUEUE_AT_LIMIT: f"queue {queue!r} has its max_concurrency of "
            f"{limit} tasks dispatched or running; the next to finish makes room",
            WaitingReason.NO_WORKER: f"no active worker serves queue {queue!r} with a handler "
            f"for {command!r}; the task runs once one joins",
            WaitingReason.WAITING_FOR_SLOT: f"workers serve queue {queue!r} with a handler for "
            f"{command!r}; the task runs when one has a free slot",
        }
        return cls(reason, messages[reason])


class QueueStore:
    """Lists queues with their counts, pauses and limits them, and says why a task waits."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def all(self) -> list[QueueStats]:
        """Every queue that has a row, an unfinished task or an active worker, by name."""
        with self._db.connection() as conn:
            return [QueueStats.from_row(row) for row in conn.rows("list_queues")]

    def get(self, name: str) -> QueueStats | None:
        """One queue, or ``None`` when it has no row, no unfinished task and no active
        worker."""
        with self._db.connection() as conn:
            return self._get(conn, name)

    def set_paused(self, name: str, paused: bool) -> QueueStats:
        """Pauses or resumes a queue (its tasks stay scheduled; those running finish), and
        returns it."""
        with self._db.connection() as conn:
            conn.run("set_queue_paused", name=name, paused=paused)
            return self._steered(conn, name)

    def set_limit(self, name: str, max_concurrency: int | None) -> QueueStats:
        """Sets the most of a queue's tasks dispatched or running at once, cluster-wide
        (``None`` removes the limit), and returns the queue."""
        with self._db.connection() as conn:
            conn.run("set_queue_limit", name=name, max_concurrency=max_concurrency)
            return self._steered(conn, name)

    def task_with_waiting(self, task_id: uuid.UUID | str) -> tuple[Task, Waiting | None]:
        """One task, and why it waits when it is scheduled and due (else ``None``).

        Raises:
            TaskNotFound: No task has this id.
        """
        with self._db.connection() as conn:
            row = conn.row("get_task_waiting", id=task_id)
        if row is None:
            raise TaskNotFound(f"no task has id {task_id}")
        task = Task.from_row(row)
        reason = row["waiting_reason"]
        if reason is None:
            return task, None
        return task, Waiting.of(WaitingReason(reason), task, row["waiting_limit"])

    @staticmethod
    def _get(conn: Connection, name: str) -> QueueStats | None:
        row = conn.row("get_queue", name=name)
        return None if row is None else QueueStats.from_row(row)

    @classmethod
    def _steered(cls, conn: Connection, name: str) -> QueueStats:
        queue = cls._get(conn, name)
        assert queue is not None  # its row was just written
        return queue
