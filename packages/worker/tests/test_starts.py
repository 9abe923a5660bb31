"""Starts recorded before they happen (``starts.py``): a task with no retry left runs only once
its start is recorded, by the claim or in the worker's started tokens, so a worker killed at any
moment leaves no task that ran looking unstarted, for another worker to run again."""

from __future__ import annotations

import grpc
from worker_test_handlers import NOTED
from worker_testkit import STATUS, FakeCoordinator, assign_request, assignment, wait_for


def _hold_starts(coordinator: FakeCoordinator, holding: bool) -> None:
    with coordinator.lock:
        coordinator.hold_starts = holding


def _fail_reports(coordinator: FakeCoordinator, failing: bool) -> None:
    with coordinator.lock:
        coordinator.fail_reports[:] = [grpc.StatusCode.UNAVAILABLE] * 1000 if failing else []


def test_a_task_without_retries_waits_for_its_start_to_be_recorded(
    coordinator, start_worker, worker_stub
):
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    _hold_starts(coordinator, True)
    task = assignment("test.note", max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    # Asked, and asked again, while nothing runs.
    wait_for(lambda: coordinator.start_calls >= 3, what="the start asked again")
    assert task.task_id not in NOTED
    _hold_starts(coordinator, False)
    final = coordinator.wait_final(task.task_id)
    assert task.task_id in NOTED
    assert task.token in coordinator.recorded()
    assert coordinator.statuses(task.task_id) == ["running", "succeeded"]
    assert final.token == task.token
    assert final.HasField("started_at")  # when the handler began, not when it was asked


def test_each_call_names_every_start_the_database_may_not_show(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(concurrency=1)
    worker_id = coordinator.wait_registered()
    _fail_reports(coordinator, True)  # the first task's reports stay unacknowledged
    first = assignment("test.note", max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(worker_id, first))
    wait_for(lambda: first.task_id in NOTED, what="the first task to run")
    wait_for(lambda: not worker.executor.held(), what="the first task settled")
    second = assignment("test.note", max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(worker_id, second))
    wait_for(lambda: second.task_id in NOTED, what="the second task to run")
    # The second call still names the first task: it ran, and its row does not show it yet.
    with coordinator.lock:
        last = coordinator.starts[-1][1]
    assert {first.token, second.token} <= set(last)
    _fail_reports(coordinator, False)
    coordinator.wait_final(second.task_id)
    third = assignment("test.note", max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(worker_id, third))
    coordinator.wait_final(third.task_id)
    # Once their reports landed, the set no longer names them.
    with coordinator.lock:
        assert coordinator.starts[-1][1] == [third.token]


def test_short_tasks_have_their_starts_asked_ahead_of_the_slot(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(concurrency=1)
    worker_id = coordinator.wait_registered()
    for _ in range(3):  # short tasks: a wait for each start would be a large part of each
        quick = assignment("test.note", max_attempts=1)
        worker_stub(worker).AssignTasks(assign_request(worker_id, quick))
        coordinator.wait_final(quick.task_id)
    long = assignment("test.stubborn_sleep", {"seconds": 1.0}, max_attempts=1)
    after = assignment("test.note", max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(worker_id, long, after))
    # Asked while the one slot is still busy with the first task.
    wait_for(lambda: after.token in coordinator.recorded(), what="the queued start asked")
    assert coordinator.statuses(long.task_id)[-1:] != ["succeeded"]
    coordinator.wait_final(after.task_id)
    assert after.task_id in NOTED


def test_a_start_recorded_by_the_claim_runs_at_once(coordinator, start_worker, worker_stub):
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    _hold_starts(coordinator, True)
    task = assignment("test.note", max_attempts=1, start_recorded=True)
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    final = coordinator.wait_final(task.task_id)
    assert task.task_id in NOTED
    # Running in the database since the claim: no running report of its own (the fake records
    # the start the final report carries as a folded one), nor a start to record.
    assert coordinator.folded == 1
    assert final.HasField("started_at")
    assert task.token not in coordinator.recorded()


def test_a_refused_start_is_given_back_unrun(coordinator, start_worker, worker_stub):
    worker = start_worker(concurrency=1)
    worker_id = coordinator.wait_registered()
    # Registering sends the live tokens once (the asker's resend): the failure is for the ask.
    wait_for(lambda: coordinator.start_calls > 0, what="the tokens sent on registering")
    with coordinator.lock:
        coordinator.fail_starts.append(grpc.StatusCode.INVALID_ARGUMENT)
    refused = assignment("test.note", max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(worker_id, refused))
    wait_for(lambda: coordinator.reports_of(refused.task_id), what="the give-back")
    assert [STATUS[r.status] for r in coordinator.reports_of(refused.task_id)] == ["rejected"]
    assert refused.task_id not in NOTED
    after = assignment("test.note", max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(worker_id, after))
    coordinator.wait_final(after.task_id)  # the slot went on to the next task
    assert not worker.executor.held()


def test_starts_asked_of_a_forgotten_worker_are_asked_again_under_its_new_id(
    coordinator, start_worker, worker_stub
):
    worker = start_worker()
    first_id = coordinator.wait_registered()
    coordinator.forget_all()  # as a restarted coordinator: RecordStarts answers NOT_FOUND
    task = assignment("test.note", max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(first_id, task))
    second_id = coordinator.wait_registered(2)
    coordinator.wait_final(task.task_id)
    with coordinator.lock:
        assert any(
            worker_id == second_id and task.token in t for worker_id, t in coordinator.starts
        )


def test_a_coordinator_without_recorded_starts_lets_tasks_run(
    coordinator, start_worker, worker_stub
):
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    with coordinator.lock:
        coordinator.fail_starts.append(grpc.StatusCode.UNIMPLEMENTED)
    task = assignment("test.note", max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    coordinator.wait_final(task.task_id)
    assert task.task_id in NOTED


def test_without_recorded_starts_a_task_starts_at_once(coordinator, start_worker, worker_stub):
    worker = start_worker(record_starts=False)
    worker_id = coordinator.wait_registered()
    _hold_starts(coordinator, True)
    task = assignment("test.note", max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    wait_for(lambda: task.task_id in NOTED, what="the task to run while starts fail")


def test_a_task_with_a_retry_left_starts_at_once(coordinator, start_worker, worker_stub):
    # A lost worker's task is retried anyway: its start need not be recorded first.
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    _hold_starts(coordinator, True)
    task = assignment("test.note", max_attempts=2)
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    wait_for(lambda: task.task_id in NOTED, what="the task to run while starts fail")
    coordinator.wait_final(task.task_id)
    assert coordinator.statuses(task.task_id) == ["running", "succeeded"]


def test_a_drain_gives_back_a_task_still_waiting_for_its_start(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(concurrency=1, grace_period=30.0)
    worker_id = coordinator.wait_registered()
    _hold_starts(coordinator, True)
    task = assignment("test.note", max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    # Asked, and asked again: by then the one slot has long taken it, and waits.
    wait_for(lambda: coordinator.start_calls >= 2, what="the start asked again")
    # It never ran: given back at once, not failed after the grace as a running task would be.
    worker.executor.drain(grace=30.0)
    assert task.task_id not in NOTED
    _hold_starts(coordinator, False)  # the answer that comes now must not start it
    wait_for(lambda: coordinator.reports_of(task.task_id), what="the give-back")
    assert [STATUS[r.status] for r in coordinator.reports_of(task.task_id)] == ["rejected"]
    assert task.task_id not in NOTED


def test_a_worker_registered_again_records_its_started_tasks_under_its_new_id(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(concurrency=1)
    first_id = coordinator.wait_registered()
    task = assignment("test.stubborn_sleep", {"seconds": 3.0}, max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(first_id, task))
    wait_for(lambda: task.token in coordinator.recorded(), what="the start recorded")
    coordinator.forget_all()  # its row is gone, the task is still its own: a new row, empty
    second_id = coordinator.wait_registered(2)
    wait_for(
        lambda: any(w == second_id and task.token in t for w, t in list(coordinator.starts)),
        what="the running task's start recorded under the new id, with nothing new to ask",
    )


def test_a_start_refused_as_no_longer_the_workers_is_dropped_unrun(
    coordinator, start_worker, worker_stub
):
    # An assignment whose answer came too late: the coordinator gave the task back, and
    # refuses its start, so the copy that arrived anyway never runs.
    worker = start_worker(concurrency=1)
    worker_id = coordinator.wait_registered()
    stale = assignment("test.note", max_attempts=1)
    with coordinator.lock:
        coordinator.refuse_starts.add(stale.token)
    after = assignment("test.note", max_attempts=1)
    worker_stub(worker).AssignTasks(assign_request(worker_id, stale, after))
    coordinator.wait_final(after.task_id)  # the one slot went on to the next task
    assert after.task_id in NOTED
    assert stale.task_id not in NOTED
    assert [STATUS[r.status] for r in coordinator.reports_of(stale.task_id)] == ["rejected"]
    assert not worker.executor.held()
