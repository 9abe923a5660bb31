"""Fencing (issue 16): a worker runs nothing that is no longer its own.

Every assignment carries the fencing token of its claim. The worker's reports carry it; its
heartbeats and registrations list what it holds by token; an answer naming a token stale makes
it drop that task unrun, or stop it. A worker whose heartbeats go unanswered for nearly a lease
starts nothing (its fence closes) until an answer has said which of its tasks are still its own.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from worker_test_handlers import NOTED
from worker_testkit import (
    STATUS,
    FakeCoordinator,
    assign_request,
    assignment,
    held,
    held_ids,
    wait_for,
)

from taskmill.worker import fence as fence_module
from taskmill.worker.fence import MARGIN, Fence

FOREVER = {"seconds": 60}


def _run_past(coordinator: FakeCoordinator, stub: Any, worker_id: str, blocker: Any) -> None:
    """Cancels ``blocker``, the task in the worker's only slot, and runs a ``test.note`` task
    after it: once that one ran, every task queued before it did run, or never will."""
    with coordinator.lock:
        coordinator.cancel.add(blocker.task_id)
    coordinator.wait_final(blocker.task_id)
    later = assignment("test.note")
    stub.AssignTasks(assign_request(worker_id, later))
    coordinator.wait_status(later.task_id, "succeeded")
    assert later.task_id in NOTED


# -- tokens: reports carry them, stale ones are dropped or stopped ----------------------------


def test_reports_carry_the_token_of_their_assignment(coordinator, start_worker, worker_stub):
    worker = start_worker(concurrency=2)
    worker_id = coordinator.wait_registered()
    long = assignment("sleep", FOREVER, token=7_000_001)
    short = assignment("echo", "quick", token=7_000_002)
    worker_stub(worker).AssignTasks(assign_request(worker_id, long, short))
    coordinator.wait_status(long.task_id, "running")  # reported on its own, the task goes on
    coordinator.wait_final(short.task_id)
    with coordinator.lock:
        coordinator.cancel.add(long.task_id)
    coordinator.wait_final(long.task_id)
    for task, final in ((long, "cancelled"), (short, "succeeded")):
        reports = coordinator.reports_of(task.task_id)
        assert [STATUS[r.status] for r in reports] == ["running", final]
        assert [r.token for r in reports] == [task.token, task.token]


def test_a_stale_queued_task_is_dropped_unrun(coordinator, start_worker, worker_stub):
    worker = start_worker(concurrency=1, queue_size=1)
    worker_id = coordinator.wait_registered()
    stub = worker_stub(worker)
    blocker, target = assignment("sleep", FOREVER), assignment("test.note")
    stub.AssignTasks(assign_request(worker_id, blocker, target))
    coordinator.wait_status(blocker.task_id, "running")  # the target waits for the only slot

    with coordinator.lock:
        coordinator.stale.add(target.token)
    final = coordinator.wait_final(target.task_id)
    assert coordinator.statuses(target.task_id) == ["cancelled"]
    assert final.token == target.token  # a report the coordinator ignores: the token is stale
    wait_for(
        lambda: held(coordinator.last_heartbeat()) == {blocker.task_id: blocker.token},
        what="heartbeats that list only the blocker",
    )
    _run_past(coordinator, stub, worker_id, blocker)
    assert target.task_id not in NOTED
    assert coordinator.statuses(target.task_id) == ["cancelled"]


def test_a_stale_running_task_is_stopped(coordinator, start_worker, worker_stub):
    worker = start_worker(concurrency=1)
    worker_id = coordinator.wait_registered()
    task = assignment("sleep", FOREVER)
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    coordinator.wait_status(task.task_id, "running")

    with coordinator.lock:
        coordinator.stale.add(task.token)
    final = coordinator.wait_final(task.task_id)  # sleep sees its flag: well before 60 s
    assert coordinator.statuses(task.task_id) == ["running", "cancelled"]
    assert final.token == task.token
    wait_for(
        lambda: task.task_id not in held_ids(coordinator.last_heartbeat()),
        what="heartbeats without the stopped task",
    )


def test_registering_again_lists_the_held_tasks_and_drops_the_stale(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(concurrency=1, queue_size=2)
    first = coordinator.wait_registered()
    stub = worker_stub(worker)
    blocker = assignment("sleep", FOREVER)
    dropped, kept = assignment("test.note"), assignment("test.note")
    stub.AssignTasks(assign_request(first, blocker, dropped, kept))
    coordinator.wait_status(blocker.task_id, "running")

    # The coordinator forgets the worker; meanwhile ``dropped`` was given to another.
    coordinator.forget_all(stale=[dropped.token])
    second = coordinator.wait_registered(2)
    with coordinator.lock:
        registration = coordinator.registrations[1][1]
    assert held(registration) == {t.task_id: t.token for t in (blocker, dropped, kept)}
    assert coordinator.wait_final(dropped.task_id).token == dropped.token
    assert coordinator.statuses(dropped.task_id) == ["cancelled"]

    wait_for(lambda: worker.worker_id == second, what="the worker to adopt its new id")
    with coordinator.lock:
        coordinator.cancel.add(blocker.task_id)
    coordinator.wait_status(kept.task_id, "succeeded")
    assert coordinator.report(kept.task_id, "succeeded").token == kept.token
    assert kept.task_id in NOTED
    assert dropped.task_id not in NOTED


# -- self-fencing: a worker cut off from its coordinator starts nothing -----------------------


def _slots_at_the_fence(caplog: pytest.LogCaptureFixture) -> set[str | None]:
    """The slot threads that held a task and found the fence closed for a whole wait."""
    records = list(caplog.records)
    return {r.threadName for r in records if "starting nothing" in r.getMessage()}


def _fence_at_each_drop(worker: Any, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether the fence was open each time stale tasks were dropped: it must not be, or a
    slot waiting at the fence could start a task about to be dropped."""
    seen: list[bool] = []
    drop_stale = worker.executor.drop_stale

    def spy(tokens: Any) -> int:
        seen.append(worker.fence.is_open())
        return int(drop_stale(tokens))

    monkeypatch.setattr(worker.executor, "drop_stale", spy)
    return seen


