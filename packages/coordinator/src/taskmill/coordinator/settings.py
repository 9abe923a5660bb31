"""The coordinator's settings: command-line flags, each with a ``TASKMILL_COORDINATOR_*``
environment variable as its default."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from taskmill.common.errors import ConfigError
from taskmill.common.grpcutil import GrpcSecurity
from taskmill.common.settings import CommonSettings, DatabaseSettings, parse_bool

_PREFIX = "TASKMILL_COORDINATOR_"


@dataclass(frozen=True)
class CoordinatorSettings:
    """Everything a coordinator process needs.

    Attributes:
        database: Where PostgreSQL is.
        security: Cluster token and TLS for gRPC in both directions.
        host: The address to listen on.
        port: The port to listen on; 0 picks a free one.
        dead_after: Seconds of silence after which a worker is dead.
        heartbeat_interval: How often workers are asked to heartbeat.
        poll_interval: The longest the dispatch loop sleeps without a wake-up (safety net).
        batch_size: At most this many tasks per claim.
        assign_timeout: Deadline of one ``AssignTasks`` call.
        retry_backoff_base: First delay before an execution retry, in seconds.
        retry_backoff_max: Longest delay before an execution retry.
        migrate: Whether to apply pending migrations at start.
        grace: Seconds in-flight calls get to finish on shutdown.
    """

    database: DatabaseSettings
    security: GrpcSecurity = field(default_factory=GrpcSecurity)
    host: str = "0.0.0.0"
    port: int = 8080
    dead_after: float = 15.0
    heartbeat_interval: float = 1.0
    poll_interval: float = 2.0
    batch_size: int = 512
    assign_timeout: float = 5.0
    retry_backoff_base: float = 1.0
    retry_backoff_max: float = 300.0
    migrate: bool = True
    grace: float = 5.0

    @property
    def lease_seconds(self) -> float:
        """The lease of a dispatched task: it expires when its worker would be declared dead."""
        return self.dead_after

    @property
    def worker_heartbeat_interval(self) -> float:
        """The interval told to workers: at least three heartbeats fit in ``dead_after``."""
        return min(self.heartbeat_interval, self.dead_after / 3)

    @property
    def liveness_interval(self) -> float:
        """How often dead workers and expired leases are looked for."""
        return min(1.0, self.dead_after / 4)


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    def default(name: str, value: str) -> str:
        return env.get(_PREFIX + name.upper().replace("-", "_")) or value

    parser = argparse.ArgumentParser(
        prog="taskmill-coordinator",
        description="Serve taskmill workers and dispatch due tasks to them. Every flag "
        "defaults to the environment variable TASKMILL_COORDINATOR_<FLAG>; the database is "
        "TASKMILL_DATABASE_URL, the cluster token TASKMILL_CLUSTER_TOKEN.",
    )
    numbers = [
        ("port", "8080", "port to listen on; 0 picks a free port"),
        ("dead-after", "15", "seconds of silence after which a worker is dead"),
        ("heartbeat-interval", "1", "seconds between a worker's heartbeats"),
        ("poll-interval", "2", "longest sleep of the dispatch loop, in seconds"),
        ("batch-size", "512", "most tasks claimed at once"),
        ("assign-timeout", "5", "deadline of one AssignTasks call, in seconds"),
        ("retry-backoff-base", "1", "first delay before an execution retry, in seconds"),
        ("retry-backoff-max", "300", "longest delay before an execution retry, in seconds"),
        ("grace", "5", "seconds in-flight calls get on shutdown"),
    ]
    parser.add_argument("--host", default=default("host", "0.0.0.0"), help="address to bind")
    for name, value, text in numbers:
        parser.add_argument(f"--{name}", default=default(name, value), help=text)
    parser.add_argument(
        "--no-migrate",
        action="store_true",
        default=None,
        help="do not apply pending migrations at start (env TASKMILL_COORDINATOR_NO_MIGRATE)",
    )
    return parser


def _number(args: argparse.Namespace, name: str, kind: type[float] | type[int]) -> float:
    raw = getattr(args, name.replace("-", "_"))
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"--{name} must be a number (got {raw!r})") from None
    if value < 0 or (value == 0 and name != "port"):
        raise ConfigError(f"--{name} must be positive (got {raw!r})")
    return value


def load_settings(argv: Sequence[str] | None, env: Mapping[str, str]) -> CoordinatorSettings:
    """Parses flags, with environment variables as defaults.

    Raises:
        ConfigError: A flag or variable is malformed.
    """
    args = _parser(env).parse_args(argv)
    common = CommonSettings.from_env(env)
    no_migrate = args.no_migrate or parse_bool(
        env.get(_PREFIX + "NO_MIGRATE", "false"), _PREFIX + "NO_MIGRATE"
    )
    port = int(_number(args, "port", int))
    if port > 65535:
        raise ConfigError(f"--port must be at most 65535 (got {port})")
    return CoordinatorSettings(
        database=common.database,
        security=GrpcSecurity.from_env(env),
        host=args.host,
        port=port,
        dead_after=_number(args, "dead-after", float),
        heartbeat_interval=_number(args, "heartbeat-interval", float),
        poll_interval=_number(args, "poll-interval", float),
        batch_size=int(_number(args, "batch-size", int)),
        assign_timeout=_number(args, "assign-timeout", float),
        retry_backoff_base=_number(args, "retry-backoff-base", float),
        retry_backoff_max=_number(args, "retry-backoff-max", float),
        migrate=common.migrate_on_start and not no_migrate,
        grace=_number(args, "grace", float),
    )
