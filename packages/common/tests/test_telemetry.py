"""Tracing's exit: a service whose collector is unreachable still stops promptly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

_EXIT = """
from opentelemetry import trace
from taskmill.common.telemetry import exporting, setup_tracing, shutdown_tracing
import os
provider = setup_tracing("probe", "0", os.environ)
assert exporting()
with trace.get_tracer("probe").start_as_current_span("last"):
    pass
shutdown_tracing(provider, timeout=1.0)
print("stopped", flush=True)
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_exit_gives_an_unreachable_collector_a_bounded_wait() -> None:
    # With a 60 s export timeout the SDK alone retries for ~30 s (backoff 1, 2, 4, 8, 16 s)
    # before it gives up; the bounded shutdown ends the retries after its 1 s.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",
        OTEL_EXPORTER_OTLP_TIMEOUT="60",
    )
    done = subprocess.run(
        [sys.executable, "-c", _EXIT], env=env, capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "stopped\n"
    assert "already shutdown" not in done.stderr  # the exporter is shut down once
