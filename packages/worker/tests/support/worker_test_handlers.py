"""Handlers the worker's tests run. Imported by name, so process=True children can find them."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from taskmill.worker import TaskCancelled, TaskContext, task


@task("test.spin_in_process", process=True)
def spin_in_process(payload: Any) -> None:
    """Burns CPU forever, deaf to cancellation."""
    while True:
        pass


@task("test.square_in_process", process=True)
def square_in_process(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    return {"square": payload["n"] ** 2, "pid": os.getpid(), "task_id": context.task_id}


@task("test.raise_in_process", process=True)
def raise_in_process(payload: Any) -> None:
    raise KeyError("missing-in-child")


@task("test.wait_in_process", process=True)
def wait_in_process(payload: Any, context: TaskContext) -> str:
    """Waits cooperatively for cancellation for up to a minute."""
    if context.cancelled.wait(60):
        raise TaskCancelled()
    return "not cancelled"


@task("test.stubborn_sleep")
def stubborn_sleep(payload: dict[str, float]) -> str:
    """Sleeps without looking at its cancellation flag."""
    time.sleep(payload["seconds"])
    return "woke up"


@task("test.positional_context")
def positional_context(payload: Any, ctx: Any) -> dict[str, Any]:
    return {"task_id": ctx.task_id, "attempt": ctx.attempt, "payload": payload}


@task("test.keyword_context")
def keyword_context(payload: Any, *, context: Any) -> dict[str, Any]:
    context.logger.info("hello from the handler")
    return {"task_id": context.task_id, "max_attempts": context.max_attempts}


@task("test.annotated_context")
def annotated_context(payload: Any, *, info: TaskContext) -> dict[str, Any]:
    return {"command": info.command, "cancelled": info.is_cancelled()}


#: The ids of the tasks ``test.note`` ran, in order: a task missing here never started.
NOTED: list[str] = []


@task("test.note")
def note(payload: Any, context: TaskContext) -> str:
    """Notes that it ran."""
    NOTED.append(context.task_id)
    return context.task_id


#: What each ``test.wait_for_release`` task waits on, by task id: the test puts one here first.
RELEASES: dict[str, threading.Event] = {}


@task("test.wait_for_release")
def wait_for_release(payload: Any, context: TaskContext) -> None:
    """Notes that it ran, then keeps its slot until the test releases it."""
    NOTED.append(context.task_id)
    RELEASES[context.task_id].wait(30)


@task("test.payload_only")
def payload_only(payload: Any) -> Any:
    return {"got": payload}


@task("test.not_serialisable")
def not_serialisable(payload: Any) -> Any:
    return {"value": object()}


@task("test.log")
def log(payload: Any, context: TaskContext) -> None:
    context.logger.warning("hello from the handler")


@task("test.log_in_process", process=True)
def log_in_process(payload: Any, context: TaskContext) -> None:
    context.logger.warning("hello from the child")


@task("test.current_span")
def current_span(payload: Any) -> dict[str, str]:
    """The ids of the span current in the handler, as a span it created would see them."""
    from opentelemetry import trace  # not at the top: process=True children import this module

    span_context = trace.get_current_span().get_span_context()
    return {"trace_id": f"{span_context.trace_id:032x}", "span_id": f"{span_context.span_id:016x}"}
