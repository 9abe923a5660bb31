"""One trace per task: the real services export spans over OTLP/gRPC to a receiver served by
the test, and the spans of all three services join the trace of the submitting request."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from taskmill.dev.harness import Cluster, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    error: bool
    links: tuple[tuple[str, str], ...]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    received.append(
                        Span(
                            service=resource.get("service.name", ""),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=attributes,
                            error=span.status.code == span.status.STATUS_CODE_ERROR,
                            links=tuple(
                                (link.trace_id.hex(), link.span_id.hex()) for link in span.links
                            ),
                        )
                    )
        with self._lock:
            self.spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def all(self) -> list[Span]:
        with self._lock:
            return list(self.spans)

    def in_trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, port
    finally:
        server.stop(None).wait()


def _ancestors(span: Span, spans: list[Span]) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    chain = []
    current: Span | None = span
    while current is not None and current.parent_span_id:
        chain.append(current.parent_span_id)
        current = by_id.get(current.parent_span_id)
    return chain


def _export_to(cluster: Cluster, port: int) -> None:
    """Points the services started from now on at the receiver, exporting every 100 ms."""
    cluster.env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )


def _request_spans(spans: list[Span]) -> list[Span]:
    """The scheduler's spans of the test's requests: children of the test's traceparent."""
    return [
        s for s in spans if s.service == "taskmill-scheduler" and s.parent_span_id == PARENT_SPAN_ID
    ]


def _executions_joined(receiver: Receiver) -> tuple[list[Span], list[Span]] | None:
    """The trace's spans and its execution spans, once each execution span's chain of parents
    reaches a request span of the scheduler (spans arrive from three processes in any order)."""
    spans = receiver.in_trace(TRACE_ID)
    requests = {s.span_id for s in _request_spans(spans)}
    executions = [s for s in spans if s.service == "taskmill-worker" and "execute" in s.name]
    if len(requests) < 2 or len(executions) < 3:
        return None
    if any(not set(_ancestors(s, spans)) & requests for s in executions):
        return None
    return spans, executions


def test_one_trace_from_request_to_worker(cluster: Cluster, receiver: tuple[Receiver, int]) -> None:
    spans_received, port = receiver
    _export_to(cluster, port)
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator("--retry-backoff-base", "0.1")
    cluster.start_worker(coordinator)

    traceparent = {"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"}
    status, ok = cluster.request("POST", "/v1/tasks", {"command": "echo"}, traceparent)
    assert status == 201, ok
    assert ok["trace_id"] == TRACE_ID
    status, failing = cluster.request(
        "POST", "/v1/tasks", {"command": "fail", "max_attempts": 2}, traceparent
    )
    assert status == 201, failing
    done = cluster.wait_final([ok["id"], failing["id"]])
    assert done[failing["id"]]["attempt"] == 2

    spans, execute_spans = wait_for(
        lambda: _executions_joined(spans_received), 30, "execution spans joined to the requests"
    )
    assert {"taskmill-scheduler", "taskmill-coordinator", "taskmill-worker"} <= {
        s.service for s in spans
    }

    by_task: dict[str, list[Span]] = {}
    for span in execute_spans:
        by_task.setdefault(span.attributes["taskmill.task.id"], []).append(span)
    assert len(by_task[ok["id"]]) == 1
    retried = by_task[failing["id"]]
    assert sorted(s.attributes["taskmill.task.attempt"] for s in retried) == [1, 2]
    assert all(s.error for s in retried)
    assert not by_task[ok["id"]][0].error
    dispatch = [s for s in spans if s.service == "taskmill-coordinator" and "dispatch" in s.name]
    assert dispatch, "the coordinator's dispatch spans join the trace"


def _submit_and_execution(receiver: Receiver, trace_id: str) -> tuple[Span, Span] | None:
    """A task's submit and execution spans, once the execution span's chain of parents reaches
    the submit span."""
    spans = receiver.in_trace(trace_id)
    submits = [s for s in spans if s.service == "taskmill-scheduler"]
    executions = [s for s in spans if "execute" in s.name]
    if len(submits) != 1 or len(executions) != 1:
        return None
    if submits[0].span_id not in _ancestors(executions[0], spans):
        return None
    return submits[0], executions[0]


def test_each_task_of_a_batch_has_its_own_trace_linked_to_the_request(
    cluster: Cluster, receiver: tuple[Receiver, int]
) -> None:
    spans_received, port = receiver
    _export_to(cluster, port)
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator()
    cluster.start_worker(coordinator)
    traceparent = {"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"}
    status, body = cluster.request(
        "POST", "/v1/tasks/batch", {"tasks": [{"command": "echo"}] * 2}, traceparent
    )
    assert status == 201, body
    tasks = body["tasks"]
    cluster.wait_final([t["id"] for t in tasks])
    trace_ids = {t["trace_id"] for t in tasks}
    assert len(trace_ids) == 2 and TRACE_ID not in trace_ids

    request = wait_for(
        lambda: _request_spans(spans_received.in_trace(TRACE_ID)), 30, "the batch request's span"
    )
    assert len(request) == 1
    for trace_id in trace_ids:
        submit, _ = wait_for(
            lambda t=trace_id: _submit_and_execution(spans_received, t),
            30,
            f"trace {trace_id} joined up",
        )
        assert submit.links == ((TRACE_ID, request[0].span_id),)
