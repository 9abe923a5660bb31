"""The database edge: the only module that talks to pg8000.

``Database`` keeps a small pool of connections. A connection is lent to one thread at a time
(``with db.connection() as conn``) and every query is run by name from the ``.sql`` files.
pg8000's exceptions are wrapped here, and nowhere else, into taskmill's own errors.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pg8000.converters
import pg8000.core
import pg8000.exceptions
import pg8000.native

from taskmill.common.errors import DatabaseError, DatabaseUnavailable
from taskmill.common.queries import query
from taskmill.common.settings import DatabaseSettings

logger = logging.getLogger(__name__)

Row = dict[str, Any]

#: SQLSTATE classes that mean the server or the connection went away, not that the query was bad.
_UNAVAILABLE_SQLSTATES = ("08", "57P")
#: A protocol message's header: its type byte and its length (which counts itself).
_HEADER = struct.Struct("!ci")
#: The most one read of an idle connection takes from the socket; more waits for the next read.
READ_AT_ONCE = 65536


def _timestamptz_in(text: str) -> Any:
    # pg8000 parses with strptime (~17 us a value); fromisoformat reads PostgreSQL's ISO output
    # (``2026-01-02 03:04:05.678+00``) ~50x faster. Anything else (infinity, BC dates, years
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


class _RawConnection(pg8000.native.Connection):  # type: ignore[misc]  # pg8000 is untyped
    """pg8000's connection, with a run of a prepared statement sent as Bind, Execute, Sync.

    pg8000 follows Bind and Execute with a Flush message each, which makes the server send
    its answer in three packets (bind done; the rows; ready, after the commit) and wakes the
    calling thread three times per statement. The Sync that ends every run already makes the
    server send everything and report any error, so the Flushes only cost wake-ups: without
    them, single-task submits in a loop went from 2.8 socket reads per statement to 1. The
    message format is pg8000's own ``send_BIND`` (pinned in uv.lock), less the trailing Flush.
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


_H_PACK = struct.Struct("!H").pack
_I_PACK = struct.Struct("!i").pack


class QueryError(DatabaseError):
    """The database rejected a query."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate

    @property
    def is_unique_violation(self) -> bool:
        """Whether the query broke a unique constraint."""
        return self.sqlstate == "23505"


def _wrap(exc: Exception) -> DatabaseError:
    if isinstance(exc, pg8000.exceptions.DatabaseError) and exc.args:
        info = exc.args[0] if isinstance(exc.args[0], dict) else {}
        sqlstate = str(info.get("C", ""))
        message = str(info.get("M", exc))
        if sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return DatabaseUnavailable(f"database unavailable: {message}")
        return QueryError(message, sqlstate)
    return DatabaseUnavailable(f"database unavailable: {exc}")


#: TCP options that end a connection whose server vanished without closing it (a host lost,
#: a failover that left the old address silent): after 15 s of silence, a probe every 5 s,
#: and a send unanswered for 30 s. The system's defaults wait two hours idle, and about 15
#: minutes for an unanswered send, with the thread that waits stuck meanwhile. Set where the
#: platform has them.
_DEAD_SERVER_OPTIONS = [
    (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
    (socket.IPPROTO_TCP, "TCP_KEEPIDLE", 15),
    (socket.IPPROTO_TCP, "TCP_KEEPINTVL", 5),
    (socket.IPPROTO_TCP, "TCP_KEEPCNT", 3),
    (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", 30_000),  # milliseconds
]


def _notice_a_vanished_server(sock: socket.socket) -> None:
    for level, name, value in _DEAD_SERVER_OPTIONS:
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(level, option, value)


class _Chunk:
    """Protocol messages from one read, and the rest of the last one from pg8000's socket."""

    def __init__(self, data: bytes, sock: Any) -> None:
        self._data = data
        self._at = 0
        self._sock = sock
        #: Whether pg8000's buffer may hold more: the read took all it could, or a message went
        #: on past it and was finished from the socket, through that buffer.
        self.more_buffered = len(data) >= READ_AT_ONCE

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


