"""Conversions between taskmill's domain types and the ``taskmill.v1`` protobuf messages.

Written once here so the coordinator and the worker agree on every field: timestamps are UTC,
JSON travels as UTF-8 text (compact when taskmill writes it; a payload goes on as the database
writes it, and a result as the worker wrote it), an unset timeout is ``0``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.timestamp_pb2 import Timestamp

from taskmill.common.models import ClaimedTask, Report, TaskError, TaskStatus
from taskmill.v1 import common_pb2

#: Report statuses that are outcomes of an attempt, and the task status each one leads to.
_OUTCOME_STATUSES: dict[int, TaskStatus] = {
    common_pb2.TASK_STATUS_RUNNING: TaskStatus.RUNNING,
    common_pb2.TASK_STATUS_SUCCEEDED: TaskStatus.SUCCEEDED,
    common_pb2.TASK_STATUS_FAILED: TaskStatus.FAILED,
    common_pb2.TASK_STATUS_CANCELLED: TaskStatus.CANCELLED,
}
_REPORT_STATUSES: dict[TaskStatus, common_pb2.TaskStatus] = {
    TaskStatus.RUNNING: common_pb2.TASK_STATUS_RUNNING,
    TaskStatus.SUCCEEDED: common_pb2.TASK_STATUS_SUCCEEDED,
    TaskStatus.FAILED: common_pb2.TASK_STATUS_FAILED,
    TaskStatus.CANCELLED: common_pb2.TASK_STATUS_CANCELLED,
}


#: A uuid as the database writes it, and as the coordinator sends it in every assignment.
_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

#: One encoder for every call: ``json.dumps`` with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def to_json_text(value: Any) -> str:
    """Encodes a JSON value as compact UTF-8 JSON text."""
    return _ENCODER.encode(value)


def to_timestamp(value: datetime) -> Timestamp:
    """Converts an aware (or naive UTC) datetime to a protobuf ``Timestamp``."""
    timestamp = Timestamp()
    timestamp.FromDatetime(value)
    return timestamp


def from_timestamp(value: Timestamp) -> datetime | None:
    """Converts a protobuf ``Timestamp`` to an aware UTC datetime; unset (zero) gives ``None``."""
    if value.seconds == 0 and value.nanos == 0:
        return None
    return value.ToDatetime(tzinfo=UTC)


def _epoch_timestamp(seconds: float) -> Timestamp:
    # The database keeps microseconds: round to them rather than carry float noise in nanos.
    micros = round(seconds * 1_000_000)
    whole, fraction = divmod(micros, 1_000_000)
    return Timestamp(seconds=whole, nanos=fraction * 1000)


def add_assignments(
    assignments: RepeatedCompositeFieldContainer[common_pb2.Assignment],
    tasks: Sequence[ClaimedTask],
    traceparents: Sequence[str],
) -> None:
    """Adds the assignments of claimed tasks to a request's list, built in place.

    The coordinator's dispatch path: ``add`` builds each message where it goes (a built message
    is copied into the list), and a time's ``Timestamp`` is built once for all the tasks that
    share it (one claim's tasks share their lease, one submit's their due time), which halved
    the cost of an assignment.

    Args:
        assignments: The ``assignments`` field of an ``AssignTasksRequest``.
        tasks: The claimed tasks.
        traceparents: The W3C trace context each assignment carries, in the same order.
    """
    add = assignments.add
    stamps: dict[float, Timestamp] = {}
    for task, traceparent in zip(tasks, traceparents, strict=True):
        scheduled_at = stamps.get(task.scheduled_at)
        if scheduled_at is None:
            scheduled_at = stamps[task.scheduled_at] = _epoch_timestamp(task.scheduled_at)
        lease_expires_at = stamps.get(task.lease_expires_at)
        if lease_expires_at is None:
            lease_expires_at = stamps[task.lease_expires_at] = _epoch_timestamp(
                task.lease_expires_at
            )
        add(
            task_id=task.id,
            command=task.command,
            payload_json=task.payload_json,
            attempt=task.attempt,
            max_attempts=task.max_attempts,
            timeout_seconds=task.timeout_seconds or 0.0,
            queue=task.queue,
            traceparent=traceparent,
            scheduled_at=scheduled_at,
            lease_expires_at=lease_expires_at,
        )


def error_to_proto(error: TaskError) -> common_pb2.TaskError:
    """Converts a task error to its message."""
    return common_pb2.TaskError(type=error.type, message=error.message, traceback=error.traceback)


def error_from_proto(error: common_pb2.TaskError) -> TaskError:
    """Converts a ``TaskError`` message to the domain type."""
    return TaskError(error.type, error.message, error.traceback)


def is_rejection(report: common_pb2.StatusReport) -> bool:
    """Whether a report gives an unstarted task back (it is not an outcome)."""
    return report.status == common_pb2.TASK_STATUS_REJECTED


def task_id_text(value: str) -> str:
    """A task id from a worker, in the database's canonical form (lowercase, with hyphens).

    The id a worker got in its assignment comes back as it was, and is checked with one regular
    expression (~0.3 us, where parsing a ``uuid.UUID`` and printing it cost ~3 us); any other
    form ``uuid.UUID`` reads is written canonically.

    Raises:
        ValueError: The text is not a uuid.
    """
    if _CANONICAL_ID.fullmatch(value):
        return value
    return str(uuid.UUID(value))


def report_from_proto(report: common_pb2.StatusReport) -> Report:
    """Converts a worker's status report to the lean form ``TaskStore.apply_reports`` takes.

    Nothing the database checks anyway is parsed: the result stays JSON text (the database
    refuses text that is not JSON) and the times are epoch seconds read from the message's
    fields. A missing ``occurred_at`` means now.

    Raises:
        ValueError: The report is a rejection or has no valid status or task id.
    """
    status = _OUTCOME_STATUSES.get(report.status)
    if status is None:
        raise ValueError(f"report status {report.status} is not an outcome")
    task_id = task_id_text(report.task_id)
    # Microseconds, truncated as ``Timestamp.ToDatetime`` does: the database keeps no more.
    occurred = report.occurred_at
    seconds, nanos = occurred.seconds, occurred.nanos
    at = seconds + (nanos // 1000) / 1e6 if seconds or nanos else time.time()
    error = None
    if status is TaskStatus.FAILED:
        error = error_from_proto(report.error) if report.HasField("error") else None
        error = error or TaskError("error", "the worker reported a failure without details")
    started_at = None
    if report.HasField("started_at"):
        started = report.started_at
        seconds, nanos = started.seconds, started.nanos
        started_at = seconds + (nanos // 1000) / 1e6 if seconds or nanos else None
    result_json = report.result_json if status is TaskStatus.SUCCEEDED else ""
    return Report(task_id, report.attempt, status, at, result_json, error, started_at)


def to_report(
    task_id: uuid.UUID | str,
    attempt: int,
    status: TaskStatus | None,
    *,
    result: Any = None,
    error: TaskError | None = None,
    at: datetime | None = None,
    traceparent: str = "",
) -> common_pb2.StatusReport:
    """Builds a status report; ``status=None`` builds a rejection (an unstarted task given back).

    Args:
        task_id: The task.
        attempt: The attempt the report is about.
        status: ``RUNNING``, ``SUCCEEDED``, ``FAILED``, ``CANCELLED``, or ``None`` to reject.
        result: The JSON result of a succeeded attempt.
        error: The error of a failed attempt.
        at: When it happened; defaults to now.
        traceparent: The execution span's W3C trace context.

    Raises:
        ValueError: ``status`` is not one a worker reports.
    """
    if status is None:
        proto_status = common_pb2.TASK_STATUS_REJECTED
    elif status in _REPORT_STATUSES:
        proto_status = _REPORT_STATUSES[status]
    else:
        raise ValueError(f"a worker cannot report {status}")
    report = common_pb2.StatusReport(
        task_id=str(task_id),
        attempt=attempt,
        status=proto_status,
        occurred_at=to_timestamp(at or datetime.now(UTC)),
        traceparent=traceparent,
    )
    if status is TaskStatus.SUCCEEDED:
        report.result_json = to_json_text(result)
    if error is not None:
        report.error.CopyFrom(error_to_proto(error))
    return report
