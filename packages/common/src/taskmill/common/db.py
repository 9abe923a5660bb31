"""The database edge: the only module, with its ``_pgwire`` and ``dberrors``, that talks to
pg8000.

``Database`` keeps a small pool of connections. A connection is lent to one thread at a time
(``with db.connection() as conn``) and every query is run by name from the ``.sql`` files.
pg8000's exceptions, and anything else a statement raises on its way, are wrapped here, and
nowhere else, into taskmill's own errors (:mod:`taskmill.common.dberrors`); a connection is kept
in the pool after an error only when the server sent it, so that no connection is lent with an
answer half read. What needs pg8000's internals (the socket, its buffer, the wire format) is in
``_pgwire``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pg8000.exceptions
import pg8000.native

from taskmill.common import _pgwire
from taskmill.common.dberrors import wrap
from taskmill.common.errors import DatabaseError, DatabaseUnavailable
from taskmill.common.queries import query
from taskmill.common.settings import DatabaseSettings

logger = logging.getLogger(__name__)

Row = dict[str, Any]

#: The most one read of an idle connection takes from the socket; more waits for the next read.
READ_AT_ONCE = 65536

#: TCP options that end a connection whose server vanished without closing it (a host lost,
#: a failover that left the old address silent): after 15 s of silence, a probe every 5 s,
#: and a send unanswered for 30 s. The system's defaults wait two hours idle, and about 15
#: minutes for an unanswered send, with the thread that waits stuck meanwhile. Set on TCP
#: connections, where the platform has them.
_DEAD_SERVER_OPTIONS: list[_pgwire.TcpOption] = [
    (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
    (socket.IPPROTO_TCP, "TCP_KEEPIDLE", 15),
    (socket.IPPROTO_TCP, "TCP_KEEPINTVL", 5),
    (socket.IPPROTO_TCP, "TCP_KEEPCNT", 3),
    (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", 30_000),  # milliseconds
]


class Connection:
    """One database connection, used by one thread at a time.

    Attributes:
        broken: Set when the connection failed, or a statement failed other than by the
            server's error, and must not be reused.
    """

    def __init__(self, raw: _pgwire.RawConnection, *, prepare: bool = False) -> None:
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
        statement = self._statements.get(query_name)
        if statement is None:
            statement = self._prepare_named(query_name)
        self._may_hold = True
        try:
            rows: list[list[Any]] = statement.run(**params) or []
        except Exception as exc:
            raise self._failed(exc) from exc
        except BaseException:
            # Not ours to wrap (KeyboardInterrupt and the like), but the answer may be half read.
            self.broken = True
            raise
        self._last = statement
        return rows

    def _prepare_named(self, query_name: str) -> pg8000.native.PreparedStatement:
        sql = query(query_name)
        self._may_hold = True
        try:
            statement = self._raw.prepare(sql)
        except Exception as exc:
            raise self._failed(exc) from exc
        except BaseException:
            self.broken = True
            raise
        self._statements[query_name] = statement
        return statement

    def _failed(self, exc: Exception) -> DatabaseError:
        """The error to raise for what a statement raised, wrapped; marks this connection broken,
        so the pool drops it, unless the server's answer was read to its end.

        Only an error the server sent leaves the connection in step: pg8000 raises it once it
        has read up to the server's ReadyForQuery. Anything else (the socket, or a value in the
        answer that fails to parse, such as JSON nested too deep) can stop the reading halfway,
        and the next statement on the connection would read the rest of this answer as its own.
        """
        wrapped = wrap(exc)
        if not isinstance(exc, pg8000.exceptions.DatabaseError) or isinstance(
            wrapped, DatabaseUnavailable
        ):
            self.broken = True
        return wrapped

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
        except Exception as exc:
            raise self._failed(exc) from exc
        except BaseException:
            self.broken = True
            raise

    def execute_script(self, sql: str) -> None:
        """Runs several statements at once (simple query protocol, no parameters)."""
        self._may_hold = True
        try:
            _pgwire.run_script(self._raw, sql)
        except Exception as exc:
            raise self._failed(exc) from exc
        except BaseException:
            self.broken = True
            raise

    @property
    def row_count(self) -> int:
        """The number of rows the last statement changed or returned."""
        return _pgwire.row_count(self._last)

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
                if _pgwire.has_buffered(self._raw):
                    return True
            except OSError:
                return True  # the read that follows reports the broken connection
        return _pgwire.wait_readable(self._raw, timeout)

    def poll_notifications(self) -> list[tuple[str, str]]:
        """Returns the ``(channel, payload)`` notifications the server has sent, after a round
        trip that also proves the connection alive.

        pg8000 keeps only the last 100 notifications that arrive during one query.
        """
        self.execute("SELECT 1")
        return _pgwire.take_notifications(self._raw, [])

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
        read: list[tuple[str, str]] = _pgwire.take_notifications(self._raw, [])
        if read:
            self._may_hold = True  # the socket is not read now: the next wait looks
            return read
        try:
            more_buffered = _pgwire.read_messages(self._raw, read, READ_AT_ONCE)
        except Exception as exc:
            # Even the server's error: it came unasked, not as the end of an answer.
            self.broken = True
            raise wrap(exc) from exc
        except BaseException:
            self.broken = True
            raise
        if more_buffered:
            self._may_hold = True
        return read

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
        statement_timeout: Seconds any one statement on these connections may run (waiting
            on locks included) before the server cancels it, raising
            :class:`StatementCancelled`; ``None`` or ``0`` for the server's own setting. Set at
            connect, in the startup message, so it costs no round trip.
    """

    def __init__(
        self,
        settings: DatabaseSettings,
        *,
        max_connections: int = 10,
        application_name: str = "taskmill",
        connect_timeout: float = 5.0,
        prepare_statements: bool = False,
        statement_timeout: float | None = None,
    ) -> None:
        if statement_timeout is not None and not 0 <= statement_timeout < math.inf:
            raise ValueError(
                f"statement_timeout must be 0 or more seconds, not {statement_timeout}"
            )
        self.settings = settings
        self._server_settings = (
            # In whole milliseconds, rounded up: a fraction of one would round to 0, no bound.
            {"statement_timeout": str(math.ceil(statement_timeout * 1000))}
            if statement_timeout
            else {}
        )
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
            raw = _pgwire.open_raw(
                user=self.settings.user,
                host=self.settings.host,
                port=self.settings.port,
                database=self.settings.database,
                password=self.settings.password,
                application_name=self._application_name,
                timeout=self._connect_timeout,
                tcp_options=_DEAD_SERVER_OPTIONS,
                server_settings=self._server_settings,
            )
        except (pg8000.exceptions.InterfaceError, OSError) as exc:
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {self.settings.host}:{self.settings.port}: {exc}"
            ) from exc
        except pg8000.exceptions.DatabaseError as exc:
            raise DatabaseUnavailable(
                f"PostgreSQL at {self.settings.host}:{self.settings.port} refused: {wrap(exc)}"
            ) from exc
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
