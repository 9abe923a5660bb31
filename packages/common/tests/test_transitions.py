"""The task state machine, driven through the production stores against a real PostgreSQL.

Every allowed transition of ``models.TRANSITIONS`` is reached on a real row by the store method
that makes it; every other change a caller can attempt (stale, duplicated or reordered reports,
claims and releases of tasks in the wrong state) must leave the whole row unchanged and say so.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskmill.common.db import Database
from taskmill.common.errors import InvalidTransition
from taskmill.common.models import TRANSITIONS, TaskStatus
from taskmill.common.settings import DatabaseSettings
from taskmill.testing import NewTask, Reported, Stores, claim

from .task_harness import FAIL, LEASE, WORKER, Harness, Row, S, check_invariants

# -- every allowed transition ---------------------------------------------------------------

Way = Callable[[Harness, uuid.UUID], Row]


def _claim(h: Harness, task_id: uuid.UUID) -> Row:
    assert h.claim() == task_id
    return {"attempt": 1, "worker_id": WORKER}


def _cancel(h: Harness, task_id: uuid.UUID) -> Row:
    assert h.store.tasks.cancel(task_id).status is S.CANCELLED
    return {"attempt": 0}


def _release(h: Harness, task_id: uuid.UUID) -> Row:
    assert h.store.dispatch.release(WORKER, h.store.held(task_id)) == [task_id]
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


#: (from, to, way, max_attempts): how each allowed transition is made.
WAYS: dict[str, tuple[TaskStatus, TaskStatus, Way, int]] = {
    "claim": (S.SCHEDULED, S.DISPATCHED, _claim, 1),
    "cancel-scheduled": (S.SCHEDULED, S.CANCELLED, _cancel, 1),
    "release": (S.DISPATCHED, S.SCHEDULED, _release, 1),
    "lost-unstarted": (S.DISPATCHED, S.SCHEDULED, _worker_lost, 1),
    "retry-unstarted": (S.DISPATCHED, S.SCHEDULED, _report(S.FAILED, error=FAIL), 2),
    "start": (S.DISPATCHED, S.RUNNING, _report(S.RUNNING), 1),
    "succeed-unstarted": (S.DISPATCHED, S.SUCCEEDED, _report(S.SUCCEEDED, result=[1]), 1),
    "fail-unstarted": (S.DISPATCHED, S.FAILED, _report(S.FAILED, error=FAIL), 1),
    "cancel-unstarted": (S.DISPATCHED, S.CANCELLED, _report(S.CANCELLED), 1),
    "retry": (S.RUNNING, S.SCHEDULED, _report(S.FAILED, error=FAIL), 2),
    "lost-running-retried": (S.RUNNING, S.SCHEDULED, _worker_lost, 2),
    "succeed": (S.RUNNING, S.SUCCEEDED, _report(S.SUCCEEDED, result={"sent": True}), 1),
    "fail": (S.RUNNING, S.FAILED, _report(S.FAILED, error=FAIL), 1),
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
    check_invariants(after)
    unchanged = ("id", "seq", "command", "payload", "queue", "priority", "max_attempts")
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}
    if after_status is S.SCHEDULED and before["attempt"] == after["attempt"]:
        assert after["scheduled_at"] > h.db_now()  # a retry waits for its backoff


# -- everything else changes nothing ----------------------------------------------------------


def _try_claim(h: Harness, task_id: uuid.UUID) -> bool:
    return bool(claim(h.store, ["w-2"], LEASE))


def _try_release(h: Harness, task_id: uuid.UUID) -> bool:
    return bool(h.store.dispatch.release(WORKER, h.store.held(task_id)))


def _try_report(status: TaskStatus) -> Callable[[Harness, uuid.UUID], bool]:
    def attempt(h: Harness, task_id: uuid.UUID) -> bool:
        current = h.row(task_id)["attempt"]
        return bool(h.report(task_id, status, current, result={"late": True}, error=FAIL))

    return attempt


def _try_cancel(h: Harness, task_id: uuid.UUID) -> bool:
    with pytest.raises(InvalidTransition):
        h.store.tasks.cancel(task_id)
    return False


def _try_recover(h: Harness, task_id: uuid.UUID) -> bool:
    return bool(h.store.recover_lost([WORKER]))


def _try_extend(h: Harness, task_id: uuid.UUID) -> bool:
    h.store.dispatch.extend_held_leases(WORKER, h.store.held(task_id), LEASE * 10)
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
    assert h.report(task_id, S.FAILED, error=FAIL) == {task_id}
    before = h.row(task_id)

    assert h.report(task_id, S.SUCCEEDED, attempt=1, result={"late": True}) == set()
    assert h.report(task_id, S.RUNNING, attempt=1) == set()
    assert h.row(task_id) == before


def test_reports_for_another_attempt_change_nothing(h: Harness) -> None:
    task_id = h.to(S.RUNNING, max_attempts=3)
    assert h.report(task_id, S.FAILED, error=FAIL) == {task_id}
    h.make_due(task_id)
    assert h.claim() == task_id
    assert h.report(task_id, S.RUNNING, attempt=2) == {task_id}
    before = h.row(task_id)

    for attempt in (1, 3):
        for status in (S.RUNNING, S.SUCCEEDED, S.FAILED, S.CANCELLED):
            assert h.report(task_id, status, attempt=attempt, result=1, error=FAIL) == set()

    assert h.row(task_id) == before


def test_duplicate_success_keeps_the_first_result(h: Harness) -> None:
    task_id = h.to(S.RUNNING)
    assert h.report(task_id, S.SUCCEEDED, result={"n": 1}) == {task_id}
    before = h.row(task_id)

    assert h.report(task_id, S.SUCCEEDED, result={"n": 2}) == set()
    assert h.report(task_id, S.FAILED, error=FAIL, retryable=False) == set()

    assert h.row(task_id) == before
    assert before["result"] == {"n": 1}


def test_release_by_another_worker_changes_nothing(h: Harness) -> None:
    task_id = h.to(S.DISPATCHED)
    before = h.row(task_id)

    assert h.store.dispatch.release("w-2", h.store.held(task_id)) == []
    assert h.store.recover_lost(["w-2"]) == {}

    assert h.row(task_id) == before


def test_running_and_final_report_in_one_batch_apply_in_order(h: Harness) -> None:
    task_id = h.to(S.DISPATCHED)
    started = datetime.now(UTC) - timedelta(seconds=2)
    finished = datetime.now(UTC)

    changed = h.store.apply(
        [
            Reported(task_id, 1, S.SUCCEEDED, finished, result="done"),
            Reported(task_id, 1, S.RUNNING, started),
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
        h.store.apply(
            [Reported(task_id, 1, S.RUNNING, now), Reported(task_id, 1, S.SCHEDULED, now)]
        )

    # The whole batch is refused, not half applied behind the caller's back.
    assert h.row(task_id) == before


def test_a_report_from_another_worker_changes_nothing(database_url: str) -> None:
    """A task given back after an assignment timed out keeps its attempt; when it is sent to a
    second worker, a late report from the first must not count."""
    db = Database(DatabaseSettings.from_url(database_url))
    try:
        store = Stores(db)
        with db.transaction() as conn:
            (task,) = store.insert(conn, [NewTask("echo")])
        (first,) = claim(store, ["w-first"], lease_seconds=30)
        assert store.dispatch.release("w-first", store.held(task.id)) == [task.id]
        (second,) = claim(store, ["w-second"], lease_seconds=30)
        assert second.attempt == first.attempt
        late = Reported(task.id, first.attempt, TaskStatus.SUCCEEDED, datetime.now(UTC), "late")
        assert store.apply([late], worker_id="w-first") == set()
        assert store.get(task.id).status is TaskStatus.DISPATCHED
        own = Reported(task.id, second.attempt, TaskStatus.SUCCEEDED, datetime.now(UTC), "own")
        assert store.apply([own], worker_id="w-second") == {task.id}
        assert store.get(task.id).result == "own"
    finally:
        db.close()
