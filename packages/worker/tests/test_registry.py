"""The handler API without any gRPC: registration, context injection, outcomes, settings."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest

from taskmill.common.attempts import Assignment, ReportStatus
from taskmill.common.errors import ConfigError
from taskmill.worker import Registry, TaskCancelled, TaskContext, default_registry, task
from taskmill.worker.__main__ import build_parser, settings_from
from taskmill.worker.app import advertised
from taskmill.worker.execution import MAX_TRACEBACK_CHARS, run_handler, truncate_traceback
from taskmill.worker.registry import ContextMode
from taskmill.worker.settings import WorkerSettings


def test_bare_decorator_uses_the_function_name_and_returns_the_function():
    def worker_registry_bare_example(payload: Any) -> Any:
        return payload

    assert task(worker_registry_bare_example) is worker_registry_bare_example
    handler = default_registry.get("worker_registry_bare_example")
    assert handler is not None
    assert handler.func is worker_registry_bare_example
    assert not handler.process


def test_options_are_kept_and_validated():
    registry = Registry()

    @registry.task("slow", timeout=2.5, process=True)
    def slow(payload: Any) -> None: ...

    handler = registry.get("slow")
    assert handler is not None
    assert (handler.timeout, handler.process) == (2.5, True)
    with pytest.raises(ValueError, match="timeout"):
        registry.task("bad", timeout=0)


def test_a_name_taken_by_another_function_is_refused():
    registry = Registry()

    @registry.task("same")
    def first(payload: Any) -> None: ...

    with pytest.raises(ValueError, match="already registered"):

        @registry.task("same")
        def second(payload: Any) -> None: ...

    registry.task("same")(first)  # the same function again (a re-import) is fine


def _mode(func: Any) -> tuple[ContextMode, str]:
    registry = Registry()
    registry.task("f")(func)
    handler = registry.get("f")
    assert handler is not None
    return handler.context_mode, handler.context_name


def test_context_injection_follows_the_signature():
    def none() -> None: ...
    def payload(p: Any) -> None: ...
    def positional(p: Any, c: Any) -> None: ...
    def named(p: Any, context: Any = None) -> None: ...
    def annotated(p: Any, *, ctx: TaskContext) -> None: ...
    def as_string(p: Any, *, ctx: "TaskContext") -> None: ...  # noqa: UP037
    def varargs(*args: Any) -> None: ...

    assert _mode(none) == (ContextMode.NONE, "")
    assert _mode(payload) == (ContextMode.PAYLOAD, "")
    assert _mode(positional) == (ContextMode.POSITIONAL, "")
    assert _mode(named) == (ContextMode.KEYWORD, "context")
    assert _mode(annotated) == (ContextMode.KEYWORD, "ctx")
    assert _mode(as_string) == (ContextMode.KEYWORD, "ctx")
    assert _mode(varargs) == (ContextMode.PAYLOAD, "")
    with pytest.raises(TypeError, match="payload"):
        _mode(lambda *, x: None)


def _run(func: Any, payload_json: str = "{}", cancel: threading.Event | None = None) -> Any:
    registry = Registry()
    registry.task("f")(func)
    handler = registry.get("f")
    assert handler is not None
    return run_handler(handler, Assignment("t-1", "f", payload_json), cancel or threading.Event())


def test_outcomes_of_a_handler_call():
    assert _run(lambda p: {"n": p["n"] + 1}, '{"n": 1}').result_json == '{"n":2}'
    assert _run(lambda p: None).result_json == "null"
    invalid = _run(lambda p: p, "{not json")
    assert invalid.error.type == "invalid_payload"
    nan = _run(lambda p: float("nan"))
    assert nan.error.type == "result_not_serializable"

    def exits(p: Any) -> None:
        raise SystemExit(3)

    assert _run(exits).error.type == "SystemExit"


def test_cancellation_outcomes():
    def cancelled(p: Any) -> None:
        raise TaskCancelled()

    assert _run(cancelled).status is ReportStatus.CANCELLED
    flag = threading.Event()
    flag.set()

    def stops(p: Any, context: TaskContext) -> None:
        context.raise_if_cancelled()

    assert _run(stops, cancel=flag).status is ReportStatus.CANCELLED

    def raises_after_cancel(p: Any) -> None:
        raise ValueError("interrupted")

    assert _run(raises_after_cancel, cancel=flag).status is ReportStatus.CANCELLED
    assert _run(lambda p: "done anyway", cancel=flag).status is ReportStatus.SUCCEEDED


def test_tracebacks_keep_their_end():
    text = "x" * (MAX_TRACEBACK_CHARS + 100) + "END"
    cut = truncate_traceback(text)
    assert cut.endswith("END")
    assert cut.startswith("...(traceback truncated)")
    assert len(cut) < len(text)


def test_a_process_child_loads_neither_grpc_nor_protobuf():
    # What a spawned child imports to run its handler (the package, then _child_main and the
    # Assignment it unpickles): either library would slow every child's start.
    code = (
        "import sys, taskmill.worker, taskmill.worker.process\n"
        "heavy = ('grpc', 'google', 'taskmill.v1', 'opentelemetry')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(heavy))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_advertised_address():
    assert advertised("10.0.0.5", 7000) == "10.0.0.5:7000"
    assert advertised("worker-1:9000", 7000) == "worker-1:9000"
    assert advertised("[::1]", 7000) == "[::1]:7000"
    assert advertised("[::1]:9000", 7000) == "[::1]:9000"
    assert advertised("::1", 7000) == "[::1]:7000"


def test_advertised_address_defaults_to_this_hosts_name_and_the_bound_port(monkeypatch):
    assert advertised(None, 7000) == f"{socket.gethostname()}:7000"
    monkeypatch.setattr(socket, "gethostname", lambda: "box-7.example")
    assert advertised(None, 7000) == "box-7.example:7000"
    assert advertised("", 7001) == "box-7.example:7001"


def test_flag_defaults(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 5)  # not this machine's count, to tell them apart
    args = build_parser({}).parse_args([])
    settings = settings_from(args, {})
    assert settings.coordinator == "localhost:8080"
    assert settings.host == "0.0.0.0"
    assert settings.port == 0
    assert settings.advertise_address is None  # this host's name with the bound port
    assert settings.concurrency == 5
    assert settings.queue_room == 5
    assert settings.handler_modules == ()
    assert settings.queues == (("default", 1),)
    assert not settings.enable_shell
    assert settings.grace_period == 30.0
    assert settings.security.cluster_token is None
    assert (args.log_level, args.check) == ("INFO", False)
    # The settings' own defaults, used by create_worker callers, agree with the command line.
    assert WorkerSettings() == settings
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # the count may be unknown
    assert build_parser({}).parse_args([]).concurrency == 1
    assert WorkerSettings().concurrency == 1


# Every option but --enable-shell and --check: (dest, flag, variable, from the variable, from
# the flag), each value given as (text, parsed).
_OPTIONS = [
    ("coordinator", "--coordinator", "COORDINATOR", ("c1:9999",) * 2, ("c2:1",) * 2),
    ("host", "--host", "HOST", ("127.0.0.2",) * 2, ("::1",) * 2),
    ("port", "--port", "PORT", ("7001", 7001), ("7002", 7002)),
    ("advertise_address", "--advertise-address", "ADVERTISE_ADDRESS", ("w:1",) * 2, ("w2",) * 2),
    ("concurrency", "--concurrency", "CONCURRENCY", ("7", 7), ("3", 3)),
    ("queue_size", "--queue-size", "QUEUE_SIZE", ("11", 11), ("0", 0)),
    ("handlers", "--handlers", "HANDLERS", ("a.b, c",) * 2, ("d",) * 2),
    ("queues", "--queues", "QUEUES", ("a=3,b",) * 2, ("c",) * 2),
    ("grace_period", "--grace-period", "GRACE_PERIOD", ("2.5", 2.5), ("0", 0.0)),
    ("log_level", "--log-level", "LOG_LEVEL", ("DEBUG",) * 2, ("WARNING",) * 2),
]


def test_every_option_is_in_the_table_of_environment_variables():
    options = set(vars(build_parser({}).parse_args([])))
    assert options == {dest for dest, *_ in _OPTIONS} | {"enable_shell", "record_starts", "check"}


@pytest.mark.parametrize(("dest", "flag", "variable", "from_env", "from_flag"), _OPTIONS)
def test_each_option_reads_its_environment_variable_and_the_flag_wins(
    dest: str,
    flag: str,
    variable: str,
    from_env: tuple[str, Any],
    from_flag: tuple[str, Any],
):
    env = {f"TASKMILL_WORKER_{variable}": from_env[0]}
    assert getattr(build_parser(env).parse_args([]), dest) == from_env[1]
    assert getattr(build_parser(env).parse_args([flag, from_flag[0]]), dest) == from_flag[1]
    assert getattr(build_parser({}).parse_args([flag, from_flag[0]]), dest) == from_flag[1]
    # An empty variable counts as unset.
    empty = {f"TASKMILL_WORKER_{variable}": ""}
    assert getattr(build_parser(empty).parse_args([]), dest) == getattr(
        build_parser({}).parse_args([]), dest
    )


@pytest.mark.parametrize(
    ("dest", "name", "default"),
    [("enable_shell", "ENABLE_SHELL", False), ("record_starts", "RECORD_STARTS", True)],
)
def test_switches_read_their_environment_variable_and_the_flag_wins(
    dest: str, name: str, default: bool
):
    variable, flag = f"TASKMILL_WORKER_{name}", "--" + dest.replace("_", "-")

    def enabled(env: dict[str, str], *argv: str) -> bool:
        return bool(getattr(build_parser(env).parse_args(list(argv)), dest))

    assert enabled({}) is default
    assert enabled({variable: "on"})
    assert not enabled({variable: "false"})
    assert enabled({variable: "false"}, flag)
    assert not enabled({variable: "true"}, flag.replace("--", "--no-"))
    with pytest.raises(ConfigError, match=variable):
        build_parser({variable: "maybe"})


def test_flags_read_the_environment_and_flags_win():
    env = {
        "TASKMILL_WORKER_COORDINATOR": "coord:9999",
        "TASKMILL_WORKER_HOST": "127.0.0.2",
        "TASKMILL_WORKER_PORT": "7001",
        "TASKMILL_WORKER_ADVERTISE_ADDRESS": "worker-7.example",
        "TASKMILL_WORKER_CONCURRENCY": "7",
        "TASKMILL_WORKER_QUEUE_SIZE": "11",
        "TASKMILL_WORKER_HANDLERS": "a.b, c",
        "TASKMILL_WORKER_ENABLE_SHELL": "true",
        "TASKMILL_WORKER_GRACE_PERIOD": "2.5",
        "TASKMILL_CLUSTER_TOKEN": "tok",
    }
    settings = settings_from(build_parser(env).parse_args(["--concurrency", "3"]), env)
    assert settings.coordinator == "coord:9999"
    assert (settings.host, settings.port) == ("127.0.0.2", 7001)
    assert settings.advertise_address == "worker-7.example"
    assert settings.concurrency == 3
    assert settings.queue_size == 11
    assert settings.capacity == 14
    assert settings.handler_modules == ("a.b", "c")
    assert settings.enable_shell
    assert settings.grace_period == 2.5
    assert settings.security.cluster_token == "tok"
    flags = ["--port", "7002", "--queue-size", "0", "--advertise-address", "", "--host", "::1"]
    settings = settings_from(build_parser(env).parse_args(flags), env)
    assert (settings.host, settings.port, settings.queue_size) == ("::1", 7002, 0)
    assert settings.advertise_address is None  # an empty flag means the default
    assert settings.capacity == 7  # a queue size of 0 is kept, not taken for "unset"
    with pytest.raises(ConfigError, match="TASKMILL_WORKER_PORT"):
        build_parser({"TASKMILL_WORKER_PORT": "eighty"})
    with pytest.raises(ConfigError, match="concurrency"):
        settings_from(build_parser({}).parse_args(["--concurrency", "0"]), {})
