"""The real ``taskmill-scheduler`` process, driven with plain HTTP."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

DEADLINE = 60.0
_LISTENING = re.compile(r"listening on http://([^\s:]+):(\d+)")


def _command() -> list[str]:
    script = shutil.which("taskmill-scheduler")
    return [script] if script else [sys.executable, "-m", "taskmill.scheduler"]


class Process:
    """A running scheduler and the lines of its log, read as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            [*_command(), *args], env=env, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_line(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """The first log line matching ``pattern``; fails the test at the deadline or exit."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"the scheduler exited: {''.join(self.lines)}")
            self.lines.append(line)
            match = pattern.search(line)
            if match:
                return match
        pytest.fail(f"no line matched {pattern.pattern}: {''.join(self.lines)}")

    def close(self) -> None:
        """Stops the process if it still runs and releases its pipe."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=DEADLINE)
        self._reader.join(timeout=DEADLINE)
        assert self.popen.stderr is not None
        self.popen.stderr.close()

    def rest_of_log(self) -> str:
        """Everything it logged, once it has exited."""
        while (line := self._queue.get(timeout=DEADLINE)) is not None:
            self.lines.append(line)
        return "".join(self.lines)


def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
    return {**env, "TASKMILL_DATABASE_URL": database_url, **extra}


@contextmanager
def scheduler(args: list[str], env: dict[str, str]) -> Iterator[tuple[Process, int]]:
    process = Process(["--host", "127.0.0.1", "--port", "0", *args], env)
    try:
        match = process.wait_for_line(_LISTENING)
        yield process, int(match.group(2))
    finally:
        process.close()


def _request(port: int, method: str, path: str, body: object = None, **headers: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        data = None if body is None else json.dumps(body)
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read() or b"null")
    finally:
        conn.close()


def test_the_real_process_serves_http_and_stops_cleanly_on_sigterm(database_url: str) -> None:
    with scheduler([], _env(database_url)) as (process, port):
        status, headers, task = _request(port, "POST", "/v1/tasks", {"command": "echo"})
        assert status == 201
        read = _request(port, "GET", headers["Location"])[2]
        assert read.pop("waiting")["reason"] == "no_worker"
        assert read == task
        assert _request(port, "GET", "/readyz")[0] == 200
        assert _request(port, "GET", "/v1/tasks/nope")[0] == 404

        process.popen.send_signal(signal.SIGTERM)

        assert process.popen.wait(timeout=DEADLINE) == 0
        log = process.rest_of_log()
    assert "TASKMILL_API_TOKENS is not set" in log
    assert "stopped" in log and "Traceback" not in log


def test_tokens_from_the_environment_are_required(database_url: str) -> None:
    env = _env(database_url, TASKMILL_API_TOKENS="tok-1, tok-2")
    with scheduler([], env) as (process, port):
        assert _request(port, "GET", "/v1/tasks")[0] == 401
        assert _request(port, "GET", "/v1/tasks", Authorization="Bearer tok-2")[0] == 200
        assert _request(port, "GET", "/healthz")[0] == 200
    assert "TASKMILL_API_TOKENS is not set" not in "".join(process.lines)


def test_it_migrates_an_empty_database_at_start(empty_database_url: str) -> None:
    with scheduler([], _env(empty_database_url)) as (_, port):
        assert _request(port, "GET", "/readyz")[0] == 200
        assert _request(port, "POST", "/v1/tasks", {"command": "echo"})[0] == 201


def _fails_to_start(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        [*_command(), "--port", "0", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [
        line for line in result.stderr.splitlines() if line.startswith("taskmill-scheduler:")
    ]
    return line


def test_with_no_migrate_an_outdated_schema_is_a_one_line_error(empty_database_url: str) -> None:
    line = _fails_to_start(["--no-migrate"], _env(empty_database_url))

    assert "taskmill-migrate" in line


def test_an_unreachable_database_is_a_one_line_error() -> None:
    line = _fails_to_start([], _env("postgresql://postgres@127.0.0.1:9/taskmill"))

    assert "127.0.0.1:9" in line


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TASKMILL_SCHEDULER_THREADS", "many"),
        ("TASKMILL_MAX_PAYLOAD_BYTES", "0"),
        ("TASKMILL_DATABASE_URL", "mysql://x/y"),
        ("TASKMILL_MIGRATE", "perhaps"),
    ],
)
def test_a_bad_setting_is_a_one_line_error_naming_it(variable: str, value: str) -> None:
    env = _env("postgresql://postgres@127.0.0.1:9/taskmill", **{variable: value})

    line = _fails_to_start([], env)

    assert variable in line


def _children(pid: int) -> set[int]:
    """The ids of a process's children (Linux /proc)."""
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                children.add(int(entry))
    return children


def _wait_until(condition, what: str):
    deadline = time.monotonic() + DEADLINE
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def test_several_processes_share_the_port_replace_a_lost_one_and_stop_together(
    database_url: str,
) -> None:
    with scheduler(["--processes", "2", "--threads", "2"], _env(database_url)) as (process, port):
        parent = process.popen.pid
        first = _wait_until(lambda: len(_children(parent)) == 2 and _children(parent), "2 children")
        ids = {_request(port, "POST", "/v1/tasks", {"command": "echo"})[2]["id"] for _ in range(20)}
        assert len(ids) == 20

        lost = min(first)
        os.kill(lost, signal.SIGKILL)
        second = _wait_until(
            lambda: (c := _children(parent)) and len(c) == 2 and lost not in c and c, "a new child"
        )
        listed = {t["id"] for t in _request(port, "GET", "/v1/tasks?limit=100")[2]["tasks"]}
        assert listed == ids

        process.popen.send_signal(signal.SIGTERM)
        assert process.popen.wait(timeout=DEADLINE) == 0
        log = process.rest_of_log()
    assert all(not os.path.exists(f"/proc/{pid}") for pid in second)
    assert "starting another" in log and "Traceback" not in log
