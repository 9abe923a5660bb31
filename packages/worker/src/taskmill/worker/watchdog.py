"""One thread that fires a callback when a deadline passes; used for thread-handler timeouts."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Watchdog(Generic[T]):
    """Calls ``on_expired(item)`` once ``time.monotonic()`` reaches the item's deadline.

    Items settled before their deadline stay in the heap until then; ``on_expired`` must ignore
    them. That keeps ``watch`` O(log n) with no cancellation bookkeeping.
    """

    def __init__(self, on_expired: Callable[[T], None]) -> None:
        self._on_expired = on_expired
        self._heap: list[tuple[float, int, T]] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="taskmill-watchdog", daemon=True)

    def start(self) -> None:
        """Starts the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread; pending deadlines never fire."""
        with self._condition:
            self._stopped = True
            self._condition.notify()
        if self._thread.is_alive():
            self._thread.join()

    def watch(self, deadline: float, item: T) -> None:
        """Fires ``on_expired(item)`` at ``deadline`` (a ``time.monotonic()`` value)."""
        with self._condition:
            heapq.heappush(self._heap, (deadline, next(self._order), item))
            if self._heap[0][2] is item:
                self._condition.notify()

    def _due(self) -> list[T] | None:
        """Waits for the next deadline; returns the expired items, or ``None`` when stopped."""
        with self._condition:
            while not self._stopped:
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    expired = []
                    while self._heap and self._heap[0][0] <= now:
                        expired.append(heapq.heappop(self._heap)[2])
                    return expired
                self._condition.wait(self._heap[0][0] - now if self._heap else None)
            return None

    def _run(self) -> None:
        while (expired := self._due()) is not None:
            for item in expired:
                try:
                    self._on_expired(item)
                except Exception:
                    logger.exception("timeout handling failed")
