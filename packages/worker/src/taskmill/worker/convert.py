"""Conversions between the worker's domain types and the ``taskmill.v1`` messages."""

from __future__ import annotations

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.timestamp_pb2 import Timestamp

from taskmill.v1 import common_pb2
from taskmill.worker.model import Assignment, Report, ReportStatus

_STATUS_TO_PROTO: dict[ReportStatus, common_pb2.TaskStatus] = {
    ReportStatus.RUNNING: common_pb2.TASK_STATUS_RUNNING,
    ReportStatus.SUCCEEDED: common_pb2.TASK_STATUS_SUCCEEDED,
    ReportStatus.FAILED: common_pb2.TASK_STATUS_FAILED,
    ReportStatus.CANCELLED: common_pb2.TASK_STATUS_CANCELLED,
    ReportStatus.REJECTED: common_pb2.TASK_STATUS_REJECTED,
}


def assignment_from_proto(message: common_pb2.Assignment) -> Assignment:
    """Reads an assignment; a zero timeout means none."""
    return Assignment(
        task_id=message.task_id,
        command=message.command,
        payload_json=message.payload_json or "null",
        attempt=message.attempt,
        max_attempts=message.max_attempts,
        timeout_seconds=message.timeout_seconds if message.timeout_seconds > 0 else None,
        queue=message.queue,
        traceparent=message.traceparent,
    )


def _set_time(field: Timestamp, seconds: float) -> None:
    # Set in place: a Timestamp built apart and copied in costs twice as much.
    whole = int(seconds)
    field.seconds = whole
    field.nanos = int((seconds - whole) * 1_000_000_000)


def add_report(
    reports: RepeatedCompositeFieldContainer[common_pb2.StatusReport],
    report: Report,
    started_at: float | None = None,
) -> common_pb2.StatusReport:
    """Appends the message for one status report to ``reports`` (built in place, not copied).

    Args:
        reports: The request's repeated field.
        report: The report.
        started_at: When the attempt started, for a final report that took in its ``running``
            report (see :mod:`taskmill.worker.reporter`).
    """
    message = reports.add(
        task_id=report.task_id,
        attempt=report.attempt,
        status=_STATUS_TO_PROTO[report.status],
        result_json=report.result_json,
        traceparent=report.traceparent,
    )
    _set_time(message.occurred_at, report.occurred_at)
    if report.error is not None:
        error = message.error
        error.type = report.error.type
        error.message = report.error.message
        error.traceback = report.error.traceback
    if started_at is not None:
        _set_time(message.started_at, started_at)
    return message
