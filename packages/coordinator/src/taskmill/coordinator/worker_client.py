"""The coordinator's client of its workers' ``WorkerService``: one channel per worker, and the
``AssignTasks`` and ``CancelTask`` calls, their outcomes translated into plain results.

This is the only place in the coordinator that knows the workers speak gRPC: dispatch and the
service layer see it as :class:`~taskmill.coordinator.calls.WorkerCalls`, and its answers as an
``AssignResult``, a ``bool``, or a ``WorkerCallFailed``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import grpc

from taskmill.common.attempts import add_assignments
from taskmill.common.store import ClaimedTask
from taskmill.coordinator.calls import AssignRefused, AssignResult, WorkerCallFailed
from taskmill.v1 import worker_pb2, worker_pb2_grpc

#: The answers of a worker that took none of an assignment's tasks (see the worker's servicer).
_DECLINED = frozenset(
    {
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
    }
)


class _Link(NamedTuple):
    channel: grpc.Channel
    stub: worker_pb2_grpc.WorkerServiceStub


class WorkerClient:
    """Calls this coordinator's workers, safe to use from any thread.

    Args:
        connect: Opens a channel to a worker's address (adds the cluster token and TLS).
    """

    def __init__(self, connect: Callable[[str], grpc.Channel]) -> None:
        self._connect = connect
        # Written under the lock, read without it: one dict lookup on the dispatch path.
        self._lock = threading.Lock()
        self._links: dict[str, _Link] = {}

    def open(self, worker_id: str, address: str) -> None:
        """Opens a channel to a worker, replacing (and closing) any it had."""
        channel = self._connect(address)
        link = _Link(channel, worker_pb2_grpc.WorkerServiceStub(channel))
        with self._lock:
            old = self._links.get(worker_id)
            self._links[worker_id] = link
        if old is not None:
            old.channel.close()

    def close(self, worker_id: str) -> None:
        """Closes the channel to a worker, if it has one."""
        with self._lock:
            link = self._links.pop(worker_id, None)
        if link is not None:
            link.channel.close()

    def close_all(self) -> None:
        """Closes every channel."""
        with self._lock:
            links = list(self._links.values())
            self._links.clear()
        for link in links:
            link.channel.close()

    def assign(
        self,
        worker_id: str,
        tasks: Sequence[ClaimedTask],
        traceparents: Sequence[str],
        timeout: float,
    ) -> AssignResult:
        """Sends a worker its tasks in one ``AssignTasks`` call.

        The call runs in the caller's context, so with tracing on its client span joins the
        caller's current span.

        Args:
            worker_id: The worker, as it registered.
            tasks: The claimed tasks.
            traceparents: The W3C trace context each assignment carries, in the same order.
            timeout: The call's deadline, in seconds.

        Raises:
            AssignRefused: The worker did not take them, or there is no channel to it.
        """
        link = self._links.get(worker_id)
        if link is None:
            raise AssignRefused("the worker left", declined=True)
        request = worker_pb2.AssignTasksRequest(worker_id=worker_id)
        add_assignments(request.assignments, tasks, traceparents)
        began = time.monotonic()
        try:
            response = link.stub.AssignTasks(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = _code(exc)
            raise AssignRefused(
                _reason(exc, code),
                full=code is grpc.StatusCode.RESOURCE_EXHAUSTED,
                declined=code in _DECLINED,
            ) from None
        return AssignResult(response.free_slots, time.monotonic() - began)

    def cancel(self, worker_id: str, task_id: str, timeout: float) -> bool:
        """Asks a worker to cancel a task; returns whether it said it held the task.

        Raises:
            WorkerCallFailed: The call failed, or there is no channel to the worker.
        """
        link = self._links.get(worker_id)
        if link is None:
            raise WorkerCallFailed("the worker left")
        try:
            response = link.stub.CancelTask(
                worker_pb2.CancelTaskRequest(task_id=task_id), timeout=timeout
            )
        except grpc.RpcError as exc:
            raise WorkerCallFailed(_reason(exc, _code(exc))) from None
        return bool(response.found)


def _code(error: grpc.RpcError) -> grpc.StatusCode | None:
    return error.code() if isinstance(error, grpc.Call) else None


def _reason(error: grpc.RpcError, code: grpc.StatusCode | None) -> str:
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    return f"{code.name if code else 'error'}: {details}"
