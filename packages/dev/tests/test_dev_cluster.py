"""taskmill-dev started as a real process: a task submitted over plain HTTP succeeds, and a
SIGINT to its process group stops everything it started."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(240)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def dev_cluster(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
    log = tmp_path / "dev.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "taskmill.dev", "--workers", "2", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process, f"http://127.0.0.1:{port}", log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_dev_cluster_runs_a_task_and_stops_cleanly(
    dev_cluster: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, url, log = dev_cluster
    _wait_for(
        lambda: len((_get(f"{url}/v1/workers") or {}).get("workers", [])) >= 2,
        180,
        "two workers registered",
    )
    request = urllib.request.Request(
        f"{url}/v1/tasks",
        data=json.dumps({"command": "echo", "payload": {"hello": "dev"}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201
        task_id = json.load(response)["id"]
    task = _wait_for(
        lambda: (t := _get(f"{url}/v1/tasks/{task_id}")) and t["status"] == "succeeded" and t,
        60,
        "the task to succeed",
    )
    assert task["result"] == {"hello": "dev"}

    started = _descendants(process.pid)
    assert len(started) >= 5  # postgres, scheduler, coordinator, two workers (at least)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=90) == 0
    _wait_for(lambda: not any(_alive(pid) for pid in started), 30, "every child to exit")

    output = log.read_text(errors="replace")
    embedded = re.search(r"embedded PostgreSQL at postgresql://\S+:(\d+)/", output)
    assert embedded is not None, output
    assert embedded.group(1) != "5432"
    assert f"curl -s -X POST {url}/v1/tasks" in output
