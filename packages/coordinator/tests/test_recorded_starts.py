"""Starts recorded for at most once: a claim for a worker's idle slots records the start of the
tasks it claims, a worker records the starts of the tasks it queued (``RecordStarts``), and a
task that may have started is never given back as unstarted."""

from __future__ import annotations

import grpc
import pytest

from taskmill.common.models import TaskStatus
from taskmill.v1 import coordinator_pb2


def test_a_claim_for_idle_slots_records_their_starts(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, capacity=4, concurrency=2)
    [first] = harness.submit(1)
    harness.wait_until(lambda: len(worker.assignments) == 1)
    assert worker.assignments[0].start_recorded
    assert harness.task(first).status is TaskStatus.RUNNING
    assert harness.task(first).started_at is not None
    # Two slots, one busy: of the next three, one more fills a slot, two queue unstarted.
    rest = harness.submit(3)
    harness.wait_until(lambda: len(worker.assignments) == 4)
    assert sum(a.start_recorded for a in worker.assignments) == 2
    statuses = sorted(str(harness.task(task_id).status) for task_id in rest)
    assert statuses == ["dispatched", "dispatched", "running"]


def test_nothing_starts_in_the_claim_of_a_worker_that_named_no_slots(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, capacity=4)  # an older worker: concurrency unknown
    [task_id] = harness.submit(1)
    harness.wait_until(lambda: worker.assignments)
    assert not worker.assignments[0].start_recorded
    assert harness.task(task_id).status is TaskStatus.DISPATCHED


@pytest.mark.parametrize(
    "answer", [grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED]
)
def test_a_started_task_the_worker_declined_goes_back_unstarted(harness, answer) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, capacity=2, concurrency=2)
    worker.refuse = answer  # it took none of them: draining, full, not its id
    [task_id] = harness.submit(1)
    harness.wait_until(lambda: worker.refusals == 1)
    harness.wait_until(lambda: harness.task(task_id).status is TaskStatus.SCHEDULED)
    task = harness.task(task_id)
    assert (task.attempt, task.started_at, task.worker_id) == (0, None, None)


def test_a_started_task_whose_assignment_may_have_arrived_stays_the_workers(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, capacity=2, concurrency=1, register=False)
    worker.refuse = grpc.StatusCode.UNAVAILABLE  # as a transport failure: it may have arrived
    tasks = harness.submit(2)
    worker.register()  # one claim of both: one fills the idle slot, one queues
    harness.wait_until(lambda: worker.refusals == 1)
    # The queued one goes back; the started one is not given back (had the worker started it,
    # another would run it too): it stays the worker's, and its lease decides.
    harness.wait_until(
        lambda: TaskStatus.SCHEDULED in {harness.task(t).status for t in tasks},
        what="the unstarted task given back",
    )
    statuses = sorted(str(harness.task(t).status) for t in tasks)
    assert statuses == ["running", "scheduled"]


def test_record_starts_keeps_the_workers_tokens_and_refuses_an_unknown_worker(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, capacity=2)
    worker.stub.RecordStarts(
        coordinator_pb2.RecordStartsRequest(worker_id=worker.worker_id, tokens=[7, 9])
    )
    with harness.db.connection() as conn:
        [[tokens]] = conn.execute(
            "SELECT started_tokens FROM workers WHERE id = :id", id=worker.worker_id
        )
    assert sorted(tokens) == [7, 9]
    with pytest.raises(grpc.RpcError) as error:
        worker.stub.RecordStarts(
            coordinator_pb2.RecordStartsRequest(worker_id="w-gone", tokens=[1])
        )
    assert error.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_lost_workers_recorded_start_fails_rather_than_runs_again(harness) -> None:
    coordinator = harness.coordinator(dead_after=1.0, retry_backoff_base=60.0)
    worker = harness.worker(coordinator, capacity=2)
    worker.start_heartbeats(0.1)
    started, queued = harness.submit(2, max_attempts=1)
    harness.wait_until(lambda: len(worker.assignments) == 2)
    token = {a.task_id: a.token for a in worker.assignments}[str(started)]
    worker.stub.RecordStarts(
        coordinator_pb2.RecordStartsRequest(worker_id=worker.worker_id, tokens=[token])
    )
    worker.stop_heartbeats()  # killed: its running report never sent
    harness.wait_until(lambda: harness.task(started).status is TaskStatus.FAILED, what="recovery")
    assert harness.task(started).error.type == "worker_lost"
    harness.wait_until(lambda: harness.task(queued).status is not TaskStatus.DISPATCHED)
    assert harness.task(queued).attempt == 0  # never started: back in line, no attempt used
