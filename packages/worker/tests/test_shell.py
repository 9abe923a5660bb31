"""The built-in ``shell`` handler: its own timeout, the task's timeout and cancellation kill it
and everything it started; it sees a minimal environment; its output is kept to a bounded tail.

Each command writes its pid to a file first, so the test can check the program is really gone
(killed and reaped), not only that the task was reported. Tasks that start more put a mark in
their environment: every live process holding it in ``/proc/PID/environ`` came from that task.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from worker_testkit import (
    FakeCoordinator,
    accepts,
    assignment,
    process_gone,
    wait_for,
)

from taskmill.v1 import worker_pb2, worker_pb2_grpc
from taskmill.worker import reaper
from taskmill.worker.app import Worker
from taskmill.worker.builtin import BASE_ENV
from taskmill.worker.shellrun import MAX_OUTPUT_BYTES

#: Seconds the commands would run if nothing stopped them: far beyond every deadline here.
FOREVER = "600"
MARK = "TASKMILL_TEST_MARK"


def marked(mark: str) -> list[int]:
    """Live processes whose environment holds ``MARK=mark`` (a zombie's environ reads empty)."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue  # not a process, gone meanwhile, or not ours to read
    return found


class ShellWorker:
    """A worker with ``shell`` enabled, one slot and no queue, and the pids its commands wrote."""

    def __init__(
        self, coordinator: FakeCoordinator, stub: worker_pb2_grpc.WorkerServiceStub
    ) -> None:
        self.coordinator = coordinator
        self.worker_id = coordinator.wait_registered()
        self.stub = stub
        self.pids: list[int] = []
        self.marks: list[str] = []

    def submit(self, payload: Any, timeout: float = 0.0) -> str:
        """Assigns a ``shell`` task as soon as the slot takes it; returns the task id."""
        task = assignment("shell", payload, timeout=timeout)
        wait_for(lambda: accepts(self.stub, self.worker_id, task), what="the slot to take it")
        return task.task_id

    def run(self, pid_file: Path, script: str, **options: Any) -> str:
        """Starts ``sh -c script`` (``$1`` is the pid file); returns the task id once it runs."""
        argv = ["sh", "-c", script, "sh", str(pid_file)]
        timeout = options.pop("task_timeout", 0.0)
        task_id = self.submit({"argv": argv, **options}, timeout=timeout)
        self.coordinator.wait_status(task_id, "running")
        return task_id

    def mark(self) -> str:
        """A new mark, for a task's ``env``; what still holds it is killed at teardown."""
        self.marks.append(uuid.uuid4().hex)
        return self.marks[-1]

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
    leftovers = [pid for mark in shell.marks for pid in marked(mark)]
    for pid in shell.pids + leftovers:
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


# A command that leaves its session twice: a child that calls setsid with its parent alive, and
# one whose setsid parent exits at once, so it is orphaned. Neither is in the command's session
# or process group, and the orphan is no longer below the command either.
ESCAPING = f"""
setsid sh -c 'sleep {FOREVER} & echo $! > "$1.orphan"' sh "$1"
setsid sleep {FOREVER} & echo $! > "$1.child"
echo $$ > "$1"
exec sleep {FOREVER}
"""


def _start_escaping(
    shell_worker: ShellWorker, pid_file: Path, **options: Any
) -> tuple[str, list[int]]:
    """Runs ``ESCAPING``; returns the task id and the pids of the three once all three run."""
    task_id = shell_worker.run(pid_file, ESCAPING, env={MARK: shell_worker.mark()}, **options)
    escaped = [pid_file.with_name(pid_file.name + end) for end in (".orphan", ".child")]
    return task_id, [shell_worker.pid(path) for path in [*escaped, pid_file]]


def _every_gone(pids: list[int]) -> None:
    for pid in pids:
        wait_for(
            lambda pid=pid: process_gone(pid), what=f"the process {pid} the task started to be gone"
        )


def test_the_timeout_kills_programs_that_left_the_session(shell_worker, tmp_path):
    # The pids, not the mark: the kill may come before the mark could be read.
    task_id, started = _start_escaping(shell_worker, tmp_path / "pid", timeout=1)
    assert shell_worker.coordinator.wait_final(task_id).error.type == "ShellTimeout"
    _every_gone(started)
    shell_worker.slot_comes_back()


def test_cancelling_kills_programs_that_left_the_session(shell_worker, tmp_path):
    task_id, started = _start_escaping(shell_worker, tmp_path / "pid")
    mark = shell_worker.marks[-1]
    # A pid file is written just before its process execs, when its environ may read empty.
    wait_for(lambda: set(started) <= set(marked(mark)), what="the mark to show all three processes")
    assert shell_worker.stub.CancelTask(worker_pb2.CancelTaskRequest(task_id=task_id)).found
    shell_worker.coordinator.wait_final(task_id)
    assert shell_worker.coordinator.statuses(task_id) == ["running", "cancelled"]
    _every_gone(started)
    wait_for(lambda: not marked(mark), what="every process the task started to be gone")
    shell_worker.slot_comes_back()


def test_what_a_program_leaves_behind_ends_with_it(shell_worker, tmp_path):
    # The leftovers let go of the output pipes, so only the kill at the program's exit ends them.
    orphan, mark = tmp_path / "orphan", shell_worker.mark()
    script = f"""
    setsid sh -c 'sleep {FOREVER} & echo $! > "$1"' sh "$1" > /dev/null 2>&1
    setsid sleep {FOREVER} > /dev/null 2>&1 &
    echo started
    """
    argv = ["sh", "-c", script, "sh", str(orphan)]
    task_id = shell_worker.submit({"argv": argv, "env": {MARK: mark}})
    final = shell_worker.coordinator.wait_final(task_id)
    assert json.loads(final.result_json)["stdout"] == "started\n"
    assert process_gone(int(orphan.read_text())), "the orphan must be killed and reaped"
    wait_for(lambda: not marked(mark), what="every process the task started to be gone")


# The task's env adds and overrides; a C locale must not make the supervisor's interpreter add
# an LC_CTYPE of its own, nor change the task's.
@pytest.mark.parametrize("env", [{"GREETING": "hello, world", "LANG": "C"}, {"LC_CTYPE": "POSIX"}])
def test_the_program_sees_a_minimal_environment_never_the_workers(shell_worker, monkeypatch, env):
    monkeypatch.setenv("TASKMILL_CLUSTER_TOKEN", "cluster-token-secret")
    monkeypatch.setenv("DATABASE_PASSWORD", "database-secret")
    task_id = shell_worker.submit({"argv": ["env"], "env": env})
    stdout = json.loads(shell_worker.coordinator.wait_final(task_id).result_json)["stdout"]
    assert "secret" not in stdout
    seen = dict(line.split("=", 1) for line in stdout.splitlines())
    assert seen == {**BASE_ENV, "HOME": seen["HOME"], **env}
    assert seen["HOME"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (["A=1"], "shell's env must be an object"),
        ({"A": 1}, "shell's env['A'] must be a string"),
        ({"A=B": "1"}, "shell's env has a bad variable name: 'A=B'"),
    ],
)
def test_a_bad_env_fails_the_task_naming_it(shell_worker, env, message):
    task_id = shell_worker.submit({"argv": ["true"], "env": env})
    final = shell_worker.coordinator.wait_final(task_id)
    assert final.error.type == "ValueError"
    assert final.error.message.startswith(message)


