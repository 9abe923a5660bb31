"""AssignTasks end to end: a real worker, a real fake coordinator, real gRPC on port 0."""

from __future__ import annotations

import json
import socket

import grpc
import pytest
from worker_testkit import FakeCoordinator, assign_request, assignment, held_ids, wait_for

from taskmill.common.grpcutil import check_health
from taskmill.worker.app import package_version


def test_registers_with_its_address_capacity_and_handlers(coordinator, start_worker):
    worker = start_worker(concurrency=3, queue_size=2)
    worker_id = coordinator.wait_registered()
    request = coordinator.registrations[0][1]
    assert request.address == f"127.0.0.1:{worker.port}"
    assert request.capacity == 5
    assert request.hostname == socket.gethostname()
    assert request.version == package_version()
    assert {"echo", "sleep", "fail", "test.payload_only"} <= set(request.handlers)
    assert "shell" not in request.handlers
    heartbeat = wait_for(coordinator.last_heartbeat, what="a heartbeat")
    assert heartbeat.worker_id == worker_id
    assert heartbeat.free_slots == 5
    assert list(heartbeat.held) == []


def test_by_default_it_advertises_this_hosts_name_and_the_port_it_bound(coordinator, start_worker):
    # The settings' defaults: any interface, port 0, no advertise address.
    worker = start_worker(host="0.0.0.0", advertise_address=None)
    coordinator.wait_registered()
    address = coordinator.registrations[0][1].address
    assert worker.port > 0
    assert address == f"{socket.gethostname()}:{worker.port}"
    assert check_health(address)  # a coordinator reaches the worker there


def test_echo_reports_running_then_succeeded_with_the_result(
    coordinator, start_worker, worker_stub
):
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    task = assignment("echo", {"hello": ["wörld", 1]}, attempt=3, max_attempts=5)
    response = worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    assert response.free_slots <= 4
    final = coordinator.wait_final(task.task_id)
    assert coordinator.statuses(task.task_id) == ["running", "succeeded"]
    assert json.loads(final.result_json) == {"hello": ["wörld", 1]}
    assert final.attempt == 3
    assert final.occurred_at.seconds > 0
    running = coordinator.report(task.task_id, "running")
    assert running is not None and running.attempt == 3


def test_fail_reports_type_message_and_traceback(coordinator, start_worker, worker_stub):
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    task = assignment("fail", {"message": "out of cheese"})
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    final = coordinator.wait_final(task.task_id)
    assert coordinator.statuses(task.task_id) == ["running", "failed"]
    assert final.error.type == "RuntimeError"
    assert final.error.message == "out of cheese"
    assert "Traceback" in final.error.traceback
    assert "in fail" in final.error.traceback


def test_unknown_command_fails_without_running(coordinator, start_worker, worker_stub):
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    task = assignment("no.such.command", {})
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    final = coordinator.wait_final(task.task_id)
    assert coordinator.statuses(task.task_id) == ["failed"]
    assert final.error.type == "unknown_command"
    assert "no.such.command" in final.error.message


def test_result_that_is_not_json_fails_clearly(coordinator, start_worker, worker_stub):
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    task = assignment("test.not_serialisable")
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    final = coordinator.wait_final(task.task_id)
    assert final.error.type == "result_not_serializable"
    assert "not JSON-serialisable" in final.error.message


def test_batch_beyond_free_room_is_refused_whole(coordinator, start_worker, worker_stub):
    worker = start_worker(concurrency=1, queue_size=1)
    worker_id = coordinator.wait_registered()
    stub = worker_stub(worker)
    too_many = [assignment("echo", n) for n in range(3)]
    with pytest.raises(grpc.RpcError) as refused:
        stub.AssignTasks(assign_request(worker_id, *too_many))
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "only 2 slots are free" in refused.value.details()

    fits = [assignment("sleep", {"seconds": 30}) for _ in range(2)]
    assert stub.AssignTasks(assign_request(worker_id, *fits)).free_slots == 0
    with pytest.raises(grpc.RpcError) as full:
        stub.AssignTasks(assign_request(worker_id, assignment("echo", 1)))
    assert full.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED

    # Nothing of the refused batches was accepted: the worker holds exactly the two sleeps.
    wait_for(
        lambda: held_ids(coordinator.last_heartbeat()) == {t.task_id for t in fits},
        what="a heartbeat listing the two sleeps",
    )
    assert coordinator.last_heartbeat().free_slots == 0
    assert all(coordinator.statuses(t.task_id) == [] for t in too_many)


