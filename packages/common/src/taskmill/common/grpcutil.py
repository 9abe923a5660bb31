"""gRPC plumbing shared by the coordinator and the worker: servers, channels and security.

Every call between services carries the cluster token (when one is configured) in the
``x-taskmill-cluster-token`` metadata entry; a server interceptor refuses calls without it with
``UNAUTHENTICATED``. The standard health service is exempt, so orchestrator probes need no
secret. TLS is used when certificate files are configured, mutual when a CA is given.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.instrumentation.grpc import client_interceptor, server_interceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel as otel_intercept_channel

from taskmill.common.errors import ConfigError
from taskmill.common.telemetry import exporting

logger = logging.getLogger(__name__)

TOKEN_METADATA_KEY = "x-taskmill-cluster-token"
_HEALTH_PREFIX = "/grpc.health.v1.Health/"
#: Large enough for a batch of assignments with sizeable payloads.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
]


@dataclass(frozen=True)
class GrpcSecurity:
    """How services authenticate each other.

    Attributes:
        cluster_token: The shared token every call must carry, or ``None`` for none.
        tls_cert_file: This service's certificate (PEM); enables TLS on servers and, with the
            key, client certificates for mutual TLS.
        tls_key_file: The private key of ``tls_cert_file``.
        tls_ca_file: The CA that signed the peers' certificates. Servers then require client
            certificates, and clients verify servers against it.
    """

    cluster_token: str | None = field(default=None, repr=False)
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GrpcSecurity:
        """Reads ``TASKMILL_CLUSTER_TOKEN`` and ``TASKMILL_TLS_CERT/KEY/CA``."""
        security = cls(
            cluster_token=env.get("TASKMILL_CLUSTER_TOKEN") or None,
            tls_cert_file=env.get("TASKMILL_TLS_CERT") or None,
            tls_key_file=env.get("TASKMILL_TLS_KEY") or None,
            tls_ca_file=env.get("TASKMILL_TLS_CA") or None,
        )
        if bool(security.tls_cert_file) != bool(security.tls_key_file):
            raise ConfigError("TASKMILL_TLS_CERT and TASKMILL_TLS_KEY must be set together")
        for path in (security.tls_cert_file, security.tls_key_file, security.tls_ca_file):
            if path and not Path(path).is_file():
                raise ConfigError(f"TLS file {path} does not exist")
        return security

    @property
    def tls(self) -> bool:
        """Whether calls use TLS."""
        return bool(self.tls_cert_file or self.tls_ca_file)


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


class _TokenCheck(grpc.ServerInterceptor):
    """Refuses every call but health checks that lacks the cluster token."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong cluster token")

        self._deny: Any = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        if handler_call_details.method.startswith(_HEALTH_PREFIX):
            return continuation(handler_call_details)
        for key, value in handler_call_details.invocation_metadata or ():
            if key == TOKEN_METADATA_KEY:
                given = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(given, self._token):
                    return continuation(handler_call_details)
        return self._deny


class _TokenAttach(grpc.UnaryUnaryClientInterceptor):
    """Adds the cluster token to every outgoing call."""

    def __init__(self, token: str) -> None:
        self._token = token

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        metadata = [*(client_call_details.metadata or ()), (TOKEN_METADATA_KEY, self._token)]
        return continuation(client_call_details._replace(metadata=metadata), request)


