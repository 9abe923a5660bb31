"""Settings shared by every service, parsed once at start from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from taskmill.common.errors import ConfigError

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/taskmill"


@dataclass(frozen=True)
class DatabaseSettings:
    """Where and how to connect to PostgreSQL.

    Attributes:
        user: The role to connect as.
        password: The role's password, or ``None`` for trust or peer authentication.
        host: Host name or address of the server.
        port: TCP port of the server.
        database: The database name.
        url: The URL the settings were parsed from, with any password masked.
    """

    user: str
    password: str | None = field(repr=False)
    host: str
    port: int
    database: str
    url: str

    @classmethod
    def from_url(cls, url: str) -> DatabaseSettings:
        """Parses a ``postgresql://user:password@host:port/database`` URL.

        Raises:
            ConfigError: The URL is malformed; the message says which part.
        """
        try:
            parts = urlsplit(url)
            port = parts.port or 5432
        except ValueError as exc:
            raise ConfigError(f"TASKMILL_DATABASE_URL is malformed: {exc}") from None
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigError(
                "TASKMILL_DATABASE_URL must start with postgresql:// "
                f"(got {parts.scheme + '://' if parts.scheme else 'no scheme'})"
            )
        if not parts.hostname:
            raise ConfigError("TASKMILL_DATABASE_URL names no host")
        database = unquote(parts.path.lstrip("/"))
        if not database or "/" in database:
            raise ConfigError("TASKMILL_DATABASE_URL must name one database, as in .../taskmill")
        user = unquote(parts.username) if parts.username else "postgres"
        password = unquote(parts.password) if parts.password is not None else None
        masked = url.replace(f":{parts.password}@", ":***@") if parts.password else url
        return cls(user, password, parts.hostname, port, database, masked)


@dataclass(frozen=True)
class CommonSettings:
    """The settings every service shares.

    Attributes:
        database: The PostgreSQL connection settings.
        cluster_token: The token gRPC calls between services must carry, or ``None``.
        migrate_on_start: Whether a service applies pending migrations when it starts.
    """

    database: DatabaseSettings
    cluster_token: str | None = field(default=None, repr=False)
    migrate_on_start: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CommonSettings:
        """Reads the shared ``TASKMILL_*`` variables.

        Raises:
            ConfigError: A variable is malformed.
        """
        return cls(
            database=DatabaseSettings.from_url(
                env.get("TASKMILL_DATABASE_URL") or DEFAULT_DATABASE_URL
            ),
            cluster_token=env.get("TASKMILL_CLUSTER_TOKEN") or None,
            migrate_on_start=parse_bool(env.get("TASKMILL_MIGRATE", "true"), "TASKMILL_MIGRATE"),
        )


def parse_bool(value: str, name: str) -> bool:
    """Parses a boolean environment value such as ``true``, ``0`` or ``off``.

    Raises:
        ConfigError: The value is not a recognised boolean.
    """
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")
