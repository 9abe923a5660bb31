"""The scheduler's submit path: new tasks in, what the database decided out."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime
from typing import Any, NamedTuple

from taskmill.common.db import Connection, Database
from taskmill.common.jsontext import compact as _json
from taskmill.common.models import Task


class SubmitRow(NamedTuple):
    """One task for :meth:`SubmitStore.submit`, its fields in the order ``submit_tasks`` reads.

    A named tuple: a thousand are built per batch, and JSON encodes each as one array.

    Attributes:
        id: The new task's id, as uuid text.
        command: The handler name.
        payload: Any JSON value.
        queue: The queue name.
        priority: Higher runs first.
        max_attempts: How many execution attempts the task may have.
        timeout_seconds: Bound on one attempt's run time, or ``None``.
        scheduled_at: When the task becomes due, as ISO 8601 text; ``None`` means
            ``delay_seconds`` after the database's ``now()``.
        delay_seconds: Used when ``scheduled_at`` is ``None``.
        idempotency_key: Makes the submit safe to repeat.
        request_hash: Identifies the submitted body, to tell a retry from a reused key.
        trace_context: The W3C ``traceparent`` of the submitting span.
    """

    id: str
    command: str
    payload: Any
    queue: str
    priority: int
    max_attempts: int
    timeout_seconds: float | None
    scheduled_at: str | None
    delay_seconds: float
    idempotency_key: str | None
    request_hash: str | None
    trace_context: str | None


#: What the database decided for a task :meth:`SubmitStore.submit` inserted: when it was
#: created, and when it is due. A plain pair, as one is made per task of a batch.
Decided = tuple[datetime, datetime]


class SubmitStore:
    """Inserts tasks for the HTTP API, and finds the tasks an idempotency key stored."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def submit(
        self, tasks: Sequence[SubmitRow], conn: Connection | None = None
    ) -> list[Decided | None]:
        """Inserts tasks and notifies coordinators in one statement: one round trip, one commit.

        All the tasks go as one JSON document, and only what the database decided comes back.
        Tasks whose idempotency key is already taken are skipped; find them with
        :meth:`by_idempotency_keys`. A lone task goes as parameters instead, which the server
        reads sooner than a JSON document (a single submit's latency). ``conn``, when given, is
        the caller's connection (or transaction) to run the insert on instead of a pooled one.

        Returns:
            For each task, in input order, when it was created and is due, or ``None`` when it
            was skipped.
        """
        lent = nullcontext(conn) if conn is not None else self._db.connection()
        with lent as inserting:
            if len(tasks) == 1:
                decided = inserting.scalar("submit_task", **_params(tasks[0])) or []
            else:
                decided = inserting.scalar("submit_tasks", tasks=_json(tasks)) or []
        # One datetime per distinct time, shared by the tasks that have it (a statement's tasks
        # mostly share now()): whoever formats or hashes them does it once, not per task.
        parse = datetime.fromisoformat
        moments = {text: parse(text) for text in {t for row in decided for t in row[1:]}}
        # Keyed by the id's text, as it comes back: parsing a thousand UUIDs is not free.
        times = {row[0]: (moments[row[1]], moments[row[2]]) for row in decided}
        return [times.get(task.id) for task in tasks]

    def by_idempotency_keys(self, keys: Sequence[str]) -> dict[str, tuple[Task, str | None]]:
        """The tasks holding these idempotency keys, by key, each with the request hash it was
        stored with."""
        with self._db.connection() as conn:
            rows = conn.rows("get_tasks_by_idempotency_keys", keys=list(keys))
        return {row["idempotency_key"]: (Task.from_row(row), row["request_hash"]) for row in rows}


def _params(task: SubmitRow) -> dict[str, Any]:
    """The parameters of ``submit_task``: the row's fields, the payload as JSON text."""
    params = dict(zip(SubmitRow._fields, task, strict=True))
    params["payload"] = _json(params["payload"])
    return params
