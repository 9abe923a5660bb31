"""An assignment that reaches the handler after its caller gave up is refused, not run.

The coordinator gives a timed-out assignment's tasks to another worker at once; a worker that
took them anyway would run them twice. Here the assignment waits in the worker for a
registration still in flight (``Membership.matches``), which the fake coordinator holds back
until the caller's deadline has passed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import grpc
import pytest
from worker_testkit import FakeCoordinator, assign_request, assignment, held_ids, wait_for

from taskmill.v1 import coordinator_pb2


class SlowToRegister(FakeCoordinator):
    """Answers a registration only once ``answer`` is set (it is, at first)."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = threading.Event()
        self.answer.set()
        self.asked = 0

    def RegisterWorker(
        self, request: coordinator_pb2.RegisterWorkerRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.RegisterWorkerResponse:
        with self.lock:
            self.asked += 1
        self.answer.wait(30)
        return super().RegisterWorker(request, context)


@pytest.fixture
def coordinator() -> Iterator[SlowToRegister]:
    fake = SlowToRegister().start()
    yield fake
    fake.answer.set()
    fake.stop()


def test_an_assignment_whose_caller_gave_up_is_refused(
    coordinator: SlowToRegister, start_worker, worker_stub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="taskmill.worker.servicer")
    worker = start_worker()
    first = coordinator.wait_registered()
    stub = worker_stub(worker)

    # The coordinator forgets the worker (a restart); its registration again hangs.
    coordinator.answer.clear()
    coordinator.forget_all()
    wait_for(lambda: coordinator.asked == 2, what="the worker to register again")
    assert worker.worker_id is None
    second = first.rsplit("-", 1)[0] + "-2"  # the id that registration will get

    late = assignment("sleep", {"seconds": 30})
    with pytest.raises(grpc.RpcError) as gave_up:
        stub.AssignTasks(assign_request(second, late), timeout=0.3)
    assert gave_up.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED

    coordinator.answer.set()  # the handler, still waiting for the id, goes on
    wait_for(
        lambda: any("came too late" in r.getMessage() for r in caplog.records),
        what="the worker to refuse the late assignment",
    )
    assert coordinator.wait_registered(2) == second
    # An assignment in time is taken as usual, and the late one was never held nor run.
    prompt = assignment("echo", {"n": 1})
    stub.AssignTasks(assign_request(second, prompt), timeout=10)
    coordinator.wait_final(prompt.task_id)
    assert late.task_id not in held_ids(coordinator.next_heartbeat())
    assert coordinator.statuses(late.task_id) == []
