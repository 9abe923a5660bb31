"""The client's errors: one base class, one subclass per kind of problem a caller handles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskmill.client._models import Task


class TaskmillClientError(Exception):
    """Base class of every error the client raises.

    Attributes:
        message: One line saying what went wrong.
        status: The HTTP status of the response, or ``None`` when there was none.
        problem: The server's ``application/problem+json`` body, or an empty dict.
    """

    def __init__(
        self, message: str, *, status: int | None = None, problem: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.problem: dict[str, Any] = problem or {}


@dataclass(frozen=True)
class FieldProblem:
    """One problem the server found in a request.

    Attributes:
        field: Where the problem is, e.g. ``max_attempts`` or ``tasks[10].command``.
        message: What is wrong with it.
    """

    field: str
    message: str


class ValidationError(TaskmillClientError):
    """The server rejected the request's content (``400``, ``413`` or ``415``).

    Attributes:
        errors: Every field problem the server listed, possibly none.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        problem: dict[str, Any] | None = None,
        errors: tuple[FieldProblem, ...] = (),
    ) -> None:
        super().__init__(message, status=status, problem=problem)
        self.errors = errors


class AuthError(TaskmillClientError):
    """The server refused the credentials (``401`` or ``403``): check ``TASKMILL_TOKEN``."""


class NotFound(TaskmillClientError):
    """What the request names does not exist (``404``): a task or a queue."""


class TaskNotFound(NotFound):
    """No task has this id (``404``)."""


class QueueNotFound(NotFound):
    """No queue has this name (``404``): it has no settings, no unfinished task and no active
    worker."""


class Conflict(TaskmillClientError):
    """The request conflicts with the task's state (``409``).

    Raised when cancelling a task that already finished, or when an idempotency key is reused
    with a different request body.
    """


class Unavailable(TaskmillClientError):
    """The scheduler could not be reached or is temporarily unavailable (``503``).

    Raised after the client's retries are used up.

    Attributes:
        retry_after: The delay in seconds the server asked for, or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, problem=problem)
        self.retry_after = retry_after


class ServerError(TaskmillClientError):
    """The server answered with an unexpected status or an unreadable body."""


class WaitTimeout(TaskmillClientError, TimeoutError):
    """A task did not reach a final state in time.

    Also a ``TimeoutError``, so ``except TimeoutError`` catches it.

    Attributes:
        pending: The tasks, as last seen, that had not finished.
    """

    def __init__(self, message: str, pending: tuple[Task, ...]) -> None:
        super().__init__(message)
        self.pending = pending


class TaskFailed(TaskmillClientError):
    """A task ended ``failed`` or ``cancelled`` when its result was asked for.

    Attributes:
        task: The finished task; ``task.error`` says why it failed.
    """

    def __init__(self, task: Task) -> None:
        reason = f": {task.error.type}: {task.error.message}" if task.error else ""
        super().__init__(f"task {task.id} {task.status}{reason}")
        self.task = task
