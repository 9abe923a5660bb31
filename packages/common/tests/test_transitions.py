"""The task state machine, driven through TaskStore against a real PostgreSQL.

Every allowed transition of ``models.TRANSITIONS`` is reached on a real row by the store method
that makes it; every other change a caller can attempt (stale, duplicated or reordered reports,
claims and releases of tasks in the wrong state) must leave the whole row unchanged and say so.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskmill.common.db import Database
from taskmill.common.errors import InvalidTransition
from taskmill.common.models import (
    FINAL_STATUSES,
    TRANSITIONS,
    Backoff,
    NewTask,
    Outcome,
    TaskError,
    TaskStatus,
)
from taskmill.common.settings import DatabaseSettings
from taskmill.common.tasks import TaskStore
from taskmill.common.testing import claim

S = TaskStatus
Row = dict[str, Any]
#: Retries wait 15-30 s: long enough that "in the future" is unambiguous, and tests make a
#: retried task due by hand instead of waiting.
BACKOFF = Backoff(base=30.0, maximum=30.0)
LEASE = 60.0
WORKER = "w-1"


@dataclass
class Harness:
    """A TaskStore on a fresh database, with shortcuts to put tasks in each status."""

    db: Database
    store: TaskStore

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
        return self.store.apply([Outcome(task_id, attempt, status, datetime.now(UTC), **fields)])

    def to(self, status: TaskStatus, *, max_attempts: int = 1) -> uuid.UUID:
        """A new task, brought to ``status`` by the ordinary path."""
        task_id = self.submit(max_attempts=max_attempts)
        if status is S.CANCELLED:
            self.store.cancel(task_id)
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


@pytest.fixture
def h(database_url: str) -> Iterator[Harness]:
    db = Database(DatabaseSettings.from_url(database_url), max_connections=4)
    try:
        yield Harness(db, TaskStore(db, BACKOFF))
    finally:
        db.close()


def _check_invariants(row: Row) -> None:
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


# -- every allowed transition ---------------------------------------------------------------

Way = Callable[[Harness, uuid.UUID], Row]


def _claim(h: Harness, task_id: uuid.UUID) -> Row:
    assert h.claim() == task_id
    return {"attempt": 1, "worker_id": WORKER}


def _cancel(h: Harness, task_id: uuid.UUID) -> Row:
    assert h.store.cancel(task_id).status is S.CANCELLED
    return {"attempt": 0}


def _release(h: Harness, task_id: uuid.UUID) -> Row:
    assert h.store.release(WORKER, [task_id]) == [task_id]
    return {"attempt": 0, "dispatched_at": None}  # the attempt was never used


def _worker_lost(h: Harness, task_id: uuid.UUID) -> Row:
    status = h.row(task_id)["status"]
    recovered = h.store.recover_lost([WORKER])
    assert task_id in recovered
    if status == S.DISPATCHED:
        return {"attempt": 0}  # it never started: the attempt does not count
    assert h.row(task_id)["error"]["type"] == "worker_lost"
    return {"attempt": 1}


def _report(status: TaskStatus, **fields: Any) -> Way:
    def way(h: Harness, task_id: uuid.UUID) -> Row:
        assert h.report(task_id, status, **fields) == {task_id}
        expected: Row = {"attempt": 1}
        if "result" in fields:
            expected["result"] = fields["result"]
        return expected

    return way


_FAIL = TaskError("ValueError", "bad address")
#: (from, to, way, max_attempts): how each allowed transition is made.
WAYS: dict[str, tuple[TaskStatus, TaskStatus, Way, int]] = {
    "claim": (S.SCHEDULED, S.DISPATCHED, _claim, 1),
    "cancel-scheduled": (S.SCHEDULED, S.CANCELLED, _cancel, 1),
    "release": (S.DISPATCHED, S.SCHEDULED, _release, 1),
    "lost-unstarted": (S.DISPATCHED, S.SCHEDULED, _worker_lost, 1),
    "retry-unstarted": (S.DISPATCHED, S.SCHEDULED, _report(S.FAILED, error=_FAIL), 2),
    "start": (S.DISPATCHED, S.RUNNING, _report(S.RUNNING), 1),
    "succeed-unstarted": (S.DISPATCHED, S.SUCCEEDED, _report(S.SUCCEEDED, result=[1]), 1),
    "fail-unstarted": (S.DISPATCHED, S.FAILED, _report(S.FAILED, error=_FAIL), 1),
    "cancel-unstarted": (S.DISPATCHED, S.CANCELLED, _report(S.CANCELLED), 1),
    "retry": (S.RUNNING, S.SCHEDULED, _report(S.FAILED, error=_FAIL), 2),
    "lost-running-retried": (S.RUNNING, S.SCHEDULED, _worker_lost, 2),
    "succeed": (S.RUNNING, S.SUCCEEDED, _report(S.SUCCEEDED, result={"sent": True}), 1),
    "fail": (S.RUNNING, S.FAILED, _report(S.FAILED, error=_FAIL), 1),
    "fail-not-retryable": (S.RUNNING, S.FAILED, _report(S.FAILED, retryable=False), 3),
    "lost-running-final": (S.RUNNING, S.FAILED, _worker_lost, 1),
    "cancel": (S.RUNNING, S.CANCELLED, _report(S.CANCELLED), 1),
}


def test_every_allowed_transition_has_a_way_and_no_other() -> None:
    allowed = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}

    assert {(a, b) for a, b, _, _ in WAYS.values()} == allowed


@pytest.mark.parametrize("name", list(WAYS))
def test_allowed_transition_changes_the_row(h: Harness, name: str) -> None:
    before_status, after_status, way, max_attempts = WAYS[name]
    task_id = h.to(before_status, max_attempts=max_attempts)
    before = h.row(task_id)

    expected = way(h, task_id)

    after = h.row(task_id)
    assert after["status"] == after_status
    assert {key: after[key] for key in expected} == expected
    _check_invariants(after)
    unchanged = ("id", "seq", "command", "payload", "queue", "priority", "max_attempts")
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}
    if after_status is S.SCHEDULED and before["attempt"] == after["attempt"]:
        assert after["scheduled_at"] > h.db_now()  # a retry waits for its backoff


# -- everything else changes nothing ----------------------------------------------------------


def _try_claim(h: Harness, task_id: uuid.UUID) -> bool:
    return bool(claim(h.store, ["w-2"], LEASE))


def _try_release(h: Harness, task_id: uuid.UUID) -> bool:
    return bool(h.store.release(WORKER, [task_id]))


def _try_report(status: TaskStatus) -> Callable[[Harness, uuid.UUID], bool]:
    def attempt(h: Harness, task_id: uuid.UUID) -> bool:
        current = h.row(task_id)["attempt"]
        return bool(h.report(task_id, status, current, result={"late": True}, error=_FAIL))

    return attempt


def _try_cancel(h: Harness, task_id: uuid.UUID) -> bool:
    with pytest.raises(InvalidTransition):
        h.store.cancel(task_id)
    return False


def _try_recover(h: Harness, task_id: uuid.UUID) -> bool:
    return bool(h.store.recover_lost([WORKER]))


def _try_extend(h: Harness, task_id: uuid.UUID) -> bool:
    h.store.extend_leases(WORKER, LEASE * 10)
    return False


#: Each attempted change, and the statuses from which it is a real (allowed) change.
ATTEMPTS: dict[str, tuple[Callable[[Harness, uuid.UUID], bool], frozenset[TaskStatus]]] = {
    "claim": (_try_claim, frozenset({S.SCHEDULED})),
    "release": (_try_release, frozenset({S.DISPATCHED})),
    "report-running": (_try_report(S.RUNNING), frozenset({S.DISPATCHED})),
    "report-succeeded": (_try_report(S.SUCCEEDED), frozenset({S.DISPATCHED, S.RUNNING})),
    "report-failed": (_try_report(S.FAILED), frozenset({S.DISPATCHED, S.RUNNING})),
    "report-cancelled": (_try_report(S.CANCELLED), frozenset({S.DISPATCHED, S.RUNNING})),
    "cancel": (_try_cancel, frozenset({S.SCHEDULED, S.DISPATCHED, S.RUNNING})),
    "worker-lost": (_try_recover, frozenset({S.DISPATCHED, S.RUNNING})),
    "extend-lease": (_try_extend, frozenset({S.DISPATCHED, S.RUNNING})),
}

DISALLOWED = [
    pytest.param(status, name, id=f"{status}-{name}")
    for status in TaskStatus
    for name, (_, applies) in ATTEMPTS.items()
    if status not in applies
]


@pytest.mark.parametrize(("status", "name"), DISALLOWED)
def test_disallowed_change_leaves_the_row_unchanged(
    h: Harness, status: TaskStatus, name: str
) -> None:
    task_id = h.to(status)
    before = h.row(task_id)

    changed = ATTEMPTS[name][0](h, task_id)

    assert changed is False
    assert h.row(task_id) == before


def test_late_success_for_an_attempt_awaiting_retry_changes_nothing(h: Harness) -> None:
    task_id = h.to(S.RUNNING, max_attempts=2)
    assert h.report(task_id, S.FAILED, error=_FAIL) == {task_id}
    before = h.row(task_id)

    assert h.report(task_id, S.SUCCEEDED, attempt=1, result={"late": True}) == set()
    assert h.report(task_id, S.RUNNING, attempt=1) == set()
    assert h.row(task_id) == before


def test_reports_for_another_attempt_change_nothing(h: Harness) -> None:
    task_id = h.to(S.RUNNING, max_attempts=3)
    assert h.report(task_id, S.FAILED, error=_FAIL) == {task_id}
    h.make_due(task_id)
    assert h.claim() == task_id
    assert h.report(task_id, S.RUNNING, attempt=2) == {task_id}
    before = h.row(task_id)

    for attempt in (1, 3):
        for status in (S.RUNNING, S.SUCCEEDED, S.FAILED, S.CANCELLED):
            assert h.report(task_id, status, attempt=attempt, result=1, error=_FAIL) == set()

    assert h.row(task_id) == before


def test_duplicate_success_keeps_the_first_result(h: Harness) -> None:
    task_id = h.to(S.RUNNING)
    assert h.report(task_id, S.SUCCEEDED, result={"n": 1}) == {task_id}
    before = h.row(task_id)

    assert h.report(task_id, S.SUCCEEDED, result={"n": 2}) == set()
    assert h.report(task_id, S.FAILED, error=_FAIL, retryable=False) == set()

    assert h.row(task_id) == before
    assert before["result"] == {"n": 1}


def test_release_by_another_worker_changes_nothing(h: Harness) -> None:
    task_id = h.to(S.DISPATCHED)
    before = h.row(task_id)

    assert h.store.release("w-2", [task_id]) == []
    assert h.store.recover_lost(["w-2"]) == {}

    assert h.row(task_id) == before


def test_running_and_final_report_in_one_batch_apply_in_order(h: Harness) -> None:
    task_id = h.to(S.DISPATCHED)
    started = datetime.now(UTC) - timedelta(seconds=2)
    finished = datetime.now(UTC)

    changed = h.store.apply(
        [
            Outcome(task_id, 1, S.SUCCEEDED, finished, result="done"),
            Outcome(task_id, 1, S.RUNNING, started),
        ]
    )

    row = h.row(task_id)
    assert changed == {task_id}
    assert (row["status"], row["result"]) == ("succeeded", "done")
    assert (row["started_at"], row["finished_at"]) == (started, finished)


def test_a_report_of_a_status_workers_cannot_report_changes_nothing(h: Harness) -> None:
    task_id = h.to(S.DISPATCHED)
    before = h.row(task_id)
    now = datetime.now(UTC)

    with pytest.raises(InvalidTransition):
        h.store.apply([Outcome(task_id, 1, S.RUNNING, now), Outcome(task_id, 1, S.SCHEDULED, now)])

    # The whole batch is refused, not half applied behind the caller's back.
    assert h.row(task_id) == before


# -- cancellation -----------------------------------------------------------------------------


def test_cancel_of_a_running_task_is_a_request_the_worker_answers(h: Harness) -> None:
    task_id = h.to(S.RUNNING)

    requested = h.store.cancel(task_id)

    assert requested.status is S.RUNNING
    assert requested.cancel_requested_at is not None
    assert h.store.cancel_requested(WORKER) == [task_id]
    assert h.store.cancel_requested("w-2") == []
    assert h.report(task_id, S.CANCELLED) == {task_id}
    assert h.row(task_id)["status"] == S.CANCELLED
    assert h.store.cancel_requested(WORKER) == []


def test_a_failed_attempt_of_a_task_asked_to_cancel_is_not_retried(h: Harness) -> None:
    task_id = h.to(S.RUNNING, max_attempts=3)
    h.store.cancel(task_id)

    assert h.report(task_id, S.FAILED, error=_FAIL) == {task_id}

    row = h.row(task_id)
    assert row["status"] == S.FAILED
    _check_invariants(row)
    assert claim(h.store, [WORKER], LEASE) == []


def test_a_released_task_asked_to_cancel_ends_cancelled(h: Harness) -> None:
    task_id = h.to(S.DISPATCHED)
    h.store.cancel(task_id)

    assert h.store.release(WORKER, [task_id]) == [task_id]

    row = h.row(task_id)
    assert row["status"] == S.CANCELLED
    _check_invariants(row)
    assert claim(h.store, [WORKER], LEASE) == []


# -- retries ----------------------------------------------------------------------------------


def test_failed_attempts_are_retried_after_a_backoff_until_max_attempts(h: Harness) -> None:
    task_id = h.to(S.RUNNING, max_attempts=3)

    for attempt in (1, 2):
        assert h.report(task_id, S.FAILED, attempt, error=_FAIL) == {task_id}
        waiting = h.row(task_id)
        now = h.db_now()
        assert waiting["status"] == S.SCHEDULED
        assert waiting["attempt"] == attempt
        assert waiting["error"] == _FAIL.to_json()
        assert timedelta(seconds=5) < waiting["scheduled_at"] - now <= timedelta(seconds=30)
        _check_invariants(waiting)
        assert claim(h.store, [WORKER], LEASE) == []  # not due yet
        assert h.store.next_due_at() == waiting["scheduled_at"]

        h.make_due(task_id)
        (task,) = claim(h.store, ["w-2"], LEASE)
        assert (task.id, task.attempt, task.worker_id) == (task_id, attempt + 1, "w-2")
        assert task.started_at is None  # the earlier attempt's start is not this one's
        assert h.report(task_id, S.RUNNING, attempt + 1) == {task_id}

    assert h.report(task_id, S.FAILED, 3, error=_FAIL) == {task_id}
    final = h.row(task_id)
    assert (final["status"], final["attempt"]) == (S.FAILED, 3)
    _check_invariants(final)


def test_a_retried_attempt_that_succeeds_unstarted_gets_its_own_start(h: Harness) -> None:
    task_id = h.to(S.RUNNING, max_attempts=2)
    assert h.report(task_id, S.FAILED, error=_FAIL) == {task_id}
    h.make_due(task_id)
    assert h.claim() == task_id
    finished = datetime.now(UTC)

    assert h.store.apply([Outcome(task_id, 2, S.SUCCEEDED, finished, result=1)]) == {task_id}

    row = h.row(task_id)
    assert row["started_at"] == finished  # not the first attempt's start
    assert row["error"] is None  # the first attempt's error no longer describes the task


def test_expired_lease_is_recovered_without_a_dead_worker(h: Harness) -> None:
    task_id = h.submit()
    claim(h.store, [WORKER], lease_seconds=0.001)

    deadline = datetime.now(UTC) + timedelta(seconds=30)
    while not (recovered := h.store.recover_lost([])):
        assert datetime.now(UTC) < deadline, "the expired lease was never recovered"
        time.sleep(0.01)

    assert recovered == {task_id: S.SCHEDULED}
    assert h.row(task_id)["attempt"] == 0


# -- claiming ---------------------------------------------------------------------------------


def test_claim_takes_priority_then_scheduled_at_and_never_future_tasks(h: Harness) -> None:
    now = datetime.now(UTC)
    ids = {
        "low-old": h.submit(priority=0, scheduled_at=now - timedelta(minutes=3)),
        "low-older": h.submit(priority=0, scheduled_at=now - timedelta(minutes=4)),
        "high-new": h.submit(priority=5, scheduled_at=now - timedelta(minutes=1)),
        "high-old": h.submit(priority=5, scheduled_at=now - timedelta(minutes=2)),
        "top-future": h.submit(priority=9, scheduled_at=now + timedelta(hours=1)),
    }
    names = {task_id: name for name, task_id in ids.items()}

    one_at_a_time = [names[h.claim()] for _ in range(4)]

    assert one_at_a_time == ["high-old", "high-new", "low-older", "low-old"]
    assert claim(h.store, [WORKER, WORKER], LEASE) == []
    assert h.store.next_due_at() == h.row(ids["top-future"])["scheduled_at"]


def test_claim_fills_slots_in_order(h: Harness) -> None:
    for priority in (1, 3, 2):
        h.submit(priority=priority)

    tasks = claim(h.store, ["w-a", "w-b", "w-c", "w-d"], LEASE)

    assert [(t.priority, t.worker_id, t.attempt) for t in tasks] == [
        (3, "w-a", 1),
        (2, "w-b", 1),
        (1, "w-c", 1),
    ]
    assert all(t.status is S.DISPATCHED and t.lease_expires_at is not None for t in tasks)


def test_concurrent_claims_take_disjoint_tasks(h: Harness, database_url: str) -> None:
    with h.db.transaction() as conn:
        h.store.insert(conn, [NewTask("n", {"i": i}) for i in range(100)])
    start = threading.Barrier(2)

    def claimer(worker: str) -> list[uuid.UUID]:
        # Separate pools: the two claims are two sessions, as in two coordinators.
        db = Database(DatabaseSettings.from_url(database_url), max_connections=1)
        claimed: list[uuid.UUID] = []
        try:
            store = TaskStore(db, BACKOFF)
            start.wait(timeout=30)
            while batch := claim(store, [worker] * 7, LEASE):
                claimed.extend(task.id for task in batch)
        finally:
            db.close()
        return claimed

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {worker: pool.submit(claimer, worker) for worker in ("w-a", "w-b")}
        claimed = {worker: future.result(timeout=60) for worker, future in futures.items()}

    a, b = set(claimed["w-a"]), set(claimed["w-b"])
    assert len(a) + len(b) == len(claimed["w-a"]) + len(claimed["w-b"]) == 100
    assert a.isdisjoint(b)
    rows = h.store.page(limit=1000)
    assert {(t.status, t.attempt) for t in rows} == {(S.DISPATCHED, 1)}
    assert {t.id for t in rows if t.worker_id == "w-a"} == a


# -- submitting -------------------------------------------------------------------------------


def test_idempotency_key_is_taken_once(h: Harness) -> None:
    first = h.submit(idempotency_key="order-42")

    with h.db.transaction() as conn:
        again = h.store.insert(conn, [NewTask("other", idempotency_key="order-42")])
        fresh = h.store.insert(conn, [NewTask("other", idempotency_key="order-43")])
        found = h.store.by_idempotency_keys(conn, ["order-42", "order-43", "order-44"])

    assert again == []
    assert [t.command for t in fresh] == ["other"]
    assert found["order-42"].id == first
    assert found["order-42"].command == "send_email"
    assert set(found) == {"order-42", "order-43"}
    assert len(h.store.page(limit=10)) == 2


def test_insert_keeps_what_was_submitted(h: Harness) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    task = NewTask(
        "resize",
        {"w": 10, "tags": ["a", "é"]},
        queue="images",
        priority=4,
        max_attempts=5,
        timeout_seconds=2.5,
        scheduled_at=when,
        trace_context="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )

    with h.db.transaction() as conn:
        (stored,) = h.store.insert(conn, [task])

    assert stored == h.store.get(task.id)
    assert (stored.command, stored.payload, stored.queue) == ("resize", task.payload, "images")
    assert (stored.priority, stored.max_attempts, stored.timeout_seconds) == (4, 5, 2.5)
    assert (stored.scheduled_at, stored.trace_context) == (when, task.trace_context)
    assert (stored.status, stored.attempt) == (S.SCHEDULED, 0)


# -- the pool ---------------------------------------------------------------------------------


def test_pool_lends_each_thread_its_own_connection(database_url: str) -> None:
    db = Database(DatabaseSettings.from_url(database_url), max_connections=4)
    holding = threading.Barrier(4)

    def borrow() -> int:
        with db.connection() as conn:
            pid: int = conn.execute("SELECT pg_backend_pid()")[0][0]
            holding.wait(timeout=30)  # all four hold a connection at this moment
        return pid

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            pids = [f.result(timeout=60) for f in [pool.submit(borrow) for _ in range(4)]]
    finally:
        db.close()

    assert len(set(pids)) == 4


def test_a_report_from_another_worker_changes_nothing(database_url: str) -> None:
    """A task given back after an assignment timed out keeps its attempt; when it is sent to a
    second worker, a late report from the first must not count."""
    db = Database(DatabaseSettings.from_url(database_url))
    try:
        store = TaskStore(db)
        with db.transaction() as conn:
            (task,) = store.insert(conn, [NewTask("echo")])
        (first,) = claim(store, ["w-first"], lease_seconds=30)
        assert store.release("w-first", [task.id]) == [task.id]
        (second,) = claim(store, ["w-second"], lease_seconds=30)
        assert second.attempt == first.attempt
        late = Outcome(task.id, first.attempt, TaskStatus.SUCCEEDED, datetime.now(UTC), "late")
        assert store.apply([late], worker_id="w-first") == set()
        assert store.get(task.id).status is TaskStatus.DISPATCHED
        own = Outcome(task.id, second.attempt, TaskStatus.SUCCEEDED, datetime.now(UTC), "own")
        assert store.apply([own], worker_id="w-second") == {task.id}
        assert store.get(task.id).result == "own"
    finally:
        db.close()
