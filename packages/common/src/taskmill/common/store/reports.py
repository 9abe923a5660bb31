"""Workers' status reports, applied to their tasks in batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskmill.common.attempts import Report, ReportStatus
from taskmill.common.db import Database
from taskmill.common.dberrors import QueryError
from taskmill.common.errors import InvalidTransition
from taskmill.common.models import Backoff

_REPORT_QUERIES = {
    ReportStatus.RUNNING: "mark_running",
    ReportStatus.SUCCEEDED: "mark_succeeded",
    ReportStatus.FAILED: "mark_failed",
    ReportStatus.CANCELLED: "mark_cancelled",
}

#: The order reports of one batch are applied in: a task's start before its end.
_REPORT_ORDER = tuple(_REPORT_QUERIES)


@dataclass(frozen=True)
class Applied:
    """What a batch of reports changed (see :meth:`ReportStore.apply`).

    Attributes:
        changed: The ids of the tasks that changed; the other reports were stale or duplicates.
        refused: The reports the database refused (a result that is not JSON or holds NUL, a
            time out of range), each with the database's reason. The others were still applied.
    """

    changed: set[str]
    refused: list[tuple[Report, str]]


class ReportStore:
    """Applies workers' reports: a task starts, succeeds, fails (and may be retried, by the retry
    rule of migration 0003) or stops after a cancellation request.

    Args:
        db: The database.
        backoff: The delays between a failed attempt and its retry.
    """

    def __init__(self, db: Database, backoff: Backoff | None = None) -> None:
        self._db = db
        self._backoff = backoff or Backoff()

    def apply(self, reports: Sequence[Report], worker_id: str | None = None) -> Applied:
        """Applies reports in one transaction, a batched ``UPDATE`` per status.

        Each change is conditional on the task's status and the report's attempt, so a stale or
        duplicated report changes nothing. A task's "running" report is applied before its final
        report in the same batch. With ``worker_id``, only tasks dispatched to that worker
        change: a task given back after an assignment timed out keeps its attempt number, so a
        late report from the first worker must not count for the next one.

        The ids and results stay text, and the database checks them. One report it refuses (a
        result that is not JSON, a time out of range) fails the whole batched statement, so the
        batch is then applied again one report at a time: the others still count, and the
        refused ones are returned with the database's reason.

        Raises:
            InvalidTransition: A report's status is not one a worker reports; nothing changed.
        """
        try:
            return self._apply(reports, worker_id)
        except QueryError as exc:
            if not _is_data_error(exc):
                raise
        applied = Applied(set(), [])
        for report in (r for batch in _by_status(reports).values() for r in batch):
            try:
                one = self._apply([report], worker_id)
            except QueryError as exc:
                if not _is_data_error(exc):
                    raise
                applied.refused.append((report, exc.message))
                continue
            applied.changed.update(one.changed)
        return applied

    def _apply(self, reports: Sequence[Report], worker_id: str | None) -> Applied:
        """Applies reports all or none: one transaction, a statement per status.

        Raises:
            InvalidTransition: A report's status is not one a worker reports; nothing changed.
            QueryError: The database refused a report; nothing changed.
        """
        by_status = _by_status(reports)
        applied = Applied(set(), [])
        with self._db.transaction() as conn:
            for status, batch in by_status.items():
                # One JSON array: cheaper for pg8000 to send than one array per column.
                document = "[" + ",".join([report.to_json_text() for report in batch]) + "]"
                params: dict[str, Any] = {"worker_id": worker_id, "reports": document}
                if status is ReportStatus.FAILED:
                    params["backoff_base"] = self._backoff.base
                    params["backoff_max"] = self._backoff.maximum
                [[ids]] = conn.run(_REPORT_QUERIES[status], **params)
                applied.changed.update(ids.split(",") if ids else ())
        return applied


def _by_status(reports: Sequence[Report]) -> dict[ReportStatus, list[Report]]:
    """Groups reports by status, in the order they are applied in; refuses a status no worker
    reports before anything changes, so an error never hides what changed."""
    grouped: dict[ReportStatus, list[Report]] = {}
    for report in reports:
        grouped.setdefault(report.status, []).append(report)
    invalid = [str(status) for status in grouped if status not in _REPORT_ORDER]
    if invalid:
        raise InvalidTransition(f"a worker cannot report {', '.join(invalid)}")
    return {status: grouped[status] for status in _REPORT_ORDER if status in grouped}


def _is_data_error(error: QueryError) -> bool:
    # SQLSTATE class 22, data exception: a value the database cannot take (invalid JSON, a time
    # out of range), as opposed to a broken connection or query.
    return (error.sqlstate or "").startswith("22")
