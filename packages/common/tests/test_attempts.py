"""The task-attempt wire types (taskmill.common.attempts) and their messages, at both ends."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from taskmill.common.attempts import (
    Assignment,
    Held,
    Outcome,
    Report,
    ReportStatus,
    task_id_text,
)
from taskmill.common.models import TaskError
from taskmill.v1 import common_pb2, coordinator_pb2, worker_pb2

TASK_ID = "0b0c0d0e-1f20-4122-8324-252627282930"
TRACEPARENT = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


def _assignment_message(**fields: object) -> common_pb2.Assignment:
    """An assignment built as the coordinator's dispatch builds it: in place, in the request."""
    values: dict[str, object] = {
        "task_id": TASK_ID,
        "command": "echo",
        "payload_json": '{"n":1,"text":"é"}',
        "attempt": 2,
        "max_attempts": 3,
        "timeout_seconds": 1.5,
        "queue": "q",
        "traceparent": TRACEPARENT,
        "scheduled_at": Timestamp(seconds=1_767_322_245, nanos=678_000_000),
        "lease_expires_at": Timestamp(seconds=1_767_322_260, nanos=678_000_000),
    }
    values.update(fields)
    request = worker_pb2.AssignTasksRequest(worker_id="w-1")
    request.assignments.add(**values)
    return request.assignments[0]


def test_an_assignment_reads_every_field_the_coordinator_sends() -> None:
    assert Assignment.from_proto(_assignment_message()) == Assignment(
        task_id=TASK_ID,
        command="echo",
        payload_json='{"n":1,"text":"é"}',
        attempt=2,
        max_attempts=3,
        timeout_seconds=1.5,
        queue="q",
        traceparent=TRACEPARENT,
    )


def test_an_assignment_without_timeout_payload_or_trace_reads_as_none_null_and_empty() -> None:
    assignment = Assignment.from_proto(
        _assignment_message(timeout_seconds=0.0, payload_json="", traceparent="")
    )
    assert assignment.timeout_seconds is None
    assert assignment.payload_json == "null"
    assert assignment.traceparent == ""


def _added(report: Report, started_at: float | None = None) -> common_pb2.StatusReport:
    request = coordinator_pb2.ReportTaskStatusesRequest(worker_id="w-1")
    message = report.add_to(request.reports, started_at)
    assert len(request.reports) == 1 and request.reports[0] == message  # built in the request
    return message


@pytest.mark.parametrize(
    ("status", "number"),
    [
        (ReportStatus.RUNNING, common_pb2.TASK_STATUS_RUNNING),
        (ReportStatus.SUCCEEDED, common_pb2.TASK_STATUS_SUCCEEDED),
        (ReportStatus.FAILED, common_pb2.TASK_STATUS_FAILED),
        (ReportStatus.CANCELLED, common_pb2.TASK_STATUS_CANCELLED),
        (ReportStatus.REJECTED, common_pb2.TASK_STATUS_REJECTED),
    ],
)
def test_each_status_is_sent_as_its_number_in_the_generated_enum(
    status: ReportStatus, number: int
) -> None:
    assert _added(Report(TASK_ID, 1, status, 1000.0)).status == number


def test_the_first_four_statuses_are_the_stored_task_statuses() -> None:
    assert [s.value for s in ReportStatus][:4] == ["running", "succeeded", "failed", "cancelled"]


def test_a_succeeded_report_round_trips() -> None:
    report = Report(TASK_ID, 2, ReportStatus.SUCCEEDED, 1000.25, '{"ok":true}', None, TRACEPARENT)
    message = _added(report)
    assert (message.task_id, message.attempt, message.result_json) == (TASK_ID, 2, '{"ok":true}')
    assert message.occurred_at.ToNanoseconds() == 1000_250_000_000
    assert message.traceparent == TRACEPARENT
    assert not message.HasField("error") and not message.HasField("started_at")
    # The coordinator does not read the traceparent back.
    assert Report.from_proto(message) == report._replace(traceparent="")


def test_a_failed_report_carries_its_error_both_ways() -> None:
    error = TaskError("ValueError", "bad", "Traceback ...")
    message = _added(Report(TASK_ID, 1, ReportStatus.FAILED, 1000.5, error=error))
    assert (message.error.type, message.error.message, message.error.traceback) == (
        "ValueError",
        "bad",
        "Traceback ...",
    )
    assert Report.from_proto(message).error == error


def test_a_failure_without_error_or_time_still_has_both() -> None:
    message = common_pb2.StatusReport(
        task_id=TASK_ID, attempt=1, status=common_pb2.TASK_STATUS_FAILED
    )
    report = Report.from_proto(message)
    assert report.error == TaskError("error", "the worker reported a failure without details")
    assert abs(report.occurred_at - time.time()) < 60  # a missing time means now


def test_started_at_is_sent_and_read_back() -> None:
    running_at, finished_at = 1000.25, 1001.5
    folded = Report(TASK_ID, 1, ReportStatus.CANCELLED, finished_at)
    message = _added(folded, started_at=running_at)
    assert message.started_at.ToNanoseconds() == 1000_250_000_000
    assert Report.from_proto(message) == folded._replace(started_at=running_at)
    # A report that carries its start sends it by itself; an argument takes precedence.
    assert _added(folded._replace(started_at=running_at)).started_at == message.started_at
    assert _added(folded._replace(started_at=1.0), running_at).started_at == message.started_at


