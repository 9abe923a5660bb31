"""Store helpers for tests that play a service's part against the real stores.

Everything here drives the statements production runs: tasks go in through the scheduler's
submit statements, reports through the coordinator's report statements, claims through its
claim. Only what no service needs (tasks built field by field, reports stated with uuids and
datetimes) lives here.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

from taskmill.common.attempts import Held, Report, ReportStatus
from taskmill.common.db import Connection, Database
from taskmill.common.errors import TaskNotFound
from taskmill.common.jsontext import compact as _json
from taskmill.common.models import (
    Backoff,
    ServedQueue,
    Task,
    TaskError,
    TaskStatus,
    Worker,
    WorkerState,
)
from taskmill.common.store import (
    DispatchStore,
    RecoveryStore,
    ReportStore,
    Route,
    Share,
    SubmitRow,
    SubmitStore,
    TaskStore,
    WorkerStore,
)


@dataclass(frozen=True)
class NewTask:
    """A task to insert, field by field.

    Attributes:
        command: The handler name.
        payload: Any JSON value.
        queue: The queue name.
        priority: Higher runs first.
        max_attempts: How many execution attempts the task may have.
        timeout_seconds: Bound on one attempt's run time, or ``None``.
        scheduled_at: When the task becomes due; ``None`` means ``delay_seconds`` from now.
        delay_seconds: Used when ``scheduled_at`` is ``None``; measured by the database clock.
        idempotency_key: Makes the submit safe to repeat.
        request_hash: Identifies the submitted body, to tell a retry from a reused key.
        trace_context: The W3C ``traceparent`` of the submitting span.
        id: The new task's id.
    """

    command: str
    payload: Any = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 1
    timeout_seconds: float | None = None
    scheduled_at: datetime | None = None
    delay_seconds: float = 0.0
    idempotency_key: str | None = None
    request_hash: str | None = None
    trace_context: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def to_row(self) -> SubmitRow:
        """The task as the submit statements take it."""
        return SubmitRow(
            str(self.id),
            self.command,
            self.payload,
            self.queue,
            self.priority,
            self.max_attempts,
            self.timeout_seconds,
            None if self.scheduled_at is None else self.scheduled_at.isoformat(),
            self.delay_seconds,
            self.idempotency_key,
            self.request_hash,
            self.trace_context,
        )


@dataclass(frozen=True)
class Reported:
    """What a worker reported of one attempt (that it started, or how it ended), as a test
    states it: with a uuid, datetimes and a JSON value rather than the wire's text.

    Attributes:
        task_id: The task.
        attempt: The attempt the report is about.
        status: ``RUNNING``, ``SUCCEEDED``, ``FAILED`` or ``CANCELLED``.
        at: When it happened.
        result: The JSON result of a succeeded attempt.
        error: The error of a failed attempt.
        retryable: Whether a failed attempt may be retried when attempts remain.
        started_at: When a final attempt started, if its ``running`` report was folded in.
        token: The fencing token of the claim; ``None`` for :meth:`Stores.apply` to use the
            task's current claim's when the attempt is its current one, as its worker would.
    """

    task_id: uuid.UUID
    attempt: int
    status: TaskStatus
    at: datetime
    result: Any = None
    error: TaskError | None = None
    retryable: bool = True
    started_at: datetime | None = None
    token: int | None = None

    def to_report(self) -> Report:
        """The report as a worker sends it.

        A status no worker reports stays a ``TaskStatus``, for the store to refuse.
        """
        try:
            status = ReportStatus(self.status)
        except ValueError:
            status = cast(ReportStatus, self.status)
        return Report(
            str(self.task_id),
            self.attempt,
            status,
            self.at.timestamp(),
            _json(self.result) if status is ReportStatus.SUCCEEDED else "",
            self.error,
            "",
            None if self.started_at is None else self.started_at.timestamp(),
            self.retryable,
            self.token or 0,
        )


class Stores:
    """Every production store on one database, with the shortcuts tests share.

    Args:
        db: The database.
        backoff: The retry backoff of the report and recovery stores.
    """

    def __init__(self, db: Database, backoff: Backoff | None = None) -> None:
        self.db = db
        self.submits = SubmitStore(db)
        self.tasks = TaskStore(db)
        self.dispatch = DispatchStore(db)
        self.reports = ReportStore(db, backoff)
        self.recovery = RecoveryStore(db, backoff)
        self.workers = WorkerStore(db)

    def get(self, task_id: uuid.UUID | str) -> Task:
        """One task (``TaskStore.get``)."""
        return self.tasks.get(task_id)

    def insert(self, conn: Connection | None, tasks: Sequence[NewTask]) -> list[Task]:
        """Inserts tasks through the scheduler's submit statements, on ``conn`` when given.

        Returns the inserted tasks in input order; those whose idempotency key was taken are
        skipped.
        """
        rows = [task.to_row() for task in tasks]
        if conn is None:
            with self.db.transaction() as own:
                return self.insert(own, tasks)
        decided = self.submits.submit(rows, conn)
        inserted = [row.id for row, times in zip(rows, decided, strict=True) if times]
        return [self._row(conn, task_id) for task_id in inserted]

    @staticmethod
    def _row(conn: Connection, task_id: str) -> Task:
        row = conn.row("get_task", id=task_id)
        assert row is not None, f"task {task_id} vanished"
        return Task.from_row(row)

    def apply(self, reported: Sequence[Reported], worker_id: str | None = None) -> set[uuid.UUID]:
        """Applies reports through the report statements, all or none of them.

        Returns the ids of the tasks that changed.

        Raises:
            QueryError: The database refused a report; nothing changed.
        """
        ids = {str(report.task_id): report.task_id for report in reported}
        reports = [self._with_token(r).to_report() for r in reported]
        # The production path without its fallback of one report at a time, so that a refused
        # report fails the test's whole batch.
        changed = self.reports._apply(reports, worker_id).changed
        return {ids[task_id] for task_id in changed}

    def recover_lost(
        self,
        dead_worker_ids: Sequence[str],
        *,
        expired_leases: bool = True,
        started: Sequence[int] = (),
    ) -> dict[uuid.UUID, TaskStatus]:
        """Recovers tasks of dead workers and, with ``expired_leases``, tasks whose lease expired,
        through the recovery statements production runs (``RecoveryStore.reap_and_recover`` and
        ``retire``), without removing any worker.

        Unstarted tasks go back to ``scheduled`` (their attempt not counted); running ones fail
        with ``worker_lost``, or are scheduled again when the retry rule allows, and so do
        dispatched ones whose token is among ``started`` (the removed workers' started tokens)
        or a known worker's. Coordinators are notified of the tasks scheduled again. Returns
        each recovered task's new status.
        """
        with self.db.transaction() as conn:
            return self.recovery._recover(
                conn, dead_worker_ids, started, expired_leases=expired_leases
            )

    def held(self, *task_ids: uuid.UUID | str) -> list[Held]:
        """The tasks as their worker names them: with their current claims' tokens."""
        return [Held(str(task_id), self.get(task_id).claim_token or 0) for task_id in task_ids]

    def _with_token(self, reported: Reported) -> Reported:
        """The report with its claim's token, when the test gave none and the attempt is the
        task's current one; a report of another attempt stays without (matched by attempt)."""
        if reported.token is not None:
            return reported
        try:
            task = self.get(reported.task_id)
        except TaskNotFound:
            return reported
        if task.attempt != reported.attempt or task.claim_token is None:
            return reported
        return replace(reported, token=task.claim_token)

    def next_due_at(self) -> datetime | None:
        """When the earliest scheduled task is due, or ``None`` when none is scheduled."""
        with self.db.connection() as conn:
            [[value]] = conn.execute(
                "SELECT min(scheduled_at) FROM tasks WHERE status = 'scheduled'"
            )
        return value  # type: ignore[no-any-return]


def set_worker_state(db: Database, worker_id: str, state: WorkerState) -> Worker | None:
    """Changes a worker's state, which no service does (a lost or stopping worker's row is
    deleted); ``None`` when the worker is unknown."""
    with db.connection() as conn:
        found = conn.execute(
            "UPDATE workers SET state = :state WHERE id = :id RETURNING id",
            id=worker_id,
            state=str(state),
        )
    return WorkerStore(db).get(worker_id) if found else None


def claim(stores: Stores, slots: Sequence[str], lease_seconds: float = 60.0) -> list[Task]:
    """Claims due tasks as a coordinator does (``DispatchStore.claim_due``), returned whole,
    most urgent first: for tests that play the coordinator.

    ``slots`` lists a worker id per task to claim; each worker's slots become its share, in the
    order the workers first appear (``["a", "a", "b"]`` is ``a: 2, b: 1``).
    """
    shares = [Share(worker_id, size) for worker_id, size in Counter(slots).items()]
    if not shares:
        return []
    claimed = stores.dispatch.claim_due(every_route(stores), shares, lease_seconds).tasks
    return [stores.tasks.get(task.id) for task in claimed]


def every_route(stores: Stores) -> Route:
    """The route of a worker that serves every queue and has every handler the scheduled tasks
    name: for tests whose workers may take any task."""
    with stores.db.connection() as conn:
        [[queues, commands]] = conn.execute(
            "SELECT coalesce(array_agg(DISTINCT queue), '{default}'),"
            " coalesce(array_agg(DISTINCT command), '{}') FROM tasks WHERE status = 'scheduled'"
        )
    return Route(tuple(ServedQueue(name) for name in sorted(queues)), tuple(sorted(commands)))
