"""``taskmill-worker``: the entry point. The only place the environment is read."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from taskmill.common.errors import ConfigError
from taskmill.common.grpcutil import GrpcSecurity, check_health
from taskmill.common.probe import SERVER_NAME_VARIABLE
from taskmill.common.runtime import tune_gc
from taskmill.common.settings import parse_bool
from taskmill.common.telemetry import setup_logging, setup_tracing, shutdown_tracing
from taskmill.worker.settings import WorkerSettings, default_concurrency, parse_queues

if TYPE_CHECKING:
    from taskmill.worker.app import Worker

logger = logging.getLogger("taskmill.worker")

ENV_PREFIX = "TASKMILL_WORKER_"
T = TypeVar("T")


def _env(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    value = env.get(ENV_PREFIX + name)
    if value is None or value == "":
        return default
    try:
        return parse(value)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name} is not valid: {value!r}") from None


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The command line, with defaults from ``TASKMILL_WORKER_*`` variables."""
    parser = argparse.ArgumentParser(
        prog="taskmill-worker",
        description="Runs taskmill tasks assigned by a coordinator. "
        "Every option also reads TASKMILL_WORKER_<OPTION> (e.g. TASKMILL_WORKER_CONCURRENCY).",
    )
    add = parser.add_argument
    add(
        "--coordinator",
        default=_env(env, "COORDINATOR", str, "localhost:8080"),
        help="host:port of the coordinator (default %(default)s)",
    )
    add(
        "--host",
        default=_env(env, "HOST", str, "0.0.0.0"),
        help="address to bind (default %(default)s)",
    )
    add(
        "--port",
        type=int,
        default=_env(env, "PORT", int, 0),
        help="port to bind; 0 picks a free one (default %(default)s)",
    )
    add(
        "--advertise-address",
        default=_env(env, "ADVERTISE_ADDRESS", str, None),
        help="host[:port] coordinators reach this worker at (default: host name, bound port)",
    )
    add(
        "--concurrency",
        type=int,
        default=_env(env, "CONCURRENCY", int, default_concurrency()),
        help="tasks run at once (default: CPUs, %(default)s)",
    )
    add(
        "--queue-size",
        type=int,
        default=_env(env, "QUEUE_SIZE", int, None),
        help="tasks that may wait for a slot (default: the concurrency)",
    )
    add(
        "--handlers",
        default=_env(env, "HANDLERS", str, ""),
        help="comma-separated modules with @task handlers to import",
    )
    add(
        "--queues",
        default=_env(env, "QUEUES", str, "default"),
        help="comma-separated task queues to serve, each with an optional weight, its share of "
        "the slots: a,b or a=3,b=1 (default %(default)s)",
    )
    add(
        "--enable-shell",
        action=argparse.BooleanOptionalAction,
        default=_env(
            env, "ENABLE_SHELL", lambda v: parse_bool(v, ENV_PREFIX + "ENABLE_SHELL"), False
        ),
        help="register the shell handler (runs programs; off by default; --no-enable-shell "
        "overrides the variable)",
    )
    add(
        "--record-starts",
        action=argparse.BooleanOptionalAction,
        default=_env(
            env, "RECORD_STARTS", lambda v: parse_bool(v, ENV_PREFIX + "RECORD_STARTS"), True
        ),
        help="run a task with no retry left only once its start is recorded, so it runs at "
        "most once even if this worker is killed (on by default; --no-record-starts lets such "
        "a task run twice when its worker is killed just after it started)",
    )
    add(
        "--grace-period",
        type=float,
        default=_env(env, "GRACE_PERIOD", float, 30.0),
        help="seconds running tasks get to finish on SIGTERM (default %(default)s)",
    )
    add(
        "--log-level",
        default=_env(env, "LOG_LEVEL", str, "INFO"),
        help="logging level (default %(default)s)",
    )
    add(
        "--check",
        action="store_true",
        help="health probe: exit 0 if the worker at --port on this host is serving, else 1",
    )
    return parser


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> WorkerSettings:
    """Builds the settings from parsed arguments and the security variables."""
    modules = tuple(name.strip() for name in args.handlers.split(",") if name.strip())
    return WorkerSettings(
        coordinator=args.coordinator,
        host=args.host,
        port=args.port,
        advertise_address=args.advertise_address or None,
        concurrency=args.concurrency,
        queue_size=args.queue_size,
        handler_modules=modules,
        queues=parse_queues(args.queues),
        enable_shell=args.enable_shell,
        record_starts=args.record_starts,
        grace_period=args.grace_period,
        security=GrpcSecurity.from_env(env),
    )


def import_handlers(modules: Sequence[str]) -> None:
    """Imports the handler modules so their ``@task`` functions register.

    Raises:
        ConfigError: A module cannot be imported; the message names it and the reason.
    """
    # Like `python -m`, find modules in the current directory (children inherit sys.path).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any failure in user code is a config error
            raise ConfigError(
                f"cannot import handler module {name!r}: {type(exc).__name__}: {exc}"
            ) from None


def _install_signals(stop: threading.Event) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            os._exit(1)  # a second signal: stop now, like a second Ctrl-C elsewhere
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def run(settings: WorkerSettings, env: Mapping[str, str]) -> int:
    """Runs a worker until SIGTERM or SIGINT, then drains it; returns the exit code.

    Tracing is configured from the ``OTEL_*`` variables in ``env``; spans are flushed at exit.
    """
    from taskmill.worker.app import create_worker, package_version  # gRPC only when serving

    provider = setup_tracing("taskmill-worker", package_version(), env)
    try:
        return _serve(create_worker(settings))
    finally:
        shutdown_tracing(provider)


def _serve(worker: Worker) -> int:
    stop = threading.Event()
    _install_signals(stop)
    try:
        worker.start()
    except ConfigError as exc:
        print(f"taskmill-worker: {exc.message}", file=sys.stderr)
        worker.close()
        return 1
    tune_gc()
    while not stop.wait(1.0):
        pass
    worker.drain()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the command line and the environment, then runs the worker."""
    try:
        args = build_parser(os.environ).parse_args(argv)
        setup_logging(args.log_level)  # every line carries the current trace_id and span_id
        if args.check:
            # The worker's own TASKMILL_TLS_* files let the probe reach it over TLS.
            security = GrpcSecurity.from_env(os.environ)
            name = os.environ.get(SERVER_NAME_VARIABLE) or None
            target = f"127.0.0.1:{args.port}"
            return 0 if check_health(target, security=security, server_name=name) else 1
        settings = settings_from(args, os.environ)
        import_handlers(settings.handler_modules)
    except ConfigError as exc:
        print(f"taskmill-worker: {exc.message}", file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. an unknown log level
        print(f"taskmill-worker: {exc}", file=sys.stderr)
        return 1
    return run(settings, os.environ)


if __name__ == "__main__":
    sys.exit(main())
