"""Final reports that carry the attempt's start (a ``running`` report folded into them)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from taskmill.common.attempts import Report
from taskmill.common.models import TaskError, TaskStatus
from taskmill.testing import NewTask, Reported, Stores, claim
from taskmill.testing.wire import status_report

S = TaskStatus


def _dispatched(store: Stores, max_attempts: int = 1) -> uuid.UUID:
    with store.db.transaction() as conn:
        (task,) = store.insert(conn, [NewTask("echo", {}, max_attempts=max_attempts)])
    (claimed,) = claim(store, ["w-1"], 60.0)
    assert claimed.id == task.id
    return task.id


@pytest.mark.parametrize(
    ("status", "fields"),
    [
        (S.SUCCEEDED, {"result": 1}),
        (S.FAILED, {"error": TaskError("ValueError", "bad"), "retryable": False}),
        (S.CANCELLED, {}),
    ],
)
def test_a_folded_final_report_records_the_start(
    store: Stores, status: TaskStatus, fields: dict[str, object]
) -> None:
    task_id = _dispatched(store)
    started = datetime.now(UTC) - timedelta(seconds=2)
    finished = datetime.now(UTC)

    changed = store.apply([Reported(task_id, 1, status, finished, started_at=started, **fields)])

    task = store.get(task_id)
    assert changed == {task_id}
    assert (task.status, task.started_at, task.finished_at) == (status, started, finished)


def test_a_final_reports_start_replaces_the_recorded_one(store: Stores) -> None:
    # A start recorded before the handler ran (worker/starts.py): the final report carries
    # when the handler really started, which is what the task shows.
    task_id = _dispatched(store)
    recorded = datetime.now(UTC) - timedelta(seconds=3)
    assert store.apply([Reported(task_id, 1, S.RUNNING, recorded)]) == {task_id}

    handler_started = recorded + timedelta(seconds=1)
    store.apply([Reported(task_id, 1, S.SUCCEEDED, datetime.now(UTC), started_at=handler_started)])

    assert store.get(task_id).started_at == handler_started


def test_a_final_report_without_a_start_keeps_the_recorded_one(store: Stores) -> None:
    task_id = _dispatched(store)
    started = datetime.now(UTC) - timedelta(seconds=3)
    assert store.apply([Reported(task_id, 1, S.RUNNING, started)]) == {task_id}
    store.apply([Reported(task_id, 1, S.SUCCEEDED, datetime.now(UTC))])
    assert store.get(task_id).started_at == started


def test_a_failure_without_a_start_leaves_it_unset(store: Stores) -> None:
    task_id = _dispatched(store)
    error = TaskError("ValueError", "bad")
    store.apply([Reported(task_id, 1, S.FAILED, datetime.now(UTC), error=error, retryable=False)])
    assert store.get(task_id).started_at is None


def test_started_at_travels_in_the_report() -> None:
    task_id = uuid.uuid4()
    started = datetime(2026, 11, 26, 12, 0, 0, 250000, tzinfo=UTC)
    report = status_report(task_id, 1, S.SUCCEEDED, result=1, at=started + timedelta(seconds=1))
    assert Report.from_proto(report).started_at is None  # an older worker's report

    report.started_at.FromDatetime(started)
    assert Report.from_proto(report).started_at == started.timestamp()
