"""This coordinator's in-memory view of its workers: who they are and how much room they have.

The ``workers`` table is the shared truth (other coordinators and the HTTP API read it); this view
adds what only this process needs: a running estimate of each worker's free slots and the round
robin over them, so dispatch never needs a query to decide where tasks go. How to reach a worker
is the worker client's (``worker_client.py``); the fleet only tells it who joined and who left.

The estimate follows every event that changes a worker's room:

- a claim reserves slots at once (the tasks are *outstanding* until the worker finishes them);
- the ``AssignTasks`` answer caps the estimate at the worker's own count;
- a final status report frees a slot, so a busy worker gets its next task without waiting for a
  heartbeat;
- a heartbeat resets the estimate to the worker's count, minus the outstanding tasks it did not
  list yet (sent after it counted, or finished but not reported), which keeps a heartbeat that
  crossed an assignment on the wire from overfilling the worker;
- a worker that answers it is full has no room until it reports a task finished or heartbeats;
  any other failed assignment leaves it with no room until its next heartbeat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeVar

from taskmill.common.models import ServedQueue, Worker
from taskmill.common.store import Route, Share
from taskmill.coordinator.turns import Turns

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Heartbeats an outstanding task may be missing from before it counts as gone (its report lost).
_MAX_MISSES = 3


class Plan(NamedTuple):
    """One route's part of a round: the workers that share it, with their shares, and the
    route's queues in the order this round's claim visits them (see ``turns.py``)."""

    route: Route
    shares: list[Share]
    queues: tuple[ServedQueue, ...]


class Connections(Protocol):
    """What keeps a way to reach each worker (the worker client).

    The fleet opens a worker's connection when the worker joins and closes it when it leaves, so
    every path that forgets a worker (deregistration, a dead worker reaped, an unknown heartbeat)
    also lets go of its channel.
    """

    def open(self, worker_id: str, address: str) -> None:
        """Opens (or replaces) the connection to a worker."""

    def close(self, worker_id: str) -> None:
        """Closes the connection to a worker, if there is one."""


@dataclass
class _Entry:
    id: str
    address: str
    capacity: int
    free: int
    route: Route
    concurrency: int = 0  # its slots (0: unknown, so none is known to be idle)
    blocked: bool = False
    #: Tasks sent (or being sent) and not yet reported finished, with how many heartbeats in a
    #: row have not listed them.
    outstanding: dict[str, int] = field(default_factory=dict)
    #: Outstanding tasks whose ``AssignTasks`` call has not returned yet.
    sending: set[str] = field(default_factory=set)
    #: Whether its last ``AssignTasks`` was answered promptly (the dispatcher's measure).
    prompt: bool = False

    @property
    def room(self) -> int:
        return 0 if self.blocked else max(self.free, 0)

    @property
    def idle(self) -> int:
        """Slots believed idle: its room beyond a full queue (none while anything queues)."""
        return max(0, self.room - (self.capacity - self.concurrency)) if self.concurrency else 0


class Fleet:
    """The workers this coordinator dispatches to, safe to use from any thread.

    Args:
        connections: Told when a worker joins or leaves (the worker client); ``None`` keeps
            only the accounting.
    """

    def __init__(self, connections: Connections | None = None) -> None:
        self._connections = connections
        self._lock = threading.Lock()
        self._workers: dict[str, _Entry] = {}
        # Per route: the worker a round gave a task to last. And the route served last: the
        # next round starts after it, so a task several routes can run goes to each in turn.
        self._last_served: dict[Route, str] = {}
        self._last_route: Route | None = None
        self._turns = Turns()

    # -- membership --------------------------------------------------------------------------

    def add(self, worker: Worker, free_slots: int | None = None) -> None:
        """Adds a worker (just registered, or adopted from a previous coordinator)."""
        if self._connections is not None:
            self._connections.open(worker.id, worker.address)
        entry = _Entry(
            id=worker.id,
            address=worker.address,
            capacity=worker.capacity,
            free=worker.capacity if free_slots is None else free_slots,
            route=Route(worker.queues, tuple(sorted(set(worker.handlers)))),
            concurrency=worker.concurrency or 0,
        )
        with self._lock:
            # Popped first: a worker added again goes to the end of the round robin.
            self._workers.pop(worker.id, None)
            self._workers[worker.id] = entry

    def remove(self, worker_id: str) -> bool:
        """Forgets a worker and closes its connection; ``False`` when it was not known."""
        with self._lock:
            entry = self._workers.pop(worker_id, None)
            if entry is not None and all(e.route != entry.route for e in self._workers.values()):
                # The last worker of its route: the route's turns go with it.
                self._last_served.pop(entry.route, None)
                self._turns.forget(entry.route)
        if entry is None:
            return False
        if self._connections is not None:
            self._connections.close(worker_id)
        return True

    def __contains__(self, worker_id: object) -> bool:
        with self._lock:
            return worker_id in self._workers

    def ids(self) -> list[str]:
        """The known workers' ids, in registration order."""
        with self._lock:
            return list(self._workers)

    def room(self, worker_id: str) -> int:
        """How many more tasks a worker is believed to take now (0 when unknown)."""
        with self._lock:
            entry = self._workers.get(worker_id)
            return 0 if entry is None else entry.room

    def has_room(self) -> bool:
        """Whether any worker can take a task now."""
        with self._lock:
            return any(entry.room > 0 for entry in self._workers.values())

    # -- planning ----------------------------------------------------------------------------

    def plan(self, limit: int) -> list[Plan]:
        """The next round, route by route: the workers of each route with room, in round-robin
        order, each with how many of the first ``limit`` slots of its route's round robin it
        gets, and how many of those fill its idle slots (their start is recorded in the claim).

        Each route's rotation starts after the worker it served last, and each worker gets at
        most its free slots: rooms ``a: 1, b: 3, c: 2`` make the slots ``a, b, c, b, c, b``, and
        a limit of 4 keeps ``a, b, c, b``, the shares ``[("a", 1), ("b", 2), ("c", 1)]``.
        """
        with self._lock:
            routes: dict[Route, list[_Entry]] = {}
            for entry in self._workers.values():
                if entry.room > 0:
                    routes.setdefault(entry.route, []).append(entry)
            plans = []
            for route in _after(list(routes), self._last_route):
                entries = _after(routes[route], self._last_served.get(route), lambda e: e.id)
                rooms = [(entry.id, entry.room) for entry in entries]
                idle = {entry.id: entry.idle for entry in entries}
                shares = [
                    Share(worker_id, count, min(count, idle[worker_id]))
                    for worker_id, count in _round_robin(rooms, limit)
                ]
                plans.append(Plan(route, shares, self._turns.order(route)))
        return plans

    def served(self, route: Route, worker_id: str, queues: Iterable[str]) -> None:
        """Records what a round gave a route: a task of each of ``queues``, the last to
        ``worker_id``. The route's next round starts after that worker, the next round after
        that route, and its queues' credits grow (see ``turns.py``)."""
        with self._lock:
            self._last_served[route] = worker_id
            self._last_route = route
            self._turns.given(route, queues)

    # -- accounting --------------------------------------------------------------------------

    def reserve(self, worker_id: str, task_ids: Sequence[str]) -> bool:
        """Takes slots for tasks about to be sent; ``False`` when the worker is gone."""
        with self._lock:
            entry = self._workers.get(worker_id)
            if entry is None:
                return False
            entry.free -= len(task_ids)
            for task_id in task_ids:
                entry.outstanding[task_id] = 0
                entry.sending.add(task_id)
            return True

    def accepted(
        self, worker_id: str, task_ids: Iterable[str], free_slots: int, *, prompt: bool = False
    ) -> None:
        """Records that a worker took tasks, how much room it said it has left, and whether it
        answered promptly."""
        with self._lock:
            entry = self._workers.get(worker_id)
            if entry is not None:
                entry.sending.difference_update(task_ids)
                entry.free = min(entry.free, free_slots)
                entry.prompt = prompt

    def is_prompt(self, worker_id: str) -> bool:
        """Whether a worker answered its last assignment promptly (``False`` when unknown)."""
        with self._lock:
            entry = self._workers.get(worker_id)
            return entry is not None and entry.prompt

    def refused(self, worker_id: str, task_ids: Iterable[str], *, full: bool) -> None:
        """Records a failed assignment.

        ``full`` (the worker answered it has no room) leaves it no room until a slot frees;
        otherwise it gets nothing until its next heartbeat.
        """
        with self._lock:
            entry = self._workers.get(worker_id)
            if entry is None:
                return
            entry.prompt = False
            for task_id in task_ids:
                entry.sending.discard(task_id)
                entry.outstanding.pop(task_id, None)
            if full:
                entry.free = 0
            else:
                entry.blocked = True

    def finished(self, worker_id: str, task_ids: Iterable[str]) -> int:
        """Frees the slots of tasks a worker reported finished (or gave back); returns how many."""
        freed = 0
        with self._lock:
            entry = self._workers.get(worker_id)
            if entry is None:
                return 0
            for task_id in task_ids:
                if entry.outstanding.pop(task_id, None) is not None:
                    entry.sending.discard(task_id)
                    entry.free = min(entry.free + 1, entry.capacity)
                    freed += 1
        return freed

    def heartbeat(self, worker_id: str, free_slots: int, held: Collection[str]) -> bool:
        """Syncs a worker's room with its heartbeat; returns whether it has room now."""
        with self._lock:
            entry = self._workers.get(worker_id)
            if entry is None:
                return False
            unlisted = 0
            for task_id in list(entry.outstanding):
                if task_id in held:
                    entry.outstanding[task_id] = 0
                    continue
                if task_id not in entry.sending:
                    entry.outstanding[task_id] += 1
                    if entry.outstanding[task_id] >= _MAX_MISSES:
                        del entry.outstanding[task_id]
                        continue
                unlisted += 1
            entry.free = max(0, free_slots - unlisted)
            entry.blocked = False
            return entry.room > 0


