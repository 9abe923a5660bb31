"""Spans for task attempts: ``execute <command>`` per attempt and ``report <status>`` under it.

The execute span is a child of the coordinator's dispatch span (the assignment's
``traceparent``), starts when the handler starts and ends when the attempt is settled, which for
a timed-out thread handler is at its deadline, not when the function finally returns. A failed
attempt's span has status ERROR and an ``exception`` event built from the reported error, so
timeouts, unknown commands and failures inside ``process=True`` children, which raise nothing
in this process, are recorded the same way as exceptions.

The tracer is looked up through the OpenTelemetry API: with no SDK installed spans cost nearly
nothing, and with the SDK but no exporter (nothing configured) they are made and dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from taskmill.common.telemetry import (
    QUEUE,
    TASK_ATTEMPT,
    TASK_COMMAND,
    TASK_ID,
    WORKER_ID,
    context_from_traceparent,
)
from taskmill.worker.model import Assignment, Outcome, ReportStatus


def traceparent_of(span: Span) -> str:
    """The W3C ``traceparent`` naming ``span``, or ``""`` for an invalid span."""
    context = span.get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


class TaskTracer:
    """Makes the spans of task attempts.

    Args:
        provider: The tracer provider; ``None`` for the global one (looked up lazily, so one
            installed later is still used).
        worker_id: Returns this worker's id, or ``None`` while unregistered.
    """

    def __init__(
        self,
        provider: trace.TracerProvider | None = None,
        worker_id: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._tracer = trace.get_tracer(__name__, tracer_provider=provider)
        self._worker_id = worker_id

    def start(self, assignment: Assignment) -> Span:
        """Starts the ``execute`` span of an attempt, under the assignment's trace context."""
        attributes: dict[str, AttributeValue] = {
            TASK_ID: assignment.task_id,
            TASK_COMMAND: assignment.command,
            TASK_ATTEMPT: assignment.attempt,
            QUEUE: assignment.queue,
        }
        worker_id = self._worker_id()
        if worker_id:
            attributes[WORKER_ID] = worker_id
        return self._tracer.start_span(
            f"execute {assignment.command}",
            context=context_from_traceparent(assignment.traceparent),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )

    @staticmethod
    def finish(span: Span, outcome: Outcome) -> None:
        """Ends an ``execute`` span; a failure sets ERROR and records the error as an event."""
        error = outcome.error
        if outcome.status is ReportStatus.FAILED and error is not None:
            if span.is_recording():
                event: dict[str, AttributeValue] = {
                    EXCEPTION_TYPE: error.type,
                    EXCEPTION_MESSAGE: error.message,
                }
                if error.traceback:
                    event[EXCEPTION_STACKTRACE] = error.traceback
                span.add_event("exception", event)
            span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))
        span.end()

    def report(self, span: Span | None, assignment: Assignment, status: ReportStatus) -> Span:
        """Starts the ``report <status>`` span of a final report; the caller ends it.

        Its parent is the ``execute`` span, or the dispatch for a task that never ran.
        """
        return self._tracer.start_span(
            f"report {status}",
            context=(
                trace.set_span_in_context(span)
                if span is not None
                else context_from_traceparent(assignment.traceparent)
            ),
            attributes={TASK_ID: assignment.task_id, TASK_ATTEMPT: assignment.attempt},
        )

    @staticmethod
    @contextmanager
    def current(span: Span | None) -> Iterator[None]:
        """Makes ``span`` the current span of this thread, so handler logs and spans see it."""
        if span is None:
            yield
            return
        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            yield
