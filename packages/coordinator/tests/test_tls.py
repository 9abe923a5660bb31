"""Mutual TLS between a real coordinator and a real worker, with the cluster token on top.

Both read their security from the ``TASKMILL_TLS_*`` and ``TASKMILL_CLUSTER_TOKEN`` variables,
as their entry points do. The certificates come from a throwaway CA made by the test with the
openssl CLI (the ``pki`` fixture), in a temporary directory: no key is ever committed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from taskmill.common.grpcutil import GrpcSecurity, check_health, create_channel
from taskmill.common.models import TaskStatus
from taskmill.coordinator import create_server as create_coordinator
from taskmill.coordinator import load_settings
from taskmill.testing import tls_env
from taskmill.v1 import coordinator_pb2, coordinator_pb2_grpc, worker_pb2, worker_pb2_grpc
from taskmill.worker.app import create_worker
from taskmill.worker.settings import WorkerSettings

TOKEN = "tls-cluster-s3cret"
TIMEOUT = 10.0


def _env(pki: dict[str, Path], name: str) -> dict[str, str]:
    """The environment of a service with the ``pki`` fixture's ``server`` or ``client`` files."""
    return {"TASKMILL_CLUSTER_TOKEN": TOKEN, **tls_env(pki, name)}


def _start_coordinator(harness: Any, pki: dict[str, Path]) -> str:
    """A coordinator with the ``server`` certificates and the token; its address."""
    env = {"TASKMILL_DATABASE_URL": harness.database_url, **_env(pki, "server")}
    settings = load_settings(["--host", "127.0.0.1", "--port", "0", "--no-migrate"], env)
    assert settings.security.tls and settings.security.cluster_token == TOKEN
    coordinator = create_coordinator(settings)
    harness.coordinators.append(coordinator)
    return f"127.0.0.1:{coordinator.port}"


def _register(target: str, security: GrpcSecurity) -> grpc.StatusCode:
    """Tries to register a worker; returns the status code of the refusal."""
    with create_channel(target, security) as channel:
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        request = coordinator_pb2.RegisterWorkerRequest(address="127.0.0.1:1", capacity=1)
        with pytest.raises(grpc.RpcError) as refused:
            stub.RegisterWorker(request, timeout=TIMEOUT)
    error = refused.value
    assert isinstance(error, grpc.Call)
    return error.code()


def _assert_registration_refused(
    target: str, pki: dict[str, Path], worker_security: GrpcSecurity
) -> None:
    """Without TLS, without a client certificate or without the token, no worker registers."""
    # Plaintext, even with the token, does not get through the handshake.
    assert _register(target, GrpcSecurity(cluster_token=TOKEN)) is grpc.StatusCode.UNAVAILABLE
    # TLS without a client certificate neither: the coordinator requires one (mutual TLS).
    no_client_cert = GrpcSecurity(cluster_token=TOKEN, tls_ca_file=str(pki["ca"]))
    assert _register(target, no_client_cert) is grpc.StatusCode.UNAVAILABLE
    # A good certificate without the token is still refused.
    no_token = GrpcSecurity(
        tls_cert_file=worker_security.tls_cert_file,
        tls_key_file=worker_security.tls_key_file,
        tls_ca_file=worker_security.tls_ca_file,
    )
    assert _register(target, no_token) is grpc.StatusCode.UNAUTHENTICATED


def _assign_in_plaintext(port: int, worker_id: str) -> grpc.StatusCode:
    """Tries a plaintext assignment to the worker's server; returns the status of the refusal."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.AssignTasks(
                worker_pb2.AssignTasksRequest(worker_id=worker_id),
                metadata=[("x-taskmill-cluster-token", TOKEN)],
                timeout=TIMEOUT,
            )
    assert isinstance(refused.value, grpc.Call)
    return refused.value.code()


def test_a_task_runs_over_mutual_tls_and_plaintext_is_refused(
    harness, pki: dict[str, Path]
) -> None:
    target = _start_coordinator(harness, pki)
    worker_security = GrpcSecurity.from_env(_env(pki, "client"))
    worker_settings = WorkerSettings(
        coordinator=target,
        host="127.0.0.1",
        advertise_address="127.0.0.1",
        concurrency=2,
        security=worker_security,
    )
    with create_worker(worker_settings) as worker:
        # Registration, assignment (coordinator -> worker) and the report all go over TLS.
        harness.wait_until(lambda: worker.worker_id, what="the worker to register over TLS")
        [task_id] = harness.submit(1, command="echo", payload={"over": "tls"})
        harness.wait_until(
            lambda: harness.task(task_id).status is TaskStatus.SUCCEEDED,
            what="the task to succeed",
        )
        task = harness.task(task_id)
        assert (task.result, task.worker_id, task.attempt) == ({"over": "tls"}, worker.worker_id, 1)

        _assert_registration_refused(target, pki, worker_security)
        assert harness.worker_ids() == [worker.worker_id]
        # The health probe speaks TLS with the certificates, and fails in plaintext.
        assert check_health(target, security=worker_security) is True
        assert check_health(target) is False

        # The worker's own server speaks only TLS too: a plaintext assignment is refused.
        refusal = _assign_in_plaintext(worker.port, worker.worker_id or "")
        assert refusal is grpc.StatusCode.UNAVAILABLE
