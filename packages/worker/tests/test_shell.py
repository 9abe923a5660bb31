"""The built-in ``shell`` handler: its own timeout, the task's timeout and cancellation kill it.

Each command writes its pid to a file first, so the test can check the program is really gone
(killed and reaped), not only that the task was reported.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from worker_testkit import (
    FakeCoordinator,
    accepts,
    assign_request,
    assignment,
    process_gone,
    wait_for,
)

from taskmill.v1 import worker_pb2, worker_pb2_grpc
from taskmill.worker.app import Worker

#: Seconds the commands would run if nothing stopped them: far beyond every deadline here.
FOREVER = "600"


class ShellWorker:
    """A worker with ``shell`` enabled, one slot and no queue, and the pids its commands wrote."""

    def __init__(
        self, coordinator: FakeCoordinator, stub: worker_pb2_grpc.WorkerServiceStub
    ) -> None:
        self.coordinator = coordinator
        self.worker_id = coordinator.wait_registered()
        self.stub = stub
        self.pids: list[int] = []

    def run(self, pid_file: Path, script: str, **options: float) -> str:
        """Starts ``sh -c script`` (``$1`` is the pid file); returns the task id once it runs."""
        argv = ["sh", "-c", script, "sh", str(pid_file)]
        timeout = options.pop("task_timeout", 0.0)
        task = assignment("shell", {"argv": argv, **options}, timeout=timeout)
        self.stub.AssignTasks(assign_request(self.worker_id, task))
        self.coordinator.wait_status(task.task_id, "running")
        return task.task_id

    def pid(self, pid_file: Path) -> int:
        """Waits for the command to write a pid to ``pid_file``."""

        def written() -> str:
            text = pid_file.read_text() if pid_file.exists() else ""
            return text if text.endswith("\n") else ""

        pid = int(wait_for(written, what=f"a pid in {pid_file.name}"))
        self.pids.append(pid)
        return pid

    def slot_comes_back(self) -> None:
        """Waits until the single slot takes a new task, i.e. the handler has returned."""
        after = assignment("echo", "next")
        wait_for(lambda: accepts(self.stub, self.worker_id, after), what="the slot to come back")
        self.coordinator.wait_status(after.task_id, "succeeded")


@pytest.fixture
def shell_worker(
    coordinator: FakeCoordinator,
    start_worker: Callable[..., Worker],
    worker_stub: Callable[[Worker], worker_pb2_grpc.WorkerServiceStub],
) -> Iterator[ShellWorker]:
    worker = start_worker(enable_shell=True, concurrency=1, queue_size=0)
    shell = ShellWorker(coordinator, worker_stub(worker))
    yield shell
    # Set up after the worker, so torn down before it: a program the worker failed to kill
    # would otherwise hold a slot thread, and the worker's shutdown, for minutes.
    for pid in shell.pids:
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_command_past_its_timeout_is_killed_and_fails_clearly(shell_worker, tmp_path):
    pid_file = tmp_path / "pid"
    task_id = shell_worker.run(pid_file, f'echo $$ > "$1"; exec sleep {FOREVER}', timeout=2)
    pid = shell_worker.pid(pid_file)
    final = shell_worker.coordinator.wait_final(task_id, timeout=30)
    assert shell_worker.coordinator.statuses(task_id) == ["running", "failed"]
    assert final.error.type == "ShellTimeout"
    assert "ran longer than 2 s" in final.error.message
    assert process_gone(pid), "the program must be killed and reaped before the failure is sent"
    shell_worker.slot_comes_back()


def test_the_tasks_timeout_kills_a_running_command(shell_worker, tmp_path):
    pid_file = tmp_path / "pid"
    script = f'echo $$ > "$1"; exec sleep {FOREVER}'
    task_id = shell_worker.run(pid_file, script, task_timeout=2)
    pid = shell_worker.pid(pid_file)
    final = shell_worker.coordinator.wait_final(task_id, timeout=30)
    assert shell_worker.coordinator.statuses(task_id) == ["running", "failed"]
    assert final.error.type == "timeout"
    # The timeout is reported at once; the program is killed when the handler sees the flag.
    wait_for(lambda: process_gone(pid), what=f"the program (pid {pid}) to be killed")
    shell_worker.slot_comes_back()


def test_cancelling_a_running_command_kills_it(shell_worker, tmp_path):
    pid_file = tmp_path / "pid"
    task_id = shell_worker.run(pid_file, f'echo $$ > "$1"; exec sleep {FOREVER}')
    pid = shell_worker.pid(pid_file)
    cancel = worker_pb2.CancelTaskRequest(task_id=task_id)
    assert shell_worker.stub.CancelTask(cancel).found
    shell_worker.coordinator.wait_final(task_id)
    assert shell_worker.coordinator.statuses(task_id) == ["running", "cancelled"]
    assert process_gone(pid), "the program must be killed and reaped before 'cancelled' is sent"
    shell_worker.slot_comes_back()


def test_the_timeout_also_ends_programs_the_command_started(shell_worker, tmp_path):
    pid_file = tmp_path / "pid"
    script = f'sleep {FOREVER} & echo $! > "$1"; wait'  # the background sleep holds the pipes
    task_id = shell_worker.run(pid_file, script, timeout=1)
    grandchild = shell_worker.pid(pid_file)
    final = shell_worker.coordinator.wait_final(task_id)
    assert final.error.type == "ShellTimeout"
    wait_for(lambda: process_gone(grandchild), what=f"the background program ({grandchild})")
