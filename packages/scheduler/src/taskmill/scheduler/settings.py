"""The scheduler's settings: one frozen dataclass, read from the environment at start only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from taskmill.common.errors import ConfigError
from taskmill.common.settings import CommonSettings, DatabaseSettings

DEFAULT_PORT = 8081
#: Seconds one statement of a request may run: long past any healthy one, short of what a
#: client waits for an answer, so no request holds a connection (or a lock) for minutes.
DEFAULT_STATEMENT_TIMEOUT = 30.0
#: The longest statement timeout accepted, in seconds: a day.
_MAX_STATEMENT_TIMEOUT = 86400.0
#: Room for the fields around a payload in a single-task body.
_ENVELOPE_BYTES = 64 * 1024


@dataclass(frozen=True)
class SchedulerSettings:
    """How the scheduler runs.

    Attributes:
        database: Where the tasks are stored.
        host: The address to listen on.
        port: The port to listen on; 0 picks a free one.
        threads: How many requests each process handles at once.
        processes: How many server processes share the port (each with its own threads and
            database pool); more than one lets the API use more than one core.
        api_tokens: The accepted bearer tokens; none means loopback clients only.
        max_payload_bytes: The largest payload of one task, encoded as JSON.
        max_batch_bytes: The largest body of a batch submit.
        migrate_on_start: Whether to apply pending migrations at start.
        retry_after_seconds: What ``Retry-After`` says while the database is unavailable.
        statement_timeout: Seconds a request's statement may run before the database cancels
            it (the request is then a ``503``); 0 for none.
    """

    database: DatabaseSettings
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    threads: int = 16
    processes: int = 1
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    max_payload_bytes: int = 256 * 1024
    max_batch_bytes: int = 16 * 1024 * 1024
    migrate_on_start: bool = True
    retry_after_seconds: int = 1
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT

    @property
    def max_body_bytes(self) -> int:
        """The largest body of a single-task request: a full payload plus its fields."""
        return self.max_payload_bytes + _ENVELOPE_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SchedulerSettings:
        """Reads ``TASKMILL_*`` variables; unset ones keep their defaults.

        Raises:
            ConfigError: A variable is malformed; the message names it.
        """
        common = CommonSettings.from_env(env)
        listed = env.get("TASKMILL_API_TOKENS", "").split(",")
        tokens = tuple(token.strip() for token in listed if token.strip())
        return cls(
            database=common.database,
            host=env.get("TASKMILL_SCHEDULER_HOST") or "0.0.0.0",
            port=_integer(env, "TASKMILL_SCHEDULER_PORT", DEFAULT_PORT, 0, 65535),
            threads=_integer(env, "TASKMILL_SCHEDULER_THREADS", 16, 1, 256),
            processes=_integer(env, "TASKMILL_SCHEDULER_PROCESSES", 1, 1, 64),
            api_tokens=tokens,
            max_payload_bytes=_integer(env, "TASKMILL_MAX_PAYLOAD_BYTES", 256 * 1024, 1, 2**30),
            max_batch_bytes=_integer(env, "TASKMILL_MAX_BATCH_BYTES", 16 * 1024 * 1024, 1, 2**31),
            migrate_on_start=common.migrate_on_start,
            statement_timeout=parse_statement_timeout(
                env.get("TASKMILL_SCHEDULER_STATEMENT_TIMEOUT", ""),
                "TASKMILL_SCHEDULER_STATEMENT_TIMEOUT",
            ),
        )


def parse_statement_timeout(text: str, name: str) -> float:
    """Parses a statement timeout in seconds; empty means the default, 0 none.

    Raises:
        ConfigError: The value is not a number of seconds from 0 to a day; names ``name``.
    """
    text = text.strip()
    if not text:
        return DEFAULT_STATEMENT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {text!r}") from None
    # Also refuses nan and inf, which no comparison admits.
    if not 0 <= value <= _MAX_STATEMENT_TIMEOUT:
        raise ConfigError(
            f"{name} must be between 0 (none) and {_MAX_STATEMENT_TIMEOUT:g} seconds, not {text}"
        )
    return value


def _integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {text!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {value}")
    return value
