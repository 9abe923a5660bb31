"""What a handler may ask for besides its payload: the task's identity and a cancellation flag."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol


class CancelFlag(Protocol):
    """A flag that is set when the task should stop (``threading.Event`` or its process twin)."""

    def is_set(self) -> bool:
        """Whether the flag is set."""

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until the flag is set or ``timeout`` passes; returns whether it is set."""


class TaskCancelled(Exception):
    """The task stopped because its cancellation was requested.

    A handler raises it (or lets :meth:`TaskContext.raise_if_cancelled` raise it) to end the
    attempt as ``cancelled`` rather than ``failed``.
    """


class _TaskLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every message with the task id and attempt."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"task {extra['task_id']} attempt {extra['attempt']}: {msg}", kwargs


@dataclass(frozen=True)
class TaskContext:
    """The running attempt, handed to handlers whose signature asks for it.

    A handler asks for the context with a second parameter, a parameter named ``context``, or a
    parameter annotated ``TaskContext``.

    Attributes:
        task_id: The task's UUID in text form.
        attempt: The 1-based attempt number.
        max_attempts: How many attempts the task may have in all.
        command: The name the handler was registered under.
        cancelled: Set when the task should stop: its cancellation was requested, its timeout
            passed, or the worker is shutting down. ``cancelled.wait(seconds)`` is a sleep that
            wakes up early on cancellation.
        logger: A logger whose messages name the task and attempt.
    """

    task_id: str
    attempt: int
    max_attempts: int
    command: str
    cancelled: CancelFlag
    logger: logging.LoggerAdapter  # type: ignore[type-arg]

    def is_cancelled(self) -> bool:
        """Whether the task should stop."""
        return self.cancelled.is_set()

    def raise_if_cancelled(self) -> None:
        """Raises :class:`TaskCancelled` when the task should stop.

        Raises:
            TaskCancelled: The cancellation flag is set.
        """
        if self.cancelled.is_set():
            raise TaskCancelled()


def task_logger(command: str, task_id: str, attempt: int) -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """The logger handed to a handler through its context."""
    logger = logging.getLogger(f"taskmill.task.{command}")
    return _TaskLogger(logger, {"task_id": task_id, "attempt": attempt})