def test_a_worker_whose_heartbeats_fail_starts_nothing_until_answered(
    coordinator, start_worker, worker_stub, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG, logger="taskmill.worker.executor")
    coordinator.lease_seconds = 1.2  # the fence closes 0.9 s after the last answered heartbeat
    worker = start_worker(concurrency=2, queue_size=0)
    worker_id = coordinator.wait_registered()
    fence_at_drops = _fence_at_each_drop(worker, monkeypatch)
    with coordinator.lock:
        coordinator.fail_heartbeats = True
    wait_for(lambda: not worker.fence.is_open(), what="the fence to close")

    stale, fresh = assignment("test.note"), assignment("test.note")
    worker_stub(worker).AssignTasks(assign_request(worker_id, stale, fresh))  # accepted

    def both_slots_wait() -> bool:
        assert coordinator.statuses(stale.task_id) == coordinator.statuses(fresh.task_id) == []
        assert {stale.task_id, fresh.task_id}.isdisjoint(NOTED), "started behind the fence"
        return len(_slots_at_the_fence(caplog)) == 2

    wait_for(both_slots_wait, what="both slots to hold a task and wait at the fence")

    # Answered again: meanwhile ``stale`` was given to another worker.
    with coordinator.lock:
        coordinator.stale.add(stale.token)
        coordinator.fail_heartbeats = False
    coordinator.wait_status(fresh.task_id, "succeeded")
    assert coordinator.statuses(fresh.task_id) == ["running", "succeeded"]
    assert coordinator.wait_final(stale.task_id).token == stale.token
    assert coordinator.statuses(stale.task_id) == ["cancelled"]
    assert fresh.task_id in NOTED
    assert stale.task_id not in NOTED
    assert fence_at_drops == [False]  # dropped before the answer opened the fence


# -- Fence ------------------------------------------------------------------------------------


class Clock:
    """A clock the test moves by hand; notes the threads that read it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.readers: list[str] = []

    def __call__(self) -> float:
        self.readers.append(threading.current_thread().name)
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(fence_module, "_now", clock)
    return clock


def test_the_fence_is_open_until_a_lease_is_named(clock: Clock) -> None:
    fence = Fence()
    clock.now += 3600
    assert fence.is_open()
    fence.acknowledged(clock.now, 0.0)  # a coordinator older than fencing names none
    clock.now += 3600
    assert fence.is_open()
    assert fence.wait_open(0)


def test_the_fence_closes_a_margin_before_the_lease_runs_out(clock: Clock) -> None:
    fence = Fence()
    sent = clock.now
    fence.acknowledged(sent, 2.0)
    closes = sent + 2.0 * (1 - MARGIN)
    assert closes < sent + 2.0  # before the coordinator may give the tasks away
    clock.now = closes - 0.01
    assert fence.is_open()
    clock.now = closes + 0.01
    assert not fence.is_open()
    assert not fence.wait_open(0.01)

    fence.acknowledged(sent + 1.0)  # a heartbeat answered: counts from when it was sent
    assert fence.is_open()
    clock.now = closes + 1.0 + 0.01  # the lease named at registration still holds
    assert not fence.is_open()
    fence.acknowledged(sent + 0.5)  # an older call answered late moves nothing back
    assert not fence.is_open()


def test_wait_open_wakes_when_a_call_is_acknowledged(clock: Clock) -> None:
    fence = Fence()
    fence.acknowledged(clock.now, 1.0)
    clock.now += 1.0
    opened: list[bool] = []
    waiter = threading.Thread(target=lambda: opened.append(fence.wait_open(60)), name="waiter")
    started = time.monotonic()
    waiter.start()
    # It read the clock holding the fence's lock, which it gives up only to wait.
    wait_for(lambda: "waiter" in clock.readers, what="the waiter to look at the fence")
    fence.acknowledged(clock.now)
    waiter.join(10)
    assert opened == [True]
    assert time.monotonic() - started < 30


def test_the_fence_closes_by_itself_on_the_boot_clock() -> None:
    if not hasattr(time, "CLOCK_BOOTTIME"):
        pytest.skip("no boot clock here")
    assert abs(Fence.now() - time.clock_gettime(time.CLOCK_BOOTTIME)) < 1.0
    fence = Fence()
    fence.acknowledged(Fence.now(), 0.2)
    wait_for(lambda: not fence.is_open(), timeout=10, what="the fence to close")
    fence.acknowledged(Fence.now(), 60.0)
    assert fence.is_open()
