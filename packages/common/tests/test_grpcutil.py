"""gRPC servers and channels from grpcutil: the cluster token, the health service, and TLS.

A tiny WorkerService servicer runs on a real server at 127.0.0.1:<free port> made by
``create_server``; calls go through channels from ``create_channel`` or plain grpc channels.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2
from opentelemetry import trace

from taskmill.common.errors import ConfigError
from taskmill.common.grpcutil import (
    TOKEN_METADATA_KEY,
    GrpcSecurity,
    check_health,
    create_channel,
    create_server,
    set_serving,
)
from taskmill.testing import PKI_NAMED_HOST, tls_env
from taskmill.v1 import worker_pb2, worker_pb2_grpc

TOKEN = "s3cret-cluster-token"
TIMEOUT = 10.0


class _Worker(worker_pb2_grpc.WorkerServiceServicer):
    def CancelTask(
        self, request: worker_pb2.CancelTaskRequest, context: grpc.ServicerContext
    ) -> worker_pb2.CancelTaskResponse:
        return worker_pb2.CancelTaskResponse(found=request.task_id == "held")


def _register(server: grpc.Server) -> None:
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(_Worker(), server)


@contextmanager
def _serving(security: GrpcSecurity) -> Iterator[tuple[str, health.HealthServicer]]:
    server, port, health_servicer = create_server("127.0.0.1:0", _register, security)
    try:
        yield f"127.0.0.1:{port}", health_servicer
    finally:
        server.stop(None).wait()


def _cancel(channel: grpc.Channel, task_id: str = "held") -> bool:
    stub = worker_pb2_grpc.WorkerServiceStub(channel)
    reply = stub.CancelTask(worker_pb2.CancelTaskRequest(task_id=task_id), timeout=TIMEOUT)
    return reply.found


def _code(error: grpc.RpcError) -> grpc.StatusCode:
    assert isinstance(error, grpc.Call)  # unary call errors carry their status
    return error.code()


def _health_status(channel: grpc.Channel, service: str = "") -> int:
    # The typed HealthStub lacks Check, so call the method through the channel with its types.
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    reply = check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
    return int(reply.status)


@pytest.fixture
def token_server() -> Iterator[tuple[str, health.HealthServicer]]:
    with _serving(GrpcSecurity(cluster_token=TOKEN)) as served:
        yield served


# -- the cluster token ------------------------------------------------------------------------


def test_call_with_the_cluster_token_succeeds(
    token_server: tuple[str, health.HealthServicer],
) -> None:
    target, _ = token_server
    with create_channel(target, GrpcSecurity(cluster_token=TOKEN)) as channel:
        assert _cancel(channel) is True
        assert _cancel(channel, "other") is False


@pytest.mark.parametrize("token", [None, "wrong-token", TOKEN[:-1], TOKEN + "x"])
def test_call_without_the_right_token_is_unauthenticated(
    token_server: tuple[str, health.HealthServicer], token: str | None
) -> None:
    target, _ = token_server
    with (
        create_channel(target, GrpcSecurity(cluster_token=token)) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        _cancel(channel)

    assert _code(raised.value) is grpc.StatusCode.UNAUTHENTICATED


def test_token_in_plain_metadata_is_accepted(
    token_server: tuple[str, health.HealthServicer],
) -> None:
    # What any client, not only create_channel, must send.
    target, _ = token_server
    with grpc.insecure_channel(target) as channel:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        reply = stub.CancelTask(
            worker_pb2.CancelTaskRequest(task_id="held"),
            metadata=[(TOKEN_METADATA_KEY, TOKEN)],
            timeout=TIMEOUT,
        )

    assert reply.found is True


def test_server_without_a_token_accepts_any_call() -> None:
    with (
        _serving(GrpcSecurity()) as (target, _),
        create_channel(target, GrpcSecurity(cluster_token="anything")) as with_token,
        create_channel(target, GrpcSecurity()) as without_token,
    ):
        assert _cancel(with_token) is True
        assert _cancel(without_token) is True


# -- tracing ----------------------------------------------------------------------------------

CALLER = trace.SpanContext(
    trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
    span_id=0x00F067AA0BA902B7,
    is_remote=False,
    trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
)


class _Seen(worker_pb2_grpc.WorkerServiceServicer):
    """Records the traceparent a call carried and the trace its handler ran in."""

    def __init__(self) -> None:
        self.traceparents: list[str] = []
        self.trace_ids: list[int] = []

    def CancelTask(
        self, request: worker_pb2.CancelTaskRequest, context: grpc.ServicerContext
    ) -> worker_pb2.CancelTaskResponse:
        metadata = dict(context.invocation_metadata())
        self.traceparents.append(str(metadata.get("traceparent", "")))
        self.trace_ids.append(trace.get_current_span().get_span_context().trace_id)
        return worker_pb2.CancelTaskResponse(found=True)


@pytest.mark.parametrize("traced", [True, False])
def test_traced_calls_carry_the_callers_trace_and_untraced_ones_nothing(traced: bool) -> None:
    seen = _Seen()
    server, port, _ = create_server(
        "127.0.0.1:0",
        lambda s: worker_pb2_grpc.add_WorkerServiceServicer_to_server(seen, s),
        GrpcSecurity(),
        traced=traced,
    )
    try:
        with (
            create_channel(f"127.0.0.1:{port}", GrpcSecurity(), traced=traced) as channel,
            trace.use_span(trace.NonRecordingSpan(CALLER)),
        ):
            assert _cancel(channel) is True
    finally:
        server.stop(None).wait()
    if traced:
        assert seen.traceparents[0].split("-")[1] == format(CALLER.trace_id, "032x")
        assert seen.trace_ids == [CALLER.trace_id]
    else:
        assert seen.traceparents == [""]
        assert seen.trace_ids == [0]


# -- health -----------------------------------------------------------------------------------


def test_health_check_needs_no_token(token_server: tuple[str, health.HealthServicer]) -> None:
    target, _ = token_server
    with grpc.insecure_channel(target) as channel:
        assert _health_status(channel) == health_pb2.HealthCheckResponse.SERVING


def test_check_health_follows_set_serving(
    token_server: tuple[str, health.HealthServicer],
) -> None:
    target, health_servicer = token_server
    assert check_health(target) is True

    set_serving(health_servicer, False)

    assert check_health(target) is False
    with grpc.insecure_channel(target) as channel:
        assert _health_status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING

    set_serving(health_servicer, True)

    assert check_health(target) is True


def test_check_health_is_false_for_a_closed_port() -> None:
    # Bound but never listening: connections are refused while the socket is held.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

        assert check_health(f"127.0.0.1:{port}", timeout=2.0) is False


def test_create_server_refuses_an_address_in_use() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]

        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            create_server(f"127.0.0.1:{port}", _register, GrpcSecurity())


# -- TLS --------------------------------------------------------------------------------------


def _tls(pki: dict[str, Path], name: str, token: str | None = None) -> GrpcSecurity:
    """TLS with the ``pki`` fixture's ``name`` certificate, its key and the CA."""
    return GrpcSecurity(
        cluster_token=token,
        tls_cert_file=str(pki[f"{name}_cert"]),
        tls_key_file=str(pki[f"{name}_key"]),
        tls_ca_file=str(pki["ca"]),
    )


