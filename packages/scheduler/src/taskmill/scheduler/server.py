"""Serving: waitress on a socket bound up front, in one process or several.

The socket is bound before anything is served, so port 0 (any free port) works and the port is
known to log. With ``processes > 1`` the parent forks that many children after binding; each
child runs its own waitress, app and database pool on the shared socket (the kernel spreads
connections), which lets the API use more than one core despite Python's GIL. The parent only
supervises: it forwards SIGTERM and replaces a child that dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import waitress

from taskmill.scheduler.settings import SchedulerSettings

logger = logging.getLogger(__name__)

#: Builds and runs one server on the socket until it is told to stop; returns an exit code.
Serve = Callable[[socket.socket], int]

_BACKLOG = 1024
_RESPAWN_DELAY = 1.0
#: Responses below this size are sent whole, in one ``send``, once the request is done.
_SEND_BYTES = 16 * 1024


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; port 0 picks a free port.

    Raises:
        OSError: The address cannot be bound.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def create_server(app: Any, settings: SchedulerSettings, sock: socket.socket | None = None) -> Any:
    """A waitress server for ``app``, not yet running.

    Serves on ``sock`` when given, else binds ``settings.host:settings.port`` (port 0 picks a
    free one: ``server.effective_port`` tells which). ``server.run()`` serves until
    ``SystemExit`` or ``KeyboardInterrupt`` is raised in the calling thread, then lets the
    requests in progress finish.

    Raises:
        OSError: The address cannot be bound.
    """
    sockets = [sock if sock is not None else bind(settings.host, settings.port)]
    with warnings.catch_warnings():
        # waitress deprecates send_bytes but has no other way to say it. Its default (1) sends
        # the status line and headers, then the body, each from the request's thread as soon
        # as written, while the main loop polls the busy connection in a tight loop. Buffered,
        # a small response leaves in one send from the main loop, which waitress wakes at the
        # end of every request anyway: fewer sends, and no busy polling, for every request.
        warnings.filterwarnings("ignore", "send_bytes", DeprecationWarning)
        return waitress.create_server(
            app,
            sockets=sockets,
            threads=settings.threads,
            ident="taskmill-scheduler",
            # Above the app's own limits, so the app answers with a proper problem document;
            # waitress only cuts off bodies far beyond them.
            max_request_body_size=2 * max(settings.max_batch_bytes, settings.max_body_bytes),
            expose_tracebacks=False,
            clear_untrusted_proxy_headers=True,
            send_bytes=_SEND_BYTES,
        )


def _stop(signum: int, frame: object) -> None:
    # waitress's loop stops on SystemExit raised in the main thread and drains its workers.
    raise SystemExit(0)


def run(sock: socket.socket, processes: int, serve: Serve) -> int:
    """Serves on ``sock`` in this process, or in ``processes`` children; returns an exit code.

    Stops on SIGTERM or SIGINT: each server finishes the requests in progress.
    """
    if processes <= 1:
        signal.signal(signal.SIGTERM, _stop)
        return serve(sock)
    return _Supervisor(sock, processes, serve).run()


class _Supervisor:
    """Keeps ``processes`` children serving until told to stop."""

    def __init__(self, sock: socket.socket, processes: int, serve: Serve) -> None:
        self._sock = sock
        self._processes = processes
        self._serve = serve
        self._children: set[int] = set()
        self._stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for _ in range(self._processes):
            self._spawn()
        if self._stopping:  # the signal may have come between a check and a fork
            self._on_signal(signal.SIGTERM, None)
        while self._children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            self._children.discard(pid)
            if not self._stopping:
                logger.error("server process %d ended (%s); starting another", pid, status)
                time.sleep(_RESPAWN_DELAY)
                self._spawn()
                if self._stopping:
                    self._on_signal(signal.SIGTERM, None)
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping = True
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _spawn(self) -> None:
        if self._stopping:  # a signal came while starting: start nothing more
            return
        pid = os.fork()
        if pid:
            self._children.add(pid)
            return
        # The child: default signal handling, then serve until told to stop.
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, _stop)
            code = self._serve(self._sock)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        except BaseException:  # a child must never return into the parent's code
            logger.exception("server process %d failed", os.getpid())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
