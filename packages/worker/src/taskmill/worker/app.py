"""Assembling a worker from its settings: server, executor, reporter and agent."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType

import grpc
from grpc_health.v1 import health
from opentelemetry.trace import TracerProvider

from taskmill.common.grpcutil import create_channel, create_server, set_serving
from taskmill.v1 import coordinator_pb2_grpc, worker_pb2_grpc
from taskmill.worker import builtin
from taskmill.worker.agent import Agent, Registration
from taskmill.worker.asker import StartAsker
from taskmill.worker.executor import Executor
from taskmill.worker.fence import Fence
from taskmill.worker.membership import Membership
from taskmill.worker.registry import Handler, default_registry
from taskmill.worker.reporter import Reporter
from taskmill.worker.servicer import WorkerServicer
from taskmill.worker.settings import WorkerSettings
from taskmill.worker.tracing import TaskTracer

logger = logging.getLogger(__name__)


def package_version() -> str:
    """The installed version of taskmill-worker."""
    try:
        return version("taskmill-worker")
    except PackageNotFoundError:
        return "0+unknown"


def handlers_for(settings: WorkerSettings) -> dict[str, Handler]:
    """The registered handlers, plus ``shell`` when the settings enable it."""
    handlers = default_registry.snapshot()
    if settings.enable_shell:
        handlers[builtin.SHELL.name] = builtin.SHELL
    return handlers


def advertised(address: str | None, port: int) -> str:
    """The address to register: as configured, a bare host with the bound port, or the host name."""
    if not address:
        return f"{socket.gethostname()}:{port}"
    host, colon, tail = address.rpartition(":")
    if colon and tail.isdigit() and (address.count(":") == 1 or host.endswith("]")):
        return address
    if ":" in address and not address.startswith("["):
        return f"[{address}]:{port}"  # a bare IPv6 address
    return f"{address}:{port}"


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Worker:
    """A worker: serves ``WorkerService``, runs tasks, and keeps in touch with its coordinator.

    Create it with :func:`create_worker`, then :meth:`start`; stop it with :meth:`drain` (what
    SIGTERM does) or :meth:`close`.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        handlers: Mapping[str, Handler],
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.membership = Membership()
        self._channel = create_channel(settings.coordinator, settings.security)
        self._stub = coordinator_pb2_grpc.CoordinatorServiceStub(self._channel)
        self.reporter = Reporter(
            self._stub,
            self.membership,
            batch_size=settings.report_batch_size,
            rpc_timeout=settings.rpc_timeout,
            max_backoff=settings.max_backoff,
        )
        self.fence = Fence()
        self.asker = StartAsker(
            self._stub,
            self.membership,
            rpc_timeout=settings.rpc_timeout,
            max_backoff=settings.max_backoff,
        )
        self.executor = self._executor(handlers, tracer_provider)
        self.asker.on_answer(
            self.executor.started, lambda: [*self.executor.asked(), *self.reporter.started()]
        )
        self.port = 0
        self.address = ""
        self._server: grpc.Server | None = None
        self._agent: Agent | None = None
        self._health: health.HealthServicer | None = None
        self._closed = False

    def _executor(
        self, handlers: Mapping[str, Handler], tracer_provider: TracerProvider | None
    ) -> Executor:
        """The executor, as the settings tune it, reporting through the reporter and asking for
        starts through the asker."""
        settings = self.settings
        return Executor(
            handlers,
            concurrency=settings.concurrency,
            queue_size=settings.queue_room,
            report=self.reporter.add,
            process_cancel_grace=settings.process_cancel_grace,
            tracer=TaskTracer(tracer_provider, lambda: self.membership.worker_id),
            fence=self.fence,
            ask=self.asker.ask if settings.record_starts else None,
            queues=settings.queues,
        )

    @property
    def worker_id(self) -> str | None:
        """The id the coordinator gave this worker, if registered."""
        return self.membership.worker_id

    def start(self) -> None:
        """Binds the server, starts the slots and the reporter, and starts registering."""
        servicer = WorkerServicer(self.executor, self.membership)
        self._server, self.port, self._health = create_server(
            _bind_address(self.settings.host, self.settings.port),
            lambda server: worker_pb2_grpc.add_WorkerServiceServicer_to_server(servicer, server),
            self.settings.security,
        )
        self.address = advertised(self.settings.advertise_address, self.port)
        self._agent = Agent(
            self._stub,
            self.membership,
            self.executor,
            self.reporter,
            self._registration(),
            self.fence,
            default_interval=self.settings.heartbeat_interval,
            max_backoff=self.settings.max_backoff,
            rpc_timeout=self.settings.rpc_timeout,
            registered=self.asker.resend if self.settings.record_starts else None,
        )
        self.executor.start()
        self.reporter.start()
        if self.settings.record_starts:
            self.asker.start()
        self._agent.start()
        logger.info(
            "worker serving on port %d, advertised as %s; coordinator %s; queues: %s; handlers: %s",
            self.port,
            self.address,
            self.settings.coordinator,
            ", ".join(f"{name}={weight}" for name, weight in self.settings.queues),
            ", ".join(self.executor.handler_names),
        )

    def _registration(self) -> Registration:
        return Registration(
            address=self.address,
            capacity=self.executor.capacity,
            hostname=socket.gethostname(),
            version=package_version(),
            handlers=tuple(self.executor.handler_names),
            concurrency=self.executor.concurrency,
            queues=self.settings.queues,
        )

    def drain(self, grace: float | None = None) -> None:
        """Shuts down gracefully.

        Health turns NOT_SERVING and new assignments are refused; queued tasks are given back;
        running tasks get ``grace`` seconds (default: the settings' grace period) and are then
        reported failed with ``worker_shutdown``; reports are flushed; the worker deregisters.
        """
        grace = self.settings.grace_period if grace is None else grace
        logger.info("draining: running tasks get %g s to finish", grace)
        if self._health is not None:
            set_serving(self._health, False)
        self.executor.drain(grace)
        if not self.reporter.flush(self.settings.flush_timeout):
            logger.warning("some status reports could not be delivered before shutdown")
        if self._agent is not None:
            self._agent.stop()
            self._agent.deregister()
        self.close()
        logger.info("worker stopped")

    def close(self) -> None:
        """Stops everything at once, without draining or deregistering."""
        if self._closed:
            return
        self._closed = True
        if self._agent is not None:
            self._agent.stop()
        self.reporter.stop()
        self.asker.stop()
        if self._server is not None:
            self._server.stop(grace=1.0).wait()
        self.executor.stop()
        self._channel.close()

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def create_worker(
    settings: WorkerSettings,
    handlers: Mapping[str, Handler] | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
) -> Worker:
    """Builds a worker; nothing listens or runs until :meth:`Worker.start`.

    Args:
        settings: The worker's settings.
        handlers: The handlers by command; default: everything registered with ``@task`` (and
            ``shell`` when enabled).
        tracer_provider: Provider of the task spans; default: the global one.
    """
    handlers = handlers_for(settings) if handlers is None else handlers
    return Worker(settings, handlers, tracer_provider)
