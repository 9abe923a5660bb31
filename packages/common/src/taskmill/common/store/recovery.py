"""Recovering the tasks of lost workers and of expired leases."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from taskmill.common.db import Connection, Database
from taskmill.common.models import Backoff, TaskError, TaskStatus
from taskmill.common.store.literals import int_array

#: The error a task keeps when the worker running it was lost.
WORKER_LOST = TaskError("worker_lost", "the worker running the task stopped responding")


class RecoveryStore:
    """Takes back what lost workers held, for any coordinator to hand out again.

    Args:
        db: The database.
        backoff: The delays between a lost attempt and its retry.
    """

    def __init__(self, db: Database, backoff: Backoff | None = None) -> None:
        self._db = db
        self._backoff = backoff or Backoff()

    def reap_and_recover(self, dead_after: float) -> tuple[list[str], dict[uuid.UUID, TaskStatus]]:
        """Removes the workers silent for ``dead_after`` seconds and recovers their tasks and
        those whose lease expired, in one transaction; returns the removed workers' ids and each
        recovered task's new status.

        One transaction, so that a worker told it is unknown (its row is gone) knows that none
        of its tasks is its own any more: when it registers again, every task it held is stale.
        """
        with self._db.transaction() as conn:
            rows = conn.run("reap_dead_workers", dead_after=dead_after)
            dead = [row[0] for row in rows]
            started = [token for row in rows for token in row[1]]
            return dead, self._recover(conn, dead, started, expired_leases=True)

    def retire(self, worker_id: str) -> dict[uuid.UUID, TaskStatus]:
        """Removes a worker that is stopping and recovers the tasks it still held, in one
        transaction (as :meth:`reap_and_recover`, without the expired leases: those are the
        liveness check's, which holds them back during a grace after an outage)."""
        with self._db.transaction() as conn:
            rows = conn.run("retire_worker", id=worker_id)
            started = [token for row in rows for token in row[1]]
            return self._recover(conn, [worker_id], started, expired_leases=False)

    def _recover(
        self,
        conn: Connection,
        dead_worker_ids: Sequence[str],
        started: Sequence[int],
        *,
        expired_leases: bool,
    ) -> dict[uuid.UUID, TaskStatus]:
        started_array = int_array(started)
        unstarted = conn.run(
            "requeue_lost_unstarted",
            worker_ids=list(dead_worker_ids),
            expired_leases=expired_leases,
            started=started_array,
        )
        running = conn.run(
            "fail_lost_running",
            worker_ids=list(dead_worker_ids),
            expired_leases=expired_leases,
            started=started_array,
            error=json.dumps(WORKER_LOST.to_json()),
            backoff_base=self._backoff.base,
            backoff_max=self._backoff.maximum,
        )
        recovered = {row[0]: TaskStatus(row[1]) for row in [*unstarted, *running]}
        rescheduled = sum(status is TaskStatus.SCHEDULED for status in recovered.values())
        if rescheduled:
            conn.run("notify_submitted", count=rescheduled)
        return recovered
