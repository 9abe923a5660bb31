"""The images' HEALTHCHECK and ENTRYPOINT, run as a container would run them: the service from
the replayed image environment, with the runtime stage's ENV, outside the source tree.

Ports come from the environment variables the images read, set to free ports here, so the
health check commands run exactly as written in the Dockerfiles."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploy_support import ROOT, RUNTIME_VENV, exec_form, parse_dockerfile

from taskmill.testing import admin_connection

START_DEADLINE = 60.0
STOP_DEADLINE = 30.0
CLUSTER_TOKEN = "test-cluster-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Image:
    """One service's image: its runtime stage's settings and the replayed environment."""

    def __init__(self, service: str, venv: Path, scratch: Path) -> None:
        runtime = parse_dockerfile(ROOT / "packages" / service / "Dockerfile")[-1]
        self.service = service
        self.scratch = scratch
        self.entrypoint = exec_form(runtime.all("ENTRYPOINT")[-1].args)
        (healthcheck,) = runtime.all("HEALTHCHECK")
        self.healthcheck = exec_form(healthcheck.args.split(" CMD ", 1)[1])
        self.env = {
            name: value.replace(RUNTIME_VENV, str(venv)).replace("$PATH", "/usr/bin:/bin")
            for name, value in runtime.env().items()
        }
        self.env["HOME"] = str(scratch)

    def healthy(self, env: dict[str, str]) -> bool:
        result = subprocess.run(
            self.healthcheck, cwd=self.scratch, env=env, capture_output=True, timeout=30
        )
        return result.returncode == 0

    @contextmanager
    def run(self, **overrides: str) -> Iterator[dict[str, str]]:
        """Starts the entrypoint, waits until the health check passes, and stops it with
        SIGTERM (as `docker stop` does) on exit; yields the container's environment."""
        env = {**self.env, **overrides}
        assert not self.healthy(env), "healthy before it started: the check cannot fail"
        log = (self.scratch / f"{self.service}.log").open("wb")
        process = subprocess.Popen(
            self.entrypoint, cwd=self.scratch, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + START_DEADLINE
            while not self.healthy(env):
                assert process.poll() is None, f"{self.service} exited:\n{self.log()}"
                assert time.monotonic() < deadline, f"never healthy:\n{self.log()}"
                time.sleep(0.2)
            yield env
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=STOP_DEADLINE) == 0, self.log()
            assert not self.healthy(env)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()

    def log(self) -> str:
        return (self.scratch / f"{self.service}.log").read_text(errors="replace")[-4000:]


def image(replay: Any, service: str, tmp_path: Path) -> Image:
    scratch = tmp_path / service
    scratch.mkdir()
    return Image(service, replay(service).venv, scratch)


def test_the_scheduler_image_becomes_healthy_and_stops_on_sigterm(
    replay: Any, database_url: str, tmp_path: Path
) -> None:
    scheduler = image(replay, "scheduler", tmp_path)
    port = str(free_port())
    with scheduler.run(
        TASKMILL_DATABASE_URL=database_url,
        TASKMILL_SCHEDULER_PORT=port,
        TASKMILL_API_TOKENS="test-api-token",
        TASKMILL_MIGRATE="false",
    ) as env:
        # The image binds every interface, not only loopback, so other containers reach it.
        assert env["TASKMILL_SCHEDULER_HOST"] == "0.0.0.0"
        # infra/k8s probes /healthz and /readyz; the kubelet sends no token.
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
                assert answer.status == 200, path


def test_the_coordinator_and_worker_images_become_healthy_together(
    replay: Any, database_url: str, tmp_path: Path
) -> None:
    coordinator = image(replay, "coordinator", tmp_path)
    worker = image(replay, "worker", tmp_path)
    coordinator_port = str(free_port())
    with coordinator.run(
        TASKMILL_DATABASE_URL=database_url,
        TASKMILL_COORDINATOR_PORT=coordinator_port,
        TASKMILL_CLUSTER_TOKEN=CLUSTER_TOKEN,
        TASKMILL_MIGRATE="false",
    ):
        worker_port = str(free_port())
        # As in docker-compose: no advertise address, so the worker advertises its host name.
        with worker.run(
            TASKMILL_WORKER_COORDINATOR=f"127.0.0.1:{coordinator_port}",
            TASKMILL_WORKER_PORT=worker_port,
            TASKMILL_CLUSTER_TOKEN=CLUSTER_TOKEN,
        ):
            expected = f"{socket.gethostname()}:{worker_port}"
            assert wait_for_worker(database_url) == [expected]


def wait_for_worker(database_url: str) -> list[str]:
    """The addresses of the registered workers, once there is one."""
    with admin_connection(database_url) as connection:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            rows = connection.run("SELECT address FROM workers WHERE state = 'active'")
            if rows or time.monotonic() > deadline:
                return [row[0] for row in rows]
            time.sleep(0.1)
