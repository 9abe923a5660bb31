"""Test doubles and helpers for the worker's tests: a real in-process CoordinatorService."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Self, TypeVar

import grpc

from taskmill.common.grpcutil import GrpcSecurity, create_server
from taskmill.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc, worker_pb2

T = TypeVar("T")

STATUS = {
    common_pb2.TASK_STATUS_RUNNING: "running",
    common_pb2.TASK_STATUS_SUCCEEDED: "succeeded",
    common_pb2.TASK_STATUS_FAILED: "failed",
    common_pb2.TASK_STATUS_CANCELLED: "cancelled",
    common_pb2.TASK_STATUS_REJECTED: "rejected",
}
FINAL = {"succeeded", "failed", "cancelled", "rejected"}

#: Fencing tokens for :func:`assignment`: distinct across every test, as a coordinator mints them.
_tokens = itertools.count(1001)


def wait_for(condition: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """Polls ``condition`` until it returns something truthy; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def process_gone(pid: int) -> bool:
    """Whether no process has this pid: it exited and, if it was our child, was reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class FakeCoordinator(coordinator_pb2_grpc.CoordinatorServiceServicer):
    """Records what workers send; answers like a coordinator would.

    ``fail_reports`` holds status codes the next ReportTaskStatuses calls fail with, one per
    call; ``cancel`` holds task ids the next heartbeat answer asks to cancel. ``lease_seconds``
    is the lease registrations name (0: none, as a coordinator older than fencing). ``stale``
    holds fencing tokens the next heartbeat or registration answers as no longer the worker's,
    each once the worker lists it as held. While ``fail_heartbeats`` is set, heartbeats fail
    with UNAVAILABLE, so the worker's fence closes. ``fail_starts`` holds status codes the next
    RecordStarts calls fail with, one per call; while ``hold_starts`` is set they fail with
    UNAVAILABLE. Change them with ``lock`` held.
    """

    def __init__(self, heartbeat_interval: float = 0.2, token: str | None = None) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.security = GrpcSecurity(cluster_token=token)
        self.lock = threading.Lock()
        self.known: set[str] = set()
        self.registrations: list[tuple[str, coordinator_pb2.RegisterWorkerRequest]] = []
        self.heartbeats: list[coordinator_pb2.HeartbeatRequest] = []
        self.reports: list[tuple[str, common_pb2.StatusReport]] = []
        self.report_calls = 0
        self.folded = 0  # final reports that carried their running report
        self.deregistered: list[str] = []
        self.fail_reports: list[grpc.StatusCode] = []
        self.cancel: set[str] = set()
        self.lease_seconds = 0.0
        self.stale: set[int] = set()
        self.starts: list[tuple[str, list[int]]] = []  # each RecordStarts: worker id, tokens
        self.refuse_starts: set[int] = set()  # tokens RecordStarts answers as no longer theirs
        self.fail_starts: list[grpc.StatusCode] = []
        self.hold_starts = False
        self.start_calls = 0  # RecordStarts calls, failed ones too
        self.fail_heartbeats = False
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:6]
        self.server: grpc.Server | None = None
        self.port = 0

    # -- server ------------------------------------------------------------------------------

    def start(self, port: int = 0) -> Self:
        self.server, self.port, _ = create_server(
            f"127.0.0.1:{port}",
            lambda server: coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(
                self, server
            ),
            self.security,
            max_workers=8,
        )
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=None).wait()
            self.server = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- CoordinatorService --------------------------------------------------------------------

    def RegisterWorker(
        self, request: coordinator_pb2.RegisterWorkerRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.RegisterWorkerResponse:
        worker_id = f"w-{self._prefix}-{next(self._ids)}"
        with self.lock:
            self.known.add(worker_id)
            self.registrations.append((worker_id, request))
            stale = self._take_stale(request.held)
        return coordinator_pb2.RegisterWorkerResponse(
            worker_id=worker_id,
            heartbeat_interval_seconds=self.heartbeat_interval,
            lease_seconds=self.lease_seconds,
            stale_tokens=stale,
        )

    def Heartbeat(
        self, request: coordinator_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.HeartbeatResponse:
        with self.lock:
            if self.fail_heartbeats:
                context.abort(grpc.StatusCode.UNAVAILABLE, "injected heartbeat failure")
            if request.worker_id not in self.known:
                context.abort(grpc.StatusCode.NOT_FOUND, "unknown worker")
            self.heartbeats.append(request)
            cancel = sorted(self.cancel.intersection(held_ids(request)))
            self.cancel.difference_update(cancel)
            stale = self._take_stale(request.held)
        return coordinator_pb2.HeartbeatResponse(cancel_task_ids=cancel, stale_tokens=stale)

    def _take_stale(self, listed: Iterable[common_pb2.HeldTask]) -> list[int]:
        """Takes out of ``stale`` the tokens of the tasks the worker lists (lock held)."""
        stale = sorted(self.stale.intersection(task.token for task in listed))
        self.stale.difference_update(stale)
        return stale

    def ReportTaskStatuses(
        self, request: coordinator_pb2.ReportTaskStatusesRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.ReportTaskStatusesResponse:
        with self.lock:
            self.report_calls += 1
            if self.fail_reports:
                context.abort(self.fail_reports.pop(0), "injected failure")
            if request.worker_id not in self.known:
                context.abort(grpc.StatusCode.NOT_FOUND, "unknown worker")
            for report in request.reports:
                if report.HasField("started_at") and not self._started(report):
                    # A folded running report: record it as the real coordinator applies it.
                    self.folded += 1
                    running = common_pb2.StatusReport(
                        task_id=report.task_id,
                        attempt=report.attempt,
                        status=common_pb2.TASK_STATUS_RUNNING,
                        occurred_at=report.started_at,
                        traceparent=report.traceparent,
                        token=report.token,
                    )
                    self.reports.append((request.worker_id, running))
                self.reports.append((request.worker_id, report))
        return coordinator_pb2.ReportTaskStatusesResponse(applied=len(request.reports))

    def RecordStarts(
        self, request: coordinator_pb2.RecordStartsRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.RecordStartsResponse:
        with self.lock:
            self.start_calls += 1
            if self.hold_starts:
                context.abort(grpc.StatusCode.UNAVAILABLE, "injected failure")
            if self.fail_starts:
                context.abort(self.fail_starts.pop(0), "injected failure")
            if request.worker_id not in self.known:
                context.abort(grpc.StatusCode.NOT_FOUND, "unknown worker")
            self.starts.append((request.worker_id, list(request.tokens)))
            refused = [token for token in request.asked_tokens if token in self.refuse_starts]
        return coordinator_pb2.RecordStartsResponse(refused_tokens=refused)

    def recorded(self) -> set[int]:
        """Every token any RecordStarts call has recorded."""
        with self.lock:
            return {token for _, tokens in self.starts for token in tokens}

    def _started(self, report: common_pb2.StatusReport) -> bool:
        """Whether the report's start was recorded already (a start recorded ahead of the run:
        its final report carries the real start, not a folded running report)."""
        return any(
            r.task_id == report.task_id
            and r.token == report.token
            and r.status == common_pb2.TASK_STATUS_RUNNING
            for _, r in self.reports
        )

    def DeregisterWorker(
        self, request: coordinator_pb2.DeregisterWorkerRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.DeregisterWorkerResponse:
        with self.lock:
            self.deregistered.append(request.worker_id)
            self.known.discard(request.worker_id)
        return coordinator_pb2.DeregisterWorkerResponse()

    # -- inspection ----------------------------------------------------------------------------

    def forget_all(self, stale: Iterable[int] = ()) -> None:
        """Forgets every worker, as a restarted coordinator would; the registration that follows
        answers the held tasks with these tokens as stale (no heartbeat can answer them first).
        """
        with self.lock:
            self.known.clear()
            self.stale.update(stale)

    def wait_registered(self, count: int = 1, timeout: float = 15.0) -> str:
        """Waits for the ``count``-th registration; returns that worker id."""
        wait_for(lambda: len(self.registrations) >= count, timeout, f"registration {count}")
        with self.lock:
            return self.registrations[count - 1][0]

    def served(self, count: int = 1) -> list[tuple[str, int]]:
        """The queues, with their weights, that the ``count``-th registration named."""
        self.wait_registered(count)
        with self.lock:
            request = self.registrations[count - 1][1]
        return [(queue.name, queue.weight) for queue in request.queues]

    def reports_of(self, task_id: str) -> list[common_pb2.StatusReport]:
        """The task's reports, in the order they were applied."""
        with self.lock:
            return [r for _, r in self.reports if r.task_id == task_id]

    def statuses(self, task_id: str) -> list[str]:
        return [STATUS[r.status] for r in self.reports_of(task_id)]

    def report(self, task_id: str, status: str) -> common_pb2.StatusReport | None:
        with self.lock:
            for _, r in self.reports:
                if r.task_id == task_id and STATUS[r.status] == status:
                    return r
        return None

    def wait_final(self, task_id: str, timeout: float = 15.0) -> common_pb2.StatusReport:
        """Waits for the task's final report and returns it."""

        def final() -> common_pb2.StatusReport | None:
            return next((r for r in self.reports_of(task_id) if STATUS[r.status] in FINAL), None)

        report = wait_for(final, timeout, f"a final report for {task_id}")
        assert report is not None  # wait_for returns only something truthy
        return report

    def wait_status(self, task_id: str, status: str, timeout: float = 15.0) -> None:
        wait_for(lambda: status in self.statuses(task_id), timeout, f"{task_id} {status}")

    def last_heartbeat(self) -> coordinator_pb2.HeartbeatRequest | None:
        with self.lock:
            return self.heartbeats[-1] if self.heartbeats else None

    def heartbeat_count(self) -> int:
        with self.lock:
            return len(self.heartbeats)

    def next_heartbeat(self, timeout: float = 15.0) -> coordinator_pb2.HeartbeatRequest:
        """Waits for a heartbeat sent after this call began, and returns it."""
        seen = self.heartbeat_count()
        wait_for(lambda: self.heartbeat_count() > seen + 1, timeout, "a later heartbeat")
        with self.lock:
            return self.heartbeats[-1]


