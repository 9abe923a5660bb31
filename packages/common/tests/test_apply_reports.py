"""ReportStore.apply, the coordinator's lean report path: ids and results stay text, and
the database checks them, refusing only the reports it cannot take."""

from __future__ import annotations

import math
import time
import uuid
from datetime import UTC, datetime

import pytest

from taskmill.common.attempts import Report, ReportStatus
from taskmill.common.dberrors import QueryError
from taskmill.common.models import TaskError, TaskStatus
from taskmill.testing import NewTask, Reported, Stores, claim

S = TaskStatus
R = ReportStatus
WORKER = "w-1"


def _dispatched(store: Stores, count: int) -> list[str]:
    with store.db.transaction() as conn:
        store.insert(conn, [NewTask("echo", {"n": n}) for n in range(count)])
    return [str(task.id) for task in claim(store, [WORKER] * count)]


def test_reports_are_applied_with_their_text_results(store: Stores) -> None:
    a, b, c = _dispatched(store, 3)
    # Whole milliseconds: PostgreSQL and datetime.fromtimestamp round a float's sixth decimal
    # differently near half a microsecond, which this test does not mean to pin.
    started = round(time.time() - 2, 3)

    applied = store.reports.apply(
        [
            Report(a, 1, R.RUNNING, started),
            Report(a, 1, R.SUCCEEDED, started + 1, '{"sum": [1, 2.5, "é"]}'),
            Report(b, 1, R.SUCCEEDED, started + 1, started_at=started),  # no result: null
            Report(c, 1, R.FAILED, started + 1, error=TaskError("E", "no"), retryable=False),
        ],
        WORKER,
    )

    assert applied.changed == {a, b, c}
    assert applied.refused == []
    first, second, third = (store.get(task_id) for task_id in (a, b, c))
    assert (first.status, first.result) == (S.SUCCEEDED, {"sum": [1, 2.5, "é"]})
    assert first.started_at == datetime.fromtimestamp(started, UTC)
    assert (second.status, second.result) == (S.SUCCEEDED, None)
    assert second.started_at == datetime.fromtimestamp(started, UTC)
    assert (third.status, third.error) == (S.FAILED, TaskError("E", "no"))


@pytest.mark.parametrize(
    "result_json",
    [
        "{not json",
        "NaN",  # Python's json reads it; JSON has no NaN
        '{"a": 1} trailing',
        '"\\u0000"',  # jsonb cannot hold a NUL character
        '1, "attempt": 2',  # text cannot add a field to the report
    ],
)
def test_a_report_the_database_refuses_leaves_the_rest_of_the_batch_applied(
    store: Stores, result_json: str
) -> None:
    good, bad, other = _dispatched(store, 3)
    now = time.time()

    applied = store.reports.apply(
        [
            Report(good, 1, R.SUCCEEDED, now, "1"),
            Report(bad, 1, R.RUNNING, now),
            Report(bad, 1, R.SUCCEEDED, now, result_json),
            Report(other, 1, R.CANCELLED, now),
            Report(good, 1, R.SUCCEEDED, now, "2"),  # a duplicate changes nothing
        ],
        WORKER,
    )

    assert applied.changed == {good, bad, other}  # bad: its running report
    [(report, reason)] = applied.refused
    assert report == Report(bad, 1, R.SUCCEEDED, now, result_json)
    assert reason  # the database's
    assert store.get(good).result == 1
    assert store.get(bad).status is S.RUNNING
    assert store.get(other).status is S.CANCELLED


def test_a_time_out_of_range_is_refused_alone(store: Stores) -> None:
    good, bad = _dispatched(store, 2)
    applied = store.reports.apply(
        [Report(good, 1, R.SUCCEEDED, time.time()), Report(bad, 1, R.SUCCEEDED, 1e15)], WORKER
    )
    assert applied.changed == {good}
    assert [(report.task_id, reason) for report, reason in applied.refused] == [
        (bad, 'timestamp out of range: "1e+15"')
    ]
    assert store.get(bad).status is S.DISPATCHED


def test_reports_for_another_worker_or_attempt_change_nothing(store: Stores) -> None:
    (task_id,) = _dispatched(store, 1)
    now = time.time()
    late = [Report(task_id, 1, R.SUCCEEDED, now, "1"), Report(task_id, 2, R.RUNNING, now)]
    assert store.reports.apply(late, "w-other").changed == set()
    assert store.reports.apply(late[1:], WORKER).changed == set()
    assert store.get(task_id).status is S.DISPATCHED


def test_apply_of_outcomes_still_refuses_the_whole_batch(store: Stores) -> None:
    good, bad = _dispatched(store, 2)
    now = datetime.now(UTC)
    with pytest.raises(QueryError):
        store.apply(
            [
                Reported(uuid.UUID(good), 1, S.SUCCEEDED, now, result=1),
                Reported(uuid.UUID(bad), 1, S.SUCCEEDED, now, result=math.nan),
            ]
        )
    assert store.get(good).status is S.DISPATCHED
    assert store.apply([Reported(uuid.UUID(good), 1, S.SUCCEEDED, now)]) == {uuid.UUID(good)}
