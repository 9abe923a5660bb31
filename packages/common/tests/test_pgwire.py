"""The contract between taskmill and pg8000's internals, against a real PostgreSQL: what
``taskmill.common._pgwire`` relies on, so that a pg8000 upgrade that changes it fails here."""

from __future__ import annotations

import importlib.metadata
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pg8000.core
import pg8000.native
import pytest

from taskmill.common import _pgwire
from taskmill.common.db import Database
from taskmill.common.settings import DatabaseSettings
from taskmill.testing import admin_connection


@contextmanager
def _raw(database_url: str) -> Iterator[_pgwire.RawConnection]:
    settings = DatabaseSettings.from_url(database_url)
    raw = _pgwire.open_raw(
        user=settings.user,
        host=settings.host,
        port=settings.port,
        database=settings.database,
        password=settings.password,
        application_name="test_pgwire",
        timeout=5.0,
        tcp_options=(),
    )
    try:
        yield raw
    finally:
        raw.close()


class _Spy:
    """Stands in for pg8000's socket stream: records the bytes each flush sent, and may run
    ``after_flush`` once, after the next flush."""

    def __init__(self, stream: Any, after_flush: Callable[[], None] | None = None) -> None:
        self._stream = stream
        self._written = bytearray()
        self._after_flush = after_flush
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> Any:
        self._written += data
        return self._stream.write(data)

    def flush(self) -> None:
        self._stream.flush()
        self.sent.append(bytes(self._written))
        self._written.clear()
        hook, self._after_flush = self._after_flush, None
        if hook is not None:
            hook()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _message_types(packet: bytes) -> list[bytes]:
    types, at = [], 0
    while at < len(packet):
        code, length = struct.unpack_from("!ci", packet, at)
        types.append(code)
        at += 1 + length
    return types


def test_a_prepared_statement_runs_as_bind_execute_sync_in_one_send(database_url: str) -> None:
    # pg8000 would add a Flush message after Bind and after Execute, each making the server
    # send part of its answer at once: the caller would wake for every part.
    with _raw(database_url) as raw:
        statement = raw.prepare("SELECT CAST(:n AS int) + 1")
        spy = raw._sock = _Spy(raw._sock)
        assert statement.run(n=41) == [[42]]
        assert statement.run(n=1) == [[2]]
        assert [_message_types(packet) for packet in spy.sent] == [[b"B", b"E", b"S"]] * 2


def test_a_notification_is_read_off_the_socket_without_a_query(database_url: str) -> None:
    with _raw(database_url) as raw:
        raw.run("LISTEN pgwire")
        spy = raw._sock = _Spy(raw._sock)
        assert not _pgwire.wait_readable(raw, 0)
        with admin_connection(database_url) as other:
            other.run("NOTIFY pgwire, 'hello'")
        assert _pgwire.wait_readable(raw, 10)
        read: list[tuple[str, str]] = []
        assert not _pgwire.read_messages(raw, read, 65536)
        assert read == [("pgwire", "hello")]
        assert spy.sent == []  # nothing was sent: no query
        assert not _pgwire.wait_readable(raw, 0)
        assert raw.run("SELECT 1") == [[1]]


def _peek_until(sock: socket.socket, wanted: bytes) -> None:
    """Waits until ``wanted`` has arrived in the socket's receive queue, unread (10 s at most)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        select.select([sock], [], [], 0.1)
        if wanted in sock.recv(65536, socket.MSG_PEEK):
            return
        time.sleep(0.01)
    raise AssertionError(f"{wanted!r} never arrived")


def test_a_notification_read_together_with_a_query_answer_is_found_after_it(
    database_url: str,
) -> None:
    # The server sends the notification after the query's answer, and before pg8000 reads that
    # answer: one read takes both, leaving the notification in pg8000's buffer and the socket
    # quiet. A wait on the socket alone would miss it until the next message came.
    db = Database(DatabaseSettings.from_url(database_url), max_connections=1)
    conn = db.connect()
    try:
        conn.execute("LISTEN pgwire")
        raw = conn._raw
        usock = raw._usock

        def notify_before_the_answer_is_read() -> None:
            _peek_until(usock, b"Z\x00\x00\x00\x05I")  # the query's ReadyForQuery
            with admin_connection(database_url) as other:
                other.run("NOTIFY pgwire, 'after'")
            _peek_until(usock, b"pgwire\x00after\x00")

        raw._sock = _Spy(raw._sock, after_flush=notify_before_the_answer_is_read)
        assert conn.execute("SELECT 1") == [[1]]
        assert not raw.notifications  # not read during the query: it came after the answer
        assert not _pgwire.wait_readable(raw, 0)  # and the socket holds nothing more
        assert conn.wait_readable(0)
        assert conn.read_notifications() == [("pgwire", "after")]
        assert not conn.wait_readable(0)
    finally:
        conn.close()
        db.close()


def _init_without_usock(self: Any, *args: Any, **kwargs: Any) -> None:
    self._socket = None


def _execute_named_without_bind(self: Any, *args: Any, **kwargs: Any) -> None:
    self.send_PARSE()


@pytest.mark.parametrize(
    ("where", "name", "replacement", "named"),
    [
        (pg8000.core, "_read", None, "pg8000.core._read"),
        (pg8000.core, "EXECUTE_MSG", None, "pg8000.core.EXECUTE_MSG"),
        (pg8000.core.CoreConnection, "send_EXECUTE", None, "CoreConnection.send_EXECUTE"),
        (
            pg8000.core.CoreConnection,
            "__init__",
            _init_without_usock,
            "_usock (used by pg8000.core.CoreConnection.__init__)",
        ),
        (
            pg8000.core.CoreConnection,
            "execute_named",
            _execute_named_without_bind,
            "send_BIND (used by pg8000.core.CoreConnection.execute_named)",
        ),
    ],
)
def test_a_pg8000_without_what_pgwire_relies_on_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, where: Any, name: str, replacement: Any, named: str
) -> None:
    _pgwire.check_pg8000()  # the installed pg8000 has it all
    if replacement is None:
        monkeypatch.delattr(where, name)
    else:
        monkeypatch.setattr(where, name, replacement)
    with pytest.raises(ImportError) as refused:
        _pgwire.check_pg8000()
    assert f"pg8000 {importlib.metadata.version('pg8000')} lacks" in str(refused.value)
    assert named in str(refused.value)


def test_the_connection_db_opens_is_pgwire_s(database_url: str) -> None:
    db = Database(DatabaseSettings.from_url(database_url), max_connections=1)
    try:
        with db.connection() as conn:
            assert isinstance(conn._raw, _pgwire.RawConnection)
            assert isinstance(conn._raw, pg8000.native.Connection)
    finally:
        db.close()
