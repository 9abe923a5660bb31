"""Running a ``process=True`` handler in a child process that can really be stopped.

Each attempt gets a fresh child from the ``spawn`` start method: the worker's gRPC threads make
``fork`` unsafe, and a fresh interpreter leaves nothing behind when a task is killed. Starting one
is slow (a new interpreter imports the handler's module), which is why only handlers that ask
for it run this way. The child reports its :class:`Outcome` through a pipe; the slot
thread that started it watches the pipe, the deadline and the cancellation flag, and terminates
the child when the deadline passes, when a cancellation is not honoured within a grace period,
or when the worker gives up on the task (shutdown).
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

from taskmill.common.attempts import Assignment, Outcome
from taskmill.common.traceparent import id_fields
from taskmill.worker.execution import TIMEOUT, run_handler
from taskmill.worker.registry import Handler

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.05
_TERMINATE_WAIT_SECONDS = 2.0
PROCESS_DIED = "process_died"
PROCESS_START_FAILED = "process_start_failed"
# The same lines as taskmill.common.telemetry writes; importing it would load OpenTelemetry into
# every child, which slows each child's start.
_CHILD_LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s span_id=%(span_id)s] %(message)s"
)


class _AttemptTraceIds(logging.Filter):
    """Stamps the attempt's trace and span ids on every record: a child runs one attempt only."""

    def __init__(self, traceparent: str) -> None:
        super().__init__()
        self._trace_id, self._span_id = id_fields(traceparent) or ("-", "-")

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = self._trace_id
        record.span_id = self._span_id
        return True


def _setup_child_logging(level: int, traceparent: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_AttemptTraceIds(traceparent))
    handler.setFormatter(logging.Formatter(_CHILD_LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _child_main(
    conn: Connection,
    handler: Handler,
    assignment: Assignment,
    cancel: Any,
    log_level: int,
    traceparent: str,
) -> None:
    # Ctrl-C reaches the whole process group; the parent decides what happens to the task.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _setup_child_logging(log_level, traceparent)
    try:
        conn.send(run_handler(handler, assignment, cancel))
    finally:
        conn.close()


def _stop(process: BaseProcess) -> None:
    if process.is_alive():
        process.terminate()
        process.join(_TERMINATE_WAIT_SECONDS)
    if process.is_alive():
        process.kill()
    process.join()
    process.close()


class _Supervisor:
    """Waits for a child's outcome while enforcing the deadline and cancellation."""

    def __init__(
        self,
        process: BaseProcess,
        receiver: Connection,
        child_cancel: Any,
        *,
        cancel: threading.Event,
        deadline: float | None,
        cancel_grace: float,
        abandoned: Callable[[], bool],
    ) -> None:
        self._process = process
        self._receiver = receiver
        self._child_cancel = child_cancel
        self._cancel = cancel
        self._deadline = deadline
        self._cancel_grace = cancel_grace
        self._abandoned = abandoned
        self._cancelled_at: float | None = None

    def outcome(self) -> Outcome | None:
        """The child's outcome, a timeout or cancellation, or ``None`` once abandoned."""
        while not self._abandoned():
            stopped = self._check_limits(time.monotonic())
            if stopped is not None:
                return stopped
            timeout = _POLL_SECONDS
            if self._deadline is not None:
                timeout = max(0.0, min(timeout, self._deadline - time.monotonic()))
            ready = wait([self._receiver, self._process.sentinel], timeout)
            if ready:
                return self._read()
        return None

    def _check_limits(self, now: float) -> Outcome | None:
        if self._deadline is not None and now >= self._deadline:
            return Outcome.failed(TIMEOUT, "the task exceeded its timeout; its process was killed")
        if self._cancel.is_set():
            if self._cancelled_at is None:
                self._child_cancel.set()
                self._cancelled_at = now
            elif now - self._cancelled_at >= self._cancel_grace:
                return Outcome.cancelled()
        return None

    def _read(self) -> Outcome:
        try:
            if self._receiver.poll():
                outcome: Outcome = self._receiver.recv()
                return outcome
        except (EOFError, OSError):
            pass
        self._process.join(_TERMINATE_WAIT_SECONDS)
        return Outcome.failed(
            PROCESS_DIED, f"the handler's process exited with code {self._process.exitcode}"
        )


def run_in_process(
    handler: Handler,
    assignment: Assignment,
    *,
    cancel: threading.Event,
    deadline: float | None,
    cancel_grace: float,
    abandoned: Callable[[], bool],
    traceparent: str = "",
) -> Outcome | None:
    """Runs one attempt in a child process and returns its outcome.

    Args:
        handler: A handler importable by module and name.
        assignment: The attempt.
        cancel: Set when the task's cancellation is requested; passed on to the child.
        deadline: ``time.monotonic()`` value at which the child is killed and the attempt fails
            with ``timeout``; ``None`` for no limit.
        cancel_grace: Seconds a cancelled child may take to stop by itself before it is killed.
        abandoned: Returns ``True`` once the task was settled elsewhere (shutdown): the child is
            then killed and ``None`` returned.
        traceparent: The attempt's span, whose ids the child's log lines carry.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child_cancel = context.Event()
    process = _child(context, sender, handler, assignment, child_cancel, traceparent)
    try:
        process.start()
    except (pickle.PicklingError, AttributeError, TypeError, OSError) as exc:
        receiver.close()
        return Outcome.failed(PROCESS_START_FAILED, f"cannot start the handler's process: {exc}")
    finally:
        sender.close()
    try:
        return _Supervisor(
            process,
            receiver,
            child_cancel,
            cancel=cancel,
            deadline=deadline,
            cancel_grace=cancel_grace,
            abandoned=abandoned,
        ).outcome()
    finally:
        _stop(process)
        receiver.close()


def _child(
    context: SpawnContext,
    sender: Connection,
    handler: Handler,
    assignment: Assignment,
    cancel: Any,
    traceparent: str,
) -> BaseProcess:
    """The child process of one attempt, not started yet: it reports through ``sender``."""
    return context.Process(
        target=_child_main,
        args=(
            sender,
            handler,
            assignment,
            cancel,
            logging.getLogger().getEffectiveLevel(),
            traceparent,
        ),
        name=f"taskmill-task-{assignment.task_id}",
        daemon=True,
    )
