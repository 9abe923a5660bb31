"""The wait before a retry: ``base * 2**(attempt-1)``, capped at ``maximum``, times a random
factor in [0.5, 1]. Both ways a retry comes about use it: a failed attempt's report, and a lost
worker's running task."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from taskmill.common.db import Database
from taskmill.common.models import Backoff, TaskError, TaskStatus
from taskmill.testing import NewTask, Reported, Stores, claim

BACKOFF = Backoff(base=10.0, maximum=25.0)
#: Enough tasks that their waits show the jitter: 20 uniform draws over a 5 s range all
#: within 1 s of each other has a probability of about 1e-12.
TASKS = 20
WORKER = "w-1"


@pytest.fixture
def store(db: Database) -> Stores:
    return Stores(db, BACKOFF)


def _db_now(db: Database) -> datetime:
    with db.connection() as conn:
        now: datetime = conn.execute("SELECT now()")[0][0]
    return now


def _waits(db: Database, ids: list[uuid.UUID], before: datetime, after: datetime) -> list[float]:
    """Each task's wait, in seconds, checked against the window its retry was scheduled in.

    A retry is due at ``t + wait`` for some ``t`` between ``before`` and ``after``, so the wait
    is at least ``due - after`` and at most ``due - before``; the midpoint is returned.
    """
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT status, scheduled_at FROM tasks WHERE id = ANY(CAST(:ids AS uuid[]))",
            ids=[str(i) for i in ids],
        )
    assert {row[0] for row in rows} == {TaskStatus.SCHEDULED.value}
    return [((due - after) + (due - before)).total_seconds() / 2 for _, due in rows]


def _assert_backoff(waits: list[float], attempt: int, slack: float) -> None:
    full = min(BACKOFF.maximum, BACKOFF.base * 2 ** (attempt - 1))
    assert all(full / 2 - slack <= wait <= full + slack for wait in waits), (attempt, waits)
    assert max(waits) - min(waits) > 1.0, waits  # jittered, not one fixed wait


def _new(db: Database, store: Stores) -> list[uuid.UUID]:
    with db.transaction() as conn:
        tasks = store.insert(
            conn, [NewTask("flaky", {"n": n}, max_attempts=4) for n in range(TASKS)]
        )
    return [task.id for task in tasks]


def _make_due(db: Database, ids: list[uuid.UUID]) -> None:
    # Stands in for waiting out the backoff.
    with db.connection() as conn:
        conn.execute(
            "UPDATE tasks SET scheduled_at = now() WHERE id = ANY(CAST(:ids AS uuid[]))",
            ids=[str(i) for i in ids],
        )


def test_failed_attempts_wait_longer_each_time_up_to_the_maximum(
    db: Database, store: Stores
) -> None:
    ids = _new(db, store)
    error = TaskError("ValueError", "flaky")
    # Attempt 1 waits 5-10 s, attempt 2 10-20 s, attempt 3 12.5-25 s (capped at 25, not 40).
    for attempt in (1, 2, 3):
        claimed = claim(store, [WORKER] * TASKS)
        assert {(task.id, task.attempt) for task in claimed} == {(i, attempt) for i in ids}
        now = datetime.now(UTC)
        before = _db_now(db)
        changed = store.apply(
            [Reported(i, attempt, TaskStatus.FAILED, now, error=error) for i in ids]
        )
        after = _db_now(db)
        assert changed == set(ids)
        waits = _waits(db, ids, before, after)
        _assert_backoff(waits, attempt, slack=(after - before).total_seconds() / 2)
        _make_due(db, ids)


def test_a_lost_workers_running_tasks_wait_their_backoff(db: Database, store: Stores) -> None:
    ids = _new(db, store)
    assert len(claim(store, [WORKER] * TASKS)) == TASKS
    store.apply([Reported(i, 1, TaskStatus.RUNNING, datetime.now(UTC)) for i in ids])
    before = _db_now(db)
    recovered = store.recover_lost([WORKER])
    after = _db_now(db)
    assert recovered == {i: TaskStatus.SCHEDULED for i in ids}
    waits = _waits(db, ids, before, after)
    _assert_backoff(waits, 1, slack=(after - before).total_seconds() / 2)