def test_times_keep_microseconds() -> None:
    at = 1_767_322_245.678901
    message = _added(Report(TASK_ID, 1, ReportStatus.RUNNING, at))
    assert Report.from_proto(message).occurred_at == pytest.approx(at, abs=1e-6)


def test_a_result_is_read_only_from_a_success() -> None:
    message = _added(Report(TASK_ID, 1, ReportStatus.CANCELLED, 1000.0, result_json="1"))
    assert Report.from_proto(message).result_json == ""


def test_a_rejection_is_sent_but_is_not_an_outcome() -> None:
    message = _added(Report(TASK_ID, 3, Outcome.rejected().status, 1000.0))
    assert (message.task_id, message.attempt) == (TASK_ID, 3)
    assert message.status == common_pb2.TASK_STATUS_REJECTED
    with pytest.raises(ValueError, match="not an outcome"):
        Report.from_proto(message)


@pytest.mark.parametrize(
    "message",
    [
        common_pb2.StatusReport(task_id="nope", attempt=1, status=common_pb2.TASK_STATUS_RUNNING),
        common_pb2.StatusReport(task_id=TASK_ID, attempt=1),
    ],
)
def test_malformed_reports_are_refused(message: common_pb2.StatusReport) -> None:
    with pytest.raises(ValueError):
        Report.from_proto(message)


def test_task_ids_are_read_in_canonical_form() -> None:
    task_id = uuid.UUID(TASK_ID)
    assert task_id_text(TASK_ID) == TASK_ID
    assert task_id_text(task_id.hex.upper()) == TASK_ID
    message = common_pb2.StatusReport(
        task_id=TASK_ID.upper(), attempt=1, status=common_pb2.TASK_STATUS_RUNNING
    )
    assert Report.from_proto(message).task_id == TASK_ID
    with pytest.raises(ValueError):
        task_id_text("nope")


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (
            Report(TASK_ID, 1, ReportStatus.RUNNING, 1000.25, started_at=999.0),
            {"id": TASK_ID, "attempt": 1, "at": 1000.25},
        ),
        (
            Report(TASK_ID, 2, ReportStatus.SUCCEEDED, 1000.5, '{"a":"é"}', started_at=999.5),
            {"id": TASK_ID, "attempt": 2, "at": 1000.5, "started_at": 999.5, "result": '{"a":"é"}'},
        ),
        (
            Report(TASK_ID, 1, ReportStatus.SUCCEEDED, 1000.5),
            {"id": TASK_ID, "attempt": 1, "at": 1000.5},
        ),
        (
            Report(
                TASK_ID,
                1,
                ReportStatus.FAILED,
                1000.5,
                error=TaskError("E", 'm\n"x"'),
                retryable=False,
            ),
            {
                "id": TASK_ID,
                "attempt": 1,
                "at": 1000.5,
                "error": {"type": "E", "message": 'm\n"x"', "traceback": ""},
                "retryable": False,
            },
        ),
        (
            Report('x","attempt":9', 1, ReportStatus.CANCELLED, 1000.5),
            {"id": 'x","attempt":9', "attempt": 1, "at": 1000.5},
        ),
    ],
)
def test_a_report_is_one_json_object_for_the_report_queries(
    report: Report, expected: dict[str, object]
) -> None:
    assert json.loads(report.to_json_text()) == expected


def test_a_held_task_goes_to_its_message_and_back() -> None:
    held = Held(TASK_ID, 42)
    message = held.to_proto()

    assert isinstance(message, common_pb2.HeldTask)
    assert (message.task_id, message.token) == (TASK_ID, 42)
    assert Held.from_proto(message) == held
    assert Held.from_proto(common_pb2.HeldTask(task_id=TASK_ID)) == Held(TASK_ID, 0)


def test_a_held_task_is_read_in_canonical_form() -> None:
    message = common_pb2.HeldTask(task_id=TASK_ID.upper().replace("-", ""), token=7)

    assert Held.from_proto(message) == Held(TASK_ID, 7)
    with pytest.raises(ValueError):
        Held.from_proto(common_pb2.HeldTask(task_id="not-a-uuid", token=7))


def test_held_tasks_go_as_two_lists_and_are_paired_again() -> None:
    other = str(uuid.uuid4())
    held = [Held(TASK_ID, 3), Held(other, 5)]
    request = coordinator_pb2.RecordStartsRequest(worker_id="w-1")
    ids, tokens = Held.to_columns(held)
    request.asked_task_ids.extend(ids)
    request.asked_tokens.extend(tokens)

    assert (ids, tokens) == ([TASK_ID, other], [3, 5])
    assert Held.from_columns(request.asked_task_ids, request.asked_tokens) == held
    assert Held.to_columns([]) == ([], [])
    with pytest.raises(ValueError):
        Held.from_columns([TASK_ID, other], [3])


def test_importing_the_types_loads_no_protobuf() -> None:
    # A process=True child unpickles its Assignment: the generated code would slow its start.
    code = (
        "import sys, taskmill.common.attempts\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('google', 'taskmill.v1')))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
