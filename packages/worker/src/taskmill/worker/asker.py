"""Sends the ``running`` reports that record starts before they happen (``starts.py``).

Apart from the other reports, from a thread of its own: an ask must not wait behind a batch of
final reports (a thousand results, say) in flight, as a slot waits for its answer. Every ask
queued while one call is in flight goes in the next call, so the slots of a busy worker share
one round trip. An ask is sent again until answered: across a coordinator restart, and under
a new worker id after registering again (whose answer has already dropped the tasks that are
no longer this worker's).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc

from taskmill.common.attempts import Report
from taskmill.v1 import coordinator_pb2, coordinator_pb2_grpc
from taskmill.worker.membership import Membership
from taskmill.worker.retry import ReconnectBackoff, describe, status_code

logger = logging.getLogger(__name__)

_ID_POLL_SECONDS = 0.2

#: Told the tokens whose start was recorded, and those answered stale.
Listener = Callable[[list[int], list[int]], None]


def _ignore(recorded: list[int], stale: list[int]) -> None:
    """The listener until one is set."""


class StartAsker:
    """Asks the coordinator to record starts, and tells a listener the answers.

    Args:
        stub: The coordinator's client stub.
        membership: Supplies the worker id to send under.
        rpc_timeout: Deadline of each call, in seconds.
        max_backoff: Longest pause between retries.
    """

    def __init__(
        self,
        stub: coordinator_pb2_grpc.CoordinatorServiceStub,
        membership: Membership,
        *,
        rpc_timeout: float = 10.0,
        max_backoff: float = 2.0,
    ) -> None:
        self._stub = stub
        self._membership = membership
        self._rpc_timeout = rpc_timeout
        self._backoff = ReconnectBackoff(0.05, max_backoff)
        self._asks: list[Report] = []
        self._queued = threading.Condition()
        self._stopped = threading.Event()
        self._listener: Listener = _ignore
        self._thread = threading.Thread(target=self._run, name="taskmill-starts", daemon=True)

    def on_answer(self, listener: Listener) -> None:
        """Sets who learns the answers."""
        self._listener = listener

    def ask(self, report: Report) -> None:
        """Queues a ``running`` report whose start must be recorded; quick."""
        with self._queued:
            self._asks.append(report)
            self._queued.notify()

    def start(self) -> None:
        """Starts the sending thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stops the sending thread; unanswered asks are dropped (their slots were settled)."""
        self._stopped.set()
        with self._queued:
            self._queued.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while (asks := self._take()) is not None:
            while not self._stopped.is_set():
                delay = self._send(asks)
                if delay is None:
                    break
                self._stopped.wait(delay)

    def _take(self) -> list[Report] | None:
        with self._queued:
            self._queued.wait_for(lambda: self._asks or self._stopped.is_set())
            if self._stopped.is_set():
                return None
            asks, self._asks = self._asks, []
            return asks

    def _send(self, asks: list[Report]) -> float | None:
        """Sends the asks once; ``None`` when they are answered, else the pause before again."""
        worker_id = self._membership.wait(_ID_POLL_SECONDS)
        if worker_id is None:
            return 0.0  # registering again: asked under the new id
        request = coordinator_pb2.ReportTaskStatusesRequest(worker_id=worker_id)
        for report in asks:
            report.add_to(request.reports)
        tokens = [report.token for report in asks]
        try:
            answer = self._stub.ReportTaskStatuses(request, timeout=self._rpc_timeout)
        except grpc.RpcError as error:
            return self._failed(worker_id, tokens, error)
        self._backoff.reset()
        stale = set(answer.stale_tokens)
        self._listener([t for t in tokens if t not in stale], [t for t in tokens if t in stale])
        return None

    def _failed(self, worker_id: str, tokens: list[int], error: grpc.RpcError) -> float | None:
        code = status_code(error)
        if code is grpc.StatusCode.NOT_FOUND:
            self._membership.forget(worker_id)  # the agent registers again
            return 0.0
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            logger.error("the coordinator refused %d starts (%s)", len(tokens), describe(error))
            self._listener([], tokens)  # not recorded: they must not run
            return None
        logger.warning("starts not recorded yet, will retry: %s", describe(error))
        return self._backoff.delay()
