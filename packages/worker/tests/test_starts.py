"""Starts recorded before they happen (``starts.py``): a task with no retry left runs only once
its coordinator has recorded its start under its token, so a worker killed at any moment
leaves no task that ran looking unstarted, for another worker to run again."""

from __future__ import annotations

import grpc
from worker_test_handlers import NOTED
from worker_testkit import STATUS, FakeCoordinator, assign_request, assignment, wait_for


def _fail_reports(coordinator: FakeCoordinator, failing: bool) -> None:
    with coordinator.lock:
        coordinator.fail_reports[:] = [grpc.StatusCode.UNAVAILABLE] * 1000 if failing else []


def test_a_task_without_retries_waits_for_its_start_to_be_recorded(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(record_starts=True)
    worker_id = coordinator.wait_registered()
    _fail_reports(coordinator, True)
    task = assignment("test.note", max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    # The start's report is sent, and sent again, while nothing runs.
    wait_for(lambda: coordinator.report_calls > 3, what="the running report retried")
    assert task.task_id not in NOTED
    _fail_reports(coordinator, False)
    final = coordinator.wait_final(task.task_id)
    assert task.task_id in NOTED
    assert coordinator.statuses(task.task_id) == ["running", "succeeded"]
    running = coordinator.report(task.task_id, "running")
    assert running is not None and running.token == final.token == task.token
    # The final report carries when the handler started, after its start was recorded.
    assert final.HasField("started_at")
    assert final.started_at.ToNanoseconds() >= running.occurred_at.ToNanoseconds()


def test_a_start_answered_stale_is_dropped_unrun(coordinator, start_worker, worker_stub):
    worker = start_worker(concurrency=1, record_starts=True)
    worker_id = coordinator.wait_registered()
    stale = assignment("test.note", max_attempts=1)
    with coordinator.lock:
        coordinator.refuse_starts.add(stale.token)  # given to another worker meanwhile
    after = assignment("test.note", max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(worker_id, stale, after))
    coordinator.wait_final(after.task_id)  # the one slot went on to the next task
    assert after.task_id in NOTED
    assert stale.task_id not in NOTED
    assert [STATUS[r.status] for r in coordinator.reports_of(stale.task_id)][-1] == "cancelled"
    assert not worker.executor.held()


def test_by_default_a_task_starts_without_its_start_recorded(
    coordinator, start_worker, worker_stub
):
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    _fail_reports(coordinator, True)
    task = assignment("test.note", max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    wait_for(lambda: task.task_id in NOTED, what="the task to run while reports fail")


def test_a_task_with_a_retry_left_starts_at_once(coordinator, start_worker, worker_stub):
    # A lost worker's task is retried anyway: its start need not be recorded first.
    worker = start_worker(record_starts=True)
    worker_id = coordinator.wait_registered()
    _fail_reports(coordinator, True)
    task = assignment("test.note", max_attempts=2)
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    wait_for(lambda: task.task_id in NOTED, what="the task to run while reports fail")
    _fail_reports(coordinator, False)
    coordinator.wait_final(task.task_id)
    assert coordinator.statuses(task.task_id) == ["running", "succeeded"]
