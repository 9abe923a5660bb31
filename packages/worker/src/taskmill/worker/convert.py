"""Conversions between the worker's domain types and the ``taskmill.v1`` messages."""

from __future__ import annotations

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


def _timestamp(seconds: float) -> Timestamp:
    whole = int(seconds)
    return Timestamp(seconds=whole, nanos=int((seconds - whole) * 1_000_000_000))


def report_to_proto(report: Report) -> common_pb2.StatusReport:
    """Builds the message for one status report."""
    message = common_pb2.StatusReport(
        task_id=report.task_id,
        attempt=report.attempt,
        status=_STATUS_TO_PROTO[report.status],
        result_json=report.result_json,
        occurred_at=_timestamp(report.occurred_at),
        traceparent=report.traceparent,
    )
    if report.error is not None:
        message.error.type = report.error.type
        message.error.message = report.error.message
        message.error.traceback = report.error.traceback
    if report.started_at is not None:
        message.started_at.CopyFrom(_timestamp(report.started_at))
    return message
