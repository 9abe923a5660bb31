"""The worker's side of membership: register, heartbeat, register again, deregister.

One thread registers at start and then heartbeats every interval with the free slots and the
tasks the worker holds — queued, running, or finished with the final report not yet acknowledged,
so their leases stay extended until the coordinator has the outcome. Through a coordinator outage
it keeps trying with backoff. When the coordinator answers NOT_FOUND (it declared this worker
dead, having heard nothing for a lease), the worker registers again at once, listing what it
holds, and carries on under the new id.

Every answer keeps the worker's fence open (:mod:`taskmill.worker.fence`): each heartbeat's and
registration's answer names the held tasks that are no longer this worker's, which are dropped
or stopped before the fence is told of the answer, so no slot starts one of them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from taskmill.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from taskmill.worker.executor import Executor
from taskmill.worker.fence import Fence
from taskmill.worker.membership import Membership
from taskmill.worker.reporter import Reporter
from taskmill.worker.retry import ReconnectBackoff, describe, status_code

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration:
    """What the worker tells the coordinator about itself."""

    address: str
    capacity: int
    hostname: str
    version: str
    handlers: tuple[str, ...]
    concurrency: int = 0  # its slots; 0 tells an older coordinator's protocol: unknown
    queues: tuple[tuple[str, int], ...] = ()  # (name, weight); none tells "default"


class Agent:
    """Keeps the worker registered and heartbeating.

    Args:
        stub: The coordinator's client stub.
        membership: Where the worker id is kept.
        executor: Source of free slots and held tasks, and target of cancellations.
        reporter: Source of tasks whose reports are not yet acknowledged.
        registration: The worker's description.
        fence: Told of every answer, and of the lease the coordinator names.
        default_interval: Heartbeat interval when the coordinator names none.
        max_backoff: Longest pause between retries while the coordinator is unreachable.
        rpc_timeout: Deadline of each call, in seconds.
        registered: Called after each registration (the asker then records, under the new id,
            the starts the worker still holds).
    """

    def __init__(
        self,
        stub: coordinator_pb2_grpc.CoordinatorServiceStub,
        membership: Membership,
        executor: Executor,
        reporter: Reporter,
        registration: Registration,
        fence: Fence,
        *,
        default_interval: float = 1.0,
        max_backoff: float = 2.0,
        rpc_timeout: float = 10.0,
        registered: Callable[[], None] | None = None,
    ) -> None:
        self._registered = registered
        self._stub = stub
        self._membership = membership
        self._executor = executor
        self._reporter = reporter
        self._registration = registration
        self._fence = fence
        self._default_interval = default_interval
        self._interval = default_interval
        self._backoff = ReconnectBackoff(0.1, max_backoff)
        self._rpc_timeout = rpc_timeout
        self._failing = False
        self._stopped = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskmill-agent", daemon=True)
        membership.on_forgotten(self.wake)

    def start(self) -> None:
        """Starts registering and heartbeating."""
        self._thread.start()

    def wake(self) -> None:
        """Makes the thread act now instead of at the end of its pause."""
        self._wake.set()

    def stop(self) -> None:
        """Stops the thread (no deregistration)."""
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def deregister(self) -> None:
        """Tells the coordinator this worker is gone; failures are logged, not raised."""
        worker_id = self._membership.worker_id
        if worker_id is None:
            return
        request = coordinator_pb2.DeregisterWorkerRequest(worker_id=worker_id)
        try:
            self._stub.DeregisterWorker(request, timeout=self._rpc_timeout)
        except grpc.RpcError as error:
            logger.warning("could not deregister worker %s: %s", worker_id, describe(error))
            return
        self._membership.set(None)
        logger.info("deregistered worker %s", worker_id)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                delay = self._step()
            except Exception:
                logger.exception("heartbeat loop failed")
                delay = self._backoff.delay()
            if delay > 0:
                self._wake.wait(delay)
            self._wake.clear()

    def _step(self) -> float:
        """Registers or heartbeats once; returns the pause before the next step."""
        worker_id = self._membership.worker_id
        try:
            if worker_id is None:
                self._register()
                delay = 0.0  # heartbeat at once: the new coordinator learns what we hold
            else:
                delay = self._heartbeat(worker_id)
        except grpc.RpcError as error:
            return self._failed(worker_id, error)
        if self._failing:
            logger.info("the coordinator answers again")
            self._failing = False
        self._backoff.reset()
        return delay

    def _register(self) -> None:
        info = self._registration
        sent_at = self._fence.now()
        request = coordinator_pb2.RegisterWorkerRequest(
            address=info.address,
            capacity=info.capacity,
            hostname=info.hostname,
            version=info.version,
            handlers=list(info.handlers),
            held=self._held(),
            concurrency=info.concurrency,
            queues=[coordinator_pb2.ServedQueue(name=n, weight=w) for n, w in info.queues],
        )
        response = self._stub.RegisterWorker(request, timeout=self._rpc_timeout)
        interval = response.heartbeat_interval_seconds
        self._interval = interval if interval > 0 else self._default_interval
        self._drop_stale(response.stale_tokens)
        self._membership.set(response.worker_id)
        self._fence.acknowledged(sent_at, response.lease_seconds)
        if self._registered is not None:
            self._registered()
        logger.info(
            "registered as worker %s (address %s, capacity %d, heartbeat every %g s)",
            response.worker_id,
            info.address,
            info.capacity,
            self._interval,
        )

    def _heartbeat(self, worker_id: str) -> float:
        sent_at = self._fence.now()
        request = coordinator_pb2.HeartbeatRequest(
            worker_id=worker_id, free_slots=self._executor.free_slots(), held=self._held()
        )
        response = self._stub.Heartbeat(request, timeout=self._rpc_timeout)
        for task_id in response.cancel_task_ids:
            if self._executor.cancel(task_id):
                logger.info("task %s cancelled at the coordinator's request", task_id)
        self._drop_stale(response.stale_tokens)
        self._fence.acknowledged(sent_at)
        return self._interval

    def _held(self) -> list[common_pb2.HeldTask]:
        """What the worker holds: its tasks, and those whose final report is unacknowledged."""
        held = {*self._executor.held(), *self._reporter.pending()}
        return [task.to_proto() for task in held]

    def _drop_stale(self, tokens: Sequence[int]) -> None:
        if tokens:
            found = self._executor.drop_stale(set(tokens))
            logger.debug(  # the executor warns of each stale copy, once
                "%d held tasks are no longer this worker's (%d found)", len(tokens), found
            )

    def _failed(self, worker_id: str | None, error: grpc.RpcError) -> float:
        if worker_id is not None and status_code(error) is grpc.StatusCode.NOT_FOUND:
            logger.info("the coordinator does not know worker %s; registering again", worker_id)
            self._membership.forget(worker_id)
            return 0.0
        action = "registration" if worker_id is None else "heartbeat"
        log = logger.debug if self._failing else logger.warning
        log("%s failed, will retry: %s", action, describe(error))
        self._failing = True
        return self._backoff.delay()