def _after(items: list[T], last: object, key: Callable[[T], object] | None = None) -> list[T]:
    """``items`` turned to start after ``last`` (as they are when ``last`` is not among them)."""
    keys: list[object] = [key(item) if key is not None else item for item in items]
    start = keys.index(last) + 1 if last in keys else 0
    return items[start:] + items[:start]


def _round_robin(rooms: list[tuple[str, int]], limit: int) -> list[tuple[str, int]]:
    """How many of the first ``limit`` round-robin slots each worker gets, in the same order."""
    left, turns = limit, 0  # every worker with room takes ``turns`` slots, ``left`` remain
    for level in sorted({room for _, room in rooms}):
        width = sum(1 for _, room in rooms if room > turns)
        if width * (level - turns) > left:
            break
        left -= width * (level - turns)
        turns = level
    else:
        return rooms  # every free slot fits
    # Whole turns for the workers still with room, then one more each for the first of them.
    width = sum(1 for _, room in rooms if room > turns)
    whole, extra = divmod(left, width)
    turns += whole
    shares: list[tuple[str, int]] = []
    for worker_id, room in rooms:
        share = min(room, turns)
        if room > turns and extra > 0:
            share += 1
            extra -= 1
        if share > 0:
            shares.append((worker_id, share))
    return shares
