"""A database server that vanishes without a word, as a lost host does: a query on a connection
to it fails within the connection's TCP timers instead of waiting for hours.

The client runs in a network namespace of its own and reaches the database through a veth pair
and a relay in this process. A ``blackhole`` queueing discipline on both ends of the pair then
drops every packet silently: nothing is refused and nothing closes, so only the timers can end
the connection.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from taskmill.common.settings import DatabaseSettings

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("tc")),
        reason="network namespaces need root and iproute2, as the dev machine and CI have",
    ),
]

# The client: production's options, with timers short enough for a test (production sets 15 s
# idle, 5 s between probes, 3 probes and 30 s for an unacknowledged send; test_db reads those).
_CLIENT = """
import socket, sys, time
from taskmill.common import db as db_module
from taskmill.common.errors import DatabaseUnavailable
from taskmill.common.settings import DatabaseSettings

db_module._DEAD_SERVER_OPTIONS = [
    (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
    (socket.IPPROTO_TCP, "TCP_KEEPIDLE", 1),
    (socket.IPPROTO_TCP, "TCP_KEEPINTVL", 1),
    (socket.IPPROTO_TCP, "TCP_KEEPCNT", 2),
    (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", 2000),
]
db = db_module.Database(DatabaseSettings.from_url(sys.argv[1]), max_connections=1)
conn = db.connect()
assert conn.execute("SELECT 1") == [[1]]
print("ready", flush=True)
sys.stdin.readline()
began = time.monotonic()
try:
    conn.execute("SELECT 1")
except DatabaseUnavailable as exc:
    print(f"gone after {time.monotonic() - began:.1f} s: {exc.message}", flush=True)
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def pair() -> Iterator[tuple[str, str, str, str]]:
    """A namespace joined to this one by a veth pair: (namespace, outer, inner, outer address)."""
    name = f"tm{secrets.token_hex(3)}"
    namespace, outer, inner = name, f"{name}a", f"{name}b"
    subnet = f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250)}"
    _ip("netns", "add", namespace)
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", namespace)
        _ip("addr", "add", f"{subnet}.1/30", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("-n", namespace, "addr", "add", f"{subnet}.2/30", "dev", inner)
        _ip("-n", namespace, "link", "set", inner, "up")
        yield namespace, outer, inner, f"{subnet}.1"
    finally:
        subprocess.run(["ip", "link", "del", outer], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)


def _relay(listener: socket.socket, target: tuple[str, int], stop: threading.Event) -> None:
    """Passes one connection's bytes both ways between a client and the database."""
    try:
        client, _ = listener.accept()
    except OSError:
        return  # closed before the client came
    with client, socket.create_connection(target) as server:
        ends = {client: server, server: client}
        while not stop.is_set():
            readable, _, _ = select.select(list(ends), [], [], 0.1)
            for end in readable:
                data = end.recv(65536)
                if not data:
                    return
                ends[end].sendall(data)


def test_a_query_to_a_vanished_server_fails_within_the_timers(
    database_url: str, pair: tuple[str, str, str, str]
) -> None:
    namespace, outer, inner, address = pair
    settings = DatabaseSettings.from_url(database_url)
    stop = threading.Event()
    with socket.create_server((address, 0)) as listener:
        relay = threading.Thread(
            target=_relay, args=(listener, (settings.host, settings.port), stop), daemon=True
        )
        relay.start()
        netloc = f"{settings.user}@{address}:{listener.getsockname()[1]}"
        through_relay = urlunsplit(urlsplit(database_url)._replace(netloc=netloc))
        try:
            _run_client(namespace, outer, inner, through_relay)
        finally:
            stop.set()
    relay.join(5)


def _run_client(namespace: str, outer: str, inner: str, url: str) -> None:
    """Connects the client, cuts the pair silently, and expects its next query to fail."""
    client = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", _CLIENT, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert client.stdout is not None and client.stdin is not None
        assert client.stdout.readline() == "ready\n"
        # Every packet either way is dropped from now on, silently; the links stay up, so
        # nothing is refused either.
        subprocess.run(["tc", "qdisc", "add", "dev", outer, "root", "blackhole"], check=True)
        _ip("netns", "exec", namespace, "tc", "qdisc", "add", "dev", inner, "root", "blackhole")
        # Without the timers the query's packet is retransmitted for ~15 minutes.
        output, _ = client.communicate("go\n", timeout=30)
        assert output.startswith("gone after "), output
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