def test_repeated_delivery_of_a_held_task_is_not_run_twice(coordinator, start_worker, worker_stub):
    worker = start_worker(concurrency=1, queue_size=0)
    worker_id = coordinator.wait_registered()
    stub = worker_stub(worker)
    task = assignment("sleep", {"seconds": 0.3})
    stub.AssignTasks(assign_request(worker_id, task))
    stub.AssignTasks(assign_request(worker_id, task))  # full worker, but nothing new: accepted
    coordinator.wait_final(task.task_id)
    assert coordinator.statuses(task.task_id) == ["running", "succeeded"]


def test_batch_for_another_worker_id_is_refused(coordinator, start_worker, worker_stub):
    worker = start_worker()
    coordinator.wait_registered()
    with pytest.raises(grpc.RpcError) as refused:
        worker_stub(worker).AssignTasks(assign_request("someone-else", assignment("echo", 1)))
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION


def test_many_tasks_all_reported_once(coordinator, start_worker, worker_stub):
    worker = start_worker(concurrency=4, queue_size=300)
    worker_id = coordinator.wait_registered()
    tasks = [assignment("echo", {"n": n}) for n in range(300)]
    worker_stub(worker).AssignTasks(assign_request(worker_id, *tasks))
    for task in tasks:
        final = coordinator.wait_final(task.task_id)
        assert json.loads(final.result_json) == json.loads(task.payload_json)
    assert len(coordinator.reports) == 600
    # Batched: far fewer calls than reports.
    assert coordinator.report_calls < 300


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("test.positional_context", {"attempt": 2, "payload": {"x": 1}}),
        ("test.keyword_context", {"max_attempts": 4}),
        ("test.annotated_context", {"command": "test.annotated_context", "cancelled": False}),
        ("test.payload_only", {"got": {"x": 1}}),
    ],
)
def test_handlers_get_a_context_when_they_ask(
    coordinator: FakeCoordinator, start_worker, worker_stub, command, expected
):
    worker = start_worker()
    worker_id = coordinator.wait_registered()
    task = assignment(command, {"x": 1}, attempt=2, max_attempts=4)
    worker_stub(worker).AssignTasks(assign_request(worker_id, task))
    result = json.loads(coordinator.wait_final(task.task_id).result_json)
    if "task_id" in result:
        assert result.pop("task_id") == task.task_id
    assert result == expected


def test_shell_exists_only_when_enabled(coordinator, start_worker, worker_stub):
    plain = start_worker()
    plain_id = coordinator.wait_registered(1)
    task = assignment("shell", ["echo", "hi"])
    worker_stub(plain).AssignTasks(assign_request(plain_id, task))
    assert coordinator.wait_final(task.task_id).error.type == "unknown_command"

    shell = start_worker(enable_shell=True)
    shell_id = coordinator.wait_registered(2)
    assert "shell" in coordinator.registrations[1][1].handlers
    ok = assignment("shell", {"argv": ["sh", "-c", "echo out; echo err >&2"], "timeout": 10})
    bad = assignment("shell", {"argv": ["sh", "-c", "echo broken >&2; exit 3"]})
    worker_stub(shell).AssignTasks(assign_request(shell_id, ok, bad))
    result = json.loads(coordinator.wait_final(ok.task_id).result_json)
    assert result == {
        "exit_code": 0,
        "stdout": "out\n",
        "stderr": "err\n",
        "truncated": False,
        "stdout_dropped_bytes": 0,
        "stderr_dropped_bytes": 0,
    }
    failed = coordinator.wait_final(bad.task_id)
    assert failed.error.type == "ShellCommandFailed"
    assert "code 3" in failed.error.message and "broken" in failed.error.message
