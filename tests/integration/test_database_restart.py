"""The database restarts while a cluster runs: every service reconnects by itself and no task is
lost, stuck or run twice. The cluster gets a PostgreSQL server of its own, restarted on the same
data and port, so the other tests' server is never touched."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskmill.common.migrate import migrate
from taskmill.common.pgserver import PostgresServer
from taskmill.dev.harness import Cluster, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    # Not under tmp_path: when the tests run as root the server runs as another user, who
    # cannot enter pytest's 0700 directories.
    with tempfile.TemporaryDirectory(prefix="taskmill-restart-") as name:
        Path(name).chmod(0o755)
        server = PostgresServer()
        server.start(data_dir=Path(name) / "data")
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def database_url(server: PostgresServer) -> str:
    """The ``cluster`` fixture's database: this server's own, migrated."""
    migrate(server.url)
    return server.url


def _submitted(cluster: Cluster, tasks: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    status, body = cluster.request("POST", "/v1/tasks/batch", {"tasks": tasks})
    return list(body["tasks"]) if status == 201 else None


def test_a_database_restart_loses_no_task(server: PostgresServer, cluster: Cluster) -> None:
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator()
    for _ in range(2):
        cluster.start_worker(coordinator, "--concurrency", "4")
    before = cluster.submit_batch(
        [{"command": "sleep", "payload": {"seconds": 0.2}} for _ in range(40)]
    )
    wait_for(
        lambda: any(cluster.task(t["id"])["status"] == "running" for t in before),
        30,
        "a task running",
    )

    # A fast shutdown ends every connection of every service, and the tasks in flight finish
    # while the database is away: their reports wait in the workers until it is back.
    data, port = server.data_dir, server.port
    server.stop()
    server.start(data_dir=data, port=port)

    # The scheduler answers again once its pool has reconnected.
    payloads = [{"command": "echo", "payload": {"n": n}} for n in range(40)]
    after = wait_for(lambda: _submitted(cluster, payloads), 60, "a submit accepted again")

    done = cluster.wait_final([t["id"] for t in before + after], timeout=120)
    for task in before + after:
        final = done[task["id"]]
        assert final["status"] == "succeeded", final
        assert final["attempt"] == 1, final
    assert [done[t["id"]]["result"] for t in after] == [p["payload"] for p in payloads]
