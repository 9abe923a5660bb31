"""Spans for task attempts: ``execute <command>`` per attempt and ``report <status>`` under it.

The execute span is a child of the coordinator's dispatch span (the assignment's
``traceparent``), starts when the handler starts and ends when the attempt is settled, which for
a timed-out thread handler is at its deadline, not when the function finally returns. A failed
attempt's span has status ERROR and an ``exception`` event built from the reported error, so
timeouts, unknown commands and failures inside ``process=True`` children, which raise nothing
in this process, are recorded the same way as exceptions.

Spans nobody will see are not built. When the tracer provider exports nothing (the SDK with no
span processor, i.e. nothing configured, or no SDK at all), an attempt makes no span of its own:
the handler runs in the dispatch's context, so its log lines carry the dispatch's trace and span
ids, its reports carry the dispatch's ``traceparent``, and spans it makes join that trace. That
costs a small fraction of what two SDK spans a task would.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import Token

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import (
    INVALID_SPAN,
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util.types import AttributeValue

from taskmill.common.attempts import Assignment, Outcome, ReportStatus
from taskmill.common.telemetry import (
    QUEUE,
    TASK_ATTEMPT,
    TASK_COMMAND,
    TASK_ID,
    WORKER_ID,
    context_from_traceparent,
    traceparent_of,
)
from taskmill.common.traceparent import parse_traceparent

_IDS = RandomIdGenerator()
_REPORT_NAMES = {status: f"report {status}" for status in ReportStatus}


def parent_span_context(traceparent: str) -> SpanContext:
    """The span context a ``traceparent`` names; invalid for none.

    A well-formed version-00 ``traceparent`` is read directly, without the configured
    propagators' per-call work (the field holds exactly a W3C traceparent, nothing a propagator
    adds); anything else goes to ``context_from_traceparent``.
    """
    ids = parse_traceparent(traceparent)
    if ids is not None:
        return SpanContext(ids[0], ids[1], True, TraceFlags(ids[2]))
    context = context_from_traceparent(traceparent)
    return trace.get_current_span(context).get_span_context()


def parent_context(traceparent: str) -> otel_context.Context:
    """The context whose current span is the one ``traceparent`` names; empty for none."""
    span_context = parent_span_context(traceparent)
    if not span_context.is_valid:
        return otel_context.Context()
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def _exports(provider: trace.TracerProvider) -> bool:
    """Whether spans from ``provider`` can reach a span processor.

    The SDK has no public way to ask; when its internals change, the answer is yes, which costs
    time, never spans.
    """
    if isinstance(provider, SdkTracerProvider):
        processor = getattr(provider, "_active_span_processor", None)
        processors = getattr(processor, "_span_processors", None)
        return processors is None or len(processors) > 0
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


class _Dispatch(NonRecordingSpan):
    """The dispatch span, read from its ``traceparent`` only when something asks for it (a log
    line, a span the handler makes): most tasks never do."""

    def __init__(self, traceparent: str) -> None:
        super().__init__(INVALID_SPAN_CONTEXT)
        self._traceparent = traceparent
        self._parsed = False

    def get_span_context(self) -> SpanContext:
        if not self._parsed:  # a race only parses twice, to the same result
            self._context = parent_span_context(self._traceparent)
            self._parsed = True
        return self._context


def _bare_root() -> Span:
    """A span that records nothing, in a new trace: ids for the logs of an untraced task."""
    return NonRecordingSpan(
        SpanContext(
            _IDS.generate_trace_id(),
            _IDS.generate_span_id(),
            False,
            TraceFlags(TraceFlags.SAMPLED),
        )
    )


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
        self._provider = provider
        self._tracer = trace.get_tracer(__name__, tracer_provider=provider)
        self._worker_id = worker_id

    def _exporting(self) -> bool:
        return _exports(self._provider or trace.get_tracer_provider())

    def start(self, assignment: Assignment) -> tuple[Span, str]:
        """Starts the ``execute`` span of an attempt, under the assignment's trace context.

        Returns:
            The span to make current while the handler runs, and the ``traceparent`` that
            reports carry: the execute span's, or when nothing is exported the dispatch's.
        """
        if not self._exporting():
            if assignment.traceparent:
                return _Dispatch(assignment.traceparent), assignment.traceparent
            span = _bare_root()
            return span, traceparent_of(span) or ""
        parent = parent_span_context(assignment.traceparent)
        attributes: dict[str, AttributeValue] = {
            TASK_ID: assignment.task_id,
            TASK_COMMAND: assignment.command,
            TASK_ATTEMPT: assignment.attempt,
            QUEUE: assignment.queue,
        }
        worker_id = self._worker_id()
        if worker_id:
            attributes[WORKER_ID] = worker_id
        span = self._tracer.start_span(
            f"execute {assignment.command}",
            context=trace.set_span_in_context(NonRecordingSpan(parent)),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        return span, traceparent_of(span) or ""

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

        Its parent is the ``execute`` span (which names the task), or the dispatch for a task
        that never ran (then it names the task itself).
        """
        if span is not None and not span.is_recording():
            return INVALID_SPAN  # an unexported or sampled-out attempt: nor is its report
        if span is not None:
            return self._tracer.start_span(
                _REPORT_NAMES[status], context=trace.set_span_in_context(span)
            )
        if not self._exporting():
            return INVALID_SPAN
        return self._tracer.start_span(
            _REPORT_NAMES[status],
            context=parent_context(assignment.traceparent),
            attributes={TASK_ID: assignment.task_id, TASK_ATTEMPT: assignment.attempt},
        )

    @staticmethod
    def activate(span: Span | None) -> Token[otel_context.Context] | None:
        """Makes ``span`` this thread's current span, so handler logs and spans see it.

        Returns:
            A token for :meth:`deactivate`.
        """
        return None if span is None else otel_context.attach(trace.set_span_in_context(span))

    @staticmethod
    def deactivate(token: Token[otel_context.Context] | None) -> None:
        """Restores the context :meth:`activate` replaced."""
        if token is not None:
            otel_context.detach(token)
