"""Entry point of ``taskmill-coordinator``."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from importlib.metadata import version
from types import FrameType

from taskmill.common.errors import TaskmillError
from taskmill.common.runtime import tune_gc
from taskmill.common.telemetry import setup_logging, setup_tracing, shutdown_tracing
from taskmill.coordinator.server import create_server
from taskmill.coordinator.settings import CoordinatorSettings, load_settings

logger = logging.getLogger("taskmill.coordinator")


def main(argv: list[str] | None = None) -> int:
    """Runs a coordinator until SIGTERM or SIGINT; returns the exit status."""
    setup_logging(os.environ.get("TASKMILL_LOG_LEVEL", "INFO"))
    try:
        settings = load_settings(argv, os.environ)
    except TaskmillError as exc:
        print(f"taskmill-coordinator: {exc.message}", file=sys.stderr)
        return 1
    provider = setup_tracing("taskmill-coordinator", version("taskmill-coordinator"), os.environ)
    try:
        return _serve(settings)
    finally:
        shutdown_tracing(provider)


def _serve(settings: CoordinatorSettings) -> int:
    try:
        server = create_server(settings)
    except TaskmillError as exc:
        print(f"taskmill-coordinator: {exc.message}", file=sys.stderr)
        return 1
    tune_gc()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # One line that scripts and tests parse to find the port (it may have been 0).
    logger.info(
        "taskmill-coordinator listening on %s:%d (id %s)",
        settings.host,
        server.port,
        server.coordinator_id,
    )
    while not stop.wait(1.0):
        pass
    server.stop(settings.grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
