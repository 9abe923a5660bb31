"""Dead workers, expired leases, coordinator restarts: no task stays stuck."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from taskmill.common.models import TaskStatus
from taskmill.common.store import WorkerStore
from taskmill.testing import claim
from taskmill.v1 import coordinator_pb2


def test_a_silent_worker_is_removed_and_its_tasks_recovered(harness) -> None:
    coordinator = harness.coordinator(dead_after=1.0, retry_backoff_base=60.0)
    worker = harness.worker(coordinator, capacity=3)
    worker.start_heartbeats(0.1)
    lost = harness.submit(1, max_attempts=1)
    retried = harness.submit(1, max_attempts=2)
    unstarted = harness.submit(1)
    harness.wait_until(lambda: len(worker.assignments) == 3)
    for task_id in (*lost, *retried):
        assert worker.report(str(task_id), TaskStatus.RUNNING) == 1

    worker.stop_heartbeats()
    harness.wait_until(lambda: worker.worker_id not in harness.worker_ids(), what="the reap")
    harness.wait_until(lambda: harness.task(lost[0]).status is TaskStatus.FAILED)
    failed = harness.task(lost[0])
    assert failed.error is not None and failed.error.type == "worker_lost"
    again = harness.task(retried[0])
    assert (again.status, again.attempt, again.worker_id) == (TaskStatus.SCHEDULED, 1, None)
    assert again.error is not None and again.error.type == "worker_lost"
    back = harness.task(unstarted[0])
    assert (back.status, back.attempt, back.worker_id) == (TaskStatus.SCHEDULED, 0, None)

    # The worker learns it was forgotten, registers again and gets the unstarted task.
    with pytest.raises(grpc.RpcError) as error:
        worker.heartbeat()
    assert error.value.code() is grpc.StatusCode.NOT_FOUND
    worker.held.clear()
    worker.register()
    harness.wait_until(lambda: len(worker.assignments) == 4)
    assert worker.assignments[-1].task_id == str(unstarted[0])
    assert worker.assignments[-1].attempt == 1


def test_heartbeats_keep_a_worker_and_its_leases_alive(harness) -> None:
    coordinator = harness.coordinator(dead_after=1.0)
    worker = harness.worker(coordinator)
    worker.start_heartbeats(0.1)
    [task_id] = harness.submit(1)
    harness.wait_until(lambda: worker.assignments)
    worker.report(str(task_id), TaskStatus.RUNNING)
    first = harness.task(task_id).lease_expires_at
    # Leases extended for two more seconds: twice the dead interval has passed.
    harness.wait_until(
        lambda: harness.task(task_id).lease_expires_at > first + timedelta(seconds=2),
        what="leases extended",
    )
    assert harness.task(task_id).status is TaskStatus.RUNNING
    assert worker.worker_id in harness.worker_ids()


def test_an_expired_lease_is_recovered_by_another_coordinator(harness) -> None:
    first = harness.coordinator(dead_after=1.0)
    # A cluster that runs: its workers have been watched for a dead interval, so a coordinator
    # that joins it finds no grace to wait out.
    harness.wait_until(lambda: first.liveness.sweeps, what="the first coordinator's grace over")
    worker = harness.worker(first, capacity=2)
    worker.start_heartbeats(0.1)
    unstarted = harness.submit(1)
    running = harness.submit(1)
    harness.wait_until(lambda: len(worker.assignments) == 2)
    assert worker.report(str(running[0]), TaskStatus.RUNNING) == 1
    worker.stop_heartbeats()
    first.stop(grace=0)  # as if it crashed: nobody extends the leases any more

    # The second coordinator considers workers dead only after 30 s: the lease alone counts.
    second = harness.coordinator(dead_after=30.0)
    other = harness.worker(second, capacity=2)
    harness.wait_until(lambda: other.assignments, what="the recovered task re-dispatched")
    assert [(a.task_id, a.attempt) for a in other.assignments] == [(str(unstarted[0]), 1)]
    lost = harness.wait_until(
        lambda: (task := harness.task(running[0])).status is TaskStatus.FAILED and task
    )
    assert lost.error is not None and lost.error.type == "worker_lost"
    assert worker.worker_id in harness.worker_ids()


def test_a_restarted_coordinator_adopts_a_heartbeating_worker(harness) -> None:
    first = harness.coordinator()
    worker = harness.worker(first, capacity=2)
    first.stop(grace=0)
    second = harness.coordinator()
    worker.connect(f"127.0.0.1:{second.port}")
    worker.heartbeat()
    with harness.db.connection() as conn:
        row = conn.row("get_worker", id=worker.worker_id)
    assert row is not None and row["coordinator_id"] == second.coordinator_id
    [task_id] = harness.submit(1)
    harness.wait_until(lambda: worker.assignments)
    assert worker.assignments[0].task_id == str(task_id)


def test_workers_keep_their_tasks_across_a_coordinator_restart(harness) -> None:
    dead_after = 2.0
    first = harness.coordinator(dead_after=dead_after)
    harness.wait_until(lambda: first.liveness.sweeps, what="the first coordinator's grace over")
    worker = harness.worker(first, capacity=2)
    worker.start_heartbeats(0.1)
    running, queued = harness.submit(2)
    harness.wait_until(lambda: len(worker.assignments) == 2)
    assert worker.report(str(running), TaskStatus.RUNNING) == 1

    # The only coordinator is away for longer than the dead interval: the worker's heartbeats
    # fail meanwhile, its leases are not extended, and nobody watches.
    first.stop(grace=0)
    stopped = time.monotonic()
    harness.wait_until(
        lambda: time.monotonic() - stopped > 2 * dead_after, what="the coordinator away"
    )
    second = harness.coordinator(dead_after=dead_after)
    other = harness.worker(second, capacity=2)  # room for anything taken back
    other.start_heartbeats(0.1)
    # The worker finds the new coordinator only after its first check, as a worker whose
    # reconnection backs off may.
    harness.wait_until(lambda: second.liveness.checks, what="the new coordinator's first check")
    worker.connect(f"127.0.0.1:{second.port}")
    harness.wait_until(lambda: second.liveness.sweeps, what="the new coordinator's first sweep")

    assert set(harness.worker_ids()) == {worker.worker_id, other.worker_id}
    for task_id, status in ((running, TaskStatus.RUNNING), (queued, TaskStatus.DISPATCHED)):
        task = harness.task(task_id)
        assert (task.status, task.worker_id, task.attempt) == (status, worker.worker_id, 1)
    assert other.assignments == []
    assert worker.report(str(running), TaskStatus.SUCCEEDED, result="ran") == 1
    assert worker.report(str(queued), TaskStatus.SUCCEEDED, result="queued") == 1
    assert [(t.status, t.result) for t in map(harness.task, (running, queued))] == [
        (TaskStatus.SUCCEEDED, "ran"),
        (TaskStatus.SUCCEEDED, "queued"),
    ]


def test_a_deregistering_worker_takes_back_only_its_own_tasks(harness) -> None:
    # Its first check ever starts a grace of the dead interval: the liveness check recovers
    # nothing during this test.
    coordinator = harness.coordinator(dead_after=30.0)
    harness.wait_until(lambda: coordinator.liveness.checks, what="the first check")
    [elsewhere] = harness.submit(1)
    [task] = claim(harness.tasks, ["w-elsewhere"], lease_seconds=0.01)
    assert task.id == elsewhere and task.lease_expires_at is not None
    harness.wait_until(
        lambda: datetime.now(UTC) > task.lease_expires_at + timedelta(seconds=1),
        what="the lease expired",
    )
    leaving = harness.worker(coordinator)
    leaving.stub.DeregisterWorker(
        coordinator_pb2.DeregisterWorkerRequest(worker_id=leaving.worker_id)
    )
    assert leaving.worker_id not in harness.worker_ids()
    # An expired lease is the liveness check's to recover, which holds it back during a grace.
    after = harness.task(elsewhere)
    assert (after.status, after.worker_id) == (TaskStatus.DISPATCHED, "w-elsewhere")


def test_only_a_break_in_every_coordinators_checks_starts_a_grace(harness) -> None:
    watch = WorkerStore(harness.db).watch
    assert not watch(dead_after=0.2, lapse=60.0)  # the first check ever
    harness.wait_until(lambda: watch(dead_after=0.2, lapse=60.0), what="the grace over")
    # Checks that follow one another, whoever makes them, start no grace, even with a longer
    # dead interval: the workers were watched all along.
    assert watch(dead_after=60.0, lapse=60.0)
    last = time.monotonic()
    harness.wait_until(lambda: time.monotonic() - last > 0.5, what="a break")
    assert not watch(dead_after=60.0, lapse=0.5)
    # A shorter grace asked for later does not cut it short.
    assert not watch(dead_after=0.0, lapse=0.0)
