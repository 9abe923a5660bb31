"""The scheduler's rules: turning validated submissions into tasks, idempotency, listing.

Resources call one method here; this calls the stores in ``taskmill.common``. Nothing here
knows about HTTP.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from taskmill.common.db import Database
from taskmill.common.errors import InvalidTransition, TaskmillError
from taskmill.common.migrate import check_schema
from taskmill.common.models import NewTask, Task, Worker
from taskmill.common.tasks import TaskStore
from taskmill.common.workers import WorkerStore
from taskmill.scheduler.errors import IdempotencyKeyReused
from taskmill.scheduler.listing import ListQuery, encode_cursor
from taskmill.scheduler.randomness import random_bytes
from taskmill.scheduler.tracing import task_traceparents
from taskmill.scheduler.validation import Submission, request_hash

logger = logging.getLogger(__name__)

#: Inserts new tasks and returns those inserted (``TaskStore.submit`` or a batcher in front).
Submit = Callable[[Sequence[NewTask]], list[Task]]


@dataclass(frozen=True)
class Submitted:
    """The outcome of a submit.

    Attributes:
        tasks: The tasks, in the order submitted.
        created: ``False`` when an idempotent retry returned the tasks stored the first time.
    """

    tasks: list[Task]
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
        store: The task store.
        workers: The worker registry.
        submit: How new tasks are inserted; defaults to ``store.submit``.
    """

    def __init__(
        self,
        db: Database,
        store: TaskStore,
        workers: WorkerStore,
        submit: Submit | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self._workers = workers
        self._submit = submit or store.submit

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
        keys: list[str | None] = [None] * len(submissions)
        digest = None
        if idempotency_key is not None:
            digest = request_hash(list(submissions))
            keys = [
                f"{idempotency_key} [{i}]" if batch else idempotency_key
                for i in range(len(submissions))
            ]
        pairs = list(zip(submissions, keys, strict=True))
        for _ in range(2):
            ids = _new_ids(len(pairs))
            contexts = (
                task_traceparents(
                    ids, [s.command for s in submissions], [s.queue for s in submissions]
                )
                if batch
                else [trace_context] * len(ids)
            )
            new = [
                _new_task(s, key, digest, context, task_id)
                for (s, key), task_id, context in zip(pairs, ids, contexts, strict=True)
            ]
            inserted = self._submit(new)
            if len(inserted) == len(new):
                return Submitted(inserted, created=True)
            existing = self._originals([k for k in keys if k is not None], digest, inserted)
            if existing is not None:
                return Submitted(existing, created=False)
        raise TaskmillError("the tasks holding this Idempotency-Key vanished; retry the request")

    def _originals(
        self, keys: list[str], digest: str | None, inserted: list[Task]
    ) -> list[Task] | None:
        """The tasks an earlier identical request stored, or ``None`` if they vanished."""
        found = self._store.by_idempotency_keys_with_hashes(keys)
        if inserted or any(found[key][1] != digest for key in keys if key in found):
            self._undo(inserted)
            raise IdempotencyKeyReused()
        if len(found) < len(keys):
            return None
        return [found[key][0] for key in keys]

    def _undo(self, inserted: list[Task]) -> None:
        # Only a batch racing another batch of a different size under the same key gets here:
        # cancel what this request stored, so a rejected request leaves nothing to run.
        for task in inserted:
            try:
                self._store.cancel(task.id)
            except InvalidTransition:
                logger.warning("task %s of a rejected request already finished", task.id)

    def get(self, task_id: uuid.UUID) -> Task:
        """Returns one task.

        Raises:
            TaskNotFound: No task has this id.
        """
        return self._store.get(task_id)

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


def _new_ids(count: int) -> list[uuid.UUID]:
    """Random (version 4) UUIDs, from one read of the system's randomness for all of them."""
    random = random_bytes(16 * count)
    return [uuid.UUID(bytes=random[i : i + 16], version=4) for i in range(0, 16 * count, 16)]


def _new_task(
    submission: Submission,
    key: str | None,
    digest: str | None,
    trace_context: str | None,
    task_id: uuid.UUID,
) -> NewTask:
    return NewTask(
        command=submission.command,
        payload=submission.payload,
        queue=submission.queue,
        priority=submission.priority,
        max_attempts=submission.max_attempts,
        timeout_seconds=submission.timeout_seconds,
        scheduled_at=submission.scheduled_at,
        delay_seconds=submission.delay_seconds,
        idempotency_key=key,
        request_hash=digest,
        trace_context=trace_context,
        id=task_id,
    )
