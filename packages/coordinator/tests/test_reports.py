"""Status reports, cancellation and deregistration through the real CoordinatorService."""

from __future__ import annotations

import logging
import uuid

import pytest

from taskmill.common.models import TaskError, TaskStatus
from taskmill.testing.wire import status_report
from taskmill.v1 import common_pb2, coordinator_pb2


def _dispatched(harness, worker, count: int = 1, **fields) -> list[uuid.UUID]:
    before = len(worker.assignments)
    ids = harness.submit(count, **fields)
    harness.wait_until(lambda: len(worker.assignments) == before + count)
    return ids


def test_reports_are_applied_and_duplicates_change_nothing(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator)
    [task_id] = _dispatched(harness, worker)

    assert worker.report(str(task_id), TaskStatus.RUNNING) == 1
    assert harness.task(task_id).status is TaskStatus.RUNNING
    assert worker.report(str(task_id), TaskStatus.SUCCEEDED, result={"ok": True}) == 1
    done = harness.task(task_id)
    assert (done.status, done.result) == (TaskStatus.SUCCEEDED, {"ok": True})

    assert worker.report(str(task_id), TaskStatus.SUCCEEDED, result="again") == 0
    assert worker.report(str(task_id), TaskStatus.FAILED, error=TaskError("E", "late")) == 0
    assert worker.report(str(task_id), TaskStatus.RUNNING) == 0
    assert harness.task(task_id) == done


def test_a_report_for_another_attempt_is_ignored(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator)
    [task_id] = _dispatched(harness, worker)
    assert worker.report(str(task_id), TaskStatus.SUCCEEDED, attempt=2, result=1) == 0
    assert harness.task(task_id).status is TaskStatus.DISPATCHED


def test_a_failure_is_recorded_with_its_error(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator)
    [task_id] = _dispatched(harness, worker)
    error = TaskError("ValueError", "bad input", "Traceback ...")
    assert worker.report(str(task_id), TaskStatus.FAILED, error=error) == 1
    task = harness.task(task_id)
    assert (task.status, task.error) == (TaskStatus.FAILED, error)


def test_a_failure_with_attempts_left_is_retried_after_backoff(harness) -> None:
    coordinator = harness.coordinator(retry_backoff_base=0.2, retry_backoff_max=0.2)
    worker = harness.worker(coordinator)
    [task_id] = _dispatched(harness, worker, max_attempts=2)
    assert worker.report(str(task_id), TaskStatus.FAILED, error=TaskError("E", "once")) == 1
    retried = harness.task(task_id)
    assert (retried.status, retried.attempt) == (TaskStatus.SCHEDULED, 1)
    harness.wait_until(lambda: len(worker.assignments) == 2)
    assert [a.attempt for a in worker.assignments] == [1, 2]
    task = harness.task(task_id)
    assert task.dispatched_at is not None and task.dispatched_at >= retried.scheduled_at


def test_reports_apply_only_to_the_reporting_workers_tasks(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator)
    [task_id] = _dispatched(harness, worker)
    # A task given back after an assignment timeout keeps its attempt number: a late report
    # from another worker must not finish it.
    applied = worker.report(str(task_id), TaskStatus.SUCCEEDED, result=7, worker_id="w-gone")
    assert applied == 0
    assert harness.task(task_id).status is TaskStatus.DISPATCHED
    assert worker.report(str(task_id), TaskStatus.SUCCEEDED, result=8) == 1
    assert harness.task(task_id).result == 8


def test_a_rejected_task_is_given_back_and_dispatched_again(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, capacity=1)
    [task_id] = _dispatched(harness, worker)
    assert worker.report(str(task_id), None) == 1
    harness.wait_until(lambda: len(worker.assignments) == 2)
    assert [(a.task_id, a.attempt) for a in worker.assignments] == [(str(task_id), 1)] * 2
    assert harness.task(task_id).attempt == 1


def test_a_cancel_request_reaches_the_worker(harness) -> None:
    coordinator = harness.coordinator()
    harness.wait_until(coordinator.listener.listening.is_set)
    worker = harness.worker(coordinator)
    [task_id] = _dispatched(harness, worker)
    worker.report(str(task_id), TaskStatus.RUNNING)
    harness.tasks.tasks.cancel(task_id)
    harness.wait_until(lambda: worker.cancels == [str(task_id)], what="CancelTask")
    # The heartbeat repeats the request, in case the call was lost.
    assert list(worker.heartbeat().cancel_task_ids) == [str(task_id)]
    assert worker.report(str(task_id), TaskStatus.CANCELLED) == 1
    assert harness.task(task_id).status is TaskStatus.CANCELLED
    assert list(worker.heartbeat().cancel_task_ids) == []


