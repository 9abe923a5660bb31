"""A harness for whole-cluster tests: the real services started as processes.

A ``Cluster`` starts nothing by itself; a test calls ``cluster.start_scheduler()``,
``cluster.start_coordinator()`` and ``cluster.start_worker()`` as it needs, and everything is
stopped (SIGKILL after a grace period) at the end. Each process logs to a file in the test's
temporary directory, shown when the test fails.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskmill.common.grpcutil import check_health
from taskmill.dev.cluster import free_port, wait_until

__all__ = ["Cluster", "Service", "free_port", "wait_for"]


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Polls ``condition`` until it returns something truthy, and returns that."""
    found: list[Any] = []

    def holds() -> bool:
        value = condition()
        if value:
            found.append(value)
        return bool(value)

    wait_until(holds, timeout, what)
    return found[0]


@dataclass
class Service:
    """One running service process."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    address: str

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signals the process and waits for it; kills it when it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.stop(signal.SIGKILL)


@dataclass
class Cluster:
    """Starts services against one database and talks to the scheduler over HTTP."""

    database_url: str
    tmp: Path
    env: dict[str, str]
    services: list[Service] = field(default_factory=list)
    url: str = ""

    def _spawn(self, name: str, module: str, args: list[str], address: str) -> Service:
        log = self.tmp / f"{name}-{len(self.services)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        service = Service(name, process, log, address)
        self.services.append(service)
        return service

    def start_scheduler(self) -> Service:
        port = free_port()
        service = self._spawn(
            "scheduler",
            "taskmill.scheduler",
            ["--host", "127.0.0.1", "--port", str(port)],
            f"127.0.0.1:{port}",
        )
        self.url = f"http://127.0.0.1:{port}"
        wait_for(lambda: self._status(f"{self.url}/readyz") == 200, 60, "scheduler ready")
        return service

    def start_coordinator(self, *extra: str, port: int | None = None) -> Service:
        port = port or free_port()
        address = f"127.0.0.1:{port}"
        service = self._spawn(
            "coordinator",
            "taskmill.coordinator",
            ["--host", "127.0.0.1", "--port", str(port), *extra],
            address,
        )
        wait_for(lambda: check_health(address, timeout=0.5), 60, "coordinator serving")
        return service

    def start_worker(self, coordinator: Service, *extra: str, wait: bool = True) -> Service:
        port = free_port()
        address = f"127.0.0.1:{port}"
        before = len(self.workers())
        service = self._spawn(
            "worker",
            "taskmill.worker",
            [
                "--coordinator",
                coordinator.address,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--advertise-address",
                address,
                *extra,
            ],
            address,
        )
        if wait:
            wait_for(lambda: len(self.workers()) > before, 60, "worker registered")
        return service

    # -- HTTP ---------------------------------------------------------------------------------

    def _status(self, url: str) -> int:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return 0

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status), json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def submit(self, command: str, payload: Any = None, **fields: Any) -> dict[str, Any]:
        status, task = self.request(
            "POST", "/v1/tasks", {"command": command, "payload": payload or {}, **fields}
        )
        assert status == 201, task
        return dict(task)

    def submit_batch(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        status, body = self.request("POST", "/v1/tasks/batch", {"tasks": tasks})
        assert status == 201, body
        return list(body["tasks"])

    def task(self, task_id: str) -> dict[str, Any]:
        status, task = self.request("GET", f"/v1/tasks/{task_id}")
        assert status == 200, task
        return dict(task)

    def workers(self) -> list[dict[str, Any]]:
        if not self.url:
            return []
        status, body = self.request("GET", "/v1/workers")
        return list(body["workers"]) if status == 200 else []

    def wait_final(self, task_ids: list[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
        """Waits until every task is succeeded, failed or cancelled; returns them by id."""
        final = {"succeeded", "failed", "cancelled"}
        done: dict[str, dict[str, Any]] = {}

        def all_done() -> bool:
            for task_id in task_ids:
                if task_id not in done:
                    task = self.task(task_id)
                    if task["status"] in final:
                        done[task_id] = task
            return len(done) == len(task_ids)

        wait_for(all_done, timeout, f"{len(task_ids)} tasks to finish")
        return done

    def stop_all(self) -> None:
        for service in reversed(self.services):
            service.stop(timeout=10)

    def logs(self) -> str:
        return "\n".join(
            f"----- {s.name} ({s.log.name}) -----\n{s.log.read_text(errors='replace')[-4000:]}"
            for s in self.services
        )