def create_server(
    address: str,
    register: Callable[[grpc.Server], None],
    security: GrpcSecurity,
    *,
    max_workers: int = 16,
    interceptors: tuple[grpc.ServerInterceptor, ...] = (),
    traced: bool | None = None,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """Creates and starts a gRPC server with the health service and the token check.

    Args:
        address: ``host:port`` to bind; port 0 picks a free port.
        register: Adds the service's servicers to the server.
        security: Token and TLS settings.
        max_workers: Size of the server's thread pool.
        interceptors: Further server interceptors, run after the token check and tracing.
        traced: Whether calls get OpenTelemetry server spans; by default when this process
            exports spans (:func:`~taskmill.common.telemetry.exporting`).

    Returns:
        The started server, the bound port, and the health servicer (set to SERVING).

    Raises:
        ConfigError: The address cannot be bound, or TLS is configured without a certificate.
    """
    if security.tls and not (security.tls_cert_file and security.tls_key_file):
        # TASKMILL_TLS_CA alone is enough for a client, but a server must present a certificate.
        raise ConfigError("a TLS server needs TASKMILL_TLS_CERT and TASKMILL_TLS_KEY")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=_server_chain(security, traced, interceptors),
        options=_CHANNEL_OPTIONS,
    )
    register(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = _bind(server, address, security)
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, port, health_servicer


def _server_chain(
    security: GrpcSecurity, traced: bool | None, interceptors: tuple[grpc.ServerInterceptor, ...]
) -> list[grpc.ServerInterceptor]:
    """A server's interceptors, in order: the token check, tracing, then the caller's."""
    chain: list[grpc.ServerInterceptor] = []
    if security.cluster_token:
        chain.append(_TokenCheck(security.cluster_token))
    if _traced(traced):
        # The OpenTelemetry interceptor continues the caller's trace in a server span.
        chain.append(server_interceptor())  # type: ignore[no-untyped-call]
    chain.extend(interceptors)
    return chain


def _bind(server: grpc.Server, address: str, security: GrpcSecurity) -> int:
    """Binds the server to ``address``, with TLS when configured; returns the bound port.

    Raises:
        ConfigError: The address cannot be bound.
    """
    try:
        if security.tls:
            credentials = grpc.ssl_server_credentials(
                [
                    (
                        Path(security.tls_key_file or "").read_bytes(),
                        _read(security.tls_cert_file) or b"",
                    )
                ],
                root_certificates=_read(security.tls_ca_file),
                require_client_auth=bool(security.tls_ca_file),
            )
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {address}: {exc}") from None
    if port == 0:
        raise ConfigError(f"cannot listen on {address}: the address is in use or invalid")
    return port


def create_channel(
    target: str,
    security: GrpcSecurity,
    *,
    traced: bool | None = None,
    server_name: str | None = None,
) -> grpc.Channel:
    """Opens a channel to another service that sends the cluster token on every call.

    ``traced`` says whether calls get OpenTelemetry client spans; by default when this process
    exports spans. ``server_name``, with TLS, is the name the server's certificate must carry
    when it is not the target's host.
    """
    if security.tls:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(security.tls_ca_file),
            private_key=_read(security.tls_key_file),
            certificate_chain=_read(security.tls_cert_file),
        )
        options: list[tuple[str, int | str]] = list(_CHANNEL_OPTIONS)
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
    if _traced(traced):
        # The OpenTelemetry interceptor opens a client span and sends its traceparent. It
        # implements OpenTelemetry's own grpcext interceptor interface, which
        # grpc.intercept_channel rejects.
        channel = otel_intercept_channel(channel, client_interceptor())  # type: ignore[no-untyped-call]
    if security.cluster_token:
        channel = grpc.intercept_channel(channel, _TokenAttach(security.cluster_token))
    return channel


def _traced(traced: bool | None) -> bool:
    # Without an exporter the interceptors would only build unrecorded spans, at both ends of
    # every call, on the path of every task's pickup. Task traces do not need them: the
    # trace context of a task travels inside the assignments and reports themselves.
    return exporting() if traced is None else traced


def set_serving(health_servicer: health.HealthServicer, serving: bool) -> None:
    """Flips every service of a health servicer to SERVING or NOT_SERVING."""
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    health_servicer.set("", status)


def check_health(
    target: str,
    timeout: float = 2.0,
    security: GrpcSecurity | None = None,
    server_name: str | None = None,
) -> bool:
    """Asks a server's ``grpc.health.v1`` service whether it is SERVING (for probes).

    Args:
        target: ``host:port`` of the server.
        timeout: Seconds to wait for the answer.
        security: The TLS settings to reach a server that uses TLS; without them the probe
            speaks plaintext, which a TLS server refuses (reported as not serving).
        server_name: With TLS, the name the server's certificate must carry, when it is not
            the target's host: a probe dials 127.0.0.1, while a service's certificate names
            the host it is reached at.
    """
    if security is not None and security.tls:
        channel = create_channel(target, security, server_name=server_name)
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        check = channel.unary_unary(
            _HEALTH_PREFIX + "Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            response = check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
