"""Coordinator trouble: failed report calls, a coordinator that is down, one that forgot us."""

from __future__ import annotations

import grpc
import pytest
from worker_testkit import FakeCoordinator, assign_request, assignment, held, held_ids, wait_for

from taskmill.common.grpcutil import GrpcSecurity


def test_reports_are_retried_until_acknowledged(coordinator, start_worker, worker_stub):
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    with coordinator.lock:
        coordinator.fail_reports[:] = [
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.INTERNAL,
        ]
    tasks = [assignment("echo", n) for n in range(3)]
    worker_stub(worker).AssignTasks(assign_request(worker_id, *tasks))
    for task in tasks:
        coordinator.wait_final(task.task_id)
    assert coordinator.report_calls >= 4
    for task in tasks:  # each report arrived once, in order
        assert coordinator.statuses(task.task_id) == ["running", "succeeded"]


def test_heartbeats_list_held_tasks_and_free_slots(coordinator, start_worker, worker_stub):
    worker = start_worker(concurrency=2, queue_size=1)
    worker_id = coordinator.wait_registered()
    tasks = [assignment("sleep", {"seconds": 60}) for _ in range(3)]
    worker_stub(worker).AssignTasks(assign_request(worker_id, *tasks))

    def listed() -> bool:
        beat = coordinator.last_heartbeat()
        return held(beat) == {t.task_id: t.token for t in tasks} and beat.free_slots == 0

    wait_for(listed, what="a heartbeat with the three held tasks and their tokens")
    assert list(coordinator.last_heartbeat().running_task_ids) == []  # for old workers only


def test_worker_registers_again_when_forgotten(coordinator, start_worker, worker_stub):
    worker = start_worker()
    first_id = coordinator.wait_registered(1)
    coordinator.forget_all()
    second_id = coordinator.wait_registered(2)
    assert second_id != first_id
    wait_for(lambda: worker.worker_id == second_id, what="the worker to adopt its new id")
    stub = worker_stub(worker)
    with pytest.raises(grpc.RpcError) as stale:
        stub.AssignTasks(assign_request(first_id, assignment("echo", 1)))
    assert stale.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    task = assignment("echo", "after")
    stub.AssignTasks(assign_request(second_id, task))
    coordinator.wait_final(task.task_id)
    wait_for(
        lambda: coordinator.last_heartbeat().worker_id == second_id, what="heartbeats as new id"
    )


def test_nothing_is_lost_while_the_coordinator_is_down(coordinator, start_worker, worker_stub):
    worker = start_worker()
    old_id = coordinator.wait_registered()
    port = coordinator.port
    coordinator.stop()
    # With a retry left, a task starts without its start recorded first (test_starts.py).
    tasks = [assignment("echo", n, max_attempts=2) for n in range(4)]
    worker_stub(worker).AssignTasks(assign_request(old_id, *tasks))
    wait_for(lambda: worker.reporter.pending() == {(t.task_id, t.token) for t in tasks})

    restarted = FakeCoordinator().start(port)  # a new coordinator that never heard of us
    try:
        new_id = restarted.wait_registered()
        assert new_id != old_id
        for task in tasks:
            restarted.wait_final(task.task_id)
            assert restarted.statuses(task.task_id) == ["running", "succeeded"]
        assert {worker_id for worker_id, _ in restarted.reports} == {new_id}
        beats = restarted.heartbeat_count()
        wait_for(lambda: restarted.heartbeat_count() > beats + 1, what="heartbeats to go on")
    finally:
        restarted.stop()


def test_a_held_task_stays_listed_until_its_outcome_is_acknowledged(
    coordinator, start_worker, worker_stub
):
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    with coordinator.lock:
        coordinator.fail_reports[:] = [grpc.StatusCode.UNAVAILABLE] * 1000
    task = assignment("echo", 1, max_attempts=2)  # starts without a recorded start
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    wait_for(lambda: not worker.executor.held() and coordinator.report_calls > 1)
    # Finished, but the coordinator does not know yet: its lease must keep being extended.
    assert held(coordinator.next_heartbeat()) == {task.task_id: task.token}
    with coordinator.lock:
        coordinator.fail_reports.clear()
    coordinator.wait_final(task.task_id)
    wait_for(
        lambda: task.task_id not in held_ids(coordinator.last_heartbeat()),
        what="heartbeats without the acknowledged task",
    )


def test_cluster_token_is_required_and_sent(start_worker, worker_stub):
    secured = FakeCoordinator(token="s3cret").start()
    try:
        worker = start_worker(
            coordinator=secured.address, security=GrpcSecurity(cluster_token="s3cret")
        )
        worker_id = secured.wait_registered()  # the worker sent the token
        with pytest.raises(grpc.RpcError) as refused:
            worker_stub(worker).AssignTasks(assign_request(worker_id, assignment("echo", 1)))
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        secured.stop()
