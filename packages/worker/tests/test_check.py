"""``taskmill-worker --check``: the probe exits 0 when the worker on ``--port`` is SERVING."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from taskmill.common.grpcutil import GrpcSecurity
from taskmill.testing import PKI_NAMED_HOST, tls_env


def _check(port: int, env: dict[str, str] | None = None) -> int:
    """Runs the probe as a process, as a container's health check does; its exit status."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
    command = [sys.executable, "-m", "taskmill.worker", "--check", "--port", str(port)]
    return subprocess.run(command, env={**clean, **(env or {})}, timeout=60).returncode


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_check_answers_for_a_plaintext_worker(start_worker) -> None:
    worker = start_worker()
    assert _check(worker.port) == 0
    assert _check(_free_port()) == 1  # nothing listens there


def test_check_speaks_tls_to_a_worker_that_uses_it(start_worker, pki: dict[str, Path]) -> None:
    env = tls_env(pki, "server")
    worker = start_worker(security=GrpcSecurity.from_env(env))
    assert _check(worker.port) == 1  # plaintext is refused
    assert _check(worker.port, env) == 0


def test_check_names_the_host_the_workers_certificate_is_for(
    start_worker, pki: dict[str, Path]
) -> None:
    # The worker's certificate names its own host only, not 127.0.0.1 where the probe dials.
    env = tls_env(pki, "named")
    worker = start_worker(security=GrpcSecurity.from_env(env))
    assert _check(worker.port, env) == 1
    assert _check(worker.port, {**env, "TASKMILL_TLS_SERVER_NAME": PKI_NAMED_HOST}) == 0
