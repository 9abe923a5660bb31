"""The ``taskmill`` CLI as a real process against a real scheduler: output and exit codes."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from taskmill.client import Client, TaskStatus
from taskmill.common.models import TaskError as StoredError

from .conftest import Scheduler  # type: ignore[import-not-found]


def taskmill(
    scheduler: Scheduler | None, *args: str, stdin: str | None = None, **popen: Any
) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m taskmill.client`` with TASKMILL_URL/TOKEN pointing at the scheduler."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
    if scheduler is not None:
        env |= {"TASKMILL_URL": scheduler.url, "TASKMILL_TOKEN": scheduler.token}
    return subprocess.run(
        [sys.executable, "-m", "taskmill.client", *args],
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=popen.pop("stderr", subprocess.PIPE),
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result
    assert result.stdout == ""
    assert result.stderr.startswith("taskmill: ")
    assert result.stderr.count("\n") == 1
    assert text in result.stderr
    assert "Traceback" not in result.stderr


def test_submit_prints_the_id_and_status_shows_the_task(
    scheduler: Scheduler, client: Client
) -> None:
    submitted = taskmill(scheduler, "submit", "echo", "--payload", '{"a": 1}', "--priority", "3")
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    assert submitted.stdout == task_id + "\n"
    assert client.get(task_id).payload == {"a": 1}
    shown = taskmill(scheduler, "status", task_id)
    assert shown.returncode == 0
    assert f"id:        {task_id}\n" in shown.stdout
    assert "status:    scheduled\n" in shown.stdout
    assert "priority:  3\n" in shown.stdout
    as_json = json.loads(taskmill(scheduler, "status", task_id, "--json").stdout)
    assert (as_json["id"], as_json["command"], as_json["payload"]) == (task_id, "echo", {"a": 1})


def test_submit_options_reach_the_task(scheduler: Scheduler, tmp_path: Path) -> None:
    before = datetime.now(UTC)
    result = taskmill(
        scheduler, "submit", "resize", "--json", "--payload", "-", "--in", "1h30m",
        "--max-attempts", "3", "--timeout", "2m", "--queue", "images", stdin='[1, "two"]',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    task = json.loads(result.stdout)
    assert task["payload"] == [1, "two"]
    assert (task["max_attempts"], task["timeout_seconds"], task["queue"]) == (3, 120, "images")
    due = datetime.fromisoformat(task["scheduled_at"]) - before
    assert timedelta(minutes=89) < due < timedelta(minutes=91)

    payload_file = tmp_path / "payload.json"
    payload_file.write_text('{"from": "file"}', encoding="utf-8")
    at = taskmill(
        scheduler, "--json", "submit", "resize", "--payload-file", str(payload_file),
        "--at", "2031-01-01T00:00:00+02:00",
    )  # fmt: skip
    assert at.returncode == 0, at.stderr
    task = json.loads(at.stdout)
    assert task["payload"] == {"from": "file"}
    assert datetime.fromisoformat(task["scheduled_at"]) == datetime(2030, 12, 31, 22, tzinfo=UTC)


def test_global_url_and_token_flags_go_before_the_command(scheduler: Scheduler) -> None:
    result = taskmill(None, "--url", scheduler.url, "--token", scheduler.token, "workers", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"workers": []}
    table = taskmill(None, "--url", scheduler.url, "--token", scheduler.token, "workers")
    assert table.stdout.split() == [
        "ID", "ADDRESS", "STATE", "FREE/CAP", "QUEUES", "LAST", "HEARTBEAT", "HOSTNAME", "VERSION",
    ]  # fmt: skip


def test_list_prints_a_table_or_json(scheduler: Scheduler, client: Client) -> None:
    tasks = client.submit_many([{"command": "listed", "payload": i} for i in range(3)])
    client.submit("other")
    table = taskmill(scheduler, "list", "--command", "listed", "--limit", "2")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATUS", "COMMAND"]
    assert [line.split()[0] for line in lines[1:]] == [tasks[2].id, tasks[1].id]
    assert all(line.split()[1:3] == ["scheduled", "listed"] for line in lines[1:])
    listed = json.loads(taskmill(scheduler, "list", "--json", "--status", "scheduled").stdout)
    assert [t["id"] for t in listed["tasks"]][1:] == [t.id for t in reversed(tasks)]


def test_cancel_then_wait_reports_the_cancelled_task_with_exit_1(
    scheduler: Scheduler, client: Client
) -> None:
    task = client.submit("echo", delay=600)
    cancelled = taskmill(scheduler, "cancel", task.id)
    assert (cancelled.returncode, cancelled.stdout) == (0, f"{task.id} cancelled\n")
    waited = taskmill(scheduler, "wait", task.id)
    assert waited.returncode == 1
    assert waited.stdout == f"{task.id}  cancelled\n"
    again = taskmill(scheduler, "cancel", task.id)
    _one_line_error(again, 1, "conflict")


def test_wait_exits_0_only_when_every_task_succeeded(scheduler: Scheduler, client: Client) -> None:
    ok, bad = client.submit("echo"), client.submit("boom", priority=-1)
    scheduler.finish(ok.id, TaskStatus.SUCCEEDED, result={"echo": True})
    scheduler.finish(bad.id, TaskStatus.FAILED, error=StoredError("KeyError", "'x'", "tb"))
    good = taskmill(scheduler, "wait", ok.id)
    assert (good.returncode, good.stdout) == (0, f'{ok.id}  succeeded  {{"echo":true}}\n')
    both = taskmill(scheduler, "wait", ok.id, bad.id, "--json")
    assert both.returncode == 1
    assert [(t["id"], t["status"]) for t in json.loads(both.stdout)["tasks"]] == [
        (ok.id, "succeeded"), (bad.id, "failed"),
    ]  # fmt: skip
    failed = taskmill(scheduler, "status", bad.id)
    assert failed.returncode == 0
    assert "error:     KeyError: 'x'\n" in failed.stdout


def test_wait_for_many_draws_a_progress_bar_on_a_terminal(
    scheduler: Scheduler, client: Client
) -> None:
    tasks = [client.submit("echo") for _ in range(3)]
    for task in tasks:
        scheduler.finish(task.id, TaskStatus.SUCCEEDED, result=None)
    controller, terminal = pty.openpty()
    try:
        result = taskmill(scheduler, "wait", *(t.id for t in tasks), stderr=terminal)
        os.close(terminal)
        terminal = -1
        drawn = os.read(controller, 4096).decode()
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)
    assert result.returncode == 0
    assert "] 3/3" in drawn
    plain = taskmill(scheduler, "wait", *(t.id for t in tasks))
    assert plain.stderr == ""


@pytest.fixture
def background(scheduler: Scheduler) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts CLI processes that outlive one call; kills any still running at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "TASKMILL_URL": scheduler.url, "TASKMILL_TOKEN": scheduler.token}
        process = subprocess.Popen(
            [sys.executable, "-m", "taskmill.client", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_submit_wait_follows_the_task_to_its_end(
    scheduler: Scheduler, client: Client, background: Callable[..., subprocess.Popen[str]]
) -> None:
    def submitted(command: str) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = [t.id for t in client.list(command=command)]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"the CLI never submitted {command}")

    succeeding = background("submit", "works", "--wait", "--json")
    # Not due for an hour, so finishing "works" below (which claims every due task) leaves it
    # scheduled, and cancelling it ends it at once.
    cancelled = background("submit", "stopped", "--in", "1h", "--wait", "--json")
    scheduler.finish(submitted("works"), TaskStatus.SUCCEEDED, result=[1, 2])
    client.cancel(submitted("stopped"))
    out, err = succeeding.communicate(timeout=60)
    assert (succeeding.returncode, err) == (0, "")
    assert json.loads(out)["result"] == [1, 2]
    out, err = cancelled.communicate(timeout=60)
    assert (cancelled.returncode, err) == (1, "")
    assert json.loads(out)["status"] == "cancelled"


def test_wait_timeout_exits_1(scheduler: Scheduler, client: Client) -> None:
    task = client.submit("never")
    _one_line_error(taskmill(scheduler, "wait", task.id, "--timeout", "300ms"), 1, "not finished")


@pytest.mark.parametrize(
    "args",
    [("status", "{id}"), ("cancel", "{id}"), ("wait", "{id}"), ("status", "not-a-uuid")],
)
def test_unknown_tasks_exit_3(scheduler: Scheduler, args: tuple[str, ...]) -> None:
    task_id = str(uuid.uuid4()) if "{id}" in args else args[-1]
    argv = [arg.format(id=task_id) for arg in args]
    _one_line_error(taskmill(scheduler, *argv), 3, f"no task with id {task_id!r}")


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("submit", "echo", "--payload", "{nope"), "--payload is not valid JSON"),
        (("submit", "echo", "--in", "soon"), "not a duration"),
        (("submit", "echo", "--at", "2030-01-01", "--in", "5m"), "not allowed with"),
        (("submit", "echo", "--at", "someday"), "not a time"),
        (("submit", "echo", "--max-attempts", "0"), "max_attempts: must be between 1 and 100"),
        (("submit", "bad command"), "command: must be"),
        (("list", "--limit", "0"), "--limit must be at least 1"),
        (("frobnicate",), "invalid choice"),
        ((), "required"),
    ],
)
def test_usage_errors_exit_2(scheduler: Scheduler, args: tuple[str, ...], text: str) -> None:
    result = taskmill(scheduler, *args)
    assert result.returncode == 2, result
    assert text in result.stderr
    assert "Traceback" not in result.stderr


def test_server_auth_and_network_errors_exit_4_in_one_line(
    scheduler: Scheduler, unused_port: int
) -> None:
    wrong = taskmill(None, "--url", scheduler.url, "--token", "wrong", "list")
    _one_line_error(wrong, 4, "not authorized")
    down = taskmill(None, "--url", f"http://127.0.0.1:{unused_port}", "submit", "echo")
    _one_line_error(down, 4, f"cannot reach the scheduler at http://127.0.0.1:{unused_port}")


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "taskmill"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60,
                            check=False)  # fmt: skip
    assert result.returncode == 0
    assert "submit" in result.stdout and "Exit status" in result.stdout
