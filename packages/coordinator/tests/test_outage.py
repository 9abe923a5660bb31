"""A database outage longer than the dead interval is not the workers' death: they keep their
tasks. The coordinator gets a PostgreSQL server of its own, which the test stops and starts
again on the same data and port, so the other tests' server is never touched."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from taskmill.common.errors import DatabaseUnavailable
from taskmill.common.migrate import migrate
from taskmill.common.models import TaskStatus
from taskmill.dev.pgserver import PostgresServer
from taskmill.testing import throwaway_server

pytestmark = pytest.mark.timeout(120)

DEAD_AFTER = 2.0


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    with throwaway_server("taskmill-outage-") as server:
        yield server


@pytest.fixture
def database_url(server: PostgresServer) -> str:
    """The ``harness`` fixture's database: this server's own, migrated."""
    migrate(server.url)
    return server.url


def _reconnected(harness) -> bool:
    """Whether the test's own pool answers again (each connection from before the outage
    fails once, and is dropped)."""
    try:
        harness.worker_ids()
    except DatabaseUnavailable:
        return False
    return True


def test_workers_keep_their_tasks_across_a_database_outage(server, harness) -> None:
    coordinator = harness.coordinator(dead_after=DEAD_AFTER)
    harness.wait_until(lambda: coordinator.liveness.sweeps, what="the first grace over")
    worker = harness.worker(coordinator, capacity=2)
    worker.start_heartbeats(0.1)
    running, queued = harness.submit(2, max_attempts=1)
    harness.wait_until(lambda: len(worker.assignments) == 2)
    assert worker.report(str(running), TaskStatus.RUNNING) == 1
    other = harness.worker(coordinator, capacity=2)  # room for anything taken back
    other.start_heartbeats(0.1)

    # The workers heartbeat throughout; while the database is away the coordinator answers
    # UNAVAILABLE, and no heartbeat or lease extension is recorded. When it returns, every
    # heartbeat and lease it holds is older than the dead interval.
    data, port = server.data_dir, server.port
    checks, sweeps = coordinator.liveness.checks, coordinator.liveness.sweeps
    server.stop()
    stopped = time.monotonic()
    harness.wait_until(
        lambda: time.monotonic() - stopped > 2 * DEAD_AFTER, what="the database away"
    )
    # The workers' next heartbeats come only after the coordinator's first check on the
    # returned database, as those of workers whose retries back off may.
    for fake in (worker, other):
        fake.stop_heartbeats()
    server.start(data_dir=data, port=port)
    harness.wait_until(
        lambda: coordinator.liveness.checks > checks, what="a check after the outage"
    )
    for fake in (worker, other):
        fake.start_heartbeats(0.1)
    # The first check after the outage that may declare workers dead and recover leases.
    harness.wait_until(
        lambda: coordinator.liveness.sweeps > sweeps, what="a sweep after the outage"
    )

    harness.wait_until(lambda: _reconnected(harness), what="the test's pool reconnected")
    assert set(harness.worker_ids()) == {worker.worker_id, other.worker_id}
    for task_id, status in ((running, TaskStatus.RUNNING), (queued, TaskStatus.DISPATCHED)):
        task = harness.task(task_id)
        assert (task.status, task.worker_id, task.attempt) == (status, worker.worker_id, 1)
    assert other.assignments == []
    assert worker.report(str(running), TaskStatus.SUCCEEDED, result="ran") == 1
    assert worker.report(str(queued), TaskStatus.SUCCEEDED, result="queued") == 1
    assert [(t.status, t.attempt, t.result) for t in map(harness.task, (running, queued))] == [
        (TaskStatus.SUCCEEDED, 1, "ran"),
        (TaskStatus.SUCCEEDED, 1, "queued"),
    ]
