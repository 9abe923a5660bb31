"""The dispatch loop: claim due tasks for the workers with room, then send each worker its share.

One round plans slots round robin over the workers with room, claims that many due tasks in one
committed statement, and hands each worker its tasks in one ``AssignTasks`` call, sent after
the commit from a small thread pool, so one slow worker does not hold up the others (a submit's
lone batch for a prompt worker goes from the listener's thread: one thread hand-off sooner). A
refused or failed assignment gives the tasks back (``scheduled``, attempt unchanged) and they go
to another worker in the next round.

The loop sleeps until something may have changed: the next task's due time, room on a worker,
tasks given back, or the slow poll. A submit (``LISTEN``) runs its round on the listener's own
thread, one thread hand-off sooner; rounds never overlap.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from taskmill.common.db import Connection
from taskmill.common.errors import TaskmillError
from taskmill.common.store import Claim, ClaimedTask, DispatchStore, Held, Route
from taskmill.common.telemetry import (
    QUEUE,
    TASK_ATTEMPT,
    TASK_COMMAND,
    TASK_ID,
    WORKER_ID,
    context_from_traceparent,
    exporting,
    traceparent_of,
)
from taskmill.coordinator.calls import AssignRefused, WorkerCalls
from taskmill.coordinator.fleet import Fleet, Plan

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

#: How long after a task's due time the loop wakes: the claim compares with the database's
#: clock, so waking a little late guarantees the task is due, never early.
DUE_MARGIN = 0.001
#: The shortest sleep when a task is already due but the claim found none (another coordinator
#: holds it), so the loop never spins.
MIN_SLEEP = 0.01
#: A submit's lone batch is sent on the listener's thread only to a worker whose last
#: ``AssignTasks`` was answered this fast (seconds); see ``Dispatcher._hand_out``.
INLINE_SEND_MAX = 0.005

#: One worker's share of a round: its id and the tasks claimed for it.
Batch = tuple[str, list[ClaimedTask]]


class Dispatcher:
    """Claims due tasks and assigns them to workers.

    Args:
        tasks: The dispatch store (claims and give-backs).
        fleet: This coordinator's workers: their room and the round robin.
        client: Sends the workers their tasks.
        senders: The pool that runs ``AssignTasks`` calls.
        lease_seconds: The lease a claimed task gets; heartbeats extend it.
        batch_size: At most this many tasks per claim.
        poll_interval: The longest sleep between rounds (the safety net).
        assign_timeout: Deadline of one ``AssignTasks`` call, in seconds.
    """

    def __init__(
        self,
        tasks: DispatchStore,
        fleet: Fleet,
        client: WorkerCalls,
        senders: Executor,
        *,
        lease_seconds: float,
        batch_size: int,
        poll_interval: float,
        assign_timeout: float,
    ) -> None:
        self._tasks = tasks
        self._fleet = fleet
        self._client = client
        self._senders = senders
        self._lease_seconds = lease_seconds
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._assign_timeout = assign_timeout
        # When the loop runs its next round (monotonic clock); 0 means at once.
        self._next_round = 0.0
        self._timer = threading.Condition()
        # Held while a round runs: rounds run one at a time, on the loop's or the listener's thread.
        self._round = threading.Lock()
        # Whether the last claim filled every slot, so more tasks may be waiting for room.
        self._backlog = True
        # The routes with a limited queue, whose claims take its lock first; and whether the
        # last round found a limited queue full (its tasks wait for one of it to finish).
        self._limited: set[Route] = set()
        self._capped = False

    def wake(self) -> None:
        """Asks for a round now (tasks were submitted or given back, or a worker has room)."""
        with self._timer:
            self._next_round = 0.0
            self._timer.notify()

    def slots_freed(self) -> None:
        """Asks for a round if tasks may be waiting for the room that just opened, or a
        finished task may have made room in a full limited queue."""
        if self._backlog or self._capped:
            self.wake()

    def submitted(self, count: int | None = None, conn: Connection | None = None) -> None:
        """Runs a round on the calling thread (the listener's) when tasks were submitted.

        This spares the hand-off to the loop's thread: a wake-up between threads is a good part
        of an idle cluster's pickup latency. When a round is already running, the loop runs
        another after it instead. With ``count``, how many tasks were submitted, the round
        plans only that many slots: one task needs one worker, whose claim is the lean one.
        With ``conn`` (the listener's), the claim runs on it: its server process has just sent
        the notification, and answers sooner than a pooled connection's, idle until now.
        """
        if not self._dispatch(wait=False, inline=True, wanted=count, conn=conn):
            self.wake()

    def run(self, stop: threading.Event) -> None:
        """Runs rounds until ``stop`` is set (and :meth:`wake` called, to end a wait)."""
        while not stop.is_set():
            with self._timer:
                while not stop.is_set() and (left := self._next_round - time.monotonic()) > 0:
                    self._timer.wait(left)
                # A wake-up from now on asks for another round after this one.
                self._next_round = math.inf
            if stop.is_set():
                return
            self._dispatch(wait=True, inline=False)

    def _dispatch(
        self,
        *,
        wait: bool,
        inline: bool,
        wanted: int | None = None,
        conn: Connection | None = None,
    ) -> bool:
        """Runs one round: claims under the round's lock, then sends with the lock released.

        Returns ``False``, having done nothing, when another round is running and ``wait`` is
        not set. ``inline`` lets a lone batch go from this thread (see :meth:`_hand_out`).
        ``wanted`` caps the round's slots below the batch size; ``conn`` is where to claim.
        """
        if not self._round.acquire(blocking=wait):
            return False
        try:
            sleep, batches = self._claim(wanted, conn)
        except TaskmillError as exc:
            logger.warning("dispatch round failed: %s", exc.message)
            sleep, batches = min(self._poll_interval, 1.0), []
        except Exception:
            logger.exception("dispatch round failed")
            sleep, batches = min(self._poll_interval, 1.0), []
        finally:
            self._round.release()
        self._round_again_in(sleep)
        self._hand_out(batches, inline=inline)
        return True

    def _round_again_in(self, sleep: float) -> None:
        at = time.monotonic() + sleep
        with self._timer:
            # Never later than a round already asked for, and the loop's thread is woken only
            # to bring its wake-up forward: waking it for nothing would compete for the GIL
            # with the sender thread that is starting the round's AssignTasks call.
            if at < self._next_round:
                self._next_round = at
                self._timer.notify()

    def _claim(self, wanted: int | None, conn: Connection | None) -> tuple[float, list[Batch]]:
        """Claims due tasks for the workers with room, route by route, and reserves their slots.

        Returns how long the loop may sleep before the next round, and each worker's batch. A
        submit's round stops once it has claimed as many tasks as were submitted.
        """
        limit = self._batch_size if wanted is None else max(1, min(wanted, self._batch_size))
        plans = self._fleet.plan(limit)
        if not plans:
            # Nobody has room: tasks may be waiting for the next slot that frees.
            self._backlog = True
            return self._poll_interval, []
        round_ = _Round(self._poll_interval)
        for plan in plans:
            try:
                claim, again = self._claim_route(plan, conn, wanted)
            except TaskmillError as exc:
                # The other routes' claims stand: their tasks are reserved and must be sent.
                logger.warning("claim for %s failed: %s", plan.route.queues, exc.message)
                round_.sleep = min(round_.sleep, 1.0)
                continue
            slots = sum(share.size for share in plan.shares)
            # Every slot filled: more may be waiting. A submit's round that got as many slots as
            # it asked for leaves the flag as it was (anything else still due shows in
            # next_due_in).
            full = len(claim.tasks) == slots
            round_.backlog |= again or (
                full and (wanted is None or slots < wanted or self._backlog)
            )
            # A lean submit's claim that took less than its slots asked nothing else: the
            # loop's next round, at once, asks.
            round_.backlog |= not claim.complete and not full
            # A submit's claim that took all it came for did not ask whether a limited queue
            # is full: what the last complete claim said stands.
            round_.capped |= claim.capped if claim.complete else self._capped
            round_.sleep = min(round_.sleep, self._sleep_after(claim))
            if claim.tasks:
                queues = (task.queue for task in claim.tasks)
                self._fleet.served(plan.route, claim.tasks[-1].worker_id, queues)
                round_.batches += self._reserve(claim.tasks)
                round_.claimed += len(claim.tasks)
                if wanted is not None and round_.claimed >= wanted:
                    break
        self._backlog, self._capped = round_.backlog, round_.capped
        return (0.0 if round_.backlog else round_.sleep), round_.batches

    def _claim_route(
        self, plan: Plan, conn: Connection | None, wanted: int | None = None
    ) -> tuple[Claim, bool]:
        """Claims for one route, under the locks of its limited queues when it has any (learnt
        from a claim's answer: a claim without them takes nothing from a limited queue).

        Returns the claim, and whether another round should follow at once: a claim that just
        learnt of a limit spent the shares on what it could take, and the rest waits for it.
        """
        route = plan.route._replace(queues=plan.queues)
        locked = plan.route in self._limited
        claim = self._tasks.claim_due(
            route, plan.shares, self._lease_seconds, conn, locked=locked, wanted=wanted
        )
        if claim.limited and not locked:
            self._limited.add(plan.route)
            if not claim.tasks:
                return self._tasks.claim_due(
                    route, plan.shares, self._lease_seconds, locked=True
                ), False
            return claim, True
        if locked and not claim.limited:
            self._limited.discard(plan.route)
        return claim, False

    def _sleep_after(self, claim: Claim) -> float:
        if claim.next_due_in is None:
            return self._poll_interval
        if claim.next_due_in <= 0:
            return MIN_SLEEP
        return min(self._poll_interval, claim.next_due_in + DUE_MARGIN)

    def _reserve(self, claimed: Sequence[ClaimedTask]) -> list[Batch]:
        by_worker: dict[str, list[ClaimedTask]] = {}
        for task in claimed:
            by_worker.setdefault(task.worker_id, []).append(task)
        batches: list[Batch] = []
        for worker_id, batch in by_worker.items():
            ids = [task.id for task in batch]
            if self._fleet.reserve(worker_id, ids):
                batches.append((worker_id, batch))
            else:
                self._give_back(worker_id, batch, "the worker left", declined=True)
        logger.debug("claimed %d tasks for %d workers", len(claimed), len(by_worker))
        return batches

    def _hand_out(self, batches: list[Batch], *, inline: bool) -> None:
        """Sends each worker its batch from the sender pool, or a lone batch on this thread.

        A thread hand-off is a sizeable part of an idle cluster's pickup, so a submit's round (on
        the listener's thread, ``inline``) sends a lone batch itself, but only to a worker whose
        last ``AssignTasks`` was answered within ``INLINE_SEND_MAX``: a worker that is slow or
        fails gets its batches from the pool until it answers promptly again, so it cannot keep
        the listener from the next submits. (A worker that hangs right after a prompt answer
        holds the listener up to the assignment deadline, once.) The round's lock is already
        released, so the loop's own rounds go on meanwhile.
        """
        if inline and len(batches) == 1 and self._fleet.is_prompt(batches[0][0]):
            self._send(*batches[0])
            return
        for worker_id, batch in batches:
            self._senders.submit(self._send, worker_id, batch)

    def _send(self, worker_id: str, batch: Sequence[ClaimedTask]) -> None:
        # One dispatch span per task continues the trace stored with it; each assignment
        # carries its span's context, so the worker's execution span is its child. The batched
        # call itself runs in the first task's context, which its gRPC client span joins.
        if not exporting():
            # No spans nobody sees, at a cost for every task: the assignments carry the stored
            # context. Nor is the call made in the first task's context: without an exporter the
            # channel has no tracing interceptor to read it (``grpcutil.create_channel``), and
            # parsing the traceparent would lengthen an idle cluster's pickup for nothing.
            self._assign(worker_id, batch, [task.trace_context or "" for task in batch])
            return
        spans = [_dispatch_span(task, worker_id) for task in batch]
        try:
            with trace.use_span(spans[0], end_on_exit=False):
                error = self._assign(worker_id, batch, [traceparent_of(s) or "" for s in spans])
        finally:
            for span in spans:
                if error:
                    span.set_status(Status(StatusCode.ERROR, error))
                span.end()

    def _assign(
        self, worker_id: str, batch: Sequence[ClaimedTask], traceparents: list[str]
    ) -> str | None:
        """Sends one worker its tasks; returns why it did not take them, or ``None``."""
        try:
            answer = self._client.assign(worker_id, batch, traceparents, self._assign_timeout)
        except AssignRefused as exc:
            return self._give_back(
                worker_id, batch, exc.message, full=exc.full, declined=exc.declined
            )
        except Exception:
            logger.exception("sending %d tasks to worker %s failed", len(batch), worker_id)
            return self._give_back(worker_id, batch, "internal error")
        prompt = answer.seconds <= INLINE_SEND_MAX
        self._fleet.accepted(
            worker_id, [task.id for task in batch], answer.free_slots, prompt=prompt
        )
        return None

    def _give_back(
        self,
        worker_id: str,
        batch: Sequence[ClaimedTask],
        reason: str,
        *,
        full: bool = False,
        declined: bool = False,
    ) -> str:
        """Returns tasks a worker did not take to ``scheduled``, attempt unchanged.

        A worker that was merely full gets tasks again as soon as it reports one finished; any
        other failure (draining, unreachable, wrong id) waits for its next heartbeat. Should
        the worker have taken them after all (an answer lost or late), the tokens named here
        are no longer its own: its next heartbeat tells it so, and it drops them unrun. Tasks
        whose start the claim recorded may have started there, so they are given back only
        when the worker ``declined`` them for sure; otherwise they stay with it, and if it
        never got them, their lease runs out and recovery ends them as a lost worker's.
        """
        ids = [task.id for task in batch]
        logger.info("worker %s did not take %d tasks (%s)", worker_id, len(ids), reason)
        self._backlog = True
        self._fleet.refused(worker_id, ids, full=full)
        try:
            given = [Held(task.id, task.token) for task in batch]
            self._tasks.release(worker_id, given, recorded=declined)
        except TaskmillError as exc:
            # Their lease is not extended (the worker does not list them), so lease recovery
            # returns them to scheduled later.
            logger.warning("could not give back %d tasks: %s", len(ids), exc.message)
        self.wake()
        return reason


@dataclass
class _Round:
    """What a round's claims found, route by route."""

    sleep: float
    backlog: bool = False
    capped: bool = False
    claimed: int = 0
    batches: list[Batch] = field(default_factory=list)


def _dispatch_span(task: ClaimedTask, worker_id: str) -> Span:
    return tracer.start_span(
        "dispatch",
        context=context_from_traceparent(task.trace_context),
        kind=SpanKind.PRODUCER,
        attributes={
            TASK_ID: task.id,
            TASK_COMMAND: task.command,
            TASK_ATTEMPT: task.attempt,
            WORKER_ID: worker_id,
            QUEUE: task.queue,
        },
    )
