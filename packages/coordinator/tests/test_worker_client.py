"""The worker client against a fake worker on a real gRPC server: what each outcome of
``AssignTasks`` and ``CancelTask`` becomes for the rules above it, which see no gRPC."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest

from taskmill.common.grpcutil import GrpcSecurity, create_channel
from taskmill.common.store import ClaimedTask
from taskmill.coordinator.calls import AssignRefused, AssignResult, WorkerCallFailed
from taskmill.coordinator.worker_client import WorkerClient

TIMEOUT = 5.0
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def client() -> Iterator[WorkerClient]:
    client = WorkerClient(lambda address: create_channel(address, GrpcSecurity()))
    yield client
    client.close_all()


def _tasks(worker_id: str, count: int) -> list[ClaimedTask]:
    now = time.time()
    return [
        ClaimedTask(
            id=str(uuid.uuid4()),
            worker_id=worker_id,
            command="echo",
            payload_json='{"n": 1}',
            attempt=1,
            max_attempts=3,
            timeout_seconds=None,
            queue="default",
            trace_context=None,
            scheduled_at=now,
            lease_expires_at=now + 15,
            token=n + 1,
        )
        for n in range(count)
    ]


def _assign(client: WorkerClient, worker_id: str, count: int = 1) -> AssignResult:
    return client.assign(worker_id, _tasks(worker_id, count), [TRACEPARENT] * count, TIMEOUT)


def test_an_assignment_carries_the_tasks_and_returns_the_room_left(client, lone_worker) -> None:
    client.open(lone_worker.worker_id, lone_worker.address)
    tasks = _tasks(lone_worker.worker_id, 2)
    answer = client.assign(lone_worker.worker_id, tasks, ["", TRACEPARENT], TIMEOUT)
    assert answer.free_slots == 0
    assert answer.seconds > 0
    assert [(a.task_id, a.traceparent) for a in lone_worker.assignments] == [
        (tasks[0].id, ""),
        (tasks[1].id, TRACEPARENT),
    ]
    assert lone_worker.assignments[0].payload_json == '{"n": 1}'


@pytest.mark.parametrize("how", ["refused", "overfilled"])
def test_a_full_worker_is_a_full_refusal(client, lone_worker, how: str) -> None:
    client.open(lone_worker.worker_id, lone_worker.address)
    if how == "refused":
        lone_worker.refuse = grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(AssignRefused) as refused:
        _assign(client, lone_worker.worker_id, count=1 if how == "refused" else 3)
    assert refused.value.full
    assert refused.value.message.startswith("RESOURCE_EXHAUSTED: ")
    assert lone_worker.assignments == []


def test_any_other_refusal_is_not_full(client, lone_worker) -> None:
    client.open("w-other", lone_worker.address)  # the worker answers only to its own id
    with pytest.raises(AssignRefused) as refused:
        _assign(client, "w-other")
    assert not refused.value.full
    assert refused.value.message == "FAILED_PRECONDITION: not my id"


def test_an_unreachable_worker_is_not_full(client, lone_worker) -> None:
    lone_worker.server.stop(0).wait()
    client.open(lone_worker.worker_id, lone_worker.address)
    with pytest.raises(AssignRefused) as refused:
        _assign(client, lone_worker.worker_id)
    assert not refused.value.full
    assert refused.value.message.startswith("UNAVAILABLE: ")


def test_a_late_answer_is_a_deadline_refusal(client, lone_worker) -> None:
    client.open(lone_worker.worker_id, lone_worker.address)
    lone_worker.gate = threading.Event()
    try:
        with pytest.raises(AssignRefused) as refused:
            client.assign(lone_worker.worker_id, _tasks(lone_worker.worker_id, 1), [""], 0.2)
    finally:
        lone_worker.gate.set()
    assert not refused.value.full
    assert refused.value.message.startswith("DEADLINE_EXCEEDED: ")


def test_a_worker_without_a_channel_is_refused_without_a_call(client, lone_worker) -> None:
    with pytest.raises(AssignRefused) as refused:
        _assign(client, lone_worker.worker_id)
    assert (refused.value.full, refused.value.message) == (False, "the worker left")
    client.open(lone_worker.worker_id, lone_worker.address)
    assert _assign(client, lone_worker.worker_id).free_slots == 1
    client.close(lone_worker.worker_id)
    with pytest.raises(AssignRefused, match="the worker left"):
        _assign(client, lone_worker.worker_id)
    assert lone_worker.calls == 1


def test_cancel_says_whether_the_worker_held_the_task(client, lone_worker) -> None:
    client.open(lone_worker.worker_id, lone_worker.address)
    [task] = _tasks(lone_worker.worker_id, 1)
    client.assign(lone_worker.worker_id, [task], [""], TIMEOUT)
    other = str(uuid.uuid4())
    assert client.cancel(lone_worker.worker_id, task.id, TIMEOUT) is True
    assert client.cancel(lone_worker.worker_id, other, TIMEOUT) is False
    assert lone_worker.cancels == [task.id, other]


def test_a_cancel_that_cannot_reach_the_worker_fails(client, lone_worker) -> None:
    with pytest.raises(WorkerCallFailed, match="the worker left"):
        client.cancel(lone_worker.worker_id, str(uuid.uuid4()), TIMEOUT)
    lone_worker.server.stop(0).wait()
    client.open(lone_worker.worker_id, lone_worker.address)
    with pytest.raises(WorkerCallFailed, match=r"^UNAVAILABLE: "):
        client.cancel(lone_worker.worker_id, str(uuid.uuid4()), TIMEOUT)
