"""Tests of the throwaway PostgreSQL server (they run its real binaries, also as root)."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pg8000.native
import pytest

from taskmill.dev.pgserver import PostgresServer, PostgresServerError


def _query(server: PostgresServer, sql: str) -> list[list[Any]]:
    connection = pg8000.native.Connection("postgres", host="127.0.0.1", port=server.port)
    try:
        result: list[list[Any]] = connection.run(sql)
        return result
    finally:
        connection.close()


@pytest.fixture
def traversable_dir() -> Iterator[Path]:
    """A directory the server's unprivileged user can reach even when the tests run as root.

    pytest's ``tmp_path`` lives under a 0700 directory owned by the user running the tests.
    """
    with tempfile.TemporaryDirectory(prefix="taskmill-test-") as name:
        Path(name).chmod(0o755)
        yield Path(name)


def test_serves_sql_on_a_free_port_and_cleans_up_on_stop() -> None:
    server = PostgresServer()
    server.start()
    try:
        port, data_dir = server.port, server.data_dir
        assert server.url == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        [[version]] = _query(server, "select version()")
        assert version.startswith("PostgreSQL ")
    finally:
        server.stop()

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert not data_dir.exists()
    assert not data_dir.parent.exists(), "the temporary directory is left behind"


def test_a_persistent_data_dir_keeps_its_data_across_restarts(traversable_dir: Path) -> None:
    data_dir = traversable_dir / "cluster"
    server = PostgresServer()

    server.start(data_dir)
    with server:
        _query(server, "create table kept (value text); insert into kept values ('hello')")

    server.start(data_dir)
    with server:
        assert _query(server, "select value from kept") == [["hello"]]
    assert (data_dir / "PG_VERSION").exists()


def test_refuses_a_data_dir_that_holds_something_else(traversable_dir: Path) -> None:
    (traversable_dir / "notes.txt").write_text("not a cluster")

    with pytest.raises(PostgresServerError, match="holds no PostgreSQL cluster"):
        PostgresServer().start(traversable_dir)
    assert (traversable_dir / "notes.txt").read_text() == "not a cluster"


def test_a_server_that_cannot_start_fails_with_its_log() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = PostgresServer()
        with pytest.raises(PostgresServerError, match=r"(?s)exited.*could not bind"):
            server.start(port=taken.getsockname()[1])
    with pytest.raises(PostgresServerError, match="not running"):
        _ = server.port
