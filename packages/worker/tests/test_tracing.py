"""Task spans: ``execute <command>`` per attempt under the coordinator's dispatch span, the final
report under it, reports carrying its ``traceparent``, and handler logs carrying its ids."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode
from worker_testkit import assign_request, assignment, wait_for

from taskmill.common.telemetry import (
    QUEUE,
    TASK_ATTEMPT,
    TASK_COMMAND,
    TASK_ID,
    WORKER_ID,
    TraceContextFilter,
    context_from_traceparent,
)
from taskmill.worker.tracing import parent_context


class Dispatch:
    """A coordinator's dispatch span, as an assignment's ``traceparent`` names it."""

    def __init__(self) -> None:
        self.trace_id = secrets.token_hex(16)
        self.span_id = secrets.token_hex(8)
        self.traceparent = f"00-{self.trace_id}-{self.span_id}-01"


class Recorder:
    """A tracer provider of its own (not the global one) that keeps every finished span."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, name: str, task_id: str) -> list[ReadableSpan]:
        return [
            span
            for span in self.exporter.get_finished_spans()
            if span.name == name and span.attributes and span.attributes.get(TASK_ID) == task_id
        ]

    def wait_child(self, name: str, parent: ReadableSpan) -> ReadableSpan:
        assert parent.context is not None
        span_id = parent.context.span_id

        def children() -> list[ReadableSpan]:
            return [
                span
                for span in self.exporter.get_finished_spans()
                if span.name == name and span.parent is not None and span.parent.span_id == span_id
            ]

        found = wait_for(children, what=f"span {name!r} under {parent.name!r}")
        assert len(found) == 1, found
        return found[0]

    def wait_span(self, name: str, task_id: str) -> ReadableSpan:
        found = wait_for(lambda: self.spans(name, task_id), what=f"span {name!r} of {task_id}")
        assert len(found) == 1, found
        return found[0]


