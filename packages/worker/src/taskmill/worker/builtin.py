"""Handlers every worker has: ``echo``, ``sleep`` and ``fail``, plus ``shell`` when enabled."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import Any

from taskmill.worker.context import TaskCancelled, TaskContext
from taskmill.worker.registry import ContextMode, Handler, task

#: ``shell`` keeps the last this many characters of stdout and of stderr.
MAX_OUTPUT_CHARS = 64 * 1024
_POLL_SECONDS = 0.1
#: After the kill, how long ``shell`` waits for the rest of the output: a program that left
#: the command's process group can hold the pipes open.
_KILLED_OUTPUT_WAIT = 5.0


class ShellCommandFailed(Exception):
    """The command exited with a non-zero code."""


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


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= MAX_OUTPUT_CHARS else text[-MAX_OUTPUT_CHARS:]


def _parse_shell(payload: Any) -> tuple[list[str], float | None, dict[str, Any]]:
    spec = {"argv": payload} if isinstance(payload, list) else payload
    argv = spec.get("argv") if isinstance(spec, dict) else None
    if not argv or not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ValueError('shell takes {"argv": ["program", "arg", ...]} or an argv list')
    timeout = spec.get("timeout")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise ValueError("shell's timeout must be a positive number of seconds")
    return argv, timeout, spec


def _communicate(
    process: subprocess.Popen[bytes], context: TaskContext, timeout: float | None
) -> tuple[bytes, bytes]:
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        try:
            return process.communicate(timeout=_POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        if context.is_cancelled() or (deadline is not None and time.monotonic() >= deadline):
            # The command leads a process group of its own: the kill takes whatever it started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.communicate(timeout=_KILLED_OUTPUT_WAIT)
            if context.is_cancelled():
                raise TaskCancelled() from None
            raise ShellTimeout(f"{process.args!r} ran longer than {timeout:g} s") from None


def shell(payload: Any, context: TaskContext) -> dict[str, Any]:
    """Runs a program (no shell) and returns its exit code and output.

    Takes ``{"argv": [...], "timeout": s, "cwd": dir, "env": {...}, "check": true}`` or a bare
    argv list. A non-zero exit fails the task unless ``check`` is false. Cancellation, the task's
    timeout and the worker's shutdown kill the program and what it started (its process group).
    """
    argv, timeout, spec = _parse_shell(payload)
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=spec.get("cwd"),
        env=spec.get("env"),
        start_new_session=True,
    ) as process:
        stdout, stderr = _communicate(process, context, timeout)
    errors = _tail(stderr)
    if process.returncode != 0 and spec.get("check", True):
        code = process.returncode
        raise ShellCommandFailed(f"{argv[0]} exited with code {code}: {errors[-500:]}")
    return {"exit_code": process.returncode, "stdout": _tail(stdout), "stderr": errors}


#: ``shell`` is registered only when the worker starts with ``--enable-shell``.
SHELL = Handler("shell", shell, context_mode=ContextMode.KEYWORD, context_name="context")
