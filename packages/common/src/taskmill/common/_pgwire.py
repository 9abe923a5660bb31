"""pg8000 below its public API: the one module that reads pg8000's internals.

taskmill needs what pg8000 does not offer: a prepared statement's run sent as one packet
without Flush messages, notifications read from an idle connection without a query, and TCP
options on its socket. Each reaches into pg8000's private attributes, its socket and
``pg8000.core``; they are kept here, behind the few functions ``taskmill.common.db`` calls:

- :func:`open_raw` connects, with the socket and type adapters set up;
- :func:`wait_readable`, :func:`has_buffered`, :func:`read_messages` and
  :func:`take_notifications` read notifications off an idle connection;
- :func:`run_script` and :func:`row_count` reach what pg8000's public API leaves out.

Errors are pg8000's own (``InterfaceError``, ``DatabaseError``) or ``OSError``: ``db`` wraps
them. At import, :func:`check_pg8000` looks for every internal this module relies on, so that
a pg8000 upgrade that moves one fails loudly instead of misreading the wire; the contract
test, ``tests/test_pgwire.py``, pins the behaviour relied on.
"""

from __future__ import annotations

import importlib.metadata
import select
import socket
import struct
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pg8000
import pg8000.converters
import pg8000.core
import pg8000.exceptions
import pg8000.native

#: What this module reads or overrides of pg8000, by dotted path from the ``pg8000`` package.
_NEEDED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("_read", "Context", "BIND", "EXECUTE_MSG", "CoreConnection")),
    ("converters", ("TIMESTAMP", "TIMESTAMPTZ", "timestamp_in", "timestamptz_in")),
    (
        "core.CoreConnection",
        ("send_BIND", "send_EXECUTE", "_send_message", "execute_simple", "execute_named"),
    ),
    ("native.Connection", ("run", "prepare", "register_in_adapter")),
)
#: Names a pg8000 function's code must use: a connection's attributes are set in ``__init__``,
#: not on its class, and the overrides take effect only while pg8000 calls what they replace.
_USED_BY: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "core.CoreConnection.__init__",
        ("_usock", "_sock", "_client_encoding", "notifications", "message_types"),
    ),
    ("core.CoreConnection.execute_named", ("send_BIND", "send_EXECUTE")),
    ("core.CoreConnection.handle_messages", ("_sock", "message_types")),
    ("native.Connection.run", ("_context",)),
    ("native.PreparedStatement.run", ("_context",)),
)


def _resolve(path: str) -> Any:
    found: Any = pg8000
    for name in path.split("."):
        found = getattr(found, name, None)
    return found


def check_pg8000() -> None:
    """Checks that the installed pg8000 has every internal this module reads or overrides.

    Raises:
        ImportError: Something is missing; the message names pg8000's version and what.
    """
    missing = [
        f"pg8000.{where}.{name}"
        for where, names in _NEEDED
        for name in names
        if not hasattr(_resolve(where), name)
    ]
    for where, names in _USED_BY:
        used = getattr(getattr(_resolve(where), "__code__", None), "co_names", ())
        missing += [f"{name} (used by pg8000.{where})" for name in names if name not in used]
    if missing:
        try:
            version = importlib.metadata.version("pg8000")
        except importlib.metadata.PackageNotFoundError:
            version = "(version unknown)"
        raise ImportError(
            f"pg8000 {version} lacks what taskmill.common._pgwire relies on: "
            f"{', '.join(missing)}. _pgwire works with the pg8000 pinned in uv.lock; check it "
            "against the new version's source and run packages/common/tests/test_pgwire.py."
        )


check_pg8000()

#: A protocol message's header: its type byte and its length (which counts itself).
_HEADER = struct.Struct("!ci")
_H_PACK = struct.Struct("!H").pack
_I_PACK = struct.Struct("!i").pack
#: A TCP option for :func:`open_raw`: level, the option's name in :mod:`socket`, value.
TcpOption = tuple[int, str, int]


class RawConnection(pg8000.native.Connection):  # type: ignore[misc]  # pg8000 is untyped
    """pg8000's connection, with a run of a prepared statement sent as Bind, Execute, Sync.

    pg8000 follows Bind and Execute with a Flush message each, which makes the server send
    its answer in three packets (bind done; the rows; ready, after the commit) and wakes the
    calling thread three times per statement. The Sync that ends every run already makes the
    server send everything and report any error, so the Flushes only cost wake-ups: without
    them the answer comes in one packet and the caller wakes once. The message format is
    pg8000's own ``send_BIND`` (pinned in uv.lock), less the trailing Flush.
    """

    def send_BIND(self, statement_name_bin: bytes, params: Any) -> None:
        message = bytearray(b"\x00" + statement_name_bin + _H_PACK(0) + _H_PACK(len(params)))
        for value in params:
            if value is None:
                message.extend(_I_PACK(-1))
            else:
                encoded = value.encode(self._client_encoding)
                message.extend(_I_PACK(len(encoded)))
                message.extend(encoded)
        message.extend(_H_PACK(0))
        self._send_message(pg8000.core.BIND, message)

    def send_EXECUTE(self) -> None:
        self._sock.write(pg8000.core.EXECUTE_MSG)


def _timestamptz_in(text: str) -> Any:
    # pg8000 parses with strptime, which is slow; fromisoformat reads PostgreSQL's ISO output
    # (``2026-01-02 03:04:05.678+00``) much faster. Anything else (infinity, BC dates, years
    # past 9999) goes to pg8000's own parser, which decides what it becomes.
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return pg8000.converters.timestamptz_in(text)


