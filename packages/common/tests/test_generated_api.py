"""The generated taskmill.v1 API works end to end over a real gRPC server on port 0.

Small servicers stand in for the worker and the coordinator; the point is the generated modules
(messages, stubs, servicer registration, imports across proto files) and the health service,
not taskmill's scheduling rules.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from taskmill.v1 import (
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKER_SERVICE = worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name
COORDINATOR_SERVICE = coordinator_pb2.DESCRIPTOR.services_by_name["CoordinatorService"].full_name
CALL_TIMEOUT = 5.0


class _Worker(worker_pb2_grpc.WorkerServiceServicer):
    """Accepts whole batches while it has room, as WorkerService documents."""

    def __init__(self, worker_id: str, capacity: int) -> None:
        self._worker_id = worker_id
        self._free_slots = capacity
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def AssignTasks(
        self, request: worker_pb2.AssignTasksRequest, context: grpc.ServicerContext
    ) -> worker_pb2.AssignTasksResponse:
        if request.worker_id != self._worker_id:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "batch is for another worker")
        with self._lock:
            if len(request.assignments) > self._free_slots:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{len(request.assignments)} tasks offered, {self._free_slots} slots free",
                )
            self._free_slots -= len(request.assignments)
            self._held.update(a.task_id for a in request.assignments)
            return worker_pb2.AssignTasksResponse(free_slots=self._free_slots)

    def CancelTask(
        self, request: worker_pb2.CancelTaskRequest, context: grpc.ServicerContext
    ) -> worker_pb2.CancelTaskResponse:
        with self._lock:
            return worker_pb2.CancelTaskResponse(found=request.task_id in self._held)


class _Coordinator(coordinator_pb2_grpc.CoordinatorServiceServicer):
    """Hands out worker ids and records what workers report."""

    def __init__(self) -> None:
        self.reports: list[common_pb2.StatusReport] = []
        self._workers: list[str] = []
        self._lock = threading.Lock()

    def RegisterWorker(
        self, request: coordinator_pb2.RegisterWorkerRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.RegisterWorkerResponse:
        with self._lock:
            self._workers.append(request.address)
            worker_id = f"worker-{len(self._workers)}-{request.hostname}"
        return coordinator_pb2.RegisterWorkerResponse(
            worker_id=worker_id, heartbeat_interval_seconds=2.5
        )

    def Heartbeat(
        self, request: coordinator_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.HeartbeatResponse:
        return coordinator_pb2.HeartbeatResponse()

    def ReportTaskStatuses(
        self, request: coordinator_pb2.ReportTaskStatusesRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.ReportTaskStatusesResponse:
        with self._lock:
            self.reports.extend(request.reports)
        return coordinator_pb2.ReportTaskStatusesResponse(applied=len(request.reports))

    def DeregisterWorker(
        self, request: coordinator_pb2.DeregisterWorkerRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.DeregisterWorkerResponse:
        return coordinator_pb2.DeregisterWorkerResponse()


@dataclass(frozen=True)
class _Served:
    channel: grpc.Channel
    coordinator: _Coordinator


@pytest.fixture
def served() -> Iterator[_Served]:
    """Both services and grpc.health.v1 on one server at 127.0.0.1:<free port>."""
    coordinator = _Coordinator()
    health_servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(_Worker("w-1", capacity=2), server)
    coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(coordinator, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    for service in ("", WORKER_SERVICE, COORDINATOR_SERVICE):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield _Served(channel, coordinator)
    finally:
        server.stop(None).wait()


def _assignment(task_id: str) -> common_pb2.Assignment:
    return common_pb2.Assignment(
        task_id=task_id,
        command="send_email",
        payload_json='{"to": "a@example.com"}',
        attempt=1,
        max_attempts=3,
        scheduled_at=Timestamp(seconds=1_700_000_000),
    )


def _as_call(error: grpc.RpcError) -> grpc.Call:
    # Errors raised by unary calls are also grpc.Call, which carries the status.
    assert isinstance(error, grpc.Call)
    return error


def test_assign_tasks_returns_free_slots_and_cancel_finds_held_task(served: _Served) -> None:
    stub = worker_pb2_grpc.WorkerServiceStub(served.channel)

    reply = stub.AssignTasks(
        worker_pb2.AssignTasksRequest(worker_id="w-1", assignments=[_assignment("t-1")]),
        timeout=CALL_TIMEOUT,
    )
    held = stub.CancelTask(worker_pb2.CancelTaskRequest(task_id="t-1"), timeout=CALL_TIMEOUT)
    unknown = stub.CancelTask(worker_pb2.CancelTaskRequest(task_id="t-9"), timeout=CALL_TIMEOUT)

    assert reply.free_slots == 1
    assert held.found is True
    assert unknown.found is False


def test_resource_exhausted_abort_reaches_the_client(served: _Served) -> None:
    stub = worker_pb2_grpc.WorkerServiceStub(served.channel)
    batch = [_assignment(f"t-{i}") for i in range(3)]

    with pytest.raises(grpc.RpcError) as exc_info:
        stub.AssignTasks(
            worker_pb2.AssignTasksRequest(worker_id="w-1", assignments=batch),
            timeout=CALL_TIMEOUT,
        )

    call = _as_call(exc_info.value)
    assert call.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert call.details() == "3 tasks offered, 2 slots free"


def test_assign_tasks_for_another_worker_is_failed_precondition(served: _Served) -> None:
    stub = worker_pb2_grpc.WorkerServiceStub(served.channel)

    with pytest.raises(grpc.RpcError) as exc_info:
        stub.AssignTasks(worker_pb2.AssignTasksRequest(worker_id="w-2"), timeout=CALL_TIMEOUT)

    assert _as_call(exc_info.value).code() is grpc.StatusCode.FAILED_PRECONDITION


def test_register_worker_returns_id_and_heartbeat_interval(served: _Served) -> None:
    stub = coordinator_pb2_grpc.CoordinatorServiceStub(served.channel)

    reply = stub.RegisterWorker(
        coordinator_pb2.RegisterWorkerRequest(
            address="127.0.0.1:7001", capacity=4, hostname="box", handlers=["send_email"]
        ),
        timeout=CALL_TIMEOUT,
    )

    assert reply.worker_id == "worker-1-box"
    assert reply.heartbeat_interval_seconds == 2.5


def test_status_reports_cross_the_wire_intact(served: _Served) -> None:
    stub = coordinator_pb2_grpc.CoordinatorServiceStub(served.channel)
    report = common_pb2.StatusReport(
        task_id="t-1",
        attempt=2,
        status=common_pb2.TASK_STATUS_FAILED,
        error=common_pb2.TaskError(type="timeout", message="ran 30 s", traceback="..."),
        occurred_at=Timestamp(seconds=1_700_000_123, nanos=456),
    )

    reply = stub.ReportTaskStatuses(
        coordinator_pb2.ReportTaskStatusesRequest(worker_id="worker-1", reports=[report]),
        timeout=CALL_TIMEOUT,
    )

    assert reply.applied == 1
    assert served.coordinator.reports == [report]
    assert served.coordinator.reports[0].error.type == "timeout"


@pytest.mark.parametrize("service", ["", WORKER_SERVICE, COORDINATOR_SERVICE])
def test_health_check_reports_serving(served: _Served, service: str) -> None:
    # The typed HealthStub lacks Check, so call the method through the channel with its types.
    check = served.channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )

    reply = check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT)

    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_taskmill_stays_a_namespace_package() -> None:
    # An __init__.py in any taskmill/ directory would hide every other member's taskmill.*.
    taskmill_dirs = [
        REPO_ROOT / "packages" / "common" / "gen" / "taskmill",
        *sorted(REPO_ROOT.glob("packages/*/src/taskmill")),
    ]

    assert len(taskmill_dirs) > 1
    assert all(d.is_dir() for d in taskmill_dirs)
    assert [d / "__init__.py" for d in taskmill_dirs if (d / "__init__.py").exists()] == []
    assert (REPO_ROOT / "packages" / "common" / "gen" / "taskmill" / "v1" / "py.typed").is_file()