def traceparent_of(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"


def _exception_event(span: ReadableSpan) -> dict[str, Any]:
    events = [event for event in span.events if event.name == "exception"]
    assert len(events) == 1, span.events
    return dict(events[0].attributes or {})


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.provider.shutdown()


@pytest.fixture
def assign(coordinator, start_worker, worker_stub, recorder) -> Callable[..., str]:
    """Starts a traced worker; the returned function assigns tasks to it and gives its id."""
    worker = start_worker(tracer_provider=recorder.provider)
    worker_id = coordinator.wait_registered()
    stub = worker_stub(worker)

    def send(*tasks: Any) -> str:
        stub.AssignTasks(assign_request(worker_id, *tasks))
        return worker_id

    return send


def test_execute_span_is_a_child_of_the_dispatch_and_names_the_task(assign, recorder):
    dispatch = Dispatch()
    task = assignment("echo", {"a": 1}, attempt=2, max_attempts=3, traceparent=dispatch.traceparent)
    worker_id = assign(task)
    span = recorder.wait_span("execute echo", task.task_id)
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == dispatch.trace_id
    assert f"{span.parent.span_id:016x}" == dispatch.span_id
    assert span.parent.is_remote
    assert span.kind is SpanKind.CONSUMER
    assert dict(span.attributes or {}) == {
        TASK_ID: task.task_id,
        TASK_COMMAND: "echo",
        TASK_ATTEMPT: 2,
        WORKER_ID: worker_id,
        QUEUE: "default",
    }
    assert span.status.status_code is StatusCode.UNSET


def test_reports_carry_the_execute_span_and_the_final_report_is_its_child(
    assign, recorder, coordinator
):
    dispatch = Dispatch()
    task = assignment("echo", "hi", traceparent=dispatch.traceparent)
    assign(task)
    final = coordinator.wait_final(task.task_id)
    span = recorder.wait_span("execute echo", task.task_id)
    assert final.traceparent == traceparent_of(span)
    running = coordinator.report(task.task_id, "running")
    assert running is not None and running.traceparent == traceparent_of(span)
    report = recorder.wait_child("report succeeded", span)
    assert span.context is not None and report.context is not None
    assert report.context.trace_id == span.context.trace_id
    assert span.start_time <= report.start_time <= report.end_time <= span.end_time


def test_a_failed_task_has_error_status_and_its_exception_recorded(assign, recorder):
    task = assignment("fail", {"message": "out of cheese"}, traceparent=Dispatch().traceparent)
    assign(task)
    span = recorder.wait_span("execute fail", task.task_id)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "RuntimeError: out of cheese"
    event = _exception_event(span)
    assert event["exception.type"] == "RuntimeError"
    assert event["exception.message"] == "out of cheese"
    assert "in fail" in event["exception.stacktrace"]
    recorder.wait_child("report failed", span)


def test_timeouts_and_unknown_commands_are_errors_under_the_dispatch(assign, recorder):
    dispatch = Dispatch()
    slow = assignment("sleep", {"seconds": 30}, timeout=0.3, traceparent=dispatch.traceparent)
    unknown = assignment("no.such.command", {}, traceparent=dispatch.traceparent)
    assign(slow, unknown)
    timed_out = recorder.wait_span("execute sleep", slow.task_id)
    assert timed_out.status.status_code is StatusCode.ERROR
    assert _exception_event(timed_out)["exception.type"] == "timeout"
    never_ran = recorder.wait_span("execute no.such.command", unknown.task_id)
    assert never_ran.status.status_code is StatusCode.ERROR
    assert _exception_event(never_ran)["exception.type"] == "unknown_command"
    assert never_ran.parent is not None and f"{never_ran.parent.span_id:016x}" == dispatch.span_id


def test_each_attempt_of_a_retried_task_gets_its_own_span_in_the_trace(
    assign, recorder, coordinator
):
    dispatch = Dispatch()
    first = assignment("fail", {}, attempt=1, max_attempts=2, traceparent=dispatch.traceparent)
    assign(first)
    coordinator.wait_final(first.task_id)
    recorder.wait_span("execute fail", first.task_id)
    redispatch = f"00-{dispatch.trace_id}-{secrets.token_hex(8)}-01"  # same trace, new dispatch
    second = assignment(
        "fail", {}, task_id=first.task_id, attempt=2, max_attempts=2, traceparent=redispatch
    )
    assign(second)
    spans = wait_for(
        lambda: (
            (found := recorder.spans("execute fail", first.task_id)) and len(found) == 2 and found
        ),
        what="two execute spans",
    )
    assert sorted(span.attributes[TASK_ATTEMPT] for span in spans) == [1, 2]
    assert {f"{span.context.trace_id:032x}" for span in spans} == {dispatch.trace_id}
    assert spans[0].context.span_id != spans[1].context.span_id


def test_the_handler_runs_inside_the_execute_span(assign, recorder, coordinator):
    task = assignment("test.current_span", {}, traceparent=Dispatch().traceparent)
    assign(task)
    seen = json.loads(coordinator.wait_final(task.task_id).result_json)
    span = recorder.wait_span("execute test.current_span", task.task_id)
    assert span.context is not None
    assert seen == {
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
    }


class _Capture(logging.Handler):
    """Keeps records, with the ids the services' log filter stamps on them."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(TraceContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def task_logs() -> Iterator[_Capture]:
    capture = _Capture()
    logger = logging.getLogger("taskmill.task")
    logger.addHandler(capture)
    yield capture
    logger.removeHandler(capture)


def test_handler_log_records_carry_the_trace_and_span_ids(assign, recorder, coordinator, task_logs):
    dispatch = Dispatch()
    task = assignment("test.log", {}, traceparent=dispatch.traceparent)
    assign(task)
    coordinator.wait_final(task.task_id)
    span = recorder.wait_span("execute test.log", task.task_id)
    assert span.context is not None
    [record] = [r for r in task_logs.records if "hello from the handler" in r.getMessage()]
    assert record.trace_id == dispatch.trace_id
    assert record.span_id == f"{span.context.span_id:016x}"


def test_process_handlers_are_traced_from_the_parent_and_their_logs_carry_the_ids(
    assign, recorder, coordinator, capfd
):
    dispatch = Dispatch()
    logs = assignment("test.log_in_process", {}, traceparent=dispatch.traceparent)
    broken = assignment("test.raise_in_process", {}, traceparent=dispatch.traceparent)
    assign(logs, broken)
    coordinator.wait_final(logs.task_id)
    span = recorder.wait_span("execute test.log_in_process", logs.task_id)
    assert span.parent is not None and f"{span.parent.span_id:016x}" == dispatch.span_id
    assert span.status.status_code is StatusCode.UNSET
    assert span.context is not None
    line = f"trace_id={dispatch.trace_id} span_id={span.context.span_id:016x}]"
    assert any(
        line in text and "hello from the child" in text
        for text in capfd.readouterr().err.splitlines()
    )
    failed = recorder.wait_span("execute test.raise_in_process", broken.task_id)
    assert failed.status.status_code is StatusCode.ERROR
    assert _exception_event(failed)["exception.type"] == "KeyError"


@pytest.mark.parametrize("provider", [NoOpTracerProvider, TracerProvider], ids=["no-sdk", "sdk"])
def test_without_an_exporter_the_handler_runs_in_the_dispatch_context(
    coordinator, start_worker, worker_stub, provider, task_logs
):
    worker = start_worker(tracer_provider=provider())  # exports nothing: no span processor
    worker_id = coordinator.wait_registered()
    stub = worker_stub(worker)
    dispatch = Dispatch()
    task = assignment("test.current_span", {}, traceparent=dispatch.traceparent)
    stub.AssignTasks(assign_request(worker_id, task))
    final = coordinator.wait_final(task.task_id)
    assert json.loads(final.result_json) == {
        "trace_id": dispatch.trace_id,
        "span_id": dispatch.span_id,
    }
    assert final.traceparent == dispatch.traceparent
    running = coordinator.report(task.task_id, "running")
    assert running is not None and running.traceparent == dispatch.traceparent
    # A task dispatched without a trace still gets ids for its log lines.
    untraced = assignment("test.log", {})
    stub.AssignTasks(assign_request(worker_id, untraced))
    reported = coordinator.wait_final(untraced.task_id).traceparent
    [record] = [r for r in task_logs.records if "hello from the handler" in r.getMessage()]
    assert reported == f"00-{record.trace_id}-{record.span_id}-01"


_TRACE = "0af7651916cd43dd8448eb211c80319c"
_SPAN = "b7ad6b7169203331"


@pytest.mark.parametrize(
    "traceparent",
    [
        f"00-{_TRACE}-{_SPAN}-01",
        f"00-{_TRACE}-{_SPAN}-00",
        f"01-{_TRACE}-{_SPAN}-01-future",
        f"00-{_TRACE}-{_SPAN}-01-extra",
        f"ff-{_TRACE}-{_SPAN}-01",
        f"00-{'0' * 32}-{_SPAN}-01",
        f"00-{_TRACE}-{'0' * 16}-01",
        f"00-{_TRACE[:-1]}x-{_SPAN}-01",
        f"00-{_TRACE}-{_SPAN}-1",
        "not a traceparent",
        "",
    ],
)
def test_parent_context_reads_a_traceparent_as_the_common_propagator_does(traceparent):
    fast = trace.get_current_span(parent_context(traceparent)).get_span_context()
    assert fast == trace.get_current_span(context_from_traceparent(traceparent)).get_span_context()