def test_a_program_that_cannot_start_fails_with_the_reason(shell_worker):
    task_id = shell_worker.submit(["no-such-program-anywhere"])
    final = shell_worker.coordinator.wait_final(task_id)
    assert final.error.type == "FileNotFoundError"
    assert "no-such-program-anywhere" in final.error.message


def _memory_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


def _reset_peak_memory() -> int:
    """Resets the peak RSS to the current one where the kernel lets us; returns the baseline."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return _memory_kib("VmHWM")  # the peak so far: a growth past it still shows
    return _memory_kib("VmRSS")


def test_output_far_past_the_bound_keeps_the_tail_without_holding_it(shell_worker):
    size, tail = 50_000_000, MAX_OUTPUT_BYTES
    script = f"yes | head -c {size}; echo THE-END; yes e | head -c {size // 10} >&2"
    baseline = _reset_peak_memory()
    task_id = shell_worker.submit({"argv": ["sh", "-c", script]})
    final = shell_worker.coordinator.wait_final(task_id, timeout=60)
    assert shell_worker.coordinator.statuses(task_id)[-1] == "succeeded", final.error.message
    result = json.loads(final.result_json)
    grown_kib = _memory_kib("VmHWM") - baseline  # the worker runs in this process
    assert result["stdout"].endswith("y\ny\nTHE-END\n") and len(result["stdout"]) == tail
    assert result["stderr"] == "e\n" * (tail // 2)
    assert result["truncated"]
    assert result["stdout_dropped_bytes"] == size + len("THE-END\n") - tail
    assert result["stderr_dropped_bytes"] == size // 10 - tail
    assert grown_kib < 16 * 1024, f"the worker grew by {grown_kib} KiB reading the output"


# A stand-in for a worker: starts the supervisor as shellrun does, then waits to be killed.
_PARENT = """
import os, subprocess, sys
reaper, mark, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
status_read, status_write = os.pipe()
env = {"PATH": "/usr/bin:/bin", "TASKMILL_TEST_MARK": mark}
subprocess.Popen(
    [sys.executable, "-I", "-S", reaper, str(status_write), str(os.getpid()), "-", *argv],
    env=env, pass_fds=(status_write,), start_new_session=True,
)
print(os.read(status_read, 100).decode(), flush=True)
sys.stdin.read()
"""


def test_a_worker_killed_outright_takes_its_programs_with_it(tmp_path):
    pid_file, mark = tmp_path / "pid", uuid.uuid4().hex
    argv = ["sh", "-c", ESCAPING, "sh", str(pid_file)]
    command = [sys.executable, "-c", _PARENT, reaper.__file__, mark, *argv]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as worker:
        try:
            assert worker.stdout is not None and worker.stdout.readline().startswith(b"started")
            escaped = [pid_file.with_name(pid_file.name + end) for end in (".orphan", ".child")]
            wait_for(lambda: all(path.exists() for path in escaped), what="the escaped programs")
            assert len(marked(mark)) >= 4, "the supervisor, sh and two escaped sleeps"
            worker.kill()
            worker.wait()
            wait_for(lambda: not marked(mark), what="every process the task started to be gone")
        finally:
            for pid in marked(mark):
                os.kill(pid, signal.SIGKILL)
