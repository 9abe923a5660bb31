"""Tracing of the HTTP API: a server span per request, and the trace context stored with tasks.

The request span (from opentelemetry-instrumentation-wsgi) continues an incoming
``traceparent``. A single submit stores that span's context with its task, so the dispatch and
execution spans join the caller's trace. A batch gives each task its own span, linked to the
request: a thousand tasks in one trace would bury each task's story.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.trace import Link, SpanKind

from taskmill.common.telemetry import (
    QUEUE,
    TASK_COMMAND,
    TASK_ID,
    current_traceparent,
    exporting,
)
from taskmill.common.telemetry import traceparent_of as _traceparent_of
from taskmill.common.traceparent import new_traceparent, new_traceparents
from taskmill.scheduler.randomness import random_bytes

tracer = trace.get_tracer(__name__)


def traced(app: Any) -> Any:
    """Wraps a WSGI app so each request runs in a server span, when spans are exported.

    Without an exporter the middleware would cost more than the rest of a submit's tracing, so
    the app is served bare and ``request_traceparent`` makes the ids itself.
    """
    return OpenTelemetryMiddleware(app) if exporting() else app


def request_traceparent(incoming: str | None) -> str:
    """The ``traceparent`` to store with a single task: the request span's, or, when no span
    is recorded, a new span id in the caller's trace (``incoming``) or in a new one."""
    if trace.get_current_span().get_span_context().is_valid:
        current = current_traceparent()
        if current:
            return current
    return new_traceparent(incoming, random_bytes)


def task_traceparents(
    ids: Sequence[str | uuid.UUID], commands: Iterable[str], queues: Iterable[str]
) -> list[str | None]:
    """Starts and ends one span per task of a batch, linked to the request's span, and returns
    their ``traceparent`` values in order (new trace ids only, when nothing is exported: then
    ``commands`` and ``queues`` are not read, so callers may pass generators)."""
    if not exporting():
        # A list is invariant: the cast widens list[str] to the type the batch path returns.
        return cast("list[str | None]", new_traceparents(len(ids), random_bytes))
    request = trace.get_current_span().get_span_context()
    links = [Link(request)] if request.is_valid else []
    root = otel_context.Context()
    traceparents: list[str | None] = []
    for task_id, command, queue in zip(ids, commands, queues, strict=True):
        span = tracer.start_span(
            f"submit {command}",
            context=root,
            kind=SpanKind.PRODUCER,
            links=links,
            attributes={TASK_ID: str(task_id), TASK_COMMAND: command, QUEUE: queue},
        )
        traceparents.append(_traceparent_of(span))
        span.end()
    return traceparents
