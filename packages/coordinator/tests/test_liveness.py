"""Dead workers, expired leases, coordinator restarts: no task stays stuck."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from taskmill.common.models import TaskStatus


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
