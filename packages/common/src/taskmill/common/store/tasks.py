"""The HTTP API's reads of tasks, and cancellation."""

from __future__ import annotations

import uuid

from taskmill.common.db import Database
from taskmill.common.errors import InvalidTransition, TaskNotFound
from taskmill.common.models import Task, TaskStatus


class TaskStore:
    """Reads tasks and cancels them, for the HTTP API."""

    def __init__(self, db: Database) -> None:
        self._db = db

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

    def cancel(self, task_id: uuid.UUID) -> Task:
        """Cancels a scheduled task at once, or asks for a dispatched or running one to stop.

        A request to stop is announced on ``taskmill_cancel`` at commit, so the coordinator
        holding the task's worker forwards it.

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
