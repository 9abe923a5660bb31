"""What a handler may ask for besides its payload: the task's identity and a cancellation flag."""

from __future__ import annotations

import logging
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol


class CancelFlag(Protocol):
    """A flag that is set when the task should stop (``threading.Event`` or its process twin)."""

    def is_set(self) -> bool:
        """Whether the flag is set."""

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until the flag is set or ``timeout`` passes; returns whether it is set."""


class CancelEvent(threading.Event):
    """The cancellation flag of one attempt: a ``threading.Event`` whose condition is built
    only when the flag is first set or waited on.

    Every task the worker holds has one, and almost none is ever set or waited on; building a
    ``threading.Event`` (a condition and its lock) for each would be wasted work on every task's
    path through a busy worker.
    It is still an ``Event``, with the same methods, for handlers that treat it as one.
    """

    _making = threading.Lock()  # held only while one flag builds its condition

    def __init__(self) -> None:  # Event.__init__ would build the condition now
        self._flag = False
        self._cond: threading.Condition | None = None

    def _condition(self) -> threading.Condition:
        cond = self._cond
        if cond is None:
            with CancelEvent._making:
                if self._cond is None:
                    self._cond = threading.Condition(threading.Lock())
                cond = self._cond
        return cond

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._flag

    def set(self) -> None:
        """Sets the flag and wakes every thread waiting for it."""
        with (cond := self._condition()):
            self._flag = True
            cond.notify_all()

    def clear(self) -> None:
        """Clears the flag."""
        with self._condition():
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until the flag is set or ``timeout`` passes; returns whether it is set."""
        if self._flag:
            return True
        with (cond := self._condition()):
            return self._flag or cond.wait(timeout)


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
