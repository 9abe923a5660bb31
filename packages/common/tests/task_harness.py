"""What the task state machine tests share: the stores on a fresh database, with shortcuts to
put a task in each status, and what every row must look like in its status."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from taskmill.common.db import Database
from taskmill.common.models import FINAL_STATUSES, Backoff, TaskError, TaskStatus
from taskmill.testing import NewTask, Reported, Stores, claim

S = TaskStatus
Row = dict[str, Any]
#: Retries wait 15-30 s: long enough that "in the future" is unambiguous, and tests make a
#: retried task due by hand instead of waiting.
BACKOFF = Backoff(base=30.0, maximum=30.0)
LEASE = 60.0
WORKER = "w-1"
FAIL = TaskError("ValueError", "bad address")


@dataclass
class Harness:
    """The stores on a fresh database, with shortcuts to put tasks in each status."""

    db: Database
    store: Stores

    def row(self, task_id: uuid.UUID) -> Row:
        with self.db.connection() as conn:
            row = conn.row("get_task", id=task_id)
        assert row is not None
        return row

    def db_now(self) -> datetime:
        with self.db.connection() as conn:
            now: datetime = conn.execute("SELECT now()")[0][0]
        return now

    def submit(self, **fields: Any) -> uuid.UUID:
        with self.db.transaction() as conn:
            (task,) = self.store.insert(conn, [NewTask("send_email", {"to": "a@b.c"}, **fields)])
        return task.id

    def make_due(self, task_id: uuid.UUID) -> None:
        # Stands in for waiting out the retry backoff.
        with self.db.connection() as conn:
            conn.execute("UPDATE tasks SET scheduled_at = now() WHERE id = :id", id=task_id)

    def claim(self, worker: str = WORKER) -> uuid.UUID:
        (task,) = claim(self.store, [worker], LEASE)
        return task.id

    def report(
        self, task_id: uuid.UUID, status: TaskStatus, attempt: int = 1, **fields: Any
    ) -> set[uuid.UUID]:
        return self.store.apply([Reported(task_id, attempt, status, datetime.now(UTC), **fields)])

    def to(self, status: TaskStatus, *, max_attempts: int = 1) -> uuid.UUID:
        """A new task, brought to ``status`` by the ordinary path."""
        task_id = self.submit(max_attempts=max_attempts)
        if status is S.CANCELLED:
            self.store.tasks.cancel(task_id)
            return task_id
        if status is not S.SCHEDULED:
            assert self.claim() == task_id
        if status in (S.RUNNING, S.SUCCEEDED, S.FAILED):
            assert self.report(task_id, S.RUNNING) == {task_id}
        if status is S.SUCCEEDED:
            assert self.report(task_id, S.SUCCEEDED, result={"sent": True}) == {task_id}
        if status is S.FAILED:
            error = TaskError("ValueError", "bad address")
            assert self.report(task_id, S.FAILED, error=error, retryable=False) == {task_id}
        assert self.row(task_id)["status"] == status
        return task_id


def check_invariants(row: Row) -> None:
    """What every row in its status must look like, whichever way it got there."""
    status = TaskStatus(row["status"])
    in_flight = status in (S.DISPATCHED, S.RUNNING)
    assert (row["worker_id"] is not None) == in_flight or status in FINAL_STATUSES
    assert (row["lease_expires_at"] is not None) == in_flight
    assert (row["finished_at"] is not None) == status.is_final
    assert row["attempt"] >= (1 if in_flight else 0)
    if status is S.RUNNING:
        assert row["started_at"] is not None
    if status is S.SUCCEEDED:
        assert row["result"] is not None
    if status is S.FAILED:
        assert row["error"] is not None
