"""Fixtures for coordinator tests: real coordinators on port 0 against a fresh database, and fake
workers — real gRPC servers that record what they are sent, driven by the test."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import pytest

from taskmill.common.db import Database
from taskmill.common.grpcutil import GrpcSecurity, create_channel, create_server
from taskmill.common.models import Task, TaskError, TaskStatus
from taskmill.common.settings import DatabaseSettings
from taskmill.coordinator import CoordinatorServer, CoordinatorSettings
from taskmill.coordinator import create_server as create_coordinator
from taskmill.testing import NewTask, Stores
from taskmill.testing.wire import status_report
from taskmill.v1 import (
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)

DEADLINE = 15.0
NO_SECURITY = GrpcSecurity()


def wait_until(condition: Callable[[], Any], timeout: float = DEADLINE, what: str = "") -> Any:
    """Polls ``condition`` until it returns something truthy; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.01)


class FakeWorker(worker_pb2_grpc.WorkerServiceServicer):
    """A ``WorkerService`` that records assignments and holds tasks until told to report.

    Attributes:
        refuse: When set, every ``AssignTasks`` is refused with this code.
        assignments: Every assignment accepted, in order.
        refusals: How many ``AssignTasks`` calls were refused.
        cancels: Task ids of ``CancelTask`` calls.
    """

    def __init__(
        self,
        coordinator: str,
        capacity: int,
        security: GrpcSecurity = NO_SECURITY,
        concurrency: int = 0,
        handlers: Sequence[str] = ("echo", "sleep"),
        queues: Sequence[str] = ("default",),
    ) -> None:
        self.capacity = capacity
        self.handlers = list(handlers)
        self.queues = [coordinator_pb2.ServedQueue(name=name) for name in queues]
        self.concurrency = concurrency  # registered slots; 0: unknown (nothing starts in a claim)
        self.refuse: grpc.StatusCode | None = None
        self.assignments: list[common_pb2.Assignment] = []
        self.held: dict[str, common_pb2.Assignment] = {}
        self.refusals = 0
        self.overfilled = 0
        self.cancels: list[str] = []
        self.worker_id = ""
        # A slow worker: each AssignTasks takes ``delay`` seconds, and waits for ``gate`` when set.
        self.delay = 0.0
        self.gate: threading.Event | None = None
        self.calls = 0
        self._lock = threading.Lock()
        self._beating: threading.Event | None = None
        self.server, port, _ = create_server(
            "127.0.0.1:0",
            lambda s: worker_pb2_grpc.add_WorkerServiceServicer_to_server(self, s),
            security,
        )
        self.address = f"127.0.0.1:{port}"
        self._security = security
        self.connect(coordinator)

    def connect(self, coordinator: str) -> None:
        """Points the worker's calls at a coordinator (another one after a restart)."""
        old = getattr(self, "channel", None)
        self.channel = create_channel(coordinator, self._security)
        self.stub = coordinator_pb2_grpc.CoordinatorServiceStub(self.channel)
        if old is not None:
            old.close()

    # -- WorkerService ----------------------------------------------------------------------

    def AssignTasks(
        self, request: worker_pb2.AssignTasksRequest, context: grpc.ServicerContext
    ) -> worker_pb2.AssignTasksResponse:
        with self._lock:
            self.calls += 1
            gate, delay = self.gate, self.delay
        if gate is not None:
            gate.wait(30)
        time.sleep(delay)
        with self._lock:
            if self.refuse is not None:
                self.refusals += 1
                context.abort(self.refuse, "refused on demand")
            if request.worker_id != self.worker_id:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not my id")
            if len(request.assignments) > self.free:
                self.overfilled += 1
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "full")
            for assignment in request.assignments:
                self.assignments.append(assignment)
                self.held[assignment.task_id] = assignment
            return worker_pb2.AssignTasksResponse(free_slots=self.free)

    def CancelTask(
        self, request: worker_pb2.CancelTaskRequest, context: grpc.ServicerContext
    ) -> worker_pb2.CancelTaskResponse:
        with self._lock:
            self.cancels.append(request.task_id)
            return worker_pb2.CancelTaskResponse(found=request.task_id in self.held)

    # -- driving it from the test -----------------------------------------------------------

    @property
    def free(self) -> int:
        return self.capacity - len(self.held)

    def task_ids(self) -> list[str]:
        with self._lock:
            return [a.task_id for a in self.assignments]

    def register(self) -> coordinator_pb2.RegisterWorkerResponse:
        """Registers (again, with what it holds listed, as a real worker does)."""
        response = self.stub.RegisterWorker(
            coordinator_pb2.RegisterWorkerRequest(
                address=self.address,
                capacity=self.capacity,
                hostname="fake",
                version="test",
                handlers=self.handlers,
                queues=self.queues,
                held=self.held_tasks(),
                concurrency=self.concurrency,
            )
        )
        self.worker_id = response.worker_id
        return response

    def held_tasks(self) -> list[common_pb2.HeldTask]:
        """What the worker holds, as its heartbeats list it."""
        with self._lock:
            return [
                common_pb2.HeldTask(task_id=a.task_id, token=a.token) for a in self.held.values()
            ]

    def heartbeat(self, free_slots: int | None = None) -> coordinator_pb2.HeartbeatResponse:
        held = self.held_tasks()
        with self._lock:
            free = self.free if free_slots is None else free_slots
        return self.stub.Heartbeat(
            coordinator_pb2.HeartbeatRequest(worker_id=self.worker_id, free_slots=free, held=held)
        )

    def start_heartbeats(self, interval: float = 0.1) -> None:
        beating = self._beating = threading.Event()

        def beat() -> None:
            while not beating.wait(interval):
                with contextlib.suppress(grpc.RpcError):
                    self.heartbeat()

        threading.Thread(target=beat, daemon=True).start()

    def stop_heartbeats(self) -> None:
        if self._beating is not None:
            self._beating.set()

    def report(
        self,
        task_id: str,
        status: TaskStatus | None,
        *,
        attempt: int | None = None,
        result: Any = None,
        error: TaskError | None = None,
        worker_id: str | None = None,
        token: int | None = None,
    ) -> int:
        """Reports one status (``None`` = rejected); final ones free the slot. The attempt and
        token default to the held assignment's."""
        with self._lock:
            held = self.held.get(task_id)
            if status is not TaskStatus.RUNNING:
                self.held.pop(task_id, None)
        if attempt is None:
            attempt = held.attempt if held else 1
        if token is None:
            token = held.token if held else 0
        report = status_report(task_id, attempt, status, result=result, error=error, token=token)
        response = self.stub.ReportTaskStatuses(
            coordinator_pb2.ReportTaskStatusesRequest(
                worker_id=self.worker_id if worker_id is None else worker_id, reports=[report]
            )
        )
        return response.applied

    def stop(self) -> None:
        self.stop_heartbeats()
        self.server.stop(0).wait()
        self.channel.close()


