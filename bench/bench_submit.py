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

from taskmill.dev.pgserver import PostgresServer

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


#: What each read lands in before it is appended to its response (one thread reads them all).
_SCRATCH = bytearray(256 * 1024)
_SCRATCH_VIEW = memoryview(_SCRATCH)


class _Client:
    """One keep-alive connection that always has one request outstanding."""

    def __init__(self, sock: socket.socket, request: bytes) -> None:
        self.sock = sock
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
        size = self.sock.recv_into(_SCRATCH)
        if not size:
            raise SystemExit("the scheduler closed a connection")
        self.received += _SCRATCH_VIEW[:size]
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
    connections: list[socket.socket], path: str, body: bytes, seconds: float
) -> tuple[int, list[float]]:
    """Posts ``body`` to ``path`` on every connection for ``seconds``, each connection sending
    its next request as soon as the last is answered.

    One thread serves every connection through a selector: ~0.03 ms of the bench's CPU per
    single submit, where eight ``http.client`` threads took ~0.14 ms (GIL hand-offs, mostly)
    from the cores the scheduler and PostgreSQL share with it.

    Returns the number of requests answered 201 and every request's latency.
    """
    host, port = connections[0].getpeername()[:2]
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1") + body
    latencies: list[float] = []
    with selectors.DefaultSelector() as selector:
        stop_at = time.monotonic() + seconds
        for sock in connections:
            client = _Client(sock, request)
            selector.register(sock, selectors.EVENT_READ, client)
            client.send()
        pending = len(connections)
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
    latencies.sort()
    return len(latencies), latencies


def connect(
    address: tuple[str, int], count: int, server_pid: int, processes: int
) -> list[socket.socket]:
    """Opens ``count`` keep-alive connections, spread evenly over the scheduler's processes.

    With ``--processes N`` the processes share one listening socket and whichever wakes first
    accepts: a burst of connections often lands mostly on one process, which then does most of
    the work on one core (8 connections as 8 + 0 gave 29 batches/s, as 3 + 5 gave 44). So a
    connection accepted by a process that already has its share is closed and opened again.
    Without ``/proc`` the connections stay where they land.
    """
    children = _children(server_pid)
    deadline = time.monotonic() + 30
    while 1 < processes != len(children) and time.monotonic() < deadline:
        time.sleep(0.05)  # the parent logs that it listens before it forks the children
        children = _children(server_pid)
    children = children or [server_pid]
    share = -(-count // len(children))
    held: dict[int, int] = dict.fromkeys(children, 0)
    connections: list[socket.socket] = []
    for _ in range(50 * count if os.path.exists("/proc/net/tcp") else 0):
        if len(connections) == count:
            break
        sock = socket.create_connection(address, timeout=60)
        owner = _accepted_by(sock, children)
        if owner is not None and held[owner] >= share:
            sock.close()
            continue
        if owner is not None:
            held[owner] += 1
        connections.append(sock)
    while len(connections) < count:  # could not spread them: take them as they come
        connections.append(socket.create_connection(address, timeout=60))
    for sock in connections:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Room for a whole batch request and response: one thread serves every connection, so
        # a send must never wait for the scheduler to read, nor the scheduler for this thread.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return connections


def _children(pid: int) -> list[int]:
    found = []
    for entry in _proc_entries():
        with contextlib.suppress(OSError):
            if int(_stat(entry)[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def _proc_entries() -> list[str]:
    try:
        return [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []


def _accepted_by(sock: socket.socket, processes: list[int]) -> int | None:
    """The process that accepted this connection (waits up to 1 s), or ``None``."""
    client_port = sock.getsockname()[1]
    server_port = sock.getpeername()[1]
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        inode = _server_side_inode(server_port, client_port)
        if inode:
            for pid in processes:
                with contextlib.suppress(OSError):
                    for fd in os.listdir(f"/proc/{pid}/fd"):
                        with contextlib.suppress(OSError):
                            if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                                return pid
        time.sleep(0.001)
    return None


def _server_side_inode(server_port: int, client_port: int) -> str | None:
    # /proc/net/tcp{,6}: "sl local_address rem_address st ... inode"; ports in hex. An inode of
    # 0 means the connection waits in the accept queue.
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                lines = rows.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if (
                int(local.rpartition(":")[2], 16) == server_port
                and int(remote.rpartition(":")[2], 16) == client_port
                and inode != "0"
            ):
                return inode
    return None


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
    connections = connect(server[:2], args.clients, server[2], args.processes)
    try:
        drive(connections, path, body, 1.0)  # warm up: prepared statements, buffers
        cpu_before = cpu_seconds(server[2])
        client_before = time.process_time()
        began = time.monotonic()
        requests, latencies = drive(connections, path, body, args.seconds)
        elapsed = time.monotonic() - began
    finally:
        for sock in connections:
            sock.close()
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
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="scheduler processes (default: one per CPU, as the scheduler's README advises)",
    )
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
            f"scheduler at http://{server[0]}:{server[1]} ({args.processes} processes); "
            f"{args.clients} clients, "
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
