"""Assembles a running coordinator: the gRPC server and its three background loops."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health

from taskmill.common.db import Database
from taskmill.common.grpcutil import create_channel, set_serving
from taskmill.common.grpcutil import create_server as create_grpc_server
from taskmill.common.migrate import prepare_schema
from taskmill.common.models import Backoff
from taskmill.common.store import DispatchStore, RecoveryStore, ReportStore, WorkerStore
from taskmill.coordinator.dispatch import Dispatcher
from taskmill.coordinator.fleet import Fleet
from taskmill.coordinator.listener import Listener
from taskmill.coordinator.liveness import Liveness
from taskmill.coordinator.service import CoordinatorService, Wakers
from taskmill.coordinator.servicer import CoordinatorServicer
from taskmill.coordinator.settings import CoordinatorSettings
from taskmill.coordinator.worker_client import WorkerClient
from taskmill.v1 import coordinator_pb2_grpc

logger = logging.getLogger(__name__)

#: Threads sending ``AssignTasks`` and ``CancelTask`` calls, so one slow worker holds up no other.
_SENDERS = 8


def new_coordinator_id() -> str:
    """A unique id for this coordinator process."""
    return f"c-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _bind_address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


@dataclass
class CoordinatorServer:
    """A running coordinator. Stop it with :meth:`stop`.

    Attributes:
        port: The port the gRPC server is bound to.
        coordinator_id: This coordinator's unique id.
        service: The worker-facing service layer.
        dispatcher: The dispatch loop.
        liveness: The dead-worker and lost-task check.
        listener: The notification listener (``listener.listening`` is set while listening).
    """

    port: int
    coordinator_id: str
    service: CoordinatorService
    dispatcher: Dispatcher
    liveness: Liveness
    listener: Listener
    _server: grpc.Server
    _health: health.HealthServicer
    _db: Database
    _client: WorkerClient
    _senders: ThreadPoolExecutor
    _stop: threading.Event
    _threads: list[threading.Thread]

    def stop(self, grace: float = 5.0) -> None:
        """Stops serving: NOT_SERVING, loops stopped, sends finished, in-flight calls drained."""
        if self._stop.is_set():
            return
        logger.info("coordinator %s stopping", self.coordinator_id)
        set_serving(self._health, False)
        self._stop.set()
        self.dispatcher.wake()
        for thread in self._threads:
            thread.join(timeout=10)
        self._senders.shutdown(wait=True)
        self._server.stop(grace).wait()
        self._client.close_all()
        self._db.close()
        logger.info("coordinator %s stopped", self.coordinator_id)


def _start(
    name: str, target: Callable[[threading.Event], None], stop: threading.Event
) -> threading.Thread:
    thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
    thread.start()
    return thread


def create_server(
    settings: CoordinatorSettings, *, coordinator_id: str | None = None
) -> CoordinatorServer:
    """Prepares the schema, starts the gRPC server and the loops, and returns the coordinator.

    Raises:
        ConfigError: The address cannot be bound.
        DatabaseUnavailable: PostgreSQL cannot be reached.
        SchemaError: The schema is not the one this version expects.
    """
    # Prepared statements: each hot query is parsed once per connection and then costs one round
    # trip instead of three.
    db = Database(
        settings.database,
        max_connections=24,
        application_name="taskmill-coordinator",
        prepare_statements=True,
    )
    try:
        prepare_schema(db, migrate=settings.migrate)
        return _assemble(settings, db, coordinator_id or new_coordinator_id())
    except BaseException:
        db.close()
        raise


def _assemble(
    settings: CoordinatorSettings, db: Database, coordinator_id: str
) -> CoordinatorServer:
    senders = ThreadPoolExecutor(_SENDERS, thread_name_prefix="assign")
    client = WorkerClient(lambda address: create_channel(address, settings.security))
    try:
        service, dispatcher, listener, liveness = _parts(
            settings, db, coordinator_id, senders, client
        )
        server, port, health_servicer = _serve(settings, service)
    except BaseException:
        senders.shutdown()
        client.close_all()
        raise
    stop = threading.Event()
    threads = [
        _start("dispatch", dispatcher.run, stop),
        _start("listen", listener.run, stop),
        _start("liveness", liveness.run, stop),
    ]
    logger.info("coordinator %s serving on port %d", coordinator_id, port)
    return CoordinatorServer(
        port=port,
        coordinator_id=coordinator_id,
        service=service,
        dispatcher=dispatcher,
        liveness=liveness,
        listener=listener,
        _server=server,
        _health=health_servicer,
        _db=db,
        _client=client,
        _senders=senders,
        _stop=stop,
        _threads=threads,
    )


def _serve(
    settings: CoordinatorSettings, service: CoordinatorService
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """Starts the gRPC server in front of the service layer; returns it, its port and its
    health servicer."""
    servicer = CoordinatorServicer(service, settings.worker_heartbeat_interval)
    return create_grpc_server(
        _bind_address(settings.host, settings.port),
        lambda s: coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(servicer, s),
        settings.security,
    )


def _parts(
    settings: CoordinatorSettings,
    db: Database,
    coordinator_id: str,
    senders: ThreadPoolExecutor,
    client: WorkerClient,
) -> tuple[CoordinatorService, Dispatcher, Listener, Liveness]:
    """Builds the service layer and the three loops around one fleet and two stores."""
    backoff = Backoff(settings.retry_backoff_base, settings.retry_backoff_max)
    tasks, recovery = DispatchStore(db), RecoveryStore(db, backoff)
    workers = WorkerStore(db)
    # The fleet opens and closes the client's channels as workers join and leave.
    fleet = Fleet(client)
    dispatcher = _dispatcher(settings, tasks, fleet, client, senders)
    wakers = Wakers(work=dispatcher.wake, room=dispatcher.slots_freed)
    service = CoordinatorService(
        workers,
        tasks,
        ReportStore(db, backoff),
        recovery,
        fleet,
        client,
        wakers,
        coordinator_id=coordinator_id,
        lease_seconds=settings.lease_seconds,
    )
    listener = Listener(
        db, dispatcher.submitted, lambda task_id: senders.submit(service.forward_cancel, task_id)
    )
    liveness = Liveness(
        workers,
        recovery,
        fleet,
        dispatcher.wake,
        dead_after=settings.dead_after,
        interval=settings.liveness_interval,
    )
    return service, dispatcher, listener, liveness


def _dispatcher(
    settings: CoordinatorSettings,
    tasks: DispatchStore,
    fleet: Fleet,
    client: WorkerClient,
    senders: ThreadPoolExecutor,
) -> Dispatcher:
    """The dispatch loop, as the settings tune it."""
    return Dispatcher(
        tasks,
        fleet,
        client,
        senders,
        lease_seconds=settings.lease_seconds,
        batch_size=settings.batch_size,
        poll_interval=settings.poll_interval,
        assign_timeout=settings.assign_timeout,
    )