class Connection:
    """One database connection, used by one thread at a time.

    Attributes:
        broken: Set when the connection failed and must not be reused.
    """

    def __init__(self, raw: pg8000.native.Connection, *, prepare: bool = False) -> None:
        self._raw = raw
        self.broken = False
        self._in_transaction = False
        self._prepare = prepare
        # Named queries prepared on this connection, by name (only when ``prepare`` is set).
        self._statements: dict[str, pg8000.native.PreparedStatement] = {}
        # What ran last, to read its columns and row count from.
        self._last: Any = raw
        # Whether pg8000's buffer may hold a message read past what was used (a query's answer
        # can share a read with a notification sent after it): the next wait looks there first.
        self._may_hold = False

    def run(self, query_name: str, /, **params: Any) -> list[list[Any]]:
        """Runs a named query and returns its rows as lists."""
        if self._prepare:
            return self._run_prepared(query_name, params)
        self._last = self._raw
        return self.execute(query(query_name), **params)

    def _run_prepared(self, query_name: str, params: dict[str, Any]) -> list[list[Any]]:
        # A prepared statement is parsed once per connection: pg8000 then needs one round trip
        # per call instead of three, and skips re-scanning the SQL text for parameters.
        self._may_hold = True
        try:
            statement = self._statements.get(query_name)
            if statement is None:
                statement = self._raw.prepare(query(query_name))
                self._statements[query_name] = statement
            rows: list[list[Any]] = statement.run(**params) or []
        except (TimeoutError, pg8000.exceptions.InterfaceError, OSError) as exc:
            self.broken = True
            raise _wrap(exc) from exc
        except pg8000.exceptions.DatabaseError as exc:
            wrapped = _wrap(exc)
            if isinstance(wrapped, DatabaseUnavailable):
                self.broken = True
            raise wrapped from exc
        self._last = statement
        return rows

    def rows(self, query_name: str, /, **params: Any) -> list[Row]:
        """Runs a named query and returns its rows as dicts keyed by column name."""
        values = self.run(query_name, **params)
        names = [column["name"] for column in self._last.columns or ()]
        return [dict(zip(names, row, strict=True)) for row in values]

    def row(self, query_name: str, /, **params: Any) -> Row | None:
        """Runs a named query and returns its first row, or ``None`` when it returned none."""
        rows = self.rows(query_name, **params)
        return rows[0] if rows else None

    def scalar(self, query_name: str, /, **params: Any) -> Any:
        """Runs a named query and returns the first column of its first row."""
        values = self.run(query_name, **params)
        return values[0][0] if values else None

    def execute(self, sql: str, /, **params: Any) -> list[list[Any]]:
        """Runs SQL text given by the caller, such as a migration file's statement."""
        self._last = self._raw
        self._may_hold = True
        try:
            return self._raw.run(sql, **params) or []
        except (TimeoutError, pg8000.exceptions.InterfaceError, OSError) as exc:
            self.broken = True
            raise _wrap(exc) from exc
        except pg8000.exceptions.DatabaseError as exc:
            wrapped = _wrap(exc)
            if isinstance(wrapped, DatabaseUnavailable):
                self.broken = True
            raise wrapped from exc

    def execute_script(self, sql: str) -> None:
        """Runs several statements at once (simple query protocol, no parameters)."""
        self._may_hold = True
        try:
            self._raw.execute_simple(sql)
        except (pg8000.exceptions.InterfaceError, OSError) as exc:
            self.broken = True
            raise _wrap(exc) from exc
        except pg8000.exceptions.DatabaseError as exc:
            raise _wrap(exc) from exc

    @property
    def row_count(self) -> int:
        """The number of rows the last statement changed or returned."""
        return int(self._last._context.row_count)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """Runs the block in one transaction: committed on success, rolled back on error."""
        if self._in_transaction:
            raise RuntimeError("transactions do not nest")
        self.execute("BEGIN")
        self._in_transaction = True
        try:
            yield self
        except BaseException:
            self._in_transaction = False
            if not self.broken:
                try:
                    self.execute("ROLLBACK")
                except DatabaseError:
                    logger.warning("rollback failed; dropping the connection")
                    self.broken = True
            raise
        self._in_transaction = False
        self.execute("COMMIT")

    def wait_readable(self, timeout: float) -> bool:
        """Waits until the server sends something (a notification), for at most ``timeout``.

        Returns at once when notifications that arrived during a query wait to be read, or when
        pg8000 read a message past the end of a query's answer.
        """
        if self._raw.notifications:
            return True
        if self._may_hold:
            self._may_hold = False
            try:
                if self._pending():
                    return True
            except OSError:
                return True  # the read that follows reports the broken connection
        sock = self._raw._usock  # pg8000 exposes no public way to wait on its socket
        readable, _, _ = select.select([sock], [], [], max(timeout, 0.0))
        return bool(readable)

    def poll_notifications(self) -> list[tuple[str, str]]:
        """Returns the ``(channel, payload)`` notifications the server has sent, after a round
        trip that also proves the connection alive.

        pg8000 keeps only the last 100 notifications that arrive during one query.
        """
        self.execute("SELECT 1")
        return self._take_notifications([])

    def read_notifications(self) -> list[tuple[str, str]]:
        """Returns the ``(channel, payload)`` notifications sent to this idle connection,
        without a round trip.

        For a ``LISTEN``ing connection, once :meth:`wait_readable` said so: it returns the
        notifications that arrived during its last query, or else reads what the socket holds
        (notifications, notices, parameter changes), a ``SELECT 1`` round trip sooner than
        :meth:`poll_notifications`. Anything that arrives later makes the next wait return.

        Raises:
            DatabaseUnavailable: The server closed the connection or sent an error.
        """
        read: list[tuple[str, str]] = self._take_notifications([])
        if read:
            self._may_hold = True  # the socket is not read now: the next wait looks
            return read
        # pg8000 reads messages only while it runs a query, so this hands them to its own
        # handlers. One read takes what pg8000 buffered, else what the socket holds: on a cold
        # CPU, peeking before and after each message cost ~0.03 ms of an idle cluster's pickup.
        raw = self._raw
        context = pg8000.core.Context(None)
        try:
            chunk = _Chunk(raw._sock.read1(READ_AT_ONCE), raw._sock)
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
                self._take_notifications(read)
        except (pg8000.exceptions.InterfaceError, pg8000.exceptions.DatabaseError, OSError) as exc:
            self.broken = True
            raise _wrap(exc) from exc
        if chunk.more_buffered:
            self._may_hold = True
        return read

    def _take_notifications(self, into: list[tuple[str, str]]) -> list[tuple[str, str]]:
        queued = self._raw.notifications
        while queued:
            _pid, channel, payload = queued.popleft()
            into.append((channel, payload))
        return into

    def _pending(self) -> bool:
        # Whether a message has arrived: peek at pg8000's buffer, filling it from the socket
        # without blocking. An empty answer means nothing has arrived, or end of file.
        sock = self._raw._usock
        sock.setblocking(False)
        try:
            return bool(self._raw._sock.peek(1))
        finally:
            sock.settimeout(None)

    def close(self) -> None:
        """Closes the connection, ignoring errors from a connection already gone."""
        with contextlib.suppress(pg8000.exceptions.InterfaceError, OSError):
            self._raw.close()


