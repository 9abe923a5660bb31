"""Timeouts (thread and process handlers) and cancellation (queued, running, via heartbeat)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from timeout_test_handlers import HOLDS, Hold
from worker_testkit import accepts, assign_request, assignment, held, process_gone, wait_for

from taskmill.v1 import common_pb2, worker_pb2


def _spawned_children() -> set[int]:
    """Pids of this process's children started by multiprocessing's spawn (read from /proc)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == os.getpid() and b"spawn_main" in cmdline:
            pids.add(int(stat.parent.name))
    return pids


def _new_child(before: set[int]) -> int:
    children = wait_for(lambda: _spawned_children() - before, what="the handler's process")
    assert len(children) == 1
    return children.pop()


def test_cooperative_thread_handler_times_out_and_frees_its_slot(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(concurrency=1, queue_size=0)
    worker_id = coordinator.wait_registered()
    stub = worker_stub(worker)
    task = assignment("sleep", {"seconds": 60}, timeout=0.5)
    stub.AssignTasks(assign_request(worker_id, task))
    final = coordinator.wait_final(task.task_id, timeout=10)
    assert coordinator.statuses(task.task_id) == ["running", "failed"]
    assert final.error.type == "timeout"
    assert "0.5 s" in final.error.message
    # sleep honours the flag the timeout sets, so the slot comes back at once.
    after = assignment("echo", "next")
    wait_for(lambda: accepts(stub, worker_id, after), what="the slot to come back")
    coordinator.wait_status(after.task_id, "succeeded")


@contextmanager
def _held(task: common_pb2.Assignment) -> Iterator[Hold]:
    """The ``Hold`` of a ``test.hold_past_timeout`` task, released when the block ends."""
    hold = HOLDS[task.task_id] = Hold()
    try:
        yield hold
    finally:
        hold.release.set()


def _microseconds(epoch_seconds: float) -> int:
    """Epoch seconds as the microseconds a report's timestamp is compared in."""
    return int(epoch_seconds * 1_000_000)


def test_stuck_last_attempt_is_reported_at_its_timeout_but_holds_its_slot(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(concurrency=1, queue_size=0)
    worker_id = coordinator.wait_registered()
    stub = worker_stub(worker)
    task = assignment("test.hold_past_timeout", timeout=0.3, max_attempts=1)
    with _held(task) as hold:
        stub.AssignTasks(assign_request(worker_id, task))
        # No retry can follow the last attempt: it is reported while its handler still runs.
        final = coordinator.wait_final(task.task_id)
        assert hold.returned_at is None
        assert final.error.type == "timeout"
        # The thread is still running: its slot is not free.
        with pytest.raises(grpc.RpcError) as full:
            stub.AssignTasks(assign_request(worker_id, assignment("echo", 1)))
        assert full.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    # Once it returns, the slot is back and its late result was discarded.
    after = assignment("echo", "next")
    wait_for(lambda: accepts(stub, worker_id, after), what="the slot to come back")
    coordinator.wait_status(after.task_id, "succeeded")
    assert coordinator.statuses(task.task_id) == ["running", "failed"]
    assert hold.returned_at is not None
    assert final.occurred_at.ToMicroseconds() < _microseconds(hold.returned_at)


def test_a_retryable_timeout_is_reported_only_once_its_handler_returned(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(concurrency=1, queue_size=0)
    worker_id = coordinator.wait_registered()
    stub = worker_stub(worker)
    task = assignment("test.hold_past_timeout", timeout=0.3, max_attempts=2)
    with _held(task) as hold:
        stub.AssignTasks(assign_request(worker_id, task))
        wait_for(lambda: hold.flagged_at, what="the timeout to set the handler's flag")
        # Past its timeout the task is still the worker's: a heartbeat sent since lists it (so
        # its lease is extended) with its slot busy, and nothing final is reported.
        heartbeat = coordinator.next_heartbeat()
        assert held(heartbeat) == {task.task_id: task.token}
        assert heartbeat.free_slots == 0
        assert coordinator.statuses(task.task_id) == ["running"]
    final = coordinator.wait_final(task.task_id)
    assert coordinator.statuses(task.task_id) == ["running", "failed"]
    assert final.error.type == "timeout"
    assert "0.3 s" in final.error.message  # what it returned late is discarded
    assert hold.returned_at is not None
    assert final.occurred_at.ToMicroseconds() >= _microseconds(hold.returned_at)


def test_cancelling_a_timed_out_task_whose_report_waits_reports_it_cancelled_at_once(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(concurrency=1, queue_size=0)
    worker_id = coordinator.wait_registered()
    stub = worker_stub(worker)
    task = assignment("test.hold_past_timeout", timeout=0.3, max_attempts=2)
    with _held(task) as hold:
        stub.AssignTasks(assign_request(worker_id, task))
        wait_for(lambda: hold.flagged_at, what="the timeout to set the handler's flag")
        assert stub.CancelTask(worker_pb2.CancelTaskRequest(task_id=task.task_id)).found
        # No retry follows a cancelled task: nothing to wait for.
        coordinator.wait_final(task.task_id)
        assert coordinator.statuses(task.task_id) == ["running", "cancelled"]
        assert hold.returned_at is None
    after = assignment("echo", "next")
    wait_for(lambda: accepts(stub, worker_id, after), what="the slot to come back")
    coordinator.wait_status(after.task_id, "succeeded")
    assert coordinator.statuses(task.task_id) == ["running", "cancelled"]


def test_a_task_cancelled_before_its_timeout_is_reported_at_the_timeout(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(concurrency=1, queue_size=0)
    worker_id = coordinator.wait_registered()
    stub = worker_stub(worker)
    # Long enough for the cancel to come first.
    task = assignment("test.hold_past_timeout", timeout=3.0, max_attempts=2)
    with _held(task) as hold:
        stub.AssignTasks(assign_request(worker_id, task))
        coordinator.wait_status(task.task_id, "running")
        assert stub.CancelTask(worker_pb2.CancelTaskRequest(task_id=task.task_id)).found
        # The coordinator retries no task whose cancellation was asked for: nothing to wait for.
        final = coordinator.wait_final(task.task_id)
        assert final.error.type == "timeout"
        assert hold.returned_at is None


def test_drain_reports_a_timed_out_task_whose_report_waits(coordinator, start_worker, worker_stub):
    worker = start_worker(concurrency=1, queue_size=0)
    worker_id = coordinator.wait_registered()
    task = assignment("test.hold_past_timeout", timeout=0.3, max_attempts=2)
    with _held(task) as hold:
        worker_stub(worker).AssignTasks(assign_request(worker_id, task))
        wait_for(lambda: hold.flagged_at, what="the timeout to set the handler's flag")
        worker.drain(grace=0.3)
        # The worker exits after the drain, and its handler with it.
        assert coordinator.statuses(task.task_id) == ["running", "failed"]
        assert coordinator.wait_final(task.task_id).error.type == "timeout"


def test_process_handler_past_its_timeout_is_killed(coordinator, start_worker, worker_stub):
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    before = _spawned_children()
    task = assignment("test.spin_in_process", {}, timeout=1.0)
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    pid = _new_child(before)
    final = coordinator.wait_final(task.task_id)
    assert coordinator.statuses(task.task_id) == ["running", "failed"]
    assert final.error.type == "timeout"
    assert process_gone(pid), "the spinning child must be gone once the timeout is reported"


def test_process_handler_returns_its_result_and_reports_its_errors(
    coordinator, start_worker, worker_stub
):
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    square = assignment("test.square_in_process", {"n": 12})
    broken = assignment("test.raise_in_process", {})
    worker_stub(worker).AssignTasks(assign_request(worker_id, square, broken))
    result = json.loads(coordinator.wait_final(square.task_id).result_json)
    assert result["square"] == 144
    assert result["task_id"] == square.task_id
    assert result["pid"] != os.getpid()
    error = coordinator.wait_final(broken.task_id).error
    assert error.type == "KeyError"
    assert "missing-in-child" in error.message
    assert "raise_in_process" in error.traceback


def test_cancelling_a_queued_task_reports_it_without_running_it(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(concurrency=1, queue_size=1)
    worker_id = coordinator.wait_registered()
    stub = worker_stub(worker)
    running = assignment("sleep", {"seconds": 60})
    queued = assignment("echo", "never")
    stub.AssignTasks(assign_request(worker_id, running, queued))
    coordinator.wait_status(running.task_id, "running")

    found = stub.CancelTask(worker_pb2.CancelTaskRequest(task_id=queued.task_id))
    assert found.found
    coordinator.wait_final(queued.task_id)
    assert coordinator.statuses(queued.task_id) == ["cancelled"]

    started = time.monotonic()
    assert stub.CancelTask(worker_pb2.CancelTaskRequest(task_id=running.task_id)).found
    coordinator.wait_final(running.task_id)
    assert time.monotonic() - started < 5
    assert coordinator.statuses(running.task_id) == ["running", "cancelled"]
    assert not stub.CancelTask(worker_pb2.CancelTaskRequest(task_id=running.task_id)).found


def test_heartbeat_answer_cancels_a_running_task(coordinator, start_worker, worker_stub):
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    task = assignment("sleep", {"seconds": 60})
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    coordinator.wait_status(task.task_id, "running")
    with coordinator.lock:
        coordinator.cancel.add(task.task_id)
    coordinator.wait_final(task.task_id)
    assert coordinator.statuses(task.task_id) == ["running", "cancelled"]


def test_cooperative_process_handler_is_cancelled(coordinator, start_worker, worker_stub):
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    stub = worker_stub(worker)
    task = assignment("test.wait_in_process", {})
    stub.AssignTasks(assign_request(worker_id, task))
    coordinator.wait_status(task.task_id, "running")
    assert stub.CancelTask(worker_pb2.CancelTaskRequest(task_id=task.task_id)).found
    coordinator.wait_final(task.task_id)
    assert coordinator.statuses(task.task_id) == ["running", "cancelled"]


def test_process_handler_ignoring_cancellation_is_killed_after_the_grace(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(process_cancel_grace=0.3)
    worker_id = coordinator.wait_registered()
    stub = worker_stub(worker)
    before = _spawned_children()
    task = assignment("test.spin_in_process", {})
    stub.AssignTasks(assign_request(worker_id, task))
    pid = _new_child(before)
    assert stub.CancelTask(worker_pb2.CancelTaskRequest(task_id=task.task_id)).found
    coordinator.wait_final(task.task_id)
    assert coordinator.statuses(task.task_id) == ["running", "cancelled"]
    assert process_gone(pid)
