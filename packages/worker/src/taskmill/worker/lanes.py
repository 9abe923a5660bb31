"""The executor's queue of jobs waiting for a slot: one FIFO, or lanes shared by weight.

A worker serving one queue keeps a plain ``queue.SimpleQueue``: its order is its arrival order,
and it is the cheapest queue there is. A worker serving several keeps a lane per task queue, so
that a burst of one queue prefetched into the worker does not make a later task of another wait
behind all of it: slots take from the lanes that hold jobs in turn, each lane as many jobs in a
row as its weight (weights ``a=3, b=1``: three of ``a`` for each of ``b`` while both have jobs),
first in first out within a lane. A job of a queue the worker does not serve (sent by a
coordinator older than queues) gets a lane of weight 1.

Both hand out the ``None`` that stops a slot; the executor puts one per slot, and only once
every held job is settled, so the lanes may hand them out before the jobs still in a lane.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from taskmill.worker.job import Job


class JobQueue(Protocol):
    """What the executor needs of its queue; ``queue.SimpleQueue`` has it."""

    def put(self, item: Job | None) -> None: ...

    def get(self) -> Job | None: ...

    def get_nowait(self) -> Job | None: ...


def job_queue(queues: Sequence[tuple[str, int]]) -> JobQueue:
    """The queue for a worker serving ``queues`` (name, weight): lanes only for two or more."""
    if len(queues) < 2:
        return queue.SimpleQueue()
    return Lanes(dict(queues))


class Lanes:
    """Jobs in a lane per task queue, taken in turn by weight (see the module docstring).

    Args:
        weights: The weight of each queue served; any other queue's is 1.
    """

    def __init__(self, weights: dict[str, int]) -> None:
        self._weights = weights
        self._lanes: dict[str, deque[Job]] = {}  # only the lanes holding jobs
        # The queues whose lanes hold jobs, the one being taken from first; it may give
        # ``_left`` more jobs before the next one's turn.
        self._turns: deque[str] = deque()
        self._left = 0
        self._stops = 0  # ``None`` put and not yet handed out
        self._ready = threading.Condition(threading.Lock())

    def put(self, item: Job | None) -> None:
        """Adds a job at the end of its queue's lane, or a ``None`` that stops one slot."""
        with self._ready:
            if item is None:
                self._stops += 1
            else:
                name = item.assignment.queue
                lane = self._lanes.get(name)
                if lane is None:  # an empty lane is dropped, so it comes back at the end
                    lane = self._lanes[name] = deque()
                    self._turns.append(name)
                    if len(self._turns) == 1:
                        self._left = self._weight(name)
                lane.append(item)
            self._ready.notify()

    def get(self) -> Job | None:
        """The next job, or ``None`` to stop; blocks until there is one."""
        with self._ready:
            while not (self._stops or self._turns):
                self._ready.wait()
            return self._take()

    def get_nowait(self) -> Job | None:
        """The next job, or ``None`` to stop.

        Raises:
            queue.Empty: Nothing waits.
        """
        with self._ready:
            if not (self._stops or self._turns):
                raise queue.Empty
            return self._take()

    def _take(self) -> Job | None:
        """Takes the next item; something waits and the lock is held."""
        if self._stops:
            self._stops -= 1
            return None
        name = self._turns[0]
        lane = self._lanes[name]
        job = lane.popleft()
        self._left -= 1
        if not lane:
            del self._lanes[name]
            self._turns.popleft()
            self._left = self._weight(self._turns[0]) if self._turns else 0
        elif self._left <= 0:
            self._turns.rotate(-1)
            self._left = self._weight(self._turns[0])
        return job

    def _weight(self, name: str) -> int:
        return self._weights.get(name, 1)
