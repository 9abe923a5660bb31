"""Fencing through the coordinator's gRPC service: the lease a worker is told, and the tokens
its heartbeats and registrations learn are no longer its own."""

from __future__ import annotations

import grpc
import pytest

from taskmill.common.attempts import Held
from taskmill.common.models import TaskStatus
from taskmill.v1 import common_pb2, coordinator_pb2


def test_registration_names_the_lease(harness) -> None:
    coordinator = harness.coordinator(dead_after=7.5)
    worker = harness.worker(coordinator, register=False)
    assert worker.register().lease_seconds == 7.5


def test_a_worker_declared_dead_learns_none_of_its_tasks_is_its_own(harness) -> None:
    coordinator = harness.coordinator(dead_after=1.0, retry_backoff_base=60.0)
    worker = harness.worker(coordinator, capacity=2)
    worker.start_heartbeats(0.1)
    running, queued = harness.submit(2, max_attempts=1)
    harness.wait_until(lambda: len(worker.assignments) == 2)
    assert worker.report(str(running), TaskStatus.RUNNING) == 1
    tokens = sorted(a.token for a in worker.assignments)
    assert all(tokens)

    # Silent past the dead interval (paused, or cut off): declared dead, its tasks recovered.
    worker.stop_heartbeats()
    harness.wait_until(lambda: worker.worker_id not in harness.worker_ids(), what="the reap")
    with pytest.raises(grpc.RpcError) as error:
        worker.heartbeat()
    assert error.value.code() is grpc.StatusCode.NOT_FOUND
    # Registering again, it lists what it still holds, and learns both are stale.
    answer = worker.register()
    assert sorted(answer.stale_tokens) == tokens
    assert harness.task(running).status is TaskStatus.FAILED
    assert harness.task(queued).status in (TaskStatus.SCHEDULED, TaskStatus.DISPATCHED)


def test_a_heartbeat_names_a_task_given_back_meanwhile(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, capacity=1)
    [task_id] = harness.submit(1)
    harness.wait_until(lambda: worker.assignments)
    token = worker.assignments[0].token
    assert not worker.heartbeat().stale_tokens
    # The coordinator gave the task back (its AssignTasks answer came too late, say): the copy
    # the worker holds is no longer the claim, even if the task comes back to this worker.
    given = [Held(str(task_id), token)]
    assert harness.tasks.dispatch.release(worker.worker_id, given) == [task_id]
    held = [common_pb2.HeldTask(task_id=str(task_id), token=token)]
    answer = worker.stub.Heartbeat(
        coordinator_pb2.HeartbeatRequest(worker_id=worker.worker_id, free_slots=0, held=held)
    )
    assert list(answer.stale_tokens) == [token]


def test_a_worker_without_tokens_keeps_its_leases(harness) -> None:
    # A worker from before tokens, during a rolling upgrade: ids only, token 0.
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, capacity=1)
    [task_id] = harness.submit(1)
    harness.wait_until(lambda: worker.assignments)
    before = harness.task(task_id).lease_expires_at
    request = coordinator_pb2.HeartbeatRequest(
        worker_id=worker.worker_id, free_slots=0, running_task_ids=[str(task_id)]
    )
    harness.wait_until(
        lambda: (
            not worker.stub.Heartbeat(request).stale_tokens
            and harness.task(task_id).lease_expires_at > before
        ),
        what="the lease extended",
    )
    assert worker.report(str(task_id), TaskStatus.SUCCEEDED, result=1, token=0) == 1
