"""``taskmill-scheduler``: serve the HTTP API.

Flags override environment variables (``TASKMILL_SCHEDULER_HOST``, ``_PORT``, ``_THREADS``,
``_PROCESSES``, ``_STATEMENT_TIMEOUT``, ``TASKMILL_DATABASE_URL``, ``TASKMILL_API_TOKENS``,
``TASKMILL_MAX_PAYLOAD_BYTES``, ``TASKMILL_MAX_BATCH_BYTES``, ``TASKMILL_MIGRATE``). Prints one
line and exits 1 when it cannot start; SIGTERM or Ctrl-C stop it after the requests in progress.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import socket
import sys
from collections.abc import Mapping

from taskmill.common.errors import TaskmillError
from taskmill.common.migrate import prepare_schema
from taskmill.common.runtime import tune_gc
from taskmill.common.settings import DatabaseSettings
from taskmill.common.telemetry import setup_logging, setup_tracing, shutdown_tracing
from taskmill.scheduler.app import create_app, create_database
from taskmill.scheduler.server import bind, create_server, run
from taskmill.scheduler.settings import SchedulerSettings, parse_statement_timeout
from taskmill.scheduler.tracing import traced
from taskmill.scheduler.version import VERSION

logger = logging.getLogger("taskmill.scheduler")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskmill-scheduler", description="Serve the taskmill HTTP API."
    )
    parser.add_argument("--host", help="address to listen on (TASKMILL_SCHEDULER_HOST; 0.0.0.0)")
    parser.add_argument(
        "--port",
        type=int,
        help="port to listen on, 0 for any free one (TASKMILL_SCHEDULER_PORT; 8081)",
    )
    parser.add_argument(
        "--threads", type=int, help="requests each process handles at once (..._THREADS; 16)"
    )
    parser.add_argument(
        "--processes", type=int, help="server processes sharing the port (..._PROCESSES; 1)"
    )
    parser.add_argument(
        "--statement-timeout",
        metavar="SECONDS",
        help="longest a request's statement may run before it is cancelled, and the request "
        "answered 503; 0 for none (..._STATEMENT_TIMEOUT; 30)",
    )
    parser.add_argument("--database-url", help="postgresql://user:password@host:port/db")
    parser.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not apply pending migrations at start (TASKMILL_MIGRATE=false)",
    )
    parser.add_argument("--version", action="version", version=f"taskmill-scheduler {VERSION}")
    return parser


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> SchedulerSettings:
    """The settings from the environment, with the command-line flags applied over them.

    Raises:
        ConfigError: A value is malformed.
    """
    settings = SchedulerSettings.from_env(env)
    changes: dict[str, object] = {
        name: getattr(args, name)
        for name in ("host", "port", "threads", "processes")
        if getattr(args, name) is not None
    }
    if args.statement_timeout is not None:
        changes["statement_timeout"] = parse_statement_timeout(
            args.statement_timeout, "--statement-timeout"
        )
    if args.database_url is not None:
        changes["database"] = DatabaseSettings.from_url(args.database_url)
    if args.no_migrate:
        changes["migrate_on_start"] = False
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


def _prepare(settings: SchedulerSettings) -> socket.socket:
    """Migrates (or checks) the schema, then binds the port."""
    # Not bounded by the requests' statement timeout: a migration may rewrite a large table, or
    # wait for another process's migration to finish.
    db = create_database(dataclasses.replace(settings, statement_timeout=0.0))
    try:
        prepare_schema(db, migrate=settings.migrate_on_start)
    finally:
        db.close()  # before any fork: server processes open their own connections
    return bind(settings.host, settings.port)


def _serve(settings: SchedulerSettings, sock: socket.socket) -> int:
    """Runs one server process until it is told to stop."""
    # Per process: a span exporter's thread does not survive a fork.
    provider = setup_tracing("taskmill-scheduler", VERSION, os.environ)
    db = create_database(settings)
    try:
        server = create_server(traced(create_app(settings, db)), settings, sock)
        tune_gc()
        server.run()
    finally:
        db.close()
        shutdown_tracing(provider)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``taskmill-scheduler``."""
    args = _parser().parse_args(argv)
    setup_logging(os.environ.get("TASKMILL_LOG_LEVEL", "INFO"))
    try:
        settings = settings_from(args, os.environ)
        sock = _prepare(settings)
    except TaskmillError as exc:
        print(f"taskmill-scheduler: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"taskmill-scheduler: cannot listen: {exc}", file=sys.stderr)
        return 1
    if not settings.api_tokens:
        logger.warning(
            "TASKMILL_API_TOKENS is not set: serving loopback clients only, without a token"
        )
    host, port = sock.getsockname()[:2]
    logger.info(
        "taskmill-scheduler %s listening on http://%s:%s (%d process(es), %d threads each)",
        VERSION,
        f"[{host}]" if ":" in host else host,
        port,
        settings.processes,
        settings.threads,
    )
    code = run(sock, settings.processes, functools.partial(_serve, settings))
    sock.close()
    logger.info("taskmill-scheduler stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
