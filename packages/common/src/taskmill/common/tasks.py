"""The task store: every read and state change of the ``tasks`` table, as named queries.

Each change is one conditional ``UPDATE ... WHERE status = <expected>``; a change that matches no
row (stale, duplicated or reordered) changes nothing and is reported to the caller by the ids it
returns, so callers can tell "applied" from "ignored".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from datetime import datetime
from typing import Any

from taskmill.common.db import Connection, Database, QueryError
from taskmill.common.errors import InvalidTransition, TaskNotFound
from taskmill.common.models import (
    Applied,
    Backoff,
    Claim,
    ClaimedTask,
    NewTask,
    Outcome,
    Report,
    Task,
    TaskError,
    TaskStatus,
)

_REPORT_QUERIES = {
    TaskStatus.RUNNING: "mark_running",
    TaskStatus.SUCCEEDED: "mark_succeeded",
    TaskStatus.FAILED: "mark_failed",
    TaskStatus.CANCELLED: "mark_cancelled",
}


#: The order reports of one batch are applied in: a task's start before its end.
_REPORT_ORDER = (TaskStatus.RUNNING, TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)

#: One encoder for every call: ``json.dumps`` with options builds a new one each time.
_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class TaskStore:
    """Reads and changes tasks.

    Methods that take a ``conn`` run inside the caller's transaction; the others lend a pooled
    connection for the one statement they run.
    """

    def __init__(self, db: Database, backoff: Backoff | None = None) -> None:
        self._db = db
        self._backoff = backoff or Backoff()

    # -- submitting and reading -----------------------------------------------------------

    def insert(self, conn: Connection, tasks: Sequence[NewTask]) -> list[Task]:
        """Inserts tasks in one statement and notifies coordinators at commit.

        Tasks whose idempotency key is already taken are skipped; the caller finds the
        existing ones with ``by_idempotency_keys``. Returns the inserted tasks in input order.
        """
        rows = conn.rows(
            "insert_tasks",
            ids=[t.id for t in tasks],
            commands=[t.command for t in tasks],
            payloads=[_json(t.payload) for t in tasks],
            queues=[t.queue for t in tasks],
            priorities=[t.priority for t in tasks],
            max_attempts=[t.max_attempts for t in tasks],
            timeouts=[t.timeout_seconds for t in tasks],
            scheduled_ats=[t.scheduled_at for t in tasks],
            delays=[t.delay_seconds for t in tasks],
            idempotency_keys=[t.idempotency_key for t in tasks],
            request_hashes=[t.request_hash for t in tasks],
            trace_contexts=[t.trace_context for t in tasks],
        )
        if rows:
            conn.run("notify_submitted", count=len(rows))
        by_id = {row["id"]: Task.from_row(row) for row in rows}
        return [by_id[t.id] for t in tasks if t.id in by_id]

    def by_idempotency_keys(self, conn: Connection, keys: Sequence[str]) -> dict[str, Task]:
        """The tasks holding these idempotency keys, by key."""
        rows = conn.rows("get_tasks_by_idempotency_keys", keys=list(keys))
        return {row["idempotency_key"]: Task.from_row(row) for row in rows}

    def get(self, task_id: uuid.UUID | str) -> Task:
        """Returns one task.

        Raises:
            TaskNotFound: No task has this id.
        """
        with self._db.connection() as conn:
            row = conn.row("get_task", id=task_id)
        if row is None:
            raise TaskNotFound(f"no task has id {task_id}")
        return Task.from_row(row)

    def page(
        self,
        *,
        status: TaskStatus | None = None,
        command: str | None = None,
        queue: str | None = None,
        before_seq: int | None = None,
        limit: int = 100,
    ) -> list[Task]:
        """Lists tasks newest first, optionally filtered, starting below ``before_seq``."""
        with self._db.connection() as conn:
            rows = conn.rows(
                "list_tasks",
                status=None if status is None else str(status),
                command=command,
                queue=queue,
                before_seq=before_seq,
                limit=limit,
            )
        return [Task.from_row(row) for row in rows]

    # -- cancellation ----------------------------------------------------------------------

    def cancel(self, task_id: uuid.UUID) -> Task:
        """Cancels a scheduled task at once, or asks for a dispatched or running one to stop.

        Raises:
            TaskNotFound: No task has this id.
            InvalidTransition: The task already finished.
        """
        with self._db.transaction() as conn:
            row = conn.row("cancel_scheduled_task", id=task_id)
            if row is None:
                row = conn.row("request_task_cancel", id=task_id)
                if row is not None:
                    conn.run("notify_cancel_requested", task_id=str(task_id))
        if row is not None:
            return Task.from_row(row)
        task = self.get(task_id)
        raise InvalidTransition(f"task {task_id} already finished as {task.status}")

    def cancel_requested(self, worker_id: str) -> list[uuid.UUID]:
        """Tasks held by a worker whose cancellation was requested."""
        with self._db.connection() as conn:
            return [row[0] for row in conn.run("cancel_requested_for_worker", worker_id=worker_id)]

    # -- dispatch ---------------------------------------------------------------------------

    def claim_due(
        self,
        shares: Sequence[tuple[str, int]],
        lease_seconds: float,
        conn: Connection | None = None,
    ) -> Claim:
        """Claims due tasks for workers, returning only what an assignment needs, and when the
        next task still scheduled is due.

        ``shares`` are the workers in round-robin order, each with how many tasks it takes:
        ``[("a", 1), ("b", 3), ("c", 2)]`` has the slots ``a, b, c, b, c, b``. The tasks come in
        slot order (the most urgent fills the first slot); a claim that finds fewer due tasks
        than slots fills the first ones. The claim commits before it returns, so the caller
        sends the tasks outside any transaction. Each claimed task's attempt is incremented and
        its lease set. A claim for one worker runs a leaner statement with the same answer.
        ``conn``, when given, is a connection outside any transaction to run the claim on
        instead of a pooled one.

        Raises:
            ValueError: The shares have no slot.
        """
        slots = sum(count for _, count in shares)
        if slots <= 0:
            raise ValueError("a claim needs at least one slot")
        lent = nullcontext(conn) if conn is not None else self._db.connection()
        with lent as claiming:
            if len(shares) == 1:
                [[claimed, next_due_in]] = claiming.run(
                    "claim_due_for_worker",
                    worker_id=shares[0][0],
                    slots=slots,
                    lease_seconds=lease_seconds,
                )
            else:
                [[claimed, next_due_in]] = claiming.run(
                    "claim_due_assignments",
                    shares=_json(list(shares)),
                    slots=slots,
                    lease_seconds=lease_seconds,
                )
        return Claim(
            list(map(ClaimedTask._make, claimed or ())),
            None if next_due_in is None else float(next_due_in),
        )

    def next_due_at(self) -> datetime | None:
        """When the earliest scheduled task is due, or ``None`` when none is scheduled."""
        with self._db.connection() as conn:
            value: datetime | None = conn.scalar("next_due_at")
        return value

    def release(
        self, worker_id: str, task_ids: Sequence[uuid.UUID] | Sequence[str]
    ) -> list[uuid.UUID]:
        """Returns tasks a worker never received to ``scheduled``, without using an attempt.

        A task whose cancellation was requested meanwhile ends ``cancelled`` instead.
        """
        with self._db.connection() as conn:
            return [
                row[0] for row in conn.run("release_tasks", ids=list(task_ids), worker_id=worker_id)
            ]

    def extend_leases(self, worker_id: str, lease_seconds: float) -> None:
        """Extends the leases of every task a worker holds."""
        with self._db.connection() as conn:
            conn.run("extend_leases", worker_id=worker_id, lease_seconds=lease_seconds)

    # -- outcomes ---------------------------------------------------------------------------

    def apply(self, outcomes: Sequence[Outcome], worker_id: str | None = None) -> set[uuid.UUID]:
        """Applies workers' reports in one transaction, a batched UPDATE per kind.

        Returns the ids of the tasks that changed; the others were stale or duplicates.
        A task's "running" report is applied before its final report in the same batch.
        With ``worker_id``, only tasks dispatched to that worker change: a task given back
        after an assignment timed out keeps its attempt number, so a late report from the
        first worker must not count for the next one.

        Raises:
            InvalidTransition: A status is not one a worker reports; nothing changed.
            QueryError: The database refused an outcome; nothing changed.
        """
        ids = {str(outcome.task_id): outcome.task_id for outcome in outcomes}
        changed = self._apply(_by_status([Report.from_outcome(o) for o in outcomes]), worker_id)
        return {ids[task_id] for task_id in changed}

    def apply_reports(self, reports: Sequence[Report], worker_id: str | None = None) -> Applied:
        """Applies reports as ``apply`` does, but refuses only the reports the database refuses.

        The coordinator's path: the ids and results stay text, and the database checks them.
        One report it refuses (a result that is not JSON, a time out of range) fails the whole
        batched statement, so the batch is then applied again one report at a time: the others
        still count, and the refused ones are returned with the database's reason.

        Raises:
            InvalidTransition: A report's status is not one a worker reports; nothing changed.
        """
        by_status = _by_status(reports)
        try:
            return Applied(self._apply(by_status, worker_id), {})
        except QueryError as exc:
            if not _is_data_error(exc):
                raise
        changed, refused = set[str](), dict[str, str]()
        for status, batch in by_status.items():
            for report in batch:
                try:
                    changed |= self._apply({status: [report]}, worker_id)
                except QueryError as exc:
                    if not _is_data_error(exc):
                        raise
                    refused[report.task_id] = exc.message
        return Applied(changed, refused)

    def _apply(
        self, by_status: Mapping[TaskStatus, Sequence[Report]], worker_id: str | None
    ) -> set[str]:
        changed: set[str] = set()
        with self._db.transaction() as conn:
            for status, batch in by_status.items():
                # A JSON array, far cheaper for pg8000 to send than one array per column.
                document = "[" + ",".join([report.to_json_text() for report in batch]) + "]"
                params: dict[str, Any] = {"worker_id": worker_id, "reports": document}
                if status is TaskStatus.FAILED:
                    params["backoff_base"] = self._backoff.base
                    params["backoff_max"] = self._backoff.maximum
                [[ids]] = conn.run(_REPORT_QUERIES[status], **params)
                changed.update(ids.split(",") if ids else ())
        return changed

    # -- recovery ---------------------------------------------------------------------------

    def recover_lost(self, dead_worker_ids: Sequence[str]) -> dict[uuid.UUID, TaskStatus]:
        """Recovers tasks of dead workers and tasks whose lease expired.

        Unstarted tasks go back to ``scheduled`` (their attempt not counted); running ones fail
        with ``worker_lost``, or are scheduled again when attempts remain. Returns each recovered
        task's new status.
        """
        error = TaskError("worker_lost", "the worker running the task stopped responding")
        with self._db.transaction() as conn:
            unstarted = conn.run("requeue_lost_unstarted", worker_ids=list(dead_worker_ids))
            running = conn.run(
                "fail_lost_running",
                worker_ids=list(dead_worker_ids),
                error=_json(error.to_json()),
                backoff_base=self._backoff.base,
                backoff_max=self._backoff.maximum,
            )
            recovered = {row[0]: TaskStatus(row[1]) for row in [*unstarted, *running]}
            rescheduled = sum(status is TaskStatus.SCHEDULED for status in recovered.values())
            if rescheduled:
                conn.run("notify_submitted", count=rescheduled)
        return recovered

    # -- coordinator helpers (appended for the coordinator's dispatch loop and heartbeats) ---

    def extend_held_leases(
        self, worker_id: str, task_ids: Sequence[uuid.UUID] | Sequence[str], lease_seconds: float
    ) -> None:
        """Extends the leases of the tasks (uuids or their text) a worker says it holds, only."""
        if not task_ids:
            return
        with self._db.connection() as conn:
            conn.run(
                "extend_held_leases",
                worker_id=worker_id,
                ids="{" + ",".join(map(str, task_ids)) + "}",  # uuids need no quoting
                lease_seconds=lease_seconds,
            )

    # -- the scheduler's submit path (appended for the HTTP API) ------------------------------

    def submit(self, tasks: Sequence[SubmitRow]) -> list[Decided | None]:
        """Inserts tasks and notifies coordinators in one statement: one round trip, one commit.

        Cheaper than ``insert`` for the HTTP hot path: each task is a tuple of plain values, all
        of them encoded as one JSON document in one call, and only what the database decided
        comes back. Tasks whose idempotency key is already taken are skipped; find them with
        ``by_idempotency_keys_with_hashes``. A lone task goes as parameters instead, which the
        server reads sooner than a JSON document (a single submit's latency).

        Returns:
            For each task, in input order, its ``(created_at, scheduled_at)``, or ``None`` when
            it was skipped.
        """
        with self._db.connection() as conn:
            if len(tasks) == 1:
                decided = conn.scalar("submit_task", **_submit_params(tasks[0])) or []
            else:
                decided = conn.scalar("submit_tasks", tasks=_json(tasks)) or []
        # One datetime per distinct time, shared by the tasks that have it (a statement's tasks
        # mostly share now()): whoever formats or hashes them does it once, not per task.
        parse = datetime.fromisoformat
        moments = {text: parse(text) for text in {t for row in decided for t in row[1:]}}
        # Keyed by the id's text, as it comes back: parsing a thousand UUIDs is not free.
        times = {row[0]: (moments[row[1]], moments[row[2]]) for row in decided}
        return [times.get(task[0]) for task in tasks]

    def by_idempotency_keys_with_hashes(
        self, keys: Sequence[str]
    ) -> dict[str, tuple[Task, str | None]]:
        """The tasks holding these idempotency keys, with the request hash each was stored with."""
        with self._db.connection() as conn:
            rows = conn.rows("get_tasks_by_idempotency_keys", keys=list(keys))
        return {row["idempotency_key"]: (Task.from_row(row), row["request_hash"]) for row in rows}


#: One task for ``TaskStore.submit``, its fields in the order the ``submit_tasks`` query reads
#: them: id (UUID text), command, payload (any JSON value), queue, priority, max_attempts,
#: timeout_seconds, scheduled_at (ISO 8601 text, or ``None`` for delay_seconds after the
#: database's now), delay_seconds, idempotency_key, request_hash, trace_context. A plain tuple:
#: a thousand of them are built per batch, and JSON encodes them as arrays in one call.
SubmitRow = tuple[
    str, str, Any, str, int, int, float | None, str | None, float,
    str | None, str | None, str | None,
]  # fmt: skip
#: What the database decided for a task ``TaskStore.submit`` inserted: created_at, scheduled_at.
Decided = tuple[datetime, datetime]


def _submit_params(task: SubmitRow) -> dict[str, Any]:
    """The parameters of ``submit_task``: a ``SubmitRow``'s fields, the payload as JSON text."""
    return {
        "id": task[0],
        "command": task[1],
        "payload": _json(task[2]),
        "queue": task[3],
        "priority": task[4],
        "max_attempts": task[5],
        "timeout_seconds": task[6],
        "scheduled_at": task[7],
        "delay_seconds": task[8],
        "idempotency_key": task[9],
        "request_hash": task[10],
        "trace_context": task[11],
    }


def _by_status(reports: Sequence[Report]) -> dict[TaskStatus, list[Report]]:
    """Groups reports by status, in the order they are applied in; refuses a status no worker
    reports before anything changes, so an error never hides what changed."""
    grouped: dict[TaskStatus, list[Report]] = {}
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
