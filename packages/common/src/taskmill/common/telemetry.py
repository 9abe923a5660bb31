"""OpenTelemetry set-up shared by every service, configured only by the standard ``OTEL_*``
variables, and log records that carry the current trace and span ids.

With nothing configured, spans are still created (so a task's trace id exists and logs carry
it) but nothing is exported. ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``, or
``OTEL_TRACES_EXPORTER=otlp``) turns on OTLP/gRPC export; ``OTEL_TRACES_EXPORTER=none`` turns it
off; ``console`` prints spans, for debugging.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from taskmill.common.traceparent import format_traceparent

logger = logging.getLogger(__name__)

#: The exporter ``setup_tracing`` installed in this process, if any.
_installed: SpanExporter | None = None
#: How long a service's exit waits for its last spans to reach the collector.
SHUTDOWN_SECONDS = 2.0

#: Span attribute names shared by every service.
TASK_ID = "taskmill.task.id"
TASK_COMMAND = "taskmill.task.command"
TASK_ATTEMPT = "taskmill.task.attempt"
WORKER_ID = "taskmill.worker.id"
QUEUE = "taskmill.queue"

_LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s span_id=%(span_id)s] %(message)s"
)


def _exporter(env: Mapping[str, str]) -> SpanExporter | None:
    choice = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if choice == "none" or (not choice and not endpoint):
        return None
    if choice == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return _StopsOnce(OTLPSpanExporter())


class _StopsOnce(SpanExporter):
    """An exporter that is shut down once, whoever asks first.

    ``shutdown_tracing`` may shut the OTLP exporter down early, to end its retries; the
    provider's own shutdown then asks again, which the OTLP exporter would log as a warning.
    """

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        self._lock = threading.Lock()
        self._stopped = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._exporter.export(spans)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._exporter.shutdown()


def setup_tracing(service_name: str, version: str, env: Mapping[str, str]) -> TracerProvider:
    """Installs the global tracer provider for a service.

    Args:
        service_name: ``service.name`` unless ``OTEL_SERVICE_NAME`` or
            ``OTEL_RESOURCE_ATTRIBUTES`` names another.
        version: ``service.version`` unless the environment names another.
        env: The process environment (the SDK also reads its ``OTEL_*`` variables itself).

    Returns:
        The provider; pass it to :func:`shutdown_tracing` at exit to flush spans.
    """
    detected = Resource.create()
    defaults = Resource({SERVICE_NAME: service_name, SERVICE_VERSION: version})
    resource = defaults.merge(detected)
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    exporter = _exporter(env)
    # Without an exporter, spans are never recorded, so they cost next to nothing; they still
    # get ids and carry the trace context from the request to the worker.
    sampler = None if exporter is not None else ALWAYS_OFF
    provider = TracerProvider(resource=resource, sampler=sampler)
    if exporter is not None:
        processor = (
            SimpleSpanProcessor(exporter)
            if isinstance(exporter, ConsoleSpanExporter)
            else BatchSpanProcessor(exporter)
        )
        provider.add_span_processor(processor)
        logger.info("exporting traces as %s", resource.attributes.get(SERVICE_NAME))
    trace.set_tracer_provider(provider)
    global _installed
    _installed = exporter
    return provider


def shutdown_tracing(provider: TracerProvider, timeout: float = SHUTDOWN_SECONDS) -> None:
    """Flushes the last spans and stops tracing, waiting at most ``timeout`` for the collector.

    The SDK's own shutdown retries an unreachable collector with a backoff until the export
    timeout (``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s by default), long enough to push a stopping
    worker past its orchestrator's kill deadline. Past ``timeout`` the exporter
    ``setup_tracing`` installed is shut down, which ends its retries; the spans it held are lost.
    """
    exporter = _installed
    timer = threading.Timer(timeout, exporter.shutdown) if exporter is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        provider.shutdown()
    finally:
        if timer is not None:
            timer.cancel()


def exporting() -> bool:
    """Whether ``setup_tracing`` installed an exporter in this process.

    Hot paths skip building spans when it did not: nothing would record them.
    """
    return _installed is not None


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` of the current span to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        else:
            record.trace_id = record.span_id = "-"
        return True


def setup_logging(level: str = "INFO") -> None:
    """Configures the root logger once, for a service's entry point."""
    handler = logging.StreamHandler()
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or ``None`` when there is none."""
    return traceparent_of(trace.get_current_span())


def traceparent_of(span: trace.Span) -> str | None:
    """The W3C ``traceparent`` that names ``span`` as the parent, or ``None`` when invalid.

    Written from the span's ids directly rather than through the configured propagators: what
    taskmill stores and sends is always a W3C ``traceparent``, and this runs per task.
    """
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return format_traceparent(context.trace_id, context.span_id, context.trace_flags)


def context_from_traceparent(traceparent: str | None) -> otel_context.Context:
    """A context whose parent is the span a ``traceparent`` names (empty when ``None``)."""
    if not traceparent:
        return otel_context.Context()
    return propagate.extract({"traceparent": traceparent})
