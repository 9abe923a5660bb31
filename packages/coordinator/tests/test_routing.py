"""Routing through real coordinators and fake workers: each worker gets only tasks of its queues
that it has a handler for, a task nobody can run waits for a worker that can, and a queue's
max_concurrency holds across two coordinators."""

from __future__ import annotations

import grpc
import pytest

from taskmill.common.models import TaskStatus
from taskmill.common.store import QueueStore


def _commands(worker) -> list[tuple[str, str]]:
    return sorted((a.queue, a.command) for a in worker.assignments)


def test_each_worker_gets_only_what_it_serves_and_can_run(harness) -> None:
    coordinator = harness.coordinator()
    plain = harness.worker(coordinator, capacity=10, handlers=["echo"])
    mail = harness.worker(coordinator, capacity=10, handlers=["send", "echo"], queues=["mail"])
    harness.submit(3, command="echo")
    harness.submit(2, command="send", queue="mail")
    harness.submit(1, command="echo", queue="mail")
    harness.wait_until(lambda: len(plain.assignments) + len(mail.assignments) == 6)
    assert _commands(plain) == [("default", "echo")] * 3
    assert _commands(mail) == [("mail", "echo"), ("mail", "send"), ("mail", "send")]


def test_a_task_nobody_can_run_waits_for_a_worker_that_can(harness) -> None:
    coordinator = harness.coordinator(poll_interval=0.2)
    plain = harness.worker(coordinator, capacity=10, handlers=["echo"])
    [waiting] = harness.submit(1, command="resize")
    [ran] = harness.submit(1, command="echo")
    harness.wait_until(lambda: len(plain.assignments) == 1)
    assert plain.assignments[0].task_id == str(ran)
    # The worker with room is not given it, and it is not failed: it stays scheduled.
    assert harness.tasks.get(waiting).status is TaskStatus.SCHEDULED
    images = harness.worker(coordinator, capacity=2, handlers=["resize"])
    harness.wait_until(lambda: len(images.assignments) == 1, what="the resize task")
    assert images.assignments[0].task_id == str(waiting)
    assert [a.command for a in plain.assignments] == ["echo"]


def test_max_concurrency_holds_across_two_coordinators(harness) -> None:
    coordinators = [harness.coordinator(poll_interval=0.2) for _ in range(2)]
    # Four slots, two per coordinator, over a limit of three: neither can hold them all.
    workers = [harness.worker(c, capacity=1) for c in coordinators for _ in range(2)]
    with harness.db.connection() as conn:
        conn.execute("INSERT INTO queues (name, max_concurrency) VALUES ('default', 3)")
    harness.submit(30)

    def held() -> int:
        return sum(len(w.held) for w in workers)

    for finished in range(30):
        expected = min(3, 30 - finished)
        harness.wait_until(lambda expected=expected: held() == expected, what="the queue full")
        worker = next(w for w in workers if w.held)
        worker.report(next(iter(worker.held)), TaskStatus.SUCCEEDED, result={})
    assert sum(len(w.assignments) for w in workers) == 30
    # Both coordinators dispatched: the limit held between them, not within one.
    assert any(w.assignments for w in workers[:2]) and any(w.assignments for w in workers[2:])


def test_a_registration_naming_a_bad_queue_is_refused(harness) -> None:
    coordinator = harness.coordinator()
    for queues in (["mail", "mail"], ["no spaces"], [""]):
        worker = harness.worker(coordinator, register=False, queues=queues)
        with pytest.raises(grpc.RpcError) as refused:
            worker.register()
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    weighted = harness.worker(coordinator, register=False, queues=["a", "b"])
    weighted.queues[0].weight = 3
    weighted.register()
    with harness.db.connection() as conn:
        row = conn.row("get_worker", id=weighted.worker_id)
    assert row is not None
    assert (list(row["queues"]), list(row["queue_weights"])) == (["a", "b"], [3, 1])


def test_a_route_that_learns_of_a_limit_sends_every_task_it_claims(harness) -> None:
    # The first claim, without the limited queue's lock, takes the worker's room from the
    # unlimited queue; those tasks must be sent, and the claim under the lock must not take
    # that room a second time.
    coordinator = harness.coordinator()
    with harness.db.connection() as conn:
        conn.execute("INSERT INTO queues (name, max_concurrency) VALUES ('few', 1)")
    ids = harness.submit(10, command="echo") + harness.submit(3, command="echo", queue="few")
    worker = harness.worker(coordinator, capacity=4, queues=["default", "few"])
    for done in range(13):
        harness.wait_until(lambda done=done: len(worker.assignments) > done, what="a task")
        assert len(worker.held) <= 4
        worker.report(worker.assignments[done].task_id, TaskStatus.SUCCEEDED, result={})
    assert sorted(a.task_id for a in worker.assignments) == sorted(map(str, ids))
    assert worker.overfilled == 0


def test_a_full_limited_queue_waits_for_a_finish_without_claiming_again(harness) -> None:
    # The loop would otherwise claim over and over while the queue is at its cap: its next
    # round is the slow poll's (a minute here), and a task of the queue finishing wakes it.
    coordinator = harness.coordinator(poll_interval=60.0)
    with harness.db.connection() as conn:
        conn.execute("INSERT INTO queues (name, max_concurrency) VALUES ('few', 1)")
    first, second = harness.submit(2, command="echo", queue="few")
    worker = harness.worker(coordinator, capacity=4, queues=["few"])
    harness.wait_until(lambda: len(worker.assignments) == 1, what="the first task")
    dispatcher = coordinator.dispatcher
    # At rest: no backlog to claim again for at once, but a finish of the full queue to wake for.
    harness.wait_until(lambda: dispatcher._capped and not dispatcher._backlog, what="rest")
    worker.report(worker.assignments[0].task_id, TaskStatus.SUCCEEDED, result={})
    harness.wait_until(lambda: len(worker.assignments) == 2, what="the second task")
    assert {a.task_id for a in worker.assignments} == {str(first), str(second)}


def test_a_paused_queue_holds_across_coordinators_and_resumes_at_once(harness) -> None:
    # The slow poll is a minute: only the resume's notification can bring the task out.
    coordinators = [harness.coordinator(poll_interval=60.0) for _ in range(2)]
    for coordinator in coordinators:
        harness.wait_until(coordinator.listener.listening.is_set)
    queues = QueueStore(harness.db)
    queues.set_paused("held", True)
    workers = [harness.worker(c, capacity=4, queues=["held", "default"]) for c in coordinators]
    held = harness.submit(4, command="echo", queue="held")
    others = harness.submit(4, command="echo")

    def sent() -> list[str]:
        return [a.task_id for w in workers for a in w.assignments]

    harness.wait_until(lambda: len(sent()) == 4, what="the other queue's tasks")
    assert sorted(sent()) == sorted(map(str, others))
    queues.set_paused("held", False)
    harness.wait_until(lambda: len(sent()) == 8, what="the resumed tasks")
    assert sorted(sent()) == sorted(map(str, others + held))
