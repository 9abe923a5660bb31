"""Throwaway databases on a real PostgreSQL server, for test set-up and inspection."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pg8000.exceptions
import pg8000.native

from taskmill.common.settings import DatabaseSettings
from taskmill.dev.pgserver import PostgresServer

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
URL_VARIABLE = "TASKMILL_TEST_DATABASE_URL"


@contextmanager
def admin_connection(url: str) -> Iterator[pg8000.native.Connection]:
    """A plain pg8000 connection to ``url``, for test set-up and inspection outside the stores."""
    settings = DatabaseSettings.from_url(url)
    connection = pg8000.native.Connection(
        settings.user,
        host=settings.host,
        port=settings.port,
        database=settings.database,
        password=settings.password,
    )
    try:
        yield connection
    finally:
        connection.close()


def local_server_answers() -> bool:
    """Whether a server at 127.0.0.1:5432 lets ``postgres`` in without a password."""
    try:
        # No SSL probe: pg8000 leaks the socket when that probe times out.
        connection = pg8000.native.Connection(
            "postgres", host="127.0.0.1", port=5432, timeout=1, ssl_context=False
        )
    except (pg8000.exceptions.InterfaceError, pg8000.exceptions.DatabaseError, OSError):
        return False
    connection.close()
    return True


def url_of(url: str, database: str) -> str:
    """The same server as ``url``, another database."""
    return urlsplit(url)._replace(path=f"/{database}").geturl()


def _create_database(admin_url: str, name: str, template: str | None) -> None:
    # Identifiers cannot be bound as parameters; identifier() quotes them.
    sql = f"CREATE DATABASE {pg8000.native.identifier(name)}"
    if template:
        sql += f" TEMPLATE {pg8000.native.identifier(template)}"
    with admin_connection(admin_url) as admin:
        admin.run(sql)


def _drop_database(admin_url: str, name: str) -> None:
    with admin_connection(admin_url) as admin:
        # FORCE (PostgreSQL 13+) ends the sessions a test left open.
        admin.run(f"DROP DATABASE IF EXISTS {pg8000.native.identifier(name)} WITH (FORCE)")


@contextmanager
def temporary_database(admin_url: str, kind: str, template: str | None = None) -> Iterator[str]:
    """Creates a uniquely named database for the block and drops it after."""
    # The pid and a random suffix keep parallel runs against one server apart.
    name = f"taskmill_{kind}_{os.getpid()}_{secrets.token_hex(4)}"
    _create_database(admin_url, name, template)
    try:
        yield name
    finally:
        _drop_database(admin_url, name)


@contextmanager
def throwaway_server(prefix: str = "taskmill-server-") -> Iterator[PostgresServer]:
    """A PostgreSQL server of the caller's own, for tests that stop, crash or restart it.

    Its data lives in a temporary directory rather than under pytest's ``tmp_path``: run as
    root, the server runs as another user, who cannot enter pytest's 0700 directories.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        Path(name).chmod(0o755)
        server = PostgresServer()
        server.start(data_dir=Path(name) / "data")
        try:
            yield server
        finally:
            server.stop()