def held(
    message: coordinator_pb2.HeartbeatRequest | coordinator_pb2.RegisterWorkerRequest | None,
) -> dict[str, int]:
    """The tasks a heartbeat or registration lists as held: their fencing tokens by task id."""
    return {} if message is None else {task.task_id: task.token for task in message.held}


def held_ids(
    message: coordinator_pb2.HeartbeatRequest | coordinator_pb2.RegisterWorkerRequest | None,
) -> set[str]:
    """The ids of the tasks a heartbeat or registration lists as held."""
    return set(held(message))


def assignment(
    command: str,
    payload: Any = None,
    *,
    task_id: str | None = None,
    timeout: float = 0.0,
    attempt: int = 1,
    max_attempts: int = 1,
    traceparent: str = "",
    token: int | None = None,
    start_recorded: bool = False,
    queue: str = "default",
) -> common_pb2.Assignment:
    """An assignment as a coordinator sends it, with a fencing token no other one has."""
    return common_pb2.Assignment(
        task_id=task_id or str(uuid.uuid4()),
        command=command,
        payload_json=json.dumps(payload),
        attempt=attempt,
        max_attempts=max_attempts,
        timeout_seconds=timeout,
        queue=queue,
        traceparent=traceparent,
        token=next(_tokens) if token is None else token,
        start_recorded=start_recorded,
    )


def assign_request(worker_id: str, *assignments: common_pb2.Assignment) -> Any:
    return worker_pb2.AssignTasksRequest(worker_id=worker_id, assignments=list(assignments))


def accepts(stub: Any, worker_id: str, task: common_pb2.Assignment) -> bool:
    """Assigns ``task``; False if the worker has no free slot for it (RESOURCE_EXHAUSTED)."""
    try:
        stub.AssignTasks(assign_request(worker_id, task))
    except grpc.RpcError as error:
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        return False
    return True
