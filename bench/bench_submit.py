"""Benchmark of the scheduler's submit routes: prints figures, asserts nothing.

Starts the real ``taskmill-scheduler`` process against a fresh database (on the local
PostgreSQL at 127.0.0.1:5432 when it answers, else a throwaway server; or ``--database-url``),
then drives it over N keep-alive HTTP connections (``--clients``), each with one request
outstanding at a time, all served by one client thread:

1. single submits (``POST /v1/tasks``), one task per request;
2. batch submits (``POST /v1/tasks/batch``), 1000 tasks per request.

For each it prints tasks/s and request latency p50/p99. Commits stay durable: neither the
database nor the scheduler is told to relax ``synchronous_commit``.

    uv run python bench/bench_submit.py [--clients 8] [--seconds 10] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import selectors
import shutil
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pg8000.native

from taskmill.common.pgserver import PostgresServer

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_LISTENING = re.compile(rb"listening on http://([^\s:]+):(\d+)")


def _admin_run(url: str, sql: str) -> None:
    parts = urlsplit(url)
    conn = pg8000.native.Connection(
        parts.username or "postgres",
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        database=parts.path.lstrip("/") or "postgres",
        password=parts.password,
        timeout=5,
    )
    try:
        conn.run(sql)
    finally:
        conn.close()


@contextlib.contextmanager
def fresh_database(given: str | None, embedded: bool) -> Iterator[str]:
    """A database URL for the run: the one given, or a new database dropped afterwards."""
    if given:
        yield given
        return
    with contextlib.ExitStack() as stack:
        admin = LOCAL_URL
        if embedded or not _local_answers():
            admin = stack.enter_context(PostgresServer()).url
        name = f"taskmill_bench_{os.getpid()}_{secrets.token_hex(3)}"
        _admin_run(admin, f"CREATE DATABASE {name}")
        try:
            yield urlsplit(admin)._replace(path=f"/{name}").geturl()
        finally:
            _admin_run(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _local_answers() -> bool:
    try:
        _admin_run(LOCAL_URL, "SELECT 1")
    except (pg8000.native.InterfaceError, pg8000.native.DatabaseError, OSError):
        return False
    return True


@contextlib.contextmanager
def scheduler(
    database_url: str, threads: int | None, processes: int
) -> Iterator[tuple[str, int, int]]:
    """Runs ``taskmill-scheduler --port 0`` and yields (host, port, pid)."""
    command = [shutil.which("taskmill-scheduler") or "taskmill-scheduler", "--port", "0"]
    command += ["--host", "127.0.0.1"]
    command += ["--processes", str(processes)]
    if threads:
        command += ["--threads", str(threads)]
    env = {**os.environ, "TASKMILL_DATABASE_URL": database_url}
    env.pop("TASKMILL_API_TOKENS", None)  # loopback clients need no token
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    assert process.stderr is not None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                raise SystemExit(f"taskmill-scheduler exited with {process.wait()}")
            match = _LISTENING.search(line)
            if match:
                break
        else:
            raise SystemExit("taskmill-scheduler did not start listening within 60 s")
        # Keep draining its log so the pipe never fills up and blocks it.
        threading.Thread(target=process.stderr.read, daemon=True).start()
        yield match.group(1).decode(), int(match.group(2)), process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


class _Client:
    """One keep-alive connection that always has one request outstanding."""

    def __init__(self, address: tuple[str, int], request: bytes) -> None:
        self.sock = socket.create_connection(address, timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = request
        self.received = bytearray()
        self.status = 0
        self.length = -1  # of the whole response, once its head is in
        self.began = 0.0

    def send(self) -> None:
        self.received.clear()
        self.length = -1
        self.began = time.perf_counter()
        self.sock.sendall(self.request)

    def response(self) -> tuple[int, bytes] | None:
        """Reads what has arrived; the status and body once the whole response is in."""
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise SystemExit("the scheduler closed a connection")
        self.received += chunk
        if self.length < 0:
            head_end = self.received.find(b"\r\n\r\n")
            if head_end < 0:
                return None
            head = bytes(self.received[:head_end]).decode("latin-1").split("\r\n")
            self.status = int(head[0].split()[1])
            self.length = head_end + 4
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    self.length += int(value)
        if len(self.received) < self.length:
            return None
        return self.status, bytes(self.received[self.length - len(self.received) :])


def drive(
    address: tuple[str, int], path: str, body: bytes, clients: int, seconds: float
) -> tuple[int, list[float]]:
    """Posts ``body`` to ``path`` over ``clients`` connections for ``seconds``, each sending its
    next request as soon as the last is answered.

    One thread serves every connection through a selector: ~0.03 ms of the bench's CPU per
    single submit, where eight ``http.client`` threads took ~0.14 ms (GIL hand-offs, mostly)
    from the cores the scheduler and PostgreSQL share with it.

    Returns the number of requests answered 201 and every request's latency.
    """
    host, port = address
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1") + body
    latencies: list[float] = []
    with selectors.DefaultSelector() as selector:
        connections = [_Client(address, request) for _ in range(clients)]
        try:
            stop_at = time.monotonic() + seconds
            for client in connections:
                selector.register(client.sock, selectors.EVENT_READ, client)
                client.send()
            pending = clients
            while pending:
                for key, _ in selector.select():
                    client = key.data
                    answer = client.response()
                    if answer is None:
                        continue
                    latencies.append(time.perf_counter() - client.began)
                    status, text = answer
                    if status != 201:
                        raise SystemExit(f"a request failed: {status} {text[:200]!r}")
                    if time.monotonic() < stop_at:
                        client.send()
                    else:
                        selector.unregister(client.sock)
                        pending -= 1
        finally:
            for client in connections:
                client.sock.close()
    latencies.sort()
    return len(latencies), latencies


def _stat(pid: str) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its children; 0 without /proc."""
    ticks = 0
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return 0.0
    for entry in entries:
        try:
            fields = _stat(entry)
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def run(
    label: str, server: tuple[str, int, int], path: str, body: bytes, per_request: int, args: Any
) -> None:
    """Drives one route and prints tasks/s, latency and the scheduler's CPU per request."""
    address = server[:2]
    drive(address, path, body, args.clients, 1.0)  # warm up: connections, prepared statements
    cpu_before = cpu_seconds(server[2])
    client_before = time.process_time()
    began = time.monotonic()
    requests, latencies = drive(address, path, body, args.clients, args.seconds)
    elapsed = time.monotonic() - began
    cpu_ms = (cpu_seconds(server[2]) - cpu_before) / requests * 1000
    client_ms = (time.process_time() - client_before) / requests * 1000
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    print(
        f"{label:<28} {requests * per_request / elapsed:>9,.0f} tasks/s "
        f"{requests / elapsed:>7,.0f} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
        f"scheduler CPU {cpu_ms:6.3f} ms/req  bench client CPU {client_ms:6.3f} ms/req",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--threads", type=int, help="scheduler threads (default: its own)")
    parser.add_argument("--processes", type=int, default=1, help="scheduler processes")
    parser.add_argument("--database-url", help="use this (migrated or empty) database")
    parser.add_argument("--embedded", action="store_true", help="always use a throwaway server")
    args = parser.parse_args()

    single = json.dumps({"command": "echo", "payload": {"n": 1, "text": "hello"}}).encode()
    batch = json.dumps(
        {"tasks": [{"command": "echo", "payload": {"n": i}} for i in range(args.batch_size)]}
    ).encode()
    with (
        fresh_database(args.database_url, args.embedded) as url,
        scheduler(url, args.threads, args.processes) as server,
    ):
        print(
            f"scheduler at http://{server[0]}:{server[1]}; {args.clients} clients, "
            f"{args.seconds:g} s per run, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.2f} before",
            flush=True,
        )
        run("POST /v1/tasks (1 task)", server, "/v1/tasks", single, 1, args)
        label = f"POST /v1/tasks/batch ({args.batch_size})"
        run(label, server, "/v1/tasks/batch", batch, args.batch_size, args)
        print(f"load average {os.getloadavg()[0]:.2f} after", flush=True)


if __name__ == "__main__":
    main()
