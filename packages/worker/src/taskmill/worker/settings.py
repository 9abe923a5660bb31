"""The worker's settings, built once by the entry point and passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from taskmill.common.errors import ConfigError
from taskmill.common.grpcutil import GrpcSecurity


def default_concurrency() -> int:
    """One slot per CPU."""
    return os.cpu_count() or 1


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker runs.

    Attributes:
        coordinator: ``host:port`` of the coordinator to register with.
        host: Address the WorkerService binds to.
        port: Port it binds to; 0 picks a free one.
        advertise_address: ``host:port`` coordinators use to reach this worker; a bare host gets
            the bound port; ``None`` means this host's name and the bound port.
        concurrency: Slot threads, i.e. tasks running at once.
        queue_size: Tasks that may wait for a slot; ``None`` means as many as ``concurrency``.
        handler_modules: Modules imported at start so their ``@task`` handlers register.
        enable_shell: Whether the ``shell`` handler exists.
        record_starts: Whether a task with no retry left runs only once its start is recorded
            (``starts.py``), so it runs at most once even if the worker is killed; off, such a
            task may run twice when its worker is killed just after it started.
        grace_period: Seconds running tasks get to finish on SIGTERM.
        security: Cluster token and TLS for gRPC in both directions.
        heartbeat_interval: Seconds between heartbeats when the coordinator names no interval.
        report_batch_size: Most status reports sent in one call.
        flush_timeout: Seconds the shutdown waits for unsent reports to be acknowledged.
        max_backoff: Longest pause between retries while the coordinator is unreachable.
        rpc_timeout: Deadline of each call to the coordinator, in seconds.
        process_cancel_grace: Seconds a cancelled ``process=True`` handler may take to stop by
            itself before its process is killed.
    """

    coordinator: str = "localhost:8080"
    host: str = "0.0.0.0"
    port: int = 0
    advertise_address: str | None = None
    concurrency: int = field(default_factory=default_concurrency)
    queue_size: int | None = None
    handler_modules: tuple[str, ...] = ()
    enable_shell: bool = False
    record_starts: bool = True
    grace_period: float = 30.0
    security: GrpcSecurity = field(default_factory=GrpcSecurity)
    heartbeat_interval: float = 1.0
    report_batch_size: int = 1000
    flush_timeout: float = 10.0
    max_backoff: float = 2.0
    rpc_timeout: float = 10.0
    process_cancel_grace: float = 2.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if self.queue_size is not None and self.queue_size < 0:
            raise ConfigError("queue size must not be negative")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range")
        if self.grace_period < 0:
            raise ConfigError("grace period must not be negative")
        if not self.coordinator:
            raise ConfigError("the coordinator address is empty")

    @property
    def queue_room(self) -> int:
        """How many tasks may wait for a slot."""
        return self.concurrency if self.queue_size is None else self.queue_size

    @property
    def capacity(self) -> int:
        """How many tasks the worker holds at once, running or waiting."""
        return self.concurrency + self.queue_room