def _timestamp_in(text: str) -> Any:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return pg8000.converters.timestamp_in(text)


def open_raw(
    *,
    user: str,
    host: str,
    port: int,
    database: str,
    password: str | None,
    application_name: str,
    timeout: float,
    tcp_options: Sequence[TcpOption],
    server_settings: Mapping[str, str] | None = None,
) -> RawConnection:
    """Connects without TLS, and sets up the socket: no timeout, no Nagle, ``tcp_options``.

    ``timeout`` bounds the connecting only. Options the platform lacks are skipped.
    ``server_settings`` (such as ``statement_timeout``) are the session's from its start: they
    go in the startup message, and cost no round trip.

    Raises:
        pg8000.exceptions.InterfaceError, pg8000.exceptions.DatabaseError, OSError:
            The server could not be reached, or refused the login.
    """
    raw = RawConnection(
        user,
        host=host,
        port=port,
        database=database,
        password=password,
        application_name=application_name,
        timeout=timeout,
        # No SSL probe: pg8000 leaks its socket when that probe times out.
        ssl_context=False,
        startup_params=dict(server_settings or {}),
    )
    sock: socket.socket = raw._usock
    # The connect timeout would otherwise also bound every later query.
    sock.settimeout(None)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # pg8000 writes a message bigger than its 8 KiB buffer in pieces; with Nagle on, the
        # last piece waits for the server's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for level, name, value in tcp_options:
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(level, option, value)
    raw.register_in_adapter(pg8000.converters.TIMESTAMPTZ, _timestamptz_in)
    raw.register_in_adapter(pg8000.converters.TIMESTAMP, _timestamp_in)
    return raw


def run_script(raw: RawConnection, sql: str) -> None:
    """Runs several statements at once (the simple query protocol, no parameters)."""
    raw.execute_simple(sql)


def row_count(ran: Any) -> int:
    """The number of rows the last run of ``ran`` (a connection or a prepared statement)
    changed or returned; pg8000 has no public count for a prepared statement."""
    return int(ran._context.row_count)


def take_notifications(raw: RawConnection, into: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Moves the ``(channel, payload)`` notifications pg8000 queued into ``into``; returns it."""
    queued = raw.notifications
    while queued:
        _pid, channel, payload = queued.popleft()
        into.append((channel, payload))
    return into


def wait_readable(raw: RawConnection, timeout: float) -> bool:
    """Waits until the socket has something to read, for at most ``timeout`` seconds.

    Only the socket: what pg8000 already read into its buffer is :func:`has_buffered`'s.
    """
    readable, _, _ = select.select([raw._usock], [], [], max(timeout, 0.0))
    return bool(readable)


def has_buffered(raw: RawConnection) -> bool:
    """Whether a message has arrived that pg8000 may already have read past a query's answer.

    Peeks at pg8000's buffer, filling it from the socket without blocking. False when nothing
    has arrived, or at end of file.

    Raises:
        OSError: The socket failed.
    """
    sock = raw._usock
    sock.setblocking(False)
    try:
        return bool(raw._sock.peek(1))
    finally:
        sock.settimeout(None)


def read_messages(raw: RawConnection, into: list[tuple[str, str]], at_most: int) -> bool:
    """Reads what an idle connection was sent (notifications, notices, parameter changes) and
    hands each message to pg8000's own handlers; notifications go into ``into``.

    pg8000 reads messages only while it runs a query, so this does its reading: one read of
    at most ``at_most`` bytes takes what pg8000 buffered, else what the socket holds. A message
    that goes on past that read is finished from the socket. One read, instead of a peek
    before and after each message, keeps an idle cluster's pickup quick.

    Returns:
        Whether pg8000's buffer may hold more: the read took all it could, or a message was
        finished through that buffer. The caller then looks there before waiting on the socket.

    Raises:
        pg8000.exceptions.InterfaceError: The server closed the connection, or sent a message
            an idle connection does not expect.
        pg8000.exceptions.DatabaseError: The server sent an error.
        OSError: The socket failed.
    """
    context = pg8000.core.Context(None)
    chunk = _Chunk(raw._sock.read1(at_most), raw._sock, at_most)
    if not chunk.left:
        # The socket was readable but holds nothing: the server closed it.
        raise pg8000.exceptions.InterfaceError("the server closed the connection")
    while chunk.left:
        code, length = _HEADER.unpack(chunk.take(5))
        handler = raw.message_types.get(code)
        if handler is None:
            raise pg8000.exceptions.InterfaceError(f"unexpected message {code!r}")
        handler(chunk.take(length - 4), context)
        if context.error is not None:
            raise context.error
        # pg8000's own queue keeps only the last 100.
        take_notifications(raw, into)
    return chunk.more_buffered


class _Chunk:
    """Protocol messages from one read, and the rest of the last one from pg8000's socket."""

    def __init__(self, data: bytes, sock: Any, at_most: int) -> None:
        self._data = data
        self._at = 0
        self._sock = sock
        #: Whether pg8000's buffer may hold more: the read took all it could, or a message went
        #: on past it and was finished from the socket, through that buffer.
        self.more_buffered = len(data) >= at_most

    @property
    def left(self) -> bool:
        return self._at < len(self._data)

    def take(self, size: int) -> bytes:
        start, self._at = self._at, min(self._at + size, len(self._data))
        part = self._data[start : self._at]
        if len(part) < size:
            self.more_buffered = True
            part += pg8000.core._read(self._sock, size - len(part))
        return part
