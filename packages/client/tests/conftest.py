"""Servers for the client's tests: a scriptable HTTP/1.1 server, and the real scheduler.

The real scheduler cannot be made to answer ``503`` or drop a kept-alive connection on cue;
the scripted stand-in can. It records every request with the client port it came from, so
tests can count connections. Everything else runs against the real scheduler.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from taskmill.client import Client
from taskmill.common.db import Database
from taskmill.common.models import TaskError, TaskStatus
from taskmill.common.settings import DatabaseSettings
from taskmill.common.store import WorkerStore
from taskmill.scheduler import SchedulerSettings, create_app, create_server
from taskmill.testing import Reported, Stores, claim, serve_in_thread


@dataclass
class Seen:
    """One request the fake server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    port: int


@dataclass
class Reply:
    """What the fake server answers: status, JSON body, headers; ``drop`` closes silently."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    raw: bytes | None = None
    close_after: bool = False


@dataclass
class FakeServer:
    """The running server: its URL, the requests seen, and the script of replies."""

    url: str
    seen: list[Seen] = field(default_factory=list)
    script: list[Reply] = field(default_factory=list)
    default: Callable[[Seen], Reply] = lambda seen: Reply(404, {"detail": "no script"})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ports(self) -> set[int]:
        """The distinct client ports, i.e. connections, that sent requests."""
        return {seen.port for seen in self.seen}


def _handler(fake: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            seen = Seen(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
                self.client_address[1],
            )
            with fake.lock:
                fake.seen.append(seen)
                reply = fake.script.pop(0) if fake.script else fake.default(seen)
            if reply.drop:
                self.close_connection = True
                return
            data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            # Without a "Connection: close" header: the client believes the connection is
            # kept alive, as after a server's idle timeout.
            self.close_connection = reply.close_after

        do_GET = _serve  # noqa: N815 (http.server names)
        do_POST = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """A scriptable HTTP server on a free loopback port."""
    fake = FakeServer(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def make_client() -> Iterator[Callable[..., Client]]:
    """Makes clients that are closed when the test ends (no unclosed-socket warnings)."""
    made: list[Client] = []

    def make(*args: Any, **kwargs: Any) -> Client:
        client = Client(*args, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@dataclass
class Scheduler:
    """A real scheduler served by waitress on a free port, over a fresh database."""

    url: str
    token: str
    store: Stores
    workers: WorkerStore

    def finish(
        self, task_id: str, status: TaskStatus, result: Any = None, error: TaskError | None = None
    ) -> None:
        """Moves a task to a final state as a worker's report would (no worker runs here)."""
        claimed = {str(t.id): t for t in claim(self.store, ["w-test"] * 1000, 60.0)}
        task = claimed.get(task_id) or self.store.get(uuid.UUID(task_id))
        outcome = Reported(
            task.id, task.attempt, status, datetime.now(UTC), result, error, retryable=False
        )
        assert self.store.apply([outcome]) == {task.id}


@pytest.fixture
def scheduler(database_url: str) -> Iterator[Scheduler]:
    """The real scheduler app (``create_app``) served by waitress in a thread, with a token."""
    settings = SchedulerSettings(
        database=DatabaseSettings.from_url(database_url),
        port=0,
        threads=4,
        api_tokens=("test-token",),
        migrate_on_start=False,
    )
    db = Database(settings.database, max_connections=6, application_name="client-tests")
    try:
        with serve_in_thread(create_server(create_app(settings, db), settings)) as server:
            yield Scheduler(
                f"http://127.0.0.1:{server.effective_port}",
                "test-token",
                Stores(db),
                WorkerStore(db),
            )
    finally:
        db.close()


@pytest.fixture
def client(scheduler: Scheduler, make_client: Callable[..., Client]) -> Client:
    """A client of the real scheduler, with its token."""
    return make_client(scheduler.url, token=scheduler.token)


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
