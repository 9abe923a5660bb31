"""Creating the cluster's database on a fresh PostgreSQL server."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pg8000.native

from taskmill.common.settings import DatabaseSettings


def ensure_database(server_url: str, name: str) -> str:
    """Creates database ``name`` on the server unless it exists, and returns its URL."""
    settings = DatabaseSettings.from_url(server_url)
    conn = pg8000.native.Connection(
        settings.user,
        host=settings.host,
        port=settings.port,
        password=settings.password,
        database=settings.database,
        ssl_context=False,
    )
    try:
        if not conn.run("SELECT 1 FROM pg_database WHERE datname = :name", name=name):
            conn.run(f"CREATE DATABASE {pg8000.native.identifier(name)}")
    finally:
        conn.close()
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))
