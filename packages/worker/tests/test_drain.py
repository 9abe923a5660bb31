"""Graceful shutdown: in process through ``Worker.drain``; a real ``taskmill-worker`` on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from worker_testkit import FakeCoordinator, assign_request, assignment, wait_for

from taskmill.common.grpcutil import check_health
from taskmill.v1 import worker_pb2_grpc

SUPPORT = Path(__file__).parent / "support"


def test_drain_gives_back_queued_tasks_and_fails_tasks_past_the_grace(
    coordinator, start_worker, worker_stub
):
    worker = start_worker(concurrency=1, queue_size=2)
    worker_id = coordinator.wait_registered()
    stub = worker_stub(worker)
    running = assignment("test.stubborn_sleep", {"seconds": 10})
    queued = [assignment("echo", n) for n in range(2)]
    stub.AssignTasks(assign_request(worker_id, running, *queued))
    coordinator.wait_status(running.task_id, "running")

    drain = threading.Thread(target=worker.drain, kwargs={"grace": 1.0})
    drain.start()
    wait_for(lambda: not check_health(f"127.0.0.1:{worker.port}"), what="NOT_SERVING")
    with pytest.raises(grpc.RpcError) as refused:
        stub.AssignTasks(assign_request(worker_id, assignment("echo", "late")))
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    drain.join(timeout=30)
    assert not drain.is_alive()

    for task in queued:
        assert coordinator.statuses(task.task_id) == ["rejected"]
    final = coordinator.wait_final(running.task_id)
    assert final.error.type == "worker_shutdown"
    assert coordinator.deregistered == [worker_id]


def _taskmill_worker() -> list[str]:
    script = shutil.which("taskmill-worker", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "taskmill.worker"]


@pytest.fixture
def worker_process(coordinator: FakeCoordinator):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SUPPORT), env.get("PYTHONPATH")]))
    env.update(
        TASKMILL_WORKER_COORDINATOR=coordinator.address,
        TASKMILL_WORKER_HOST="127.0.0.1",
        TASKMILL_WORKER_ADVERTISE_ADDRESS="127.0.0.1",
        TASKMILL_WORKER_CONCURRENCY="1",
    )
    command = [*_taskmill_worker(), "--queue-size", "2", "--grace-period", "20"]
    process = subprocess.Popen(
        [*command, "--handlers", "worker_test_handlers"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_sigterm_finishes_running_work_reports_deregisters_and_exits_0(coordinator, worker_process):
    worker_id = coordinator.wait_registered(timeout=30)
    address = coordinator.registrations[0][1].address
    with grpc.insecure_channel(address) as channel:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        running = assignment("sleep", {"seconds": 1.5})
        queued = [assignment("echo", n) for n in range(2)]
        stub.AssignTasks(assign_request(worker_id, running, *queued))
    coordinator.wait_status(running.task_id, "running")

    worker_process.send_signal(signal.SIGTERM)
    output, _ = worker_process.communicate(timeout=60)
    assert worker_process.returncode == 0, output

    assert coordinator.statuses(running.task_id) == ["running", "succeeded"]
    for task in queued:
        assert coordinator.statuses(task.task_id) == ["rejected"]
    assert coordinator.deregistered == [worker_id]
    assert "draining" in output


def test_unimportable_handler_module_is_one_clear_line_and_exit_1():
    result = subprocess.run(
        [*_taskmill_worker(), "--handlers", "echo_not_a_module_xyz"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "taskmill-worker: cannot import handler module 'echo_not_a_module_xyz': "
        "ModuleNotFoundError: No module named 'echo_not_a_module_xyz'"
    ]
