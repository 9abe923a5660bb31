"""The worker's identity at its coordinator, shared by the threads that call the coordinator."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Membership:
    """The current worker id, ``None`` while (re-)registering."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._worker_id: str | None = None
        self._listeners: list[Callable[[], None]] = []

    def on_forgotten(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` whenever an id is forgotten (the agent registers again at once)."""
        self._listeners.append(callback)

    @property
    def worker_id(self) -> str | None:
        """The id the coordinator gave, or ``None`` while unregistered."""
        return self._worker_id

    def set(self, worker_id: str | None) -> None:
        """Records the id from a registration (``None`` after deregistering)."""
        with self._condition:
            self._worker_id = worker_id
            self._condition.notify_all()

    def forget(self, worker_id: str) -> None:
        """Drops ``worker_id`` because the coordinator answered NOT_FOUND for it."""
        with self._condition:
            if self._worker_id != worker_id:
                return  # someone already registered again
            self._worker_id = None
        for callback in self._listeners:
            callback()

    def wait(self, timeout: float) -> str | None:
        """Waits up to ``timeout`` seconds for an id; returns it, or ``None``."""
        with self._condition:
            self._condition.wait_for(lambda: self._worker_id is not None, timeout)
            return self._worker_id

    def matches(self, worker_id: str, timeout: float) -> bool:
        """Whether ``worker_id`` is this worker's id.

        While unregistered, a registration may be in flight: the coordinator can send work as
        soon as it has answered, before the answer is recorded here, so the check waits up to
        ``timeout`` for an id to arrive.
        """
        with self._condition:
            self._condition.wait_for(lambda: self._worker_id is not None, timeout)
            return self._worker_id == worker_id
