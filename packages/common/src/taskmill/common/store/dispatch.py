"""The coordinator's dispatch: claiming due tasks for workers, giving back tasks a worker never
received, and the leases and cancellation requests of the tasks a worker holds."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple

from taskmill.common.attempts import Held
from taskmill.common.db import Connection, Database
from taskmill.common.jsontext import compact as _json
from taskmill.common.models import ServedQueue, TaskStatus
from taskmill.common.store.literals import held_arrays, int_array, text_array


class Route(NamedTuple):
    """What a claim may give a group of workers: tasks in one of their queues whose command
    they all have a handler for. Workers with the same route share a claim's round robin.

    Attributes:
        queues: The queues, with their weights, in the order this round visits them.
        commands: The handler names, sorted.
    """

    queues: tuple[ServedQueue, ...]
    commands: tuple[str, ...]


class Share(NamedTuple):
    """One worker's part of a claim: how many tasks it takes, and how many of those go to its
    idle slots, their start recorded by the claim itself (see ``Assignment.start_recorded``)."""

    worker_id: str
    size: int
    started: int = 0


class ClaimedTask(NamedTuple):
    """What the coordinator needs of a claimed task to assign it (see ``claim_due``).

    A named tuple rather than a frozen dataclass: the claim builds one per dispatched task
    straight from the claim's row, and a named tuple is the cheaper to build. The id and the
    payload stay the text the database sent: the assignment carries text, so parsing them only
    to print them again would be the larger part of the coordinator's dispatch work.

    Attributes:
        id: The task's id, as the database writes a uuid (lowercase, with hyphens).
        worker_id: The worker whose slot it fills.
        command: The handler name.
        payload_json: The JSON payload, as compact JSON text.
        attempt: The attempt this dispatch starts (already counted).
        max_attempts: How many attempts the task may have.
        timeout_seconds: Bound on the attempt's run time, or ``None``.
        queue: The queue name.
        trace_context: The W3C ``traceparent`` stored with the task.
        scheduled_at: When the task became due, in seconds since the epoch.
        lease_expires_at: When the lease runs out, in seconds since the epoch.
        token: The claim's fencing token (see ``0005_claim_tokens.sql``).
        start_recorded: Whether the claim recorded its start (it fills an idle slot).
    """

    id: str
    worker_id: str
    command: str
    payload_json: str
    attempt: int
    max_attempts: int
    timeout_seconds: float | None
    queue: str
    trace_context: str | None
    scheduled_at: float
    lease_expires_at: float
    token: int
    start_recorded: bool = False


@dataclass(frozen=True)
class Claim:
    """What a coordinator's claim took, and when it is worth claiming again.

    Attributes:
        tasks: The claimed tasks, in slot order.
        next_due_in: Seconds until the earliest task still scheduled that the route can run
            now is due, by the database clock: negative when one is due already (another
            coordinator holds it), ``None`` when none is scheduled. Paused queues and full
            limited ones are left out.
        limited: Whether one of the route's queues has a ``max_concurrency``: its claims must
            be ``locked`` (a claim without the lock takes nothing from it).
        capped: Whether a limited queue is full, so a task finishing may let another start.
        complete: Whether ``next_due_in``, ``limited`` and ``capped`` were asked: a submit's
            claim that took all it came for skips them (``None``, ``False``, ``False``).
    """

    tasks: list[ClaimedTask]
    next_due_in: float | None
    limited: bool = False
    capped: bool = False
    complete: bool = True


class DispatchStore:
    """Claims due tasks, gives back what a worker never received, and keeps the leases of what a
    worker holds."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def claim_due(
        self,
        route: Route,
        shares: Sequence[Share],
        lease_seconds: float,
        conn: Connection | None = None,
        *,
        locked: bool = False,
        wanted: int | None = None,
    ) -> Claim:
        """Claims due tasks for workers of one route, returning only what an assignment needs,
        and when the next task still scheduled is due.

        ``wanted``, for a submit's round, is how many tasks were submitted: a lean claim of one
        queue for one worker then first runs without the next-due answer and the limit flags,
        and only when it took nothing runs again in full (see ``Claim.complete``).

        ``shares`` are the workers in round-robin order, each with how many tasks it takes:
        ``[("a", 1), ("b", 3), ("c", 2)]`` has the slots ``a, b, c, b, c, b``. The first
        ``started`` tasks of each worker's share are claimed ``running``: the claim records their
        start. The tasks come in slot order: the route's queues take turns by weight, and within
        a queue the most urgent comes first; a claim that finds fewer due tasks than slots fills
        the first ones. Paused queues give nothing; limited ones give only when ``locked``,
        which takes their rows' locks first (see ``lock_limited_queues``). The claim commits
        before it returns, so the caller sends the tasks outside any transaction. Each claimed
        task's attempt is incremented and its lease set. A claim for one worker runs a leaner
        statement with the same answer. ``conn``, when given, is a connection outside any
        transaction to run an unlocked claim on instead of a pooled one.

        Raises:
            ValueError: The shares have no slot.
        """
        slots = sum(share.size for share in shares)
        if slots <= 0:
            raise ValueError("a claim needs at least one slot")
        lanes = {
            "queues": text_array([queue.name for queue in route.queues]),
            "weights": int_array([queue.weight for queue in route.queues]),
            "commands": text_array(route.commands),
            "slots": slots,
            "lease_seconds": lease_seconds,
            "locked": "{}",
        }
        lent: AbstractContextManager[Connection]
        if locked:
            lent = self._db.transaction()
        else:
            lent = nullcontext(conn) if conn is not None else self._db.connection()
        with lent as claiming:
            if locked:
                names = claiming.run("lock_limited_queues", queues=lanes["queues"])
                lanes["locked"] = text_array([name for [name] in names])
            if wanted is not None and not locked:
                lean = _statement(route, shares, slots, submit=True)
                if lean == "claim_due_for_submit":
                    [[taken, *_]] = _run_claim(claiming, lean, shares, lanes)
                    if taken:
                        return Claim(list(map(ClaimedTask._make, taken)), None, complete=False)
            statement = _statement(route, shares, slots, submit=False)
            [[claimed, next_due_in, limited, capped]] = _run_claim(
                claiming, statement, shares, lanes
            )
        return Claim(
            list(map(ClaimedTask._make, claimed or ())),
            None if next_due_in is None else float(next_due_in),
            limited,
            capped,
        )

    def release(
        self, worker_id: str, given: Sequence[Held], *, recorded: bool = False
    ) -> list[uuid.UUID]:
        """Returns tasks a worker never ran to ``scheduled``, without using an attempt.

        Each task is named with its claim's token; a task claimed again since (by any worker)
        is left alone. A task whose cancellation was requested meanwhile ends ``cancelled``
        instead. ``recorded`` (the worker gives them back itself, or declined them for sure)
        includes the tasks whose start was recorded; without it, those the worker recorded
        among its started tokens stay. Returns the ids of the tasks given back.
        """
        if not given:
            return []
        ids, tokens = held_arrays(given)
        with self._db.transaction() as conn:
            conn.run("lock_worker", id=worker_id)  # see release_tasks
            rows = conn.run(
                "release_tasks", ids=ids, tokens=tokens, worker_id=worker_id, recorded=recorded
            )
        return [row[0] for row in rows]

    def extend_held_leases(
        self, worker_id: str, held: Sequence[Held], lease_seconds: float
    ) -> list[int]:
        """Extends the leases of the tasks a worker holds that are still its own, and returns
        the tokens of those that are not (given to another worker, recovered, or finished).

        A token of 0 (a worker older than tokens) is the worker's own while the task is
        dispatched to it, and is never returned.
        """
        if not held:
            return []
        ids, tokens = held_arrays(held)
        with self._db.connection() as conn:
            [[stale]] = conn.run(
                "extend_held_leases",
                worker_id=worker_id,
                ids=ids,
                tokens=tokens,
                lease_seconds=lease_seconds,
            )
        return [int(token) for token in stale.split(",")] if stale else []

    def holder(self, task_id: uuid.UUID) -> tuple[str | None, TaskStatus] | None:
        """The worker a task was dispatched to (or last ran on) and the task's status, or
        ``None`` when no task has this id."""
        with self._db.connection() as conn:
            rows = conn.run("task_holder", id=task_id)
        if not rows:
            return None
        [[worker_id, status]] = rows
        return worker_id, TaskStatus(status)

    def cancel_requested(self, worker_id: str) -> list[uuid.UUID]:
        """Tasks held by a worker whose cancellation was requested."""
        with self._db.connection() as conn:
            return [row[0] for row in conn.run("cancel_requested_for_worker", worker_id=worker_id)]


def _statement(route: Route, shares: Sequence[Share], slots: int, *, submit: bool) -> str:
    """The claim statement that fits: a route of several queues takes them in turns (see
    _claim_turns); a claim for one worker whose tasks all start, or none, is the lean one, and
    for a submit's round of one queue the leaner still (claim_due_for_submit)."""
    if len(shares) != 1 or shares[0].started not in (0, slots):
        return "claim_due_assignments" + ("_in_turns" if len(route.queues) > 1 else "")
    if len(route.queues) > 1:
        return "claim_due_for_worker_in_turns"
    return "claim_due_for_submit" if submit else "claim_due_for_worker"


def _run_claim(
    conn: Connection, statement: str, shares: Sequence[Share], lanes: dict[str, Any]
) -> list[list[Any]]:
    """Runs a claim statement: a round robin takes the shares, a lean one its worker."""
    if statement.startswith("claim_due_assignments"):
        return conn.run(statement, shares=_json(list(shares)), **lanes)
    return conn.run(
        statement, worker_id=shares[0].worker_id, started=bool(shares[0].started), **lanes
    )