def test_mutual_tls_call_succeeds_and_plaintext_fails(pki: dict[str, Path]) -> None:
    server_security = _tls(pki, "server", TOKEN)
    client_security = _tls(pki, "client", TOKEN)
    no_client_cert = GrpcSecurity(cluster_token=TOKEN, tls_ca_file=str(pki["ca"]))

    with _serving(server_security) as (target, _):
        with create_channel(target, client_security) as channel:
            assert _cancel(channel) is True
            assert _health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        for refused in (GrpcSecurity(cluster_token=TOKEN), no_client_cert):
            with create_channel(target, refused) as channel, pytest.raises(grpc.RpcError) as raised:
                _cancel(channel)
            assert _code(raised.value) is grpc.StatusCode.UNAVAILABLE


def test_security_from_env(pki: dict[str, Path]) -> None:
    env = {"TASKMILL_CLUSTER_TOKEN": TOKEN, **tls_env(pki, "server")}

    security = GrpcSecurity.from_env(env)

    assert security.tls is True
    assert security.cluster_token == TOKEN
    assert TOKEN not in repr(security)
    assert GrpcSecurity.from_env({}) == GrpcSecurity()
    assert GrpcSecurity.from_env({}).tls is False
    with pytest.raises(ConfigError, match="must be set together"):
        GrpcSecurity.from_env({"TASKMILL_TLS_CERT": str(pki["server_cert"])})
    with pytest.raises(ConfigError, match="does not exist"):
        GrpcSecurity.from_env({"TASKMILL_TLS_CA": str(pki["ca"]) + ".missing"})


def test_check_health_reaches_a_tls_server_with_its_security(pki: dict[str, Path]) -> None:
    server_security = _tls(pki, "server", TOKEN)
    # A probe carries the client certificate but needs no token.
    probe_security = _tls(pki, "client")

    with _serving(server_security) as (target, health_servicer):
        assert check_health(target, security=probe_security) is True
        assert check_health(target) is False  # plaintext to a TLS server
        set_serving(health_servicer, False)
        assert check_health(target, security=probe_security) is False


def test_a_probe_names_the_host_a_certificate_is_for(pki: dict[str, Path]) -> None:
    # A service whose certificate names only its own host, reached at 127.0.0.1 (a probe).
    server_security = _tls(pki, "named")
    probe_security = _tls(pki, "client")
    env = {**os.environ, **tls_env(pki, "client")}

    def probe(*argv: str, **extra: str) -> int:
        command = [sys.executable, "-m", "taskmill.common.probe", *argv]
        return subprocess.run(command, env={**env, **extra}, timeout=60).returncode

    with _serving(server_security) as (target, _):
        assert check_health(target, security=probe_security) is False  # 127.0.0.1 is not named
        assert check_health(target, security=probe_security, server_name=PKI_NAMED_HOST) is True
        assert check_health(target, security=probe_security, server_name="other.test") is False
        # taskmill-health, as a container's health check runs it.
        assert probe(target) == 1
        assert probe(target, "--server-name", PKI_NAMED_HOST) == 0
        assert probe(target, TASKMILL_TLS_SERVER_NAME=PKI_NAMED_HOST) == 0


def test_tls_server_without_a_certificate_is_a_config_error(pki: dict[str, Path]) -> None:
    only_ca = GrpcSecurity(tls_ca_file=str(pki["ca"]))

    with pytest.raises(ConfigError, match="TASKMILL_TLS_CERT and TASKMILL_TLS_KEY"):
        create_server("127.0.0.1:0", _register, only_ca)
