"""Messages built the way a worker builds them, for tests that play the worker's part."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from taskmill.common.attempts import ReportStatus
from taskmill.common.jsontext import compact as _json
from taskmill.common.models import TaskError, TaskStatus
from taskmill.v1 import common_pb2

_STATUSES = {
    ReportStatus.RUNNING: common_pb2.TASK_STATUS_RUNNING,
    ReportStatus.SUCCEEDED: common_pb2.TASK_STATUS_SUCCEEDED,
    ReportStatus.FAILED: common_pb2.TASK_STATUS_FAILED,
    ReportStatus.CANCELLED: common_pb2.TASK_STATUS_CANCELLED,
    ReportStatus.REJECTED: common_pb2.TASK_STATUS_REJECTED,
}


def status_report(
    task_id: uuid.UUID | str,
    attempt: int,
    status: TaskStatus | ReportStatus | None,
    *,
    result: Any = None,
    error: TaskError | None = None,
    at: datetime | None = None,
    traceparent: str = "",
    token: int = 0,
) -> common_pb2.StatusReport:
    """A worker's status report; ``status=None`` gives a rejection (an unstarted task given back).

    ``result`` is encoded as a worker encodes it; ``at`` defaults to now; ``token`` is the
    assignment's fencing token (0: none, as from a worker older than tokens).

    Raises:
        ValueError: ``status`` is not one a worker reports.
    """
    report_status = ReportStatus.REJECTED if status is None else ReportStatus(status)
    occurred_at = Timestamp()
    occurred_at.FromDatetime(at or datetime.now(UTC))
    report = common_pb2.StatusReport(
        task_id=str(task_id),
        attempt=attempt,
        status=_STATUSES[report_status],
        occurred_at=occurred_at,
        traceparent=traceparent,
        token=token,
    )
    if report_status is ReportStatus.SUCCEEDED:
        report.result_json = _json(result)
    if error is not None:
        report.error.CopyFrom(
            common_pb2.TaskError(type=error.type, message=error.message, traceback=error.traceback)
        )
    return report
