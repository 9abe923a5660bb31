"""Sends status reports to the coordinator in batches, retrying until they are acknowledged.

One thread sends one batch at a time: everything that accumulated while the previous call was in
flight (up to ``batch_size``), in order, so a task's ``running`` report always precedes its final
one. A batch stays queued until the coordinator acknowledges it; failures are retried with
backoff, so a coordinator restart loses nothing. NOT_FOUND means the coordinator forgot this
worker: the batch waits for the agent to register again and is then sent under the new id.

A ``running`` report still queued (not yet in a batch being sent) when its attempt's final
report arrives is folded into the final one, as its ``started_at``: one report and one UPDATE
instead of two for a short task under load.

A report whose message cannot be built (text UTF-8 cannot encode: a lone surrogate) never holds
up the batch, or every later report would wait behind it for ever while heartbeats kept its
task's lease alive: a result is replaced by a failure, an error is sent with its text escaped,
and a report that can be neither is dropped and logged.

``add`` is on every task's path, twice: it takes a plain lock, and wakes the sending thread only
when that thread waits for reports; while it sends, new reports just queue for its next batch.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from typing import TYPE_CHECKING

import grpc

from taskmill.common.attempts import Held, Report, ReportStatus
from taskmill.common.models import TaskError
from taskmill.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from taskmill.worker.execution import RESULT_NOT_SERIALIZABLE, storable
from taskmill.worker.membership import Membership
from taskmill.worker.retry import ReconnectBackoff, describe, status_code

if TYPE_CHECKING:
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

logger = logging.getLogger(__name__)

_ID_POLL_SECONDS = 0.2
#: A batch stops growing past this many characters of results and errors. A character takes
#: up to 4 bytes of UTF-8: four times this, and a batch's other fields, stay under the gRPC
#: message limit (``taskmill.common.grpcutil.MAX_MESSAGE_BYTES``).
MAX_BATCH_CHARS = 12 * 1024 * 1024

#: What building a report's message raises for a value the message cannot take (text UTF-8
#: cannot encode raises ``UnicodeEncodeError``, a ``ValueError``).
_UNBUILDABLE = (ValueError, TypeError)

_FINAL = frozenset({ReportStatus.SUCCEEDED, ReportStatus.FAILED, ReportStatus.CANCELLED})


class _Slot:
    """A place in the queue; a folded ``running`` report leaves it empty, and gives the final
    report that took it in its ``started_at``."""

    __slots__ = ("report", "started_at")

    def __init__(self, report: Report) -> None:
        self.report: Report | None = report
        self.started_at: float | None = None


def _weight(report: Report) -> int:
    """Roughly how much a report adds to a message: its result and error."""
    error = report.error
    if error is None:
        return len(report.result_json)
    return len(report.result_json) + len(error.message) + len(error.traceback)


class Reporter:
    """Queues reports and sends them from its own thread.

    Args:
        stub: The coordinator's client stub.
        membership: Supplies the worker id to send under.
        batch_size: Most reports per call.
        rpc_timeout: Deadline of each call, in seconds.
        max_backoff: Longest pause between retries.
    """

    def __init__(
        self,
        stub: coordinator_pb2_grpc.CoordinatorServiceStub,
        membership: Membership,
        *,
        batch_size: int = 1000,
        rpc_timeout: float = 10.0,
        max_backoff: float = 2.0,
    ) -> None:
        self._stub = stub
        self._membership = membership
        self._batch_size = batch_size
        self._rpc_timeout = rpc_timeout
        self._backoff = ReconnectBackoff(0.05, max_backoff)
        self._pending: collections.deque[_Slot] = collections.deque()
        # The running reports not yet taken into a batch, by (task id, attempt).
        self._unsent_running: dict[tuple[str, int], _Slot] = {}
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)  # the sending thread waits for reports
        self._idle = False  # ... and is waiting now
        self._acknowledged = threading.Condition(self._lock)  # flush waits for an empty queue
        self._stopped = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="taskmill-reporter", daemon=True)

    def start(self) -> None:
        """Starts the sending thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stops the sending thread; reports not yet acknowledged are dropped (and logged)."""
        self._stopped.set()
        with self._lock:
            self._queued.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        if self._pending:
            logger.warning("%d status reports were never acknowledged", len(self._pending))

    def add(self, report: Report) -> None:
        """Queues a report for sending, folding an unsent ``running`` report into a final one."""
        slot = _Slot(report)
        status = report.status
        with self._lock:
            if status is ReportStatus.RUNNING:
                self._unsent_running[report.task_id, report.attempt] = slot
            elif status in _FINAL:
                running = self._unsent_running.pop((report.task_id, report.attempt), None)
                if running is not None and running.report is not None:
                    slot.started_at = running.report.occurred_at
                    running.report = None
            self._pending.append(slot)
            if self._idle:
                self._queued.notify()

    def pending(self) -> set[Held]:
        """Tasks with reports not yet acknowledged, with their assignments' tokens."""
        with self._lock:
            return {
                Held(slot.report.task_id, slot.report.token)
                for slot in self._pending
                if slot.report is not None
            }

    def started(self) -> list[int]:
        """The tokens of the attempts with reports not yet acknowledged, given-back ones aside:
        their tasks may have run, and the database may not show it yet."""
        with self._lock:
            return [
                slot.report.token
                for slot in self._pending
                if slot.report is not None and slot.report.status is not ReportStatus.REJECTED
            ]

    def flush(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds until every queued report is acknowledged."""
        with self._lock:
            return self._acknowledged.wait_for(lambda: not self._pending, timeout)

    def _next_batch(self) -> tuple[list[_Slot], int] | None:
        """The reports to send next, and how many queue places they take (folded ones too)."""
        with self._lock:
            while not self._pending and not self._stopped.is_set():
                self._idle = True
                self._queued.wait()
                self._idle = False
            if self._stopped.is_set():
                return None
            batch: list[_Slot] = []
            places = 0
            size = 0
            for slot in itertools.islice(self._pending, self._batch_size):
                report = slot.report
                if report is not None:
                    size += _weight(report)
                    if batch and size > MAX_BATCH_CHARS:
                        break  # keep each call well under the gRPC message limit
                    batch.append(slot)
                    if report.status is ReportStatus.RUNNING:
                        # Once sent, it may be applied: it can no longer be folded.
                        self._unsent_running.pop((report.task_id, report.attempt), None)
                places += 1
            return batch, places

    def _worker_id(self) -> str | None:
        while not self._stopped.is_set():
            worker_id = self._membership.wait(_ID_POLL_SECONDS)
            if worker_id is not None:
                return worker_id
        return None

    def _run(self) -> None:
        while (next_batch := self._next_batch()) is not None:
            batch, places = next_batch
            if not batch:  # only folded places
                self._acknowledge(places)
                continue
            worker_id = self._worker_id()
            if worker_id is None:
                return
            try:
                delay = self._send(worker_id, batch, places)
            except Exception:
                logger.exception("sending status reports failed")
                delay = self._backoff.delay()
            if delay:
                self._stopped.wait(delay)

    def _send(self, worker_id: str, batch: list[_Slot], places: int) -> float:
        """Sends one batch; returns how long to wait before the next attempt."""
        request = coordinator_pb2.ReportTaskStatusesRequest(worker_id=worker_id)
        reports = request.reports
        for slot in batch:
            _add(reports, slot)
        started = time.monotonic()
        try:
            self._stub.ReportTaskStatuses(request, timeout=self._rpc_timeout)
        except grpc.RpcError as error:
            return self._failed(worker_id, batch, places, error)
        logger.debug(
            "reported %d statuses in %.1f ms", len(batch), 1e3 * (time.monotonic() - started)
        )
        if self._failing:
            logger.info("status reports are acknowledged again")
            self._failing = False
        self._backoff.reset()
        self._acknowledge(places)
        return 0.0

    def _failed(
        self, worker_id: str, batch: list[_Slot], places: int, error: grpc.RpcError
    ) -> float:
        code = status_code(error)
        if code is grpc.StatusCode.NOT_FOUND:
            logger.info("the coordinator does not know worker %s; registering again", worker_id)
            self._membership.forget(worker_id)
            return 0.0
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            # Retrying a batch the coordinator calls malformed would block every later report.
            logger.error(
                "the coordinator refused %d reports (%s); dropping them",
                len(batch),
                describe(error),
            )
            self._acknowledge(places)
            return 0.0
        log = logger.debug if self._failing else logger.warning
        log("status reports not acknowledged, will retry: %s", describe(error))
        self._failing = True
        return self._backoff.delay()

    def _acknowledge(self, count: int) -> None:
        with self._lock:
            for _ in range(count):
                self._pending.popleft()
            self._acknowledged.notify_all()


def _add(reports: RepeatedCompositeFieldContainer[common_pb2.StatusReport], slot: _Slot) -> None:
    """Adds a slot's report to a request; if its message cannot be built, its replacement, or
    nothing. What is sent instead is kept in the slot, so a retry of the batch sends the same."""
    report = slot.report
    assert report is not None  # a folded place is never in a batch
    count = len(reports)
    try:
        report.add_to(reports, slot.started_at)
        return
    except _UNBUILDABLE as exc:
        reason = storable(str(exc))
    del reports[count:]  # a field that failed leaves its message half built
    replacement = _replacement(report, reason)
    if replacement is not None:
        try:
            replacement.add_to(reports, slot.started_at)
        except _UNBUILDABLE:
            del reports[count:]
            replacement = None
    slot.report = replacement
    if replacement is None:
        logger.error("dropped the %s report of task %s: %s", report.status, report.task_id, reason)
    else:
        logger.warning(
            "the %s report of task %s could not be sent (%s); sent a failure instead",
            report.status,
            report.task_id,
            reason,
        )


def _replacement(report: Report, reason: str) -> Report | None:
    """What to send for a report whose message cannot be built: for a result, a failure saying
    why; for an error, the error with its text made storable; none for the others."""
    if report.status is ReportStatus.SUCCEEDED:
        error = TaskError(RESULT_NOT_SERIALIZABLE, f"the result could not be sent: {reason}")
    elif report.status is ReportStatus.FAILED and report.error is not None:
        type_, message, traceback = report.error.type, report.error.message, report.error.traceback
        error = TaskError(storable(type_), storable(message), storable(traceback))
    else:
        return None
    return report._replace(status=ReportStatus.FAILED, result_json="", error=error)
