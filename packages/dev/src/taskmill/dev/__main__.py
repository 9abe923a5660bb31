"""``taskmill-dev``: the whole cluster on one machine.

Starts PostgreSQL (embedded unless ``--database-url``), applies the migrations, then the
scheduler, one coordinator and N workers as child processes; waits until every part is healthy;
prints how to use it; and stops everything in order on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from taskmill.common.errors import TaskmillError
from taskmill.common.grpcutil import check_health
from taskmill.common.migrate import migrate
from taskmill.common.settings import DatabaseSettings
from taskmill.dev.cluster import (
    Supervisor,
    child_env,
    free_port,
    python_module,
    wait_until,
)
from taskmill.dev.database import ensure_database
from taskmill.dev.pgserver import PostgresServer

logger = logging.getLogger("taskmill.dev")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="taskmill-dev", description="Run the whole taskmill cluster on this machine."
    )
    parser.add_argument("--workers", type=int, default=int(env.get("TASKMILL_DEV_WORKERS", "3")))
    parser.add_argument("--port", type=int, default=int(env.get("TASKMILL_DEV_PORT", "8081")))
    parser.add_argument("--database-url", default=env.get("TASKMILL_DEV_DATABASE_URL"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--handlers", default=env.get("TASKMILL_WORKER_HANDLERS", ""))
    parser.add_argument("--restart", action="store_true", help="restart children that die")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error("--workers must be 0 or more")
    return args


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _worker_count(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/v1/workers", timeout=1) as response:
            return len(json.load(response).get("workers", []))
    except (urllib.error.URLError, OSError, ValueError):
        return -1


def _start_services(args: argparse.Namespace, database_url: str, sup: Supervisor) -> str:
    env = child_env(TASKMILL_DATABASE_URL=database_url, TASKMILL_MIGRATE="false")
    url = f"http://127.0.0.1:{args.port}"
    sup.add(
        "scheduler",
        python_module("taskmill.scheduler", "--host", "127.0.0.1", "--port", str(args.port)),
        env,
    )
    coordinator = f"127.0.0.1:{free_port()}"
    sup.add(
        "coordinator",
        python_module("taskmill.coordinator", "--host", "127.0.0.1", "--port", coordinator[10:]),
        env,
    )
    wait_until(lambda: _http_ok(f"{url}/readyz"), args.ready_timeout, "the scheduler")
    wait_until(lambda: check_health(coordinator), args.ready_timeout, "the coordinator")
    for n in range(1, args.workers + 1):
        port = str(free_port())
        worker_args = ["--coordinator", coordinator, "--host", "127.0.0.1", "--port", port]
        worker_args += ["--advertise-address", f"127.0.0.1:{port}"]
        if args.handlers:
            worker_args += ["--handlers", args.handlers]
        sup.add(f"worker-{n}", python_module("taskmill.worker", *worker_args), env)
    wait_until(
        lambda: _worker_count(url) >= args.workers, args.ready_timeout, f"{args.workers} workers"
    )
    return url


def _banner(url: str, workers: int) -> str:
    return f"""
taskmill is running: scheduler {url}, 1 coordinator, {workers} workers. Ctrl-C stops it.

  curl -s -X POST {url}/v1/tasks -H 'Content-Type: application/json' \\
       -d '{{"command": "echo", "payload": {{"hello": "world"}}}}'
  uv run taskmill --url {url} submit echo --payload '{{"hello": "world"}}' --wait
"""


def run(args: argparse.Namespace) -> int:
    """Runs the cluster until a signal arrives."""
    sup = Supervisor(restart=args.restart)
    server: PostgresServer | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        sup.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if args.database_url:
            database_url = args.database_url
        else:
            server = PostgresServer()
            server.start(args.data_dir)
            database_url = ensure_database(server.url, "taskmill")
            logger.info("embedded PostgreSQL at %s", database_url)
        DatabaseSettings.from_url(database_url)
        migrate(database_url)
        url = _start_services(args, database_url, sup)
        print(_banner(url, args.workers), flush=True)
        while not sup.stopping.wait(0.5):
            sup.check()
        logger.info("stopping")
        return 0
    finally:
        sup.stop_all(["worker", "coordinator", "scheduler"], timeout=35.0)
        if server is not None:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``taskmill-dev``."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="taskmill-dev: %(message)s")
    try:
        return run(args)
    except (TaskmillError, TimeoutError) as exc:
        print(f"taskmill-dev: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
