"""Handlers every worker has: ``echo``, ``sleep`` and ``fail``, plus ``shell`` when enabled."""

from __future__ import annotations

import functools
import os
import pwd
import time
from dataclasses import dataclass
from typing import Any

from taskmill.worker.context import TaskCancelled, TaskContext
from taskmill.worker.registry import ContextMode, Handler, task
from taskmill.worker.shellrun import Finished, run_contained

#: What every ``shell`` program's environment holds before the task's ``env`` adds to it. Fixed
#: values, not the worker's own: the worker's environment carries its secrets
#: (``TASKMILL_CLUSTER_TOKEN``, TLS key paths) and settings, and none of it may reach a program.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


class ShellCommandFailed(Exception):
    """The command exited with a non-zero code, or was killed from outside the worker."""


class ShellTimeout(Exception):
    """The command ran longer than its ``timeout`` and was killed."""


@task("echo")
def echo(payload: Any) -> Any:
    """Returns its payload."""
    return payload


@task("sleep")
def sleep(payload: Any, context: TaskContext) -> dict[str, float]:
    """Sleeps ``{"seconds": s}``, waking up early (cancelled) when the task should stop."""
    seconds = payload.get("seconds", 1) if isinstance(payload, dict) else payload
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ValueError('sleep takes {"seconds": <non-negative number>}')
    if context.cancelled.wait(float(seconds)):
        raise TaskCancelled()
    return {"seconds": seconds}


@task("fail")
def fail(payload: Any) -> None:
    """Raises ``RuntimeError`` with ``{"message": m}``."""
    message = payload.get("message") if isinstance(payload, dict) else None
    raise RuntimeError(str(message or "the fail handler failed, as asked"))


@functools.cache
def _home() -> str:
    """The worker user's home directory from the password database; ``/`` if it has no entry."""
    try:
        return pwd.getpwuid(os.getuid()).pw_dir or "/"
    except KeyError:  # an arbitrary uid, as containers often run with
        return "/"


@dataclass(frozen=True)
class _ShellSpec:
    argv: list[str]
    timeout: float | None
    cwd: str | None
    env: dict[str, str]
    check: bool


def _parse_env(env: Any) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise ValueError("shell's env must be an object of variable names to string values")
    for name, value in env.items():
        if not name or "=" in name or "\0" in name:
            raise ValueError(f"shell's env has a bad variable name: {name!r}")
        if not isinstance(value, str) or "\0" in value:
            raise ValueError(f"shell's env[{name!r}] must be a string without NUL")
    return dict(env)


def _parse_shell(payload: Any) -> _ShellSpec:
    spec = {"argv": payload} if isinstance(payload, list) else payload
    argv = spec.get("argv") if isinstance(spec, dict) else None
    if not argv or not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ValueError('shell takes {"argv": ["program", "arg", ...]} or an argv list')
    timeout = spec.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise ValueError("shell's timeout must be a positive number of seconds")
    cwd = spec.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ValueError("shell's cwd must be a directory path")
    env = _parse_env(spec.get("env"))
    return _ShellSpec(argv, timeout, cwd, env, bool(spec.get("check", True)))


def _result(spec: _ShellSpec, finished: Finished, context: TaskContext) -> dict[str, Any]:
    if finished.exit_code is None:  # killed by the supervisor
        if context.is_cancelled():
            raise TaskCancelled()
        if finished.stop_requested:
            raise ShellTimeout(f"{spec.argv!r} ran longer than {spec.timeout:g} s")
        raise ShellCommandFailed(f"{spec.argv[0]} was killed: its supervisor got SIGTERM")
    stdout, stdout_dropped = finished.stdout.text()
    stderr, stderr_dropped = finished.stderr.text()
    if finished.exit_code != 0 and spec.check:
        code = finished.exit_code
        raise ShellCommandFailed(f"{spec.argv[0]} exited with code {code}: {stderr[-500:]}")
    return {
        "exit_code": finished.exit_code,
        "stdout": stdout,
        "stderr": stderr,
        "truncated": bool(stdout_dropped or stderr_dropped),
        "stdout_dropped_bytes": stdout_dropped,
        "stderr_dropped_bytes": stderr_dropped,
    }


def shell(payload: Any, context: TaskContext) -> dict[str, Any]:
    """Runs a program (no shell) and returns its exit code and the tail of its output.

    Takes ``{"argv": [...], "timeout": s, "cwd": dir, "env": {...}, "check": true}`` or a bare
    argv list. The program's environment is :data:`BASE_ENV` plus ``HOME``, then ``env``. A
    non-zero exit fails the task unless ``check`` is false. Cancellation, the task's timeout and
    the worker's shutdown kill the program and everything it started (see ``reaper.py``), as
    does the program's own exit: nothing it started outlives it.
    """
    spec = _parse_shell(payload)
    deadline = time.monotonic() + spec.timeout if spec.timeout else None

    def should_stop() -> bool:
        if context.is_cancelled():
            return True
        return deadline is not None and time.monotonic() >= deadline

    env = {**BASE_ENV, "HOME": _home(), **spec.env}
    return _result(spec, run_contained(spec.argv, env, spec.cwd, should_stop), context)


#: ``shell`` is registered only when the worker starts with ``--enable-shell``.
SHELL = Handler("shell", shell, context_mode=ContextMode.KEYWORD, context_name="context")
