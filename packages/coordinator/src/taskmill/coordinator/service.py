"""The coordinator's rules for workers: registration, heartbeats, status reports, cancellation.

The gRPC servicer parses requests and calls one method here; this layer keeps the shared
``workers`` and ``tasks`` tables and this coordinator's in-memory view of its workers in step,
and wakes the dispatch loop whenever room or work may have appeared.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from taskmill.common.attempts import Report, ReportStatus
from taskmill.common.errors import TaskmillError
from taskmill.common.models import DEFAULT_QUEUE, ServedQueue, TaskError, TaskStatus, Worker
from taskmill.common.store import (
    Applied,
    DispatchStore,
    Held,
    RecoveryStore,
    ReportStore,
    WorkerStore,
)
from taskmill.coordinator.calls import WorkerCallFailed, WorkerCalls
from taskmill.coordinator.fleet import Fleet

logger = logging.getLogger(__name__)

#: The error type of a task failed because the database refused its worker's report.
REPORT_REFUSED = "report_refused"


_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: Task ids as a worker sends them, joined by commas: one match for a call's hundreds of ids.
_UUIDS = re.compile(f"(?:{_UUID}(?:,{_UUID})*)?")
#: A queue's name, as the scheduler accepts it for a task.
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,100}")


class UnknownWorker(TaskmillError):
    """No live worker has this id; the worker must register again."""


class InvalidRequest(TaskmillError):
    """The request is malformed."""


@dataclass(frozen=True)
class Wakers:
    """How the service tells the dispatch loop that something changed.

    Attributes:
        work: Tasks may be waiting (submitted, given back, or a worker joined).
        room: A worker freed slots; worth a round only when tasks are waiting.
    """

    work: Callable[[], None]
    room: Callable[[], None]


class CoordinatorService:
    """Serves this coordinator's workers: the rules behind ``CoordinatorService``'s calls.

    Attributes:
        fleet: This coordinator's in-memory view of its workers.
        coordinator_id: This process's unique id.

    Args:
        workers: The worker store.
        dispatch: The dispatch store (leases, give-backs, cancellation requests).
        reports: The report store.
        recovery: The recovery store (a deregistered worker's tasks).
        fleet: This coordinator's in-memory view of its workers.
        client: Calls the workers (forwarded cancellations).
        wakers: Callbacks into the dispatch loop.
        coordinator_id: This process's unique id, recorded with its workers.
        lease_seconds: How far a heartbeat extends the leases of the worker's tasks.
        cancel_timeout: Deadline of a forwarded ``CancelTask`` call, in seconds.
    """

    def __init__(
        self,
        workers: WorkerStore,
        dispatch: DispatchStore,
        reports: ReportStore,
        recovery: RecoveryStore,
        fleet: Fleet,
        client: WorkerCalls,
        wakers: Wakers,
        *,
        coordinator_id: str,
        lease_seconds: float,
        cancel_timeout: float = 5.0,
    ) -> None:
        self._workers = workers
        self._dispatch = dispatch
        self._reports = reports
        self._recovery = recovery
        self.fleet = fleet
        self._client = client
        self._wakers = wakers
        self.coordinator_id = coordinator_id
        self._lease_seconds = lease_seconds
        self._cancel_timeout = cancel_timeout

    def register(
        self,
        *,
        address: str,
        capacity: int,
        hostname: str = "",
        version: str = "",
        handlers: Sequence[str] = (),
        concurrency: int | None = None,
        queues: Sequence[ServedQueue] = (),
    ) -> Worker:
        """Records a new worker under a fresh id and starts dispatching to it.

        ``queues`` are those it serves with their weights (none: ``default``).

        Raises:
            InvalidRequest: The address is empty, the capacity negative, or a queue unnamed,
                named twice or weighted below 1.
        """
        if not address.strip():
            raise InvalidRequest("address must be host:port of the worker's WorkerService")
        if capacity < 0:
            raise InvalidRequest(f"capacity must not be negative (got {capacity})")
        if concurrency is not None and not 0 <= concurrency <= capacity:
            raise InvalidRequest(
                f"concurrency must be 0 to capacity {capacity} (got {concurrency})"
            )
        served = _served(queues)
        worker = self._workers.register(
            queues=served,
            address=address,
            capacity=capacity,
            concurrency=concurrency,
            coordinator_id=self.coordinator_id,
            hostname=hostname,
            version=version,
            handlers=handlers,
        )
        self.fleet.add(worker)
        logger.info(
            "worker %s registered: %s, capacity %d, host %r", worker.id, address, capacity, hostname
        )
        self._wakers.work()
        return worker

    @property
    def lease_seconds(self) -> float:
        """How long a worker's tasks stay its own after its last recorded heartbeat."""
        return self._lease_seconds

    def heartbeat(
        self, worker_id: str, free_slots: int, held: Sequence[Held]
    ) -> tuple[list[uuid.UUID], list[int]]:
        """Records a heartbeat, extends the leases of the tasks the worker holds, and returns
        those of them whose cancellation was requested, and the tokens of those no longer its
        own (see :meth:`keep_held`).

        Raises:
            UnknownWorker: The worker was removed (declared dead, or never registered).
        """
        worker = self._workers.heartbeat(worker_id, max(free_slots, 0))
        if worker is None:
            self.fleet.remove(worker_id)
            raise UnknownWorker(f"no live worker has id {worker_id}; register again")
        if worker_id not in self.fleet:
            self._adopt(worker, free_slots)
        stale = self.keep_held(worker_id, held)
        if self.fleet.heartbeat(worker_id, free_slots, {task_id for task_id, _ in held}):
            self._wakers.room()
        return self._dispatch.cancel_requested(worker_id), stale

    def keep_held(self, worker_id: str, held: Sequence[Held]) -> list[int]:
        """Extends the leases of the tasks a worker holds that are still its own, and returns
        the tokens of the others: given to another worker, recovered, or finished. The worker
        drops those unrun, or stops them.

        Called on every heartbeat, and when a worker registers again holding tasks: a worker
        is declared dead, and its tasks recovered, in one transaction, so one that has to
        register again learns here that none of them is its own any more.
        """
        if not held:
            return []
        stale = self._dispatch.extend_held_leases(worker_id, held, self._lease_seconds)
        if stale:
            # Mostly tasks whose final report crossed the heartbeat: the worker warns of the
            # copies it really had to stop.
            logger.debug(
                "worker %s holds %d tasks that are no longer its own; it drops them",
                worker_id,
                len(stale),
            )
        return stale

    def _adopt(self, worker: Worker, free_slots: int) -> None:
        """Takes over a worker registered with a coordinator that is gone (a restart)."""
        adopted = self._workers.adopt(worker.id, self.coordinator_id) or worker
        self.fleet.add(adopted, free_slots=free_slots)
        logger.info(
            "worker %s adopted from coordinator %s", worker.id, worker.coordinator_id or "?"
        )
        self._wakers.work()

    def record_starts(
        self, worker_id: str, tokens: Sequence[int], asked: Sequence[tuple[str, int]]
    ) -> list[int]:
        """Records the tokens of the tasks a worker may have started whose rows do not show
        it yet (the whole set, replacing the last; see the worker's ``starts.py``); returns the
        tokens of the ``asked`` starts refused (no longer the worker's claim).

        Raises:
            UnknownWorker: The worker was removed: its tasks are recovered, none may start.
            InvalidRequest: An asked task id is not a uuid.
        """
        if not _UUIDS.fullmatch(",".join([task_id for task_id, _ in asked])):
            raise InvalidRequest("every asked task id must be a uuid in canonical form")
        refused = self._workers.record_started(worker_id, tokens, asked)
        if refused is None:
            raise UnknownWorker(f"no live worker has id {worker_id}; register again")
        return refused

    def report(self, worker_id: str, reports: Sequence[Report], rejected: Sequence[Held]) -> int:
        """Applies a worker's status reports and gives back the tasks it rejected.

        Reports are applied even from a worker this coordinator does not know (it may have just
        restarted), but only to tasks dispatched to that worker. A report the database refuses
        fails its task (see :meth:`_fail_refused`). Returns how many reports changed a task (the
        rest were duplicates or stale, or refused).
        """
        applied = Applied(set(), [])
        if reports:
            applied = self._reports.apply(reports, worker_id)
            if applied.refused:
                self._fail_refused(worker_id, applied.refused)
        changed = applied.changed
        released = set()
        if rejected:
            given = self._dispatch.release(worker_id, rejected, recorded=True)
            released = {str(task_id) for task_id in given}
        done = [r.task_id for r in reports if r.status is not ReportStatus.RUNNING]
        if self.fleet.finished(worker_id, [*done, *(task_id for task_id, _ in rejected)]):
            self._wakers.room()
        # A failure with attempts left was scheduled again, after a backoff: the dispatch loop
        # must set its timer for it.
        retried = any(r.status is ReportStatus.FAILED and r.task_id in changed for r in reports)
        if released or retried:
            self._wakers.work()
        applied_count = sum(1 for report in reports if report.task_id in changed)
        return applied_count + sum(1 for task_id, _ in rejected if task_id in released)

    def _fail_refused(self, worker_id: str, refused: Sequence[tuple[Report, str]]) -> None:
        """Fails, for good, the attempts whose reports the database refused, with its reason.

        Sent again, such a report would be refused again; dropped, it would leave its task to
        run again when its lease ran out, even with no attempts left. The failure goes through
        the same store, so it changes the task only if the report would have: same attempt,
        same worker. Not retryable: another attempt's result would most likely be refused too.
        """
        now = time.time()  # the report's own time may be what was refused
        failures = []
        for report, reason in refused:
            logger.warning(
                "the database refused the %s report of task %s from %s: %s",
                report.status,
                report.task_id,
                worker_id,
                reason,
            )
            message = f"the database refused the worker's {report.status} report: {reason}"
            failures.append(
                report._replace(
                    status=ReportStatus.FAILED,
                    occurred_at=now,
                    result_json="",
                    error=TaskError(REPORT_REFUSED, message),
                    started_at=None,
                    retryable=False,
                )
            )
        for report, reason in self._reports.apply(failures, worker_id).refused:
            logger.error("task %s could not be failed either: %s", report.task_id, reason)

    def deregister(self, worker_id: str) -> None:
        """Removes a worker that is stopping and recovers the tasks it still held."""
        # Out of the fleet first: a round planned after the recovery must not claim the tasks
        # it put back for the worker that is leaving.
        self.fleet.remove(worker_id)
        recovered = self._recovery.retire(worker_id)
        logger.info("worker %s deregistered (%d tasks recovered)", worker_id, len(recovered))
        if TaskStatus.SCHEDULED in recovered.values():
            self._wakers.work()

    def forward_cancel(self, task_id: str) -> bool:
        """Asks the worker holding a task to cancel it, when it is one of this coordinator's.

        Returns whether the worker said it held the task. Failures are only logged: the next
        heartbeat of the worker carries the request too.
        """
        try:
            holder = self._dispatch.holder(uuid.UUID(task_id))
        except ValueError:
            holder = None
        if holder is None:
            logger.warning("cancel requested for unknown task %r", task_id)
            return False
        worker_id, status = holder
        if not worker_id or worker_id not in self.fleet or status.is_final:
            return False
        try:
            found = self._client.cancel(worker_id, task_id, self._cancel_timeout)
        except WorkerCallFailed as exc:
            logger.warning("forwarding cancel of %s to %s failed: %s", task_id, worker_id, exc)
            return False
        logger.info("cancel of %s forwarded to worker %s", task_id, worker_id)
        return found


def _served(queues: Sequence[ServedQueue]) -> tuple[ServedQueue, ...]:
    """The queues a worker registers, checked; none means ``default`` (a worker older than
    queues). A weight of 0 is the wire's unset field, so it counts as 1."""
    if not queues:
        return (ServedQueue(DEFAULT_QUEUE),)
    served = tuple(ServedQueue(name, weight or 1) for name, weight in queues)
    for name, weight in served:
        if not _QUEUE_NAME.fullmatch(name):
            raise InvalidRequest(
                f"queue {name!r} must be 1 to 100 letters, digits, '_', '.', ':' or '-'"
            )
        if weight < 1:
            raise InvalidRequest(f"queue {name!r} has weight {weight}; it must be at least 1")
    if len({name for name, _ in served}) < len(served):
        raise InvalidRequest("a queue is named twice")
    return served
