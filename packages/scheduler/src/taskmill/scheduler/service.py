"""The scheduler's rules: turning validated submissions into tasks, idempotency, listing.

Resources call one method here; this calls the stores in ``taskmill.common``. Nothing here
knows about HTTP.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from taskmill.common.db import Database
from taskmill.common.errors import InvalidTransition, TaskmillError
from taskmill.common.migrate import check_schema
from taskmill.common.models import Task, Worker
from taskmill.common.store import (
    Decided,
    QueueStore,
    SubmitRow,
    SubmitStore,
    TaskStore,
    Waiting,
    WorkerStore,
)
from taskmill.scheduler.errors import IdempotencyKeyReused
from taskmill.scheduler.listing import ListQuery, encode_cursor
from taskmill.scheduler.randomness import random_bytes
from taskmill.scheduler.tracing import task_traceparents
from taskmill.scheduler.validation import Submission, request_hash

logger = logging.getLogger(__name__)

#: Inserts new tasks and returns, for each in order, what the database decided, or ``None``
#: when its idempotency key was taken (``SubmitStore.submit``, or a batcher in front of it).
Submit = Callable[[Sequence[SubmitRow]], list[Decided | None]]


class StoredTask(NamedTuple):
    """A task this request stored, as the API shows it: what was submitted, and the times the
    database decided. Everything else about a new task is known (scheduled, attempt 0, no
    worker, no result), so a full ``Task`` (22 fields, frozen) is not built for each task of a
    batch.
    """

    id: str
    command: str
    payload: Any
    queue: str
    priority: int
    max_attempts: int
    timeout_seconds: float | None
    created_at: datetime
    scheduled_at: datetime
    trace_context: str | None


@dataclass(frozen=True)
class Submitted:
    """The outcome of a submit.

    Attributes:
        tasks: The tasks, in the order submitted: those this request stored, or, when
            ``created`` is ``False``, those an earlier identical request stored.
        created: ``False`` when an idempotent retry returned the tasks stored the first time.
    """

    tasks: list[StoredTask] | list[Task]
    created: bool


@dataclass(frozen=True)
class Page:
    """One page of a task listing.

    Attributes:
        tasks: The tasks, newest first.
        next_cursor: Continues the listing, or ``None`` on the last page.
    """

    tasks: list[Task]
    next_cursor: str | None


class TaskService:
    """Submits, finds, lists and cancels tasks; reports the fleet and readiness.

    Args:
        db: The database, for the readiness check.
        store: The tasks' reads and cancellation.
        submits: The submit path, for idempotency lookups (and inserts, without ``submit``).
        workers: The workers table.
        queues: The queues, for why a task waits.
        submit: How new tasks are inserted; defaults to ``submits.submit``.
    """

    def __init__(
        self,
        db: Database,
        store: TaskStore,
        submits: SubmitStore,
        workers: WorkerStore,
        queues: QueueStore,
        submit: Submit | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self._submits = submits
        self._workers = workers
        self._queues = queues
        self._submit = submit or submits.submit

    def submit(
        self,
        submissions: Sequence[Submission],
        *,
        idempotency_key: str | None = None,
        trace_context: str | None = None,
        batch: bool = False,
    ) -> Submitted:
        """Stores tasks, all or none.

        A single task stores ``trace_context``; each task of a batch gets its own span, linked
        to the request's. With an idempotency key, a repeat of the same request returns the
        tasks stored the first time (``created`` is ``False``). A batch's tasks get the keys
        ``<key> [<index>]``.

        Raises:
            IdempotencyKeyReused: The key was used before with a different request.
            DatabaseUnavailable: The database cannot be reached.
        """
        count = len(submissions)
        keys: list[str | None] = [None] * count
        digest = None
        if idempotency_key is not None:
            digest = request_hash(list(submissions))
            keys = [f"{idempotency_key} [{i}]" if batch else idempotency_key for i in range(count)]
        for _ in range(2):
            ids = _new_ids(count)
            contexts = (
                # Generators: the commands and queues are only read when spans are recorded.
                task_traceparents(
                    ids, (s.command for s in submissions), (s.queue for s in submissions)
                )
                if batch
                else [trace_context] * count
            )
            rows = _rows(submissions, ids, keys, digest, contexts)
            decided = self._submit(rows)
            if None not in decided:
                return Submitted(_stored(rows, decided), created=True)
            inserted = [row.id for row, times in zip(rows, decided, strict=True) if times]
            existing = self._originals([k for k in keys if k is not None], digest, inserted)
            if existing is not None:
                return Submitted(existing, created=False)
        raise TaskmillError("the tasks holding this Idempotency-Key vanished; retry the request")

    def _originals(
        self, keys: list[str], digest: str | None, inserted: list[str]
    ) -> list[Task] | None:
        """The tasks an earlier identical request stored, or ``None`` if they vanished."""
        found = self._submits.by_idempotency_keys(keys)
        if inserted or any(found[key][1] != digest for key in keys if key in found):
            self._undo(inserted)
            raise IdempotencyKeyReused()
        if len(found) < len(keys):
            return None
        return [found[key][0] for key in keys]

    def _undo(self, inserted: list[str]) -> None:
        # Only a batch racing another batch of a different size under the same key gets here:
        # cancel what this request stored, so a rejected request leaves nothing to run.
        for task_id in inserted:
            try:
                self._store.cancel(uuid.UUID(task_id))
            except InvalidTransition:
                logger.warning("task %s of a rejected request already finished", task_id)

    def get(self, task_id: uuid.UUID) -> Task:
        """Returns one task.

        Raises:
            TaskNotFound: No task has this id.
        """
        return self._store.get(task_id)

    def get_waiting(self, task_id: uuid.UUID) -> tuple[Task, Waiting | None]:
        """Returns one task, and why it waits when it is scheduled and due, in one statement.

        Raises:
            TaskNotFound: No task has this id.
        """
        return self._queues.task_with_waiting(task_id)

    def list_tasks(self, query: ListQuery) -> Page:
        """Lists tasks newest first, one page at a time."""
        tasks = self._store.page(
            status=query.status,
            command=query.command,
            queue=query.queue,
            before_seq=query.before_seq,
            limit=query.limit + 1,
        )
        if len(tasks) <= query.limit:
            return Page(tasks, None)
        tasks = tasks[: query.limit]
        return Page(tasks, encode_cursor(tasks[-1].seq))

    def cancel(self, task_id: uuid.UUID) -> Task:
        """Cancels a scheduled task, or asks the worker to stop a dispatched or running one.

        Raises:
            TaskNotFound: No task has this id.
            InvalidTransition: The task already finished.
        """
        return self._store.cancel(task_id)

    def workers(self) -> list[Worker]:
        """The live fleet."""
        return self._workers.live()

    def check_ready(self) -> None:
        """Checks that the database answers and its schema is the one this version needs.

        Raises:
            DatabaseUnavailable: The database cannot be reached.
            SchemaError: The schema is older or newer than expected.
        """
        check_schema(self._db)


#: The variant nibble of a version 4 UUID (binary 10xx) for each hex digit of random bits.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _new_ids(count: int) -> list[str]:
    """Random (version 4) UUIDs, from one read of the system's randomness for all of them.

    Written as text straight from the bytes' hex digits, version and variant set as
    ``uuid.UUID(bytes=..., version=4)`` sets them: a ``UUID`` would be made for each task of a
    batch only to be formatted, as the id only ever travels as text (to the database, in the
    response).
    """
    text = random_bytes(16 * count).hex()
    return [
        f"{text[i : i + 8]}-{text[i + 8 : i + 12]}-4{text[i + 13 : i + 16]}-"
        f"{_VARIANT[text[i + 16]]}{text[i + 17 : i + 20]}-{text[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


def _rows(
    submissions: Sequence[Submission],
    ids: list[str],
    keys: list[str | None],
    digest: str | None,
    contexts: list[str | None],
) -> list[SubmitRow]:
    return [
        SubmitRow(
            task_id,
            s.command,
            s.payload,
            s.queue,
            s.priority,
            s.max_attempts,
            s.timeout_seconds,
            None if s.scheduled_at is None else s.scheduled_at.isoformat(),
            s.delay_seconds,
            key,
            digest,
            context,
        )
        for s, task_id, key, context in zip(submissions, ids, keys, contexts, strict=True)
    ]


def _stored(rows: list[SubmitRow], decided: list[Decided | None]) -> list[StoredTask]:
    return [
        StoredTask(
            row.id,
            row.command,
            row.payload,
            row.queue,
            row.priority,
            row.max_attempts,
            row.timeout_seconds,
            times[0],
            times[1],
            row.trace_context,
        )
        for row, times in zip(rows, decided, strict=True)
        if times is not None
    ]
