"""The coordinator's side of the attempt wire types (taskmill.common.attempts): assignments built
from claimed tasks, reports read from the worker's messages."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from taskmill.common.attempts import Report, add_assignments
from taskmill.common.models import TaskError, TaskStatus
from taskmill.common.store import ClaimedTask
from taskmill.testing.wire import status_report
from taskmill.v1 import common_pb2, worker_pb2

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_report_round_trips_to_the_coordinators_form() -> None:
    task_id = uuid.uuid4()
    succeeded = Report.from_proto(
        status_report(task_id, 1, TaskStatus.SUCCEEDED, result=[1], at=NOW)
    )
    assert (succeeded.task_id, succeeded.attempt, succeeded.status) == (
        str(task_id),
        1,
        TaskStatus.SUCCEEDED,
    )
    assert succeeded.result_json == "[1]"
    assert succeeded.occurred_at == NOW.timestamp()
    failed = Report.from_proto(
        status_report(task_id, 2, TaskStatus.FAILED, error=TaskError("ValueError", "bad", "tb"))
    )
    assert failed.error == TaskError("ValueError", "bad", "tb")


def test_failed_report_without_error_or_time_still_has_both() -> None:
    report = common_pb2.StatusReport(
        task_id=str(uuid.uuid4()), attempt=1, status=common_pb2.TASK_STATUS_FAILED
    )
    converted = Report.from_proto(report)
    assert converted.error is not None and converted.error.type == "error"
    assert (
        abs(converted.occurred_at - datetime.now(UTC).timestamp()) < 60
    )  # a missing time means now


def test_rejection_is_not_an_outcome() -> None:
    report = status_report(uuid.uuid4(), 1, None)
    assert Report.is_rejection(report)
    assert not Report.is_rejection(status_report(uuid.uuid4(), 1, TaskStatus.RUNNING))
    with pytest.raises(ValueError, match="not an outcome"):
        Report.from_proto(report)


# A result that is not JSON is refused by the database, report by report: test_reports.py.
@pytest.mark.parametrize(
    "report",
    [
        common_pb2.StatusReport(task_id="nope", attempt=1, status=common_pb2.TASK_STATUS_RUNNING),
        common_pb2.StatusReport(task_id=str(uuid.uuid4()), attempt=1),
    ],
)
def test_malformed_reports_are_refused(report: common_pb2.StatusReport) -> None:
    with pytest.raises(ValueError):
        Report.from_proto(report)


def test_report_times_are_utc_and_an_unset_start_is_none() -> None:
    report = Report.from_proto(status_report(uuid.uuid4(), 1, TaskStatus.CANCELLED, at=NOW))
    assert report.occurred_at == NOW.timestamp()
    assert report.started_at is None


def _assignment(claimed: ClaimedTask, traceparent: str | None = None) -> common_pb2.Assignment:
    request = worker_pb2.AssignTasksRequest()
    add_assignments(request.assignments, [claimed], [traceparent or claimed.trace_context or ""])
    return request.assignments[0]


def test_claimed_assignment_carries_every_field() -> None:
    task_id = str(uuid.uuid4())
    claimed = ClaimedTask(
        id=task_id,
        worker_id="w-1",
        command="echo",
        payload_json='{"n": 1, "text": "é"}',
        attempt=2,
        max_attempts=3,
        timeout_seconds=None,
        queue="q",
        trace_context="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        scheduled_at=NOW.timestamp(),
        lease_expires_at=(NOW + timedelta(seconds=15)).timestamp(),
        token=2**40 + 7,
    )
    assignment = _assignment(claimed)
    assert assignment.task_id == task_id
    assert assignment.command == "echo"
    assert assignment.payload_json == '{"n": 1, "text": "é"}'
    assert (assignment.attempt, assignment.max_attempts) == (2, 3)
    assert assignment.timeout_seconds == 0.0
    assert assignment.queue == "q"
    assert assignment.traceparent == claimed.trace_context
    assert assignment.token == 2**40 + 7
    assert assignment.scheduled_at.ToDatetime(tzinfo=UTC) == NOW
    assert assignment.lease_expires_at.ToDatetime(tzinfo=UTC) == NOW + timedelta(seconds=15)
    assert _assignment(claimed, "tp").traceparent == "tp"


def test_claimed_assignment_without_timeout_or_trace_sends_zero_and_empty() -> None:
    claimed = ClaimedTask(
        id=str(uuid.uuid4()),
        worker_id="w-1",
        command="echo",
        payload_json="null",
        attempt=1,
        max_attempts=1,
        timeout_seconds=None,
        queue="default",
        trace_context=None,
        scheduled_at=NOW.timestamp(),
        lease_expires_at=NOW.timestamp(),
        token=1,
    )
    assignment = _assignment(claimed)
    assert assignment.timeout_seconds == 0
    assert assignment.traceparent == ""
