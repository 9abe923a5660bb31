"""The database restarts, or crashes and recovers, while a cluster runs: every service reconnects
by itself and no task is lost, stuck or run twice. The cluster gets a PostgreSQL server of its
own, restarted on the same data and port, so the other tests' server is never touched."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from taskmill.dev.harness import Cluster, wait_for
from taskmill.dev.pgserver import PostgresServer

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

SUPPORT = Path(__file__).parent / "support"


@pytest.fixture
def database_url(own_database_url: str) -> str:
    """The ``cluster`` fixture's database: a server of the test's own, which it restarts."""
    return own_database_url


def _submitted(cluster: Cluster, tasks: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    status, body = cluster.request("POST", "/v1/tasks/batch", {"tasks": tasks})
    return list(body["tasks"]) if status == 201 else None


def _runs(path: Path) -> list[str]:
    """The task ids ``test.record`` noted, one per run."""
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def _statuses(cluster: Cluster, tasks: list[dict[str, Any]]) -> set[str]:
    return {cluster.task(task["id"])["status"] for task in tasks}


def _start(cluster: Cluster, runs: Path) -> None:
    """Scheduler, coordinator and two workers of two slots with the test handlers, whose runs
    ``test.record`` notes in ``runs``."""
    pythonpath = [str(SUPPORT), *filter(None, [cluster.env.get("PYTHONPATH")])]
    cluster.env.update(PYTHONPATH=os.pathsep.join(pythonpath), TASKMILL_TEST_RUNS_FILE=str(runs))
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator()
    for _ in range(2):
        cluster.start_worker(
            coordinator, "--concurrency", "2", "--handlers", "cluster_test_handlers"
        )


def _running_and_queued(
    cluster: Cluster, runs: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Four tasks fill the four slots; four more wait in the workers' queues, claimed."""
    running = cluster.submit_batch(
        [{"command": "test.record", "payload": {"seconds": 2}} for _ in range(4)]
    )
    wait_for(lambda: len(_runs(runs)) == 4, 30, "4 running")
    queued = cluster.submit_batch(
        [{"command": "test.record", "payload": {"seconds": 0.1}} for _ in range(4)]
    )
    wait_for(lambda: _statuses(cluster, queued) == {"dispatched"}, 30, "4 more dispatched")
    return running, queued


@pytest.mark.parametrize("crash", [False, True], ids=["shutdown", "crash"])
def test_a_database_restart_loses_no_task(
    server: PostgresServer, cluster: Cluster, crash: bool, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    _start(cluster, runs)
    running, queued = _running_and_queued(cluster, runs)

    # Either shutdown ends every connection of every service. The running tasks finish while
    # the database is away, and their reports wait in the workers until it is back. After a
    # crash the database recovers from its log. The queued tasks' claim was committed
    # durably before they were sent, so it is not forgotten and they do not run twice.
    data, port = server.data_dir, server.port
    server.stop(crash=crash)
    assert len(_runs(runs)) == 4  # the queued tasks had not started
    status, problem = cluster.request("POST", "/v1/tasks", {"command": "echo"})
    assert status == 503, problem
    server.start(data_dir=data, port=port)

    # The scheduler answers again once its pool has reconnected.
    payloads = [{"command": "test.record", "payload": {"n": n}} for n in range(40)]
    after = wait_for(lambda: _submitted(cluster, payloads), 60, "a submit accepted again")

    tasks = running + queued + after
    done = cluster.wait_final([t["id"] for t in tasks], timeout=120)
    cluster.stop_all()  # no handler runs after this: every run is in the file
    for task in tasks:
        final = done[task["id"]]
        assert final["status"] == "succeeded", final
        assert final["attempt"] == 1, final
    assert [done[t["id"]]["result"] for t in after] == [p["payload"] for p in payloads]
    assert Counter(_runs(runs)) == Counter({t["id"]: 1 for t in tasks})
