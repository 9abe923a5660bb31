"""What tracing costs when nothing is configured (no OTEL_* variables): CPU per operation of
each tracing step taskmill adds to a hot path, next to the same path without it.

    uv run python bench/bench_tracing_overhead.py

Prints figures; asserts nothing. The worker's share is measured by bench_worker_tracing.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from taskmill.common.telemetry import context_from_traceparent, setup_tracing, traceparent_of
from taskmill.scheduler.tracing import task_traceparents, traced

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _per_call(fn: Callable[[], Any], rounds: int = 5, calls: int = 20_000) -> float:
    """Best-of-rounds CPU microseconds per call."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) / calls * 1e6)
    return best


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b"{}"]


def _environ() -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/v1/tasks",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8081",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "HTTP_TRACEPARENT": TRACEPARENT,
    }


def main() -> None:
    setup_tracing("bench", "0", {})  # nothing configured: what a default deployment runs
    wrapped = traced(_app)
    tracer = trace.get_tracer("bench")
    parent = context_from_traceparent(TRACEPARENT)

    def request(app: Any) -> Callable[[], Any]:
        return lambda: list(app(_environ(), lambda *args: None))

    def dispatch_span() -> None:
        span = tracer.start_span("dispatch", context=parent)
        traceparent_of(span)
        span.end()

    ids = [uuid.uuid4() for _ in range(1000)]
    batch = (["echo"] * 1000, ["default"] * 1000)
    rows = [
        ("scheduler request, plain WSGI app", _per_call(request(_app))),
        ("scheduler request, with the tracing middleware", _per_call(request(wrapped))),
        ("a real span + traceparent (coordinator, when exporting)", _per_call(dispatch_span)),
        (
            "scheduler batch of 1000: a trace context per task",
            _per_call(lambda: task_traceparents(ids, *batch), rounds=3, calls=20),
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'step (nothing configured)':<{width}}  CPU µs per call")
    for name, micros in rows:
        print(f"{name:<{width}}  {micros:10.1f}")


if __name__ == "__main__":
    main()