class Harness:
    """Starts coordinators and fake workers against the test's database."""

    wait_until = staticmethod(wait_until)

    def __init__(self, database_url: str) -> None:
        self.db = Database(DatabaseSettings.from_url(database_url), max_connections=4)
        self.tasks = Stores(self.db)
        self.database_url = database_url
        self.coordinators: list[CoordinatorServer] = []
        self.workers: list[FakeWorker] = []

    def coordinator(self, **overrides: Any) -> CoordinatorServer:
        values: dict[str, Any] = {
            "database": DatabaseSettings.from_url(self.database_url),
            "host": "127.0.0.1",
            "port": 0,
            "migrate": False,
            "dead_after": 30.0,
            "poll_interval": 60.0,
            "assign_timeout": 2.0,
        }
        values.update(overrides)
        server = create_coordinator(CoordinatorSettings(**values))
        self.coordinators.append(server)
        return server

    def worker(
        self,
        coordinator: CoordinatorServer,
        capacity: int = 4,
        *,
        security: GrpcSecurity = NO_SECURITY,
        register: bool = True,
        concurrency: int = 0,
        handlers: Sequence[str] = ("echo", "sleep"),
        queues: Sequence[str] = ("default",),
    ) -> FakeWorker:
        worker = FakeWorker(
            f"127.0.0.1:{coordinator.port}", capacity, security, concurrency, handlers, queues
        )
        self.workers.append(worker)
        if register:
            worker.register()
        return worker

    def submit(self, count: int = 1, **fields: Any) -> list[uuid.UUID]:
        fields.setdefault("command", "echo")
        with self.db.transaction() as conn:
            inserted = self.tasks.insert(conn, [NewTask(**fields) for _ in range(count)])
        return [task.id for task in inserted]

    def task(self, task_id: uuid.UUID | str) -> Task:
        return self.tasks.get(uuid.UUID(str(task_id)))

    def worker_ids(self) -> list[str]:
        with self.db.connection() as conn:
            return [row["id"] for row in conn.rows("list_workers")]

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        for coordinator in self.coordinators:
            coordinator.stop(grace=0)
        self.db.close()


@pytest.fixture
def harness(database_url: str) -> Iterator[Harness]:
    """Coordinators and fake workers, all stopped after the test."""
    harness = Harness(database_url)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def lone_worker() -> Iterator[FakeWorker]:
    """A fake worker on a real gRPC server, known to no coordinator: the test calls it itself.

    Its own channel points nowhere, and is never used unless the test registers it.
    """
    worker = FakeWorker("127.0.0.1:1", capacity=2)
    worker.worker_id = "w-lone"
    try:
        yield worker
    finally:
        worker.stop()
