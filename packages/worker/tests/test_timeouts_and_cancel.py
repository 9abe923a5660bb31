"""Timeouts (thread and process handlers) and cancellation (queued, running, via heartbeat)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import grpc
import pytest
from worker_testkit import accepts, assign_request, assignment, process_gone, wait_for

from taskmill.v1 import worker_pb2


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


def test_stuck_thread_handler_is_reported_at_its_timeout_but_holds_its_slot(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(concurrency=1, queue_size=0)
    worker_id = coordinator.wait_registered()
    stub = worker_stub(worker)
    task = assignment("test.stubborn_sleep", {"seconds": 2.0}, timeout=0.3)
    started = time.monotonic()
    stub.AssignTasks(assign_request(worker_id, task))
    final = coordinator.wait_final(task.task_id)
    assert final.error.type == "timeout"
    assert time.monotonic() - started < 1.8  # reported at the timeout, not when it returned
    # The thread is still sleeping: its slot is not free.
    with pytest.raises(grpc.RpcError) as full:
        stub.AssignTasks(assign_request(worker_id, assignment("echo", 1)))
    assert full.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    # Once it returns, the slot is back and its late result was discarded.
    after = assignment("echo", "next")
    wait_for(lambda: accepts(stub, worker_id, after), what="the slot to come back")
    coordinator.wait_status(after.task_id, "succeeded")
    assert coordinator.statuses(task.task_id) == ["running", "failed"]


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
