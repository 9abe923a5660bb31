"""Cancelling, retrying and recovering a task, through the production stores against a real
PostgreSQL: what a row looks like after each, and when the task may be claimed again."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from taskmill.testing import Reported, claim

from .task_harness import FAIL, LEASE, WORKER, Harness, S, check_invariants

# -- cancellation -----------------------------------------------------------------------------


def test_cancel_of_a_running_task_is_a_request_the_worker_answers(h: Harness) -> None:
    task_id = h.to(S.RUNNING)

    requested = h.store.tasks.cancel(task_id)

    assert requested.status is S.RUNNING
    assert requested.cancel_requested_at is not None
    assert h.store.dispatch.cancel_requested(WORKER) == [task_id]
    assert h.store.dispatch.cancel_requested("w-2") == []
    assert h.report(task_id, S.CANCELLED) == {task_id}
    assert h.row(task_id)["status"] == S.CANCELLED
    assert h.store.dispatch.cancel_requested(WORKER) == []


def test_a_failed_attempt_of_a_task_asked_to_cancel_is_not_retried(h: Harness) -> None:
    task_id = h.to(S.RUNNING, max_attempts=3)
    h.store.tasks.cancel(task_id)

    assert h.report(task_id, S.FAILED, error=FAIL) == {task_id}

    row = h.row(task_id)
    assert row["status"] == S.FAILED
    check_invariants(row)
    assert claim(h.store, [WORKER], LEASE) == []


def test_a_released_task_asked_to_cancel_ends_cancelled(h: Harness) -> None:
    task_id = h.to(S.DISPATCHED)
    h.store.tasks.cancel(task_id)

    assert h.store.dispatch.release(WORKER, h.store.held(task_id)) == [task_id]

    row = h.row(task_id)
    assert row["status"] == S.CANCELLED
    check_invariants(row)
    assert claim(h.store, [WORKER], LEASE) == []


# -- retries ----------------------------------------------------------------------------------


def test_failed_attempts_are_retried_after_a_backoff_until_max_attempts(h: Harness) -> None:
    task_id = h.to(S.RUNNING, max_attempts=3)

    for attempt in (1, 2):
        assert h.report(task_id, S.FAILED, attempt, error=FAIL) == {task_id}
        waiting = h.row(task_id)
        now = h.db_now()
        assert waiting["status"] == S.SCHEDULED
        assert waiting["attempt"] == attempt
        assert waiting["error"] == FAIL.to_json()
        assert timedelta(seconds=5) < waiting["scheduled_at"] - now <= timedelta(seconds=30)
        check_invariants(waiting)
        assert claim(h.store, [WORKER], LEASE) == []  # not due yet
        assert h.store.next_due_at() == waiting["scheduled_at"]

        h.make_due(task_id)
        (task,) = claim(h.store, ["w-2"], LEASE)
        assert (task.id, task.attempt, task.worker_id) == (task_id, attempt + 1, "w-2")
        assert task.started_at is None  # the earlier attempt's start is not this one's
        assert h.report(task_id, S.RUNNING, attempt + 1) == {task_id}

    assert h.report(task_id, S.FAILED, 3, error=FAIL) == {task_id}
    final = h.row(task_id)
    assert (final["status"], final["attempt"]) == (S.FAILED, 3)
    check_invariants(final)


def test_a_retried_attempt_that_succeeds_unstarted_gets_its_own_start(h: Harness) -> None:
    task_id = h.to(S.RUNNING, max_attempts=2)
    assert h.report(task_id, S.FAILED, error=FAIL) == {task_id}
    h.make_due(task_id)
    assert h.claim() == task_id
    finished = datetime.now(UTC)

    assert h.store.apply([Reported(task_id, 2, S.SUCCEEDED, finished, result=1)]) == {task_id}

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
