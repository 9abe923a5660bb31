"""Dispatch against a real coordinator and fake workers: spread, room, failures, wake-ups."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections import Counter

import grpc
import pytest

from taskmill.common.models import TaskStatus
from taskmill.common.store import Share
from taskmill.coordinator.listener import Listener
from taskmill.testing import admin_connection


def test_register_records_the_worker(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, capacity=3, register=False)
    response = worker.register()
    assert response.heartbeat_interval_seconds == 1.0
    with harness.db.connection() as conn:
        row = conn.row("get_worker", id=response.worker_id)
    assert row is not None
    assert (row["address"], row["capacity"], row["hostname"]) == (worker.address, 3, "fake")
    assert row["coordinator_id"] == coordinator.coordinator_id
    assert list(row["handlers"]) == ["echo", "sleep"]
    assert (list(row["queues"]), list(row["queue_weights"])) == (["default"], [1])


def test_heartbeat_of_an_unknown_worker_is_not_found(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, register=False)
    worker.worker_id = "w-nobody"
    with pytest.raises(grpc.RpcError) as error:
        worker.heartbeat()
    assert error.value.code() is grpc.StatusCode.NOT_FOUND


def test_tasks_submitted_together_spread_evenly(harness) -> None:
    coordinator = harness.coordinator()
    workers = [harness.worker(coordinator, capacity=4) for _ in range(3)]
    ids = harness.submit(9)
    harness.wait_until(lambda: sum(len(w.assignments) for w in workers) == 9, what="9 assigned")
    assert [len(w.assignments) for w in workers] == [3, 3, 3]
    assert sorted(a for w in workers for a in w.task_ids()) == sorted(map(str, ids))
    for worker in workers:
        for task_id in worker.task_ids():
            task = harness.task(task_id)
            assert (task.status, task.worker_id, task.attempt) == (
                TaskStatus.DISPATCHED,
                worker.worker_id,
                1,
            )


def test_single_tasks_rotate_over_the_workers(harness) -> None:
    coordinator = harness.coordinator()
    workers = [harness.worker(coordinator, capacity=4) for _ in range(3)]
    for count in range(1, 7):
        harness.submit(1)
        harness.wait_until(lambda n=count: sum(len(w.assignments) for w in workers) == n)
    assert [len(w.assignments) for w in workers] == [2, 2, 2]


def test_a_worker_never_gets_more_than_its_free_slots(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, capacity=2)
    ids = harness.submit(5)
    harness.wait_until(lambda: len(worker.assignments) == 2)
    assert Counter(harness.task(i).status for i in ids) == {
        TaskStatus.DISPATCHED: 2,
        TaskStatus.SCHEDULED: 3,
    }
    # A final report frees a slot: the next task follows without waiting for a heartbeat.
    worker.report(worker.task_ids()[0], TaskStatus.SUCCEEDED, result=1)
    harness.wait_until(lambda: len(worker.assignments) == 3)
    worker.heartbeat()
    assert len(worker.assignments) == 3
    assert worker.overfilled == 0


def test_heartbeat_free_slots_limit_dispatch(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, capacity=4)
    worker.heartbeat(free_slots=1)
    harness.submit(3)
    harness.wait_until(lambda: len(worker.assignments) == 1)
    worker.heartbeat(free_slots=2)
    harness.wait_until(lambda: len(worker.assignments) == 3)
    assert worker.overfilled == 0


@pytest.mark.parametrize(
    "failure", [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, "down"]
)
def test_failed_assignment_returns_the_task_and_it_goes_elsewhere(
    harness, failure, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskmill.coordinator.dispatch")
    coordinator = harness.coordinator()
    refusing = harness.worker(coordinator)
    if failure == "down":
        refusing.server.stop(0).wait()
    else:
        refusing.refuse = failure
    [task_id] = harness.submit(1)
    # The give-back is logged once the task is released; only then check the task.
    harness.wait_until(
        lambda: any("did not take" in r.getMessage() for r in caplog.records),
        what="the assignment to fail",
    )
    harness.wait_until(lambda: harness.task(task_id).status is TaskStatus.SCHEDULED)
    assert failure == "down" or refusing.refusals == 1
    task = harness.task(task_id)
    assert (task.attempt, task.worker_id, task.dispatched_at) == (0, None, None)

    other = harness.worker(coordinator)
    harness.wait_until(lambda: other.assignments)
    assert [(a.task_id, a.attempt) for a in other.assignments] == [(str(task_id), 1)]
    task = harness.task(task_id)
    assert (task.status, task.worker_id, task.attempt) == (
        TaskStatus.DISPATCHED,
        other.worker_id,
        1,
    )


def test_an_assignment_that_times_out_returns_the_tasks_and_they_go_elsewhere(
    harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskmill.coordinator.dispatch")
    coordinator = harness.coordinator(assign_timeout=0.5)
    hanging = harness.worker(coordinator)
    hanging.gate = threading.Event()  # its AssignTasks blocks far past the deadline
    try:
        ids = harness.submit(2)
        harness.wait_until(
            lambda: any(
                "did not take" in r.getMessage() and "DEADLINE_EXCEEDED" in r.getMessage()
                for r in caplog.records
            ),
            what="the assignment to time out",
        )
        harness.wait_until(
            lambda: all(harness.task(i).status is TaskStatus.SCHEDULED for i in ids),
            what="the tasks to be given back",
        )
        for task_id in ids:
            task = harness.task(task_id)
            assert (task.attempt, task.worker_id, task.dispatched_at) == (0, None, None)
        # The coordinator gave up without an answer: the handler is still blocked.
        assert (hanging.calls, hanging.assignments) == (1, [])

        other = harness.worker(coordinator)
        harness.wait_until(lambda: len(other.assignments) == 2, what="the tasks to go elsewhere")
        assert sorted((a.task_id, a.attempt) for a in other.assignments) == sorted(
            (str(i), 1) for i in ids
        )
        for task_id in ids:
            task = harness.task(task_id)
            assert (task.status, task.worker_id, task.attempt) == (
                TaskStatus.DISPATCHED,
                other.worker_id,
                1,
            )
        assert hanging.calls == 1  # no heartbeat from it: it got nothing more
    finally:
        hanging.gate.set()  # lets the blocked handler return, so its server stops cleanly


def test_a_refusing_worker_gets_room_again_at_its_next_heartbeat(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator)
    worker.refuse = grpc.StatusCode.RESOURCE_EXHAUSTED
    [task_id] = harness.submit(1)
    harness.wait_until(lambda: worker.refusals == 1)
    harness.wait_until(lambda: harness.task(task_id).status is TaskStatus.SCHEDULED)
    worker.refuse = None
    worker.heartbeat()
    harness.wait_until(lambda: worker.assignments)
    assert worker.assignments[0].task_id == str(task_id)
    assert worker.refusals == 1


def test_a_full_worker_gets_tasks_again_when_one_finishes(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, capacity=4)
    [first] = harness.submit(1)
    harness.wait_until(lambda: worker.assignments)
    worker.refuse = grpc.StatusCode.RESOURCE_EXHAUSTED
    [second] = harness.submit(1)
    harness.wait_until(lambda: worker.refusals == 1)
    harness.wait_until(lambda: harness.task(second).status is TaskStatus.SCHEDULED)
    worker.refuse = None
    worker.report(str(first), TaskStatus.SUCCEEDED, result=None)
    harness.wait_until(lambda: len(worker.assignments) == 2, what="the second task, no heartbeat")
    assert worker.assignments[1].task_id == str(second)


def test_assignment_carries_the_task(harness) -> None:
    coordinator = harness.coordinator()
    worker = harness.worker(coordinator, queues=["slow"])
    [task_id] = harness.submit(
        1,
        command="sleep",
        payload={"seconds": 0.5},
        queue="slow",
        max_attempts=3,
        timeout_seconds=9.5,
        trace_context="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    harness.wait_until(lambda: worker.assignments)
    assignment = worker.assignments[0]
    task = harness.task(task_id)
    assert assignment.task_id == str(task_id)
    assert (assignment.command, assignment.queue) == ("sleep", "slow")
    # The payload's JSON text as the database writes it: passed on, never decoded and encoded.
    assert json.loads(assignment.payload_json) == {"seconds": 0.5}
    assert (assignment.attempt, assignment.max_attempts) == (1, 3)
    assert assignment.timeout_seconds == 9.5
    assert assignment.traceparent == task.trace_context
    assert assignment.scheduled_at.ToDatetime().timestamp() == pytest.approx(
        task.scheduled_at.timestamp(), abs=1e-6
    )
    assert task.lease_expires_at is not None
    assert assignment.lease_expires_at.ToDatetime().timestamp() == pytest.approx(
        task.lease_expires_at.timestamp(), abs=1e-6
    )


def test_a_submit_wakes_the_dispatcher(harness) -> None:
    # The slow poll is a minute: only the LISTEN wake-up can dispatch within the deadline.
    coordinator = harness.coordinator(poll_interval=60.0)
    harness.wait_until(coordinator.listener.listening.is_set)
    worker = harness.worker(coordinator)
    for count in (1, 2, 3):
        harness.submit(1)
        harness.wait_until(lambda n=count: len(worker.assignments) == n, timeout=10)


def _insert_unannounced(harness) -> uuid.UUID:
    """Inserts a due task by plain SQL: unlike the submit statements, it sends no notification."""
    task_id = uuid.uuid4()
    with harness.db.transaction() as conn:
        conn.execute(
            "INSERT INTO tasks (id, command) VALUES (CAST(:id AS uuid), 'echo')", id=str(task_id)
        )
    return task_id


def test_the_slow_poll_dispatches_a_task_whose_notification_was_lost(harness) -> None:
    # No NOTIFY, no future due time, no freed slot: only the slow poll finds these tasks.
    coordinator = harness.coordinator(poll_interval=0.5)
    harness.wait_until(coordinator.listener.listening.is_set)
    worker = harness.worker(coordinator)
    # Each task goes in after the previous one was assigned: the round that claimed that one
    # found nothing else due, so the poll is the only wake-up left.
    for count in (1, 2, 3):
        task_id = _insert_unannounced(harness)
        harness.wait_until(
            lambda n=count: len(worker.assignments) == n, what=f"the poll to find task {count}"
        )
        assert worker.assignments[-1].task_id == str(task_id)
        assert harness.task(task_id).status is TaskStatus.DISPATCHED


def test_the_listener_reconnects_when_its_connection_is_ended(harness) -> None:
    # The slow poll is a minute: only the listener, connected again, can dispatch in time.
    coordinator = harness.coordinator(poll_interval=60.0)
    harness.wait_until(coordinator.listener.listening.is_set)
    worker = harness.worker(coordinator)
    harness.submit(1)
    harness.wait_until(lambda: len(worker.assignments) == 1, timeout=10)
    with admin_connection(harness.database_url) as admin:
        ended = admin.run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'taskmill-coordinator'"
        )
    assert ended  # the listening connection at least
    # Submitted while the listener may be down: its reconnection asks for a round.
    harness.submit(1)
    harness.wait_until(lambda: len(worker.assignments) == 2, timeout=10)
    harness.wait_until(coordinator.listener.listening.is_set)
    harness.submit(1)
    harness.wait_until(lambda: len(worker.assignments) == 3, timeout=10)


def test_a_future_task_is_not_dispatched_early(harness) -> None:
    coordinator = harness.coordinator(poll_interval=60.0)
    worker = harness.worker(coordinator)
    harness.wait_until(coordinator.listener.listening.is_set)
    [task_id] = harness.submit(1, delay_seconds=1.0)
    harness.wait_until(lambda: worker.assignments, timeout=10)
    task = harness.task(task_id)
    assert task.dispatched_at is not None
    assert task.dispatched_at >= task.scheduled_at


def test_higher_priority_goes_first(harness) -> None:
    coordinator = harness.coordinator()
    low = harness.submit(2, priority=0)
    high = harness.submit(2, priority=5)
    worker = harness.worker(coordinator, capacity=2)
    harness.wait_until(lambda: len(worker.assignments) == 2)
    assert sorted(worker.task_ids()) == sorted(map(str, high))
    assert {harness.task(i).status for i in low} == {TaskStatus.SCHEDULED}


def test_a_worker_that_answered_slowly_does_not_hold_up_the_next_submits(harness) -> None:
    # A submit's lone batch goes from the listener's thread only to a worker that answered its
    # last assignment promptly; the slow poll is a minute, so only the listener dispatches here.
    coordinator = harness.coordinator(poll_interval=60.0)
    harness.wait_until(coordinator.listener.listening.is_set)
    slow = harness.worker(coordinator)
    slow.delay = 0.05  # well over INLINE_SEND_MAX
    harness.submit(1)
    harness.wait_until(lambda: len(slow.assignments) == 1, timeout=10)
    fast = harness.worker(coordinator)
    harness.submit(1)  # round robin: the worker after the one served last
    harness.wait_until(lambda: len(fast.assignments) == 1, timeout=10)

    slow.gate = threading.Event()  # the next assignment to it hangs until released
    harness.submit(1)
    harness.wait_until(lambda: slow.calls == 2, timeout=10)
    # Sent from the pool: the listener is free, and the next submit reaches the prompt worker.
    harness.submit(1)
    harness.wait_until(lambda: len(fast.assignments) == 2, timeout=10)
    slow.gate.set()
    harness.wait_until(lambda: len(slow.assignments) == 2, timeout=10)


def test_a_submit_claims_only_as_many_slots_as_it_brought(harness, monkeypatch) -> None:
    # The submit's notification says how many tasks it inserted; the listener's round plans
    # that many slots, so a lone task needs one worker (and the lean claim), however many have
    # room. The slow poll is a minute, so only the listener dispatches here.
    coordinator = harness.coordinator(poll_interval=60.0)
    harness.wait_until(coordinator.listener.listening.is_set)
    workers = [harness.worker(coordinator, capacity=4) for _ in range(2)]
    store = coordinator.dispatcher._tasks
    plans: list[list[Share]] = []
    claim_due = store.claim_due

    def recording(route, shares, lease_seconds, conn=None, *, locked=False, wanted=None):
        plans.append(list(shares))
        return claim_due(route, shares, lease_seconds, conn, locked=locked, wanted=wanted)

    monkeypatch.setattr(store, "claim_due", recording)
    harness.submit(1)
    harness.wait_until(lambda: sum(len(w.assignments) for w in workers) == 1)
    assert plans[-1] in ([Share(w.worker_id, 1)] for w in workers)
    harness.submit(3)
    harness.wait_until(lambda: sum(len(w.assignments) for w in workers) == 4)
    assert sorted(share.size for share in plans[-1]) == [1, 2]
    assert sorted(len(w.assignments) for w in workers) == [2, 2]


def test_the_listener_passes_on_how_many_tasks_were_submitted(harness) -> None:
    counts: list[int | None] = []
    listener = Listener(harness.db, lambda count, conn: counts.append(count), lambda task_id: None)
    stop = threading.Event()
    thread = threading.Thread(target=listener.run, args=(stop,), daemon=True)
    thread.start()
    try:
        harness.wait_until(listener.listening.is_set)
        harness.wait_until(lambda: counts == [None])  # connecting asks for a full round
        with harness.db.transaction() as conn:
            conn.execute("SELECT pg_notify('taskmill_submitted', '2')")
            conn.execute("SELECT pg_notify('taskmill_submitted', '3')")
        harness.wait_until(lambda: sum(c or 0 for c in counts) == 5)
        assert None not in counts[1:]
        # A notification without a count (from elsewhere) asks for a full round.
        with harness.db.connection() as conn:
            conn.execute("SELECT pg_notify('taskmill_submitted', '')")
        harness.wait_until(lambda: counts[-1] is None and len(counts) > 2)
    finally:
        stop.set()
        thread.join(timeout=5)


def test_a_submit_is_claimed_on_the_listening_connection(harness) -> None:
    # The listener's server process has just sent the notification, so the submit's round
    # claims on that connection: it needs none from the pool, even when every one is taken.
    coordinator = harness.coordinator(poll_interval=60.0)
    harness.wait_until(coordinator.listener.listening.is_set)
    worker = harness.worker(coordinator, capacity=2)
    pool = coordinator.dispatcher._tasks._db
    with contextlib.ExitStack() as held:
        for _ in range(pool.max_connections):  # waits for the ones in use to come back
            held.enter_context(pool.connection())
        harness.submit(1)
        harness.wait_until(lambda: len(worker.assignments) == 1)
