"""HTTP/1.1 with keep-alive over ``http.client``: a small thread-safe pool of connections.

The standard library is enough for one JSON API and keeps the client free of dependencies
(see the README). A connection is lent to one thread for one request and returned when the
response has been read in full; idle connections are reused last-in first-out, so a burst
reuses warm connections and the rest may be closed by the server's idle timeout.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class TransportError(Exception):
    """The request failed below HTTP: no response was received.

    Attributes:
        sent: Whether the request may have reached the server. ``False`` only when the
            connection could not be opened, so the server cannot have acted on it.
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class _Dropped(TransportError):
    """The server closed the connection without answering."""


@dataclass(frozen=True)
class Response:
    """A complete HTTP response."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON; ``None`` for an empty body.

        Raises:
            ValueError: The body is not JSON.
        """
        if not self.body:
            return None
        return json.loads(self.body)


# Errors that mean the server closed the connection.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class ConnectionPool:
    """Lends keep-alive connections to one base URL, one thread at a time each.

    Args:
        url: The base URL, ``http://host:port`` or ``https://host:port``, with an optional path
            prefix.
        timeout: Seconds to wait to connect and for each read.
        max_idle: How many idle connections to keep.

    Raises:
        ValueError: The URL is not an http(s) URL with a host.
    """

    def __init__(self, url: str, timeout: float, max_idle: int = 8) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self.prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._max_idle = max_idle
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._ssl = ssl.create_default_context() if self._https else None

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> Response:
        """Sends one request and reads its whole response.

        Args:
            method: The HTTP method.
            path: The path and query, starting with ``/``; the URL's path prefix is added.
            body: The request body, or ``None``.
            headers: Request headers.

        Returns:
            The response, whatever its status.

        Raises:
            TransportError: No response was received.
        """
        conn, reused = self._take()
        try:
            return self._exchange(conn, method, path, body, headers)
        except _Dropped:
            if not reused:
                raise
        # A kept-alive connection is closed by the server when it has sat idle too long; the
        # request then fails before the server read it. One try on a fresh connection. (Every
        # request this client sends is safe to repeat: reads, submits carrying an idempotency
        # key, and cancels.)
        return self._exchange(self._open(), method, path, body, headers)

    def close(self) -> None:
        """Closes every idle connection; connections lent out close when returned."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._max_idle = 0
        for conn in idle:
            conn.close()

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
    ) -> Response:
        try:
            conn.request(method, self.prefix + path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except _STALE as exc:
            conn.close()
            raise _Dropped(_describe(exc), sent=True) from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise TransportError(_describe(exc), sent=True) from exc
        if response.will_close:
            conn.close()
        else:
            self._give(conn)
        return Response(response.status, response.headers, data)

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._open(), False

    def _open(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._ssl
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise TransportError(_describe(exc), sent=False) from exc
        # Requests are small and latency matters more than packet count.
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
