"""Sends the starts recorded before they happen (``starts.py``) to the coordinator.

From a thread of its own, apart from the reports: an ask must not wait behind a batch of final
reports in flight, as a slot may wait for its answer. Each call sends the whole set of tokens
whose start the database must know (``RecordStarts``): the ones asked since the last call, and
the live ones (``live``: tasks asked for earlier and still held, or whose reports are not yet
acknowledged), so recording any number of starts is one call and one small row write, and the
set shrinks as reports land. Every ask queued while one call is in flight goes in the next. An
ask is sent again until answered: across a coordinator restart, and under a new worker id after
registering again (whose answer has already dropped the tasks that are no longer this
worker's).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection

import grpc

from taskmill.common.attempts import Held
from taskmill.v1 import coordinator_pb2, coordinator_pb2_grpc
from taskmill.worker.membership import Membership
from taskmill.worker.retry import ReconnectBackoff, describe, status_code

logger = logging.getLogger(__name__)

_ID_POLL_SECONDS = 0.2

#: Told the tokens whose start was recorded, and those refused (they must not run).
Listener = Callable[[list[int], list[int]], None]


def _ignore(recorded: list[int], refused: list[int]) -> None:
    """The listener until one is set."""


def _none() -> Collection[int]:
    """The live tokens until a source is set."""
    return ()


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
        self._asks: list[Held] = []
        self._again = False  # send the live tokens even without asks
        self._queued = threading.Condition()
        self._stopped = threading.Event()
        self._listener: Listener = _ignore
        self._live: Callable[[], Collection[int]] = _none
        self._thread = threading.Thread(target=self._run, name="taskmill-starts", daemon=True)

    def on_answer(self, listener: Listener, live: Callable[[], Collection[int]]) -> None:
        """Sets who learns the answers, and where the live tokens come from."""
        self._listener = listener
        self._live = live

    def resend(self) -> None:
        """Sends the live tokens again, asks or not: a new worker id's row starts empty."""
        with self._queued:
            self._again = True
            self._queued.notify()

    def ask(self, asks: list[Held]) -> None:
        """Queues tasks whose start must be recorded; quick."""
        with self._queued:
            self._asks.extend(asks)
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

    def _take(self) -> list[Held] | None:
        with self._queued:
            self._queued.wait_for(lambda: self._asks or self._again or self._stopped.is_set())
            if self._stopped.is_set():
                return None
            asks, self._asks, self._again = self._asks, [], False
            return asks

    def _send(self, asks: list[Held]) -> float | None:
        """Sends the asks, with the live tokens, once; ``None`` when they are answered, else the
        pause before again."""
        worker_id = self._membership.wait(_ID_POLL_SECONDS)
        if worker_id is None:
            return 0.0  # registering again: asked under the new id
        asked_ids, asked = Held.to_columns(asks)
        request = coordinator_pb2.RecordStartsRequest(
            worker_id=worker_id,
            tokens=sorted({*self._live(), *asked}),
            asked_task_ids=asked_ids,
            asked_tokens=asked,
        )
        try:
            answer = self._stub.RecordStarts(request, timeout=self._rpc_timeout)
        except grpc.RpcError as error:
            return self._failed(worker_id, asked, error)
        self._backoff.reset()
        refused = set(answer.refused_tokens)
        self._listener([t for t in asked if t not in refused], [t for t in asked if t in refused])
        return None

    def _failed(self, worker_id: str, tokens: list[int], error: grpc.RpcError) -> float | None:
        code = status_code(error)
        if code is grpc.StatusCode.NOT_FOUND:
            self._membership.forget(worker_id)  # the agent registers again
            return 0.0
        if code is grpc.StatusCode.UNIMPLEMENTED:
            # A coordinator older than recorded starts: the tasks run as they did with it.
            logger.warning(
                "the coordinator cannot record starts; %d tasks start anyway", len(tokens)
            )
            self._listener(tokens, [])
            return None
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            logger.error("the coordinator refused %d starts (%s)", len(tokens), describe(error))
            self._listener([], tokens)  # not recorded: they must not run
            return None
        logger.warning("starts not recorded yet, will retry: %s", describe(error))
        return self._backoff.delay()
