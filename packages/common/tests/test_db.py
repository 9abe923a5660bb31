"""The database edge against a real PostgreSQL: timestamps read back exactly as pg8000 would,
and notifications read from an idle connection."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from taskmill.common import db as db_module
from taskmill.common.db import Connection, Database
from taskmill.common.dberrors import QueryError
from taskmill.common.errors import DatabaseUnavailable
from taskmill.common.settings import DatabaseSettings
from taskmill.testing import admin_connection


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT CAST('2026-01-02 03:04:05.678901+00' AS timestamptz)",
            datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        ),
        (
            "SELECT CAST('2026-01-02 03:04:05+00' AS timestamptz)",
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        ),
        (
            "SELECT CAST('2026-01-02 03:04:05.5' AS timestamp)",
            datetime(2026, 1, 2, 3, 4, 5, 500000),
        ),
        ("SELECT CAST('infinity' AS timestamptz)", "infinity"),
        ("SELECT CAST('-infinity' AS timestamp)", "-infinity"),
    ],
)
def test_timestamps_are_read_as_datetimes(database_url: str, sql: str, expected: object) -> None:
    db = Database(DatabaseSettings.from_url(database_url), max_connections=1)
    try:
        with db.connection() as conn:
            assert conn.execute(sql)[0][0] == expected
    finally:
        db.close()


def test_timestamptz_keeps_the_session_time_zone_offset(database_url: str) -> None:
    db = Database(DatabaseSettings.from_url(database_url), max_connections=1)
    try:
        with db.connection() as conn:
            conn.execute("SET TIME ZONE 'Asia/Kolkata'")
            value = conn.execute("SELECT CAST('2026-01-02 03:04:05+00' AS timestamptz)")[0][0]
    finally:
        db.close()
    assert value == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert value.utcoffset() == timezone(timedelta(hours=5, minutes=30)).utcoffset(None)


# -- notifications without a round trip ------------------------------------------------------


def _listening(database_url: str) -> tuple[Database, Connection]:
    db = Database(DatabaseSettings.from_url(database_url), max_connections=1)
    conn = db.connect()
    conn.execute("LISTEN probe")
    return db, conn


def _read_until(conn: Connection, count: int) -> list[str]:
    """Waits for the socket and reads, until ``count`` notifications arrived (10 s at most)."""
    payloads: list[str] = []
    deadline = time.monotonic() + 10
    while len(payloads) < count and time.monotonic() < deadline:
        if conn.wait_readable(0.1):
            payloads.extend(payload for _channel, payload in conn.read_notifications())
    return payloads


@pytest.mark.parametrize("read_at_once", [db_module.READ_AT_ONCE, 7, 17])
def test_read_notifications_reads_every_one_of_a_burst(
    database_url: str, read_at_once: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reads of 7 bytes end inside every message: each is finished from the socket, and what
    # pg8000 buffered past it is read on the next wait, though the socket may be quiet. A
    # notification of 'probe' with a one-digit payload is 17 bytes: reads of 17 end between
    # the first ten messages, with the rest of the burst in pg8000's buffer.
    monkeypatch.setattr(db_module, "READ_AT_ONCE", read_at_once)
    db, conn = _listening(database_url)
    try:
        with admin_connection(database_url) as other:
            # 200 notifications of one commit arrive together: pg8000's buffer holds most of
            # them after the first is read, and the socket no longer says readable. pg8000's
            # own queue of notifications would keep only the last 100.
            other.run("BEGIN")
            for n in range(200):
                other.run("SELECT pg_notify('probe', CAST(:n AS text))", n=n)
            other.run("COMMIT")
            assert _read_until(conn, 200) == [str(n) for n in range(200)]
            other.run("NOTIFY probe, 'later'")
            assert _read_until(conn, 1) == ["later"]
        # Nothing is left half read: the connection still answers queries.
        assert conn.execute("SELECT 1") == [[1]]
    finally:
        conn.close()
        db.close()


def test_notifications_read_during_a_query_are_not_left_waiting(database_url: str) -> None:
    # A listening connection that runs a statement (the coordinator claims on it) reads what
    # arrived meanwhile into pg8000's queue, leaving the socket quiet: they are still read.
    db, conn = _listening(database_url)
    try:
        with admin_connection(database_url) as other:
            other.run("NOTIFY probe, 'during'")
        assert conn.execute("SELECT 1") == [[1]]
        assert conn.wait_readable(0)
        assert conn.read_notifications() == [("probe", "during")]
        assert not conn.wait_readable(0)
    finally:
        conn.close()
        db.close()


def test_read_notifications_reports_a_connection_the_server_ended(database_url: str) -> None:
    db, conn = _listening(database_url)
    try:
        pid = conn.execute("SELECT pg_backend_pid()")[0][0]
        with admin_connection(database_url) as other:
            other.run("SELECT pg_terminate_backend(:pid)", pid=pid)
        assert conn.wait_readable(10)
        with pytest.raises(DatabaseUnavailable):
            conn.read_notifications()
            # The server's error and its closing may arrive apart; the next read sees the end.
            assert conn.wait_readable(10)
            conn.read_notifications()
        assert conn.broken
    finally:
        conn.close()
        db.close()


def test_a_prepared_statement_refused_by_the_server_leaves_its_connection_usable(
    database_url: str,
) -> None:
    # Bind, Execute and Sync go out without Flush messages in between: an error at Bind must
    # still come back as the statement's error, and the next statement on the connection work.
    db = Database(
        DatabaseSettings.from_url(database_url), max_connections=1, prepare_statements=True
    )
    try:
        with db.connection() as conn:
            with pytest.raises(QueryError) as refused:
                conn.run("get_task", id="not-a-uuid")
            assert refused.value.sqlstate == "22P02"
            assert conn.run("get_task", id=str(uuid.uuid4())) == []
        with db.connection() as conn:
            assert conn.scalar("schema_version") is not None
    finally:
        db.close()


@pytest.mark.skipif(
    not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux's TCP options (taskmill's images)"
)
def test_a_connection_notices_a_server_that_vanished(database_url: str) -> None:
    # A lost host sends no FIN: only TCP's own timers end the connection, and the system's
    # defaults would leave a query waiting for hours. Every connection gets shorter ones.
    db = Database(DatabaseSettings.from_url(database_url), max_connections=1)
    conn = db.connect()
    try:
        sock = conn._raw._usock
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 15
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000
        assert conn.execute("SELECT 1") == [[1]]
    finally:
        conn.close()
        db.close()
