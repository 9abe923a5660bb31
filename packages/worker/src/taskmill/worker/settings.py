"""The worker's settings, built once by the entry point and passed down."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from taskmill.common.errors import ConfigError
from taskmill.common.grpcutil import GrpcSecurity

#: The scheduler's rule for a task's queue name (``taskmill.scheduler.validation``): a name it
#: refuses for a task's queue could never bring this worker a task.
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,100}")
#: Weights are ratios between a worker's queues; the cap keeps them within the wire's int32.
MAX_WEIGHT = 1000
DEFAULT_QUEUES = (("default", 1),)


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
        queues: The task queues the worker serves, each with its weight (1 to ``MAX_WEIGHT``),
            its share of the slots against the others'.
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
    queues: tuple[tuple[str, int], ...] = DEFAULT_QUEUES
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
        check_queues(self.queues)

    @property
    def queue_room(self) -> int:
        """How many tasks may wait for a slot."""
        return self.concurrency if self.queue_size is None else self.queue_size

    @property
    def capacity(self) -> int:
        """How many tasks the worker holds at once, running or waiting."""
        return self.concurrency + self.queue_room


def parse_queues(text: str) -> tuple[tuple[str, int], ...]:
    """Reads ``--queues``: ``a,b`` or ``a=3,b=1`` (a weight left out is 1).

    Raises:
        ConfigError: The text names no queue, or a bad one (see :func:`check_queues`).
    """
    queues: list[tuple[str, int]] = []
    for item in text.split(","):
        name, equals, weight = (part.strip() for part in item.partition("="))
        if not equals:
            queues.append((name, 1))
        elif weight.isascii() and weight.isdigit():  # no sign, no '_', no fraction
            queues.append((name, int(weight)))
        else:
            raise _bad_weight(name, weight)
    return check_queues(tuple(queues))


def check_queues(queues: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """Returns ``queues`` (name, weight) once checked.

    Raises:
        ConfigError: None is named; a name is empty, named twice, or one the scheduler refuses
            for a task's queue; or a weight is not from 1 to ``MAX_WEIGHT``.
    """
    if not queues:
        raise ConfigError("--queues names no queue")
    seen: set[str] = set()
    for name, weight in queues:
        if not name:
            raise ConfigError("--queues has an empty queue name")
        if not QUEUE_NAME.fullmatch(name):
            raise ConfigError(
                f"--queues: queue {name!r} must be 1 to 100 letters, digits, '_', '.', ':' or '-'"
            )
        if name in seen:
            raise ConfigError(f"--queues names queue {name!r} twice")
        if type(weight) is not int or not 1 <= weight <= MAX_WEIGHT:
            raise _bad_weight(name, weight)
        seen.add(name)
    return queues


def _bad_weight(name: str, weight: object) -> ConfigError:
    return ConfigError(
        f"--queues: the weight of queue {name!r} must be a whole number from 1 to {MAX_WEIGHT}, "
        f"not {weight!r}"
    )