class Database:
    """A pool of connections to one PostgreSQL database.

    Args:
        settings: Where to connect.
        max_connections: How many connections may be open at once; callers beyond that wait.
        application_name: Shown in ``pg_stat_activity``.
        connect_timeout: Seconds to wait for a new connection.
        prepare_statements: Prepare each named query once per connection instead of parsing
            it on every call; saves CPU and two round trips per query on hot paths.
    """

    def __init__(
        self,
        settings: DatabaseSettings,
        *,
        max_connections: int = 10,
        application_name: str = "taskmill",
        connect_timeout: float = 5.0,
        prepare_statements: bool = False,
    ) -> None:
        self.settings = settings
        self.max_connections = max_connections
        self._prepare_statements = prepare_statements
        self._application_name = application_name
        self._connect_timeout = connect_timeout
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._closed = False

    def connect(self) -> Connection:
        """Opens a new connection outside the pool (for LISTEN or long-held sessions).

        Raises:
            DatabaseUnavailable: The server cannot be reached or refused the login.
        """
        try:
            raw = _RawConnection(
                self.settings.user,
                host=self.settings.host,
                port=self.settings.port,
                database=self.settings.database,
                password=self.settings.password,
                application_name=self._application_name,
                timeout=self._connect_timeout,
                # No SSL probe: pg8000 leaks its socket when that probe times out.
                ssl_context=False,
            )
        except (pg8000.exceptions.InterfaceError, OSError) as exc:
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {self.settings.host}:{self.settings.port}: {exc}"
            ) from exc
        except pg8000.exceptions.DatabaseError as exc:
            raise DatabaseUnavailable(
                f"PostgreSQL at {self.settings.host}:{self.settings.port} refused: {_wrap(exc)}"
            ) from exc
        # The connect timeout would otherwise also bound every later query.
        raw._usock.settimeout(None)
        if raw._usock.family in (socket.AF_INET, socket.AF_INET6):
            # pg8000 writes a message bigger than its 8 KiB buffer in pieces; with Nagle on, the
            # last piece waits for the server's delayed ACK: 40 ms for a large parameter.
            raw._usock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _notice_a_vanished_server(raw._usock)
        raw.register_in_adapter(pg8000.converters.TIMESTAMPTZ, _timestamptz_in)
        raw.register_in_adapter(pg8000.converters.TIMESTAMP, _timestamp_in)
        return Connection(raw, prepare=self._prepare_statements)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """Lends a pooled connection to the calling thread for the block."""
        if self._closed:
            raise DatabaseUnavailable("the database pool is closed")
        self._slots.acquire()
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self.connect()
            try:
                yield conn
            finally:
                if conn.broken or self._closed:
                    conn.close()
                else:
                    self._idle.put(conn)
        finally:
            self._slots.release()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """Lends a pooled connection with a transaction open for the block."""
        with self.connection() as conn, conn.transaction():
            yield conn

    def close(self) -> None:
        """Closes every idle connection; connections in use close when they are returned."""
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
