"""Tracing of the HTTP API: a server span per request, and the trace context stored with tasks.

The request span (from opentelemetry-instrumentation-wsgi) continues an incoming
``traceparent``. A single submit stores that span's context with its task, so the dispatch and
execution spans join the caller's trace. A batch gives each task its own span, linked to the
request: a thousand tasks in one trace would bury each task's story.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.trace import Link, SpanKind

from taskmill.common.telemetry import QUEUE, TASK_COMMAND, TASK_ID, current_traceparent
from taskmill.common.telemetry import traceparent_of as _traceparent_of

tracer = trace.get_tracer(__name__)


def traced(app: Any) -> Any:
    """Wraps a WSGI app so each request runs in a server span."""
    return OpenTelemetryMiddleware(app)


def request_traceparent() -> str | None:
    """The ``traceparent`` of the current request's span."""
    return current_traceparent()


def task_traceparents(
    ids: Sequence[uuid.UUID], commands: Sequence[str], queues: Sequence[str]
) -> list[str | None]:
    """Starts and ends one span per task of a batch, linked to the request's span, and returns
    their ``traceparent`` values in order."""
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