def test_deregistering_removes_the_worker_and_returns_its_unstarted_tasks(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, capacity=2)
    ids = _dispatched(harness, worker, 2)
    worker.report(str(ids[0]), TaskStatus.SUCCEEDED, result=None)
    worker.stub.DeregisterWorker(
        coordinator_pb2.DeregisterWorkerRequest(worker_id=worker.worker_id)
    )
    assert worker.worker_id not in harness.worker_ids()
    task = harness.task(ids[1])
    assert (task.status, task.attempt, task.worker_id) == (TaskStatus.SCHEDULED, 0, None)
    assert harness.task(ids[0]).status is TaskStatus.SUCCEEDED


def test_malformed_reports_are_refused_and_the_rest_of_the_batch_applied(
    harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="taskmill.coordinator")
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, capacity=4)
    a, b, c, d = (str(task_id) for task_id in _dispatched(harness, worker, 4))
    not_json = status_report(b, 1, TaskStatus.SUCCEEDED)
    not_json.result_json = '{"unclosed": '
    reports = [
        status_report(a, 1, TaskStatus.SUCCEEDED, result={"ok": 1}),
        not_json,
        status_report("not-a-task-id", 1, TaskStatus.SUCCEEDED, result=2),
        status_report("0" * 31, 1, None),  # a rejection with a malformed id
        # Any form of a uuid is read, as it always was.
        status_report(c.upper(), 1, TaskStatus.SUCCEEDED, result=3),
        status_report(uuid.UUID(d).urn, 1, None),
    ]

    response = worker.stub.ReportTaskStatuses(
        coordinator_pb2.ReportTaskStatusesRequest(worker_id=worker.worker_id, reports=reports)
    )

    assert response.applied == 3  # a and c succeeded, d given back
    assert harness.task(a).result == {"ok": 1}
    assert harness.task(b).error.type == "report_refused"  # see the test below
    assert harness.task(c).result == 3
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "not-a-task-id" in warnings and "0" * 31 in warnings
    assert f"succeeded report of task {b}" in warnings


def test_a_report_the_database_refuses_fails_its_task_for_good(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, capacity=4)
    nul, not_json, nul_error, other = (
        str(task_id) for task_id in _dispatched(harness, worker, 4, max_attempts=3)
    )
    reports = [
        status_report(nul, 1, TaskStatus.RUNNING),
        status_report(nul, 1, TaskStatus.SUCCEEDED),
        status_report(not_json, 1, TaskStatus.SUCCEEDED),
        status_report(nul_error, 1, TaskStatus.FAILED, error=TaskError("E", "a\x00b")),
    ]
    reports[1].result_json = '"a\\u0000b"'  # what a worker sends for "a\x00b"
    reports[2].result_json = '{"unclosed": '
    # Another worker's report of a task that is not its own changes nothing, refused or not.
    intruder = harness.worker(coordinator)
    foreign = status_report(other, 1, TaskStatus.SUCCEEDED)
    foreign.result_json = '"a\\u0000b"'

    worker.stub.ReportTaskStatuses(
        coordinator_pb2.ReportTaskStatusesRequest(worker_id=worker.worker_id, reports=reports)
    )
    intruder.stub.ReportTaskStatuses(
        coordinator_pb2.ReportTaskStatusesRequest(worker_id=intruder.worker_id, reports=[foreign])
    )

    reasons = {
        nul: "unsupported Unicode escape sequence",
        not_json: "invalid input syntax for type json",
        nul_error: "unsupported Unicode escape sequence",
    }
    for task_id, reason in reasons.items():
        task = harness.task(task_id)
        # Failed at once, though attempts are left: the same output would be refused again.
        assert (task.status, task.attempt) == (TaskStatus.FAILED, 1), task_id
        assert task.error is not None and task.error.type == "report_refused"
        assert reason in task.error.message, task.error
        assert task.finished_at is not None
    assert harness.task(nul).started_at is not None  # its running report was applied
    assert harness.task(other).status is TaskStatus.DISPATCHED
    # A later report of a failed task changes nothing.
    assert worker.report(nul, TaskStatus.SUCCEEDED, result="late") == 0


def test_a_report_without_a_time_is_applied_now(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator)
    [task_id] = _dispatched(harness, worker)
    report = common_pb2.StatusReport(
        task_id=str(task_id), attempt=1, status=common_pb2.TASK_STATUS_SUCCEEDED
    )
    response = worker.stub.ReportTaskStatuses(
        coordinator_pb2.ReportTaskStatusesRequest(worker_id=worker.worker_id, reports=[report])
    )
    assert response.applied == 1
    task = harness.task(task_id)
    assert task.result is None
    assert task.dispatched_at is not None and task.finished_at is not None
    assert task.finished_at >= task.dispatched_at
