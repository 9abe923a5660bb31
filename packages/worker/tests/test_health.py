"""The worker's ``grpc.health.v1`` service: SERVING while it runs, NOT_SERVING once it drains."""

from __future__ import annotations

import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from worker_testkit import assign_request, assignment, wait_for

from taskmill.common.grpcutil import GrpcSecurity
from taskmill.v1 import worker_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _status(port: int) -> int:
    """The overall ("") status the worker answers; an unreachable worker fails the test."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return int(response.status)


def test_serving_while_running_and_busy_then_not_serving_as_soon_as_it_drains(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(concurrency=1, queue_size=0)
    worker_id = coordinator.wait_registered()
    assert _status(worker.port) == SERVING
    stub = worker_stub(worker)
    running = assignment("sleep", {"seconds": 60})
    stub.AssignTasks(assign_request(worker_id, running))
    coordinator.wait_status(running.task_id, "running")
    assert _status(worker.port) == SERVING  # busy, with no free slot, is still healthy

    drain = threading.Thread(target=worker.drain, kwargs={"grace": 60.0})
    drain.start()
    try:
        # The server still answers while the running task may finish: it says NOT_SERVING,
        # rather than merely becoming unreachable.
        wait_for(lambda: _status(worker.port) == NOT_SERVING, what="NOT_SERVING")
        assert drain.is_alive()
    finally:
        stub.CancelTask(worker_pb2.CancelTaskRequest(task_id=running.task_id))
        drain.join(timeout=60)
    assert not drain.is_alive()
    assert coordinator.statuses(running.task_id) == ["running", "cancelled"]


def test_health_needs_no_cluster_token(start_worker):
    # Orchestrator probes (the --check flag, Docker HEALTHCHECK) carry no token.
    worker = start_worker(security=GrpcSecurity(cluster_token="s3cret"))
    assert _status(worker.port) == SERVING
