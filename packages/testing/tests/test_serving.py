"""serve_in_thread: a real waitress server on port 0, stopped while its loop is busy."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import pytest
import waitress

from taskmill.testing import serve_in_thread

#: Rounds of start, serve, stop. Stopping from the test's thread broke the loop in many
#: rounds, so this many leave that old teardown next to no chance to pass.
_ROUNDS = 30


def _hello(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


class _Callers:
    """Requests one after another, a new connection each, until the block ends.

    Each connection wakes the server's loop, so the loop is busy when the server stops.
    """

    def __init__(self, port: int) -> None:
        self._port = port
        self._answers = 0
        self._answered = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._call, daemon=True)

    def __enter__(self) -> _Callers:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def wait_for_answers(self, count: int) -> None:
        with self._answered:
            assert self._answered.wait_for(lambda: self._answers >= count, timeout=30)

    def _call(self) -> None:
        while not self._stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self._port), timeout=10) as sock:
                    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    answered = sock.recv(64).startswith(b"HTTP/1.0 200")
            except OSError:  # the server stopping under a request, or stopped
                continue
            with self._answered:
                self._answers += answered
                self._answered.notify_all()


def test_a_server_stopped_while_busy_stops_cleanly_every_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="waitress")
    for _ in range(_ROUNDS):
        server = waitress.create_server(_hello, host="127.0.0.1", port=0, threads=2)
        port = int(server.effective_port)
        # The callers outlast the server: they are still calling while it stops.
        with _Callers(port) as callers, serve_in_thread(server):
            callers.wait_for_answers(3)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
    # A broken loop is raised by serve_in_thread; waitress only logs a request thread that
    # failed on the closed server.
    assert [record.getMessage() for record in caplog.records] == []


def test_a_request_in_progress_is_answered_before_the_server_closes() -> None:
    entered, stopping = threading.Event(), threading.Event()

    def slow(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        entered.set()
        stopping.wait(timeout=30)  # answers only once the server has begun to stop
        return _hello(environ, start_response)

    server = waitress.create_server(slow, host="127.0.0.1", port=0, threads=1)
    drain = server.task_dispatcher.shutdown

    def shutdown(*args: Any, **kwargs: Any) -> bool:
        stopping.set()
        return bool(drain(*args, **kwargs))

    server.task_dispatcher.shutdown = shutdown
    with socket.create_connection(("127.0.0.1", int(server.effective_port)), timeout=30) as sock:
        with serve_in_thread(server):
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert entered.wait(timeout=30)
        answer = sock.recv(64)
    assert answer.startswith(b"HTTP/1.0 200")
