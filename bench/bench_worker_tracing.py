"""Benchmark of the worker's tracing overhead: prints figures, asserts nothing.

Runs ``echo`` tasks, each with a ``traceparent`` as a coordinator sends it, two ways:

1. ``executor``: straight through the worker's :class:`Executor` (no gRPC): the per-task cost of
   the worker's own bookkeeping, where a tracing cost would show most;
2. ``grpc``: a real worker in this process, fed over gRPC by a minimal in-process coordinator
   that acknowledges every status report.

and times ``calls``: the tracing calls the executor makes for one task, alone, in a loop (the
least noisy figure on a busy machine; absent when run against a worker without tracing).
Figures are the best of the rounds: tasks/s and CPU microseconds per task.

Each tracing mode runs in its own process (the global tracer provider can be set only once):

- ``api``: no SDK at all (the OpenTelemetry API's no-op provider);
- ``sdk``: ``setup_tracing`` with no ``OTEL_*`` variables: spans are made, nothing is exported
  (what a worker does when nothing is configured);
- ``export``: the SDK with a batch processor feeding an exporter that drops everything (the
  cost of tracing switched on, minus the network).

    uv run python bench/bench_worker_tracing.py [--tasks 20000] [--rounds 5] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import timeit
from collections.abc import Sequence
from typing import Any

import grpc

from taskmill.common.attempts import Assignment, Outcome, Report, ReportStatus
from taskmill.common.grpcutil import GrpcSecurity, create_server
from taskmill.v1 import (
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)
from taskmill.worker.app import create_worker
from taskmill.worker.executor import Executor
from taskmill.worker.registry import default_registry
from taskmill.worker.settings import WorkerSettings

MODES = ("api", "sdk", "export")
_FINAL_PROTO = {
    common_pb2.TASK_STATUS_SUCCEEDED,
    common_pb2.TASK_STATUS_FAILED,
    common_pb2.TASK_STATUS_CANCELLED,
}


def _traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def _setup(mode: str) -> Any:
    if mode == "api":
        return None
    from taskmill.common.telemetry import setup_tracing

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    provider = setup_tracing("bench-worker", "0", env)
    if mode == "export":
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Drop(SpanExporter):
            def export(self, spans: Sequence[Any]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider.add_span_processor(BatchSpanProcessor(Drop()))
    return provider


class _Finals:
    """Counts final reports; wakes the waiter when the expected number arrived."""

    def __init__(self) -> None:
        self.count = 0
        self.condition = threading.Condition()

    def add(self, n: int) -> None:
        if n:
            with self.condition:
                self.count += n
                self.condition.notify_all()

    def wait(self, target: int, timeout: float = 300.0) -> None:
        with self.condition:
            if not self.condition.wait_for(lambda: self.count >= target, timeout):
                raise SystemExit(f"only {self.count} of {target} tasks finished")


def bench_executor(tasks: int, concurrency: int) -> tuple[float, float]:
    """Tasks per second straight through an Executor, and CPU microseconds per task."""
    finals = _Finals()

    def report(r: Report) -> None:
        finals.add(r.status is not ReportStatus.RUNNING)

    executor = Executor(
        {"echo": default_registry.snapshot()["echo"]},
        concurrency=concurrency,
        queue_size=tasks,
        report=report,
    )
    batch = [
        Assignment(str(n), "echo", '{"n":1}', traceparent=_traceparent()) for n in range(tasks)
    ]
    executor.start()
    started, cpu = time.perf_counter(), time.process_time()
    executor.admit(batch)
    finals.wait(tasks)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    executor.stop()
    return tasks / elapsed, 1e6 * cpu / tasks


class _Coordinator(coordinator_pb2_grpc.CoordinatorServiceServicer):
    """Registers one worker and acknowledges every report."""

    def __init__(self) -> None:
        self.finals = _Finals()

    def RegisterWorker(self, request: Any, context: Any) -> Any:
        return coordinator_pb2.RegisterWorkerResponse(
            worker_id="w-bench", heartbeat_interval_seconds=1.0
        )

    def Heartbeat(self, request: Any, context: Any) -> Any:
        return coordinator_pb2.HeartbeatResponse()

    def ReportTaskStatuses(self, request: Any, context: Any) -> Any:
        self.finals.add(sum(r.status in _FINAL_PROTO for r in request.reports))
        return coordinator_pb2.ReportTaskStatusesResponse(applied=len(request.reports))

    def DeregisterWorker(self, request: Any, context: Any) -> Any:
        return coordinator_pb2.DeregisterWorkerResponse()


def _assign_all(stub: Any, tasks: int, batch_size: int) -> None:
    sent = 0
    while sent < tasks:
        size = min(batch_size, tasks - sent)
        request = worker_pb2.AssignTasksRequest(
            worker_id="w-bench",
            assignments=[
                common_pb2.Assignment(
                    task_id=f"t{sent + n}",
                    command="echo",
                    payload_json=json.dumps({"n": sent + n}),
                    attempt=1,
                    max_attempts=1,
                    queue="default",
                    traceparent=_traceparent(),
                )
                for n in range(size)
            ],
        )
        try:
            stub.AssignTasks(request, timeout=10)
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            time.sleep(0.001)
            continue
        sent += size


def bench_grpc(tasks: int, concurrency: int, batch_size: int = 100) -> tuple[float, float]:
    """Tasks per second through a real worker fed over gRPC, and CPU microseconds per task
    (of the whole process: worker, coordinator and the client feeding it)."""
    fake = _Coordinator()
    security = GrpcSecurity()
    server, port, _ = create_server(
        "127.0.0.1:0",
        lambda s: coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(fake, s),
        security,
    )
    settings = WorkerSettings(
        coordinator=f"127.0.0.1:{port}",
        host="127.0.0.1",
        advertise_address="127.0.0.1",
        concurrency=concurrency,
        queue_size=4 * batch_size,
    )
    with create_worker(settings, {"echo": default_registry.snapshot()["echo"]}) as worker:
        while worker.worker_id is None:
            time.sleep(0.01)
        channel = grpc.insecure_channel(f"127.0.0.1:{worker.port}")
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        started, cpu = time.perf_counter(), time.process_time()
        _assign_all(stub, tasks, batch_size)
        fake.finals.wait(tasks)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        channel.close()
    server.stop(None)
    return tasks / elapsed, 1e6 * cpu / tasks


def bench_calls(tasks: int) -> float | None:
    """Microseconds per task of the executor's tracing calls alone, or ``None`` without them."""
    try:
        from taskmill.worker.tracing import TaskTracer
    except ImportError:
        return None
    tracer = TaskTracer()
    assignment = Assignment("t", "echo", traceparent=_traceparent())
    outcome = Outcome.succeeded("1")

    def one_task() -> None:
        span, _ = tracer.start(assignment)
        tracer.deactivate(tracer.activate(span))
        tracer.report(span, assignment, ReportStatus.SUCCEEDED).end()
        tracer.finish(span, outcome)

    return 1e6 * min(timeit.repeat(one_task, number=tasks, repeat=5)) / tasks


def _run_mode(args: argparse.Namespace) -> None:
    provider = _setup(args.mode)
    bench_executor(1000, args.concurrency)  # warm up
    figures: dict[str, list[tuple[float, float]]] = {"executor": [], "grpc": []}
    for _ in range(args.rounds):
        figures["executor"].append(bench_executor(args.tasks, args.concurrency))
        figures["grpc"].append(bench_grpc(args.tasks // 4, args.concurrency))
    calls = bench_calls(args.tasks)
    if provider is not None:
        provider.shutdown()
    print(json.dumps({"figures": figures, "calls": calls}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # one mode, in a child process
    args = parser.parse_args()
    if args.mode:
        _run_mode(args)
        return
    print(
        f"echo tasks: best of {args.rounds} rounds, tasks/s and CPU us/task; "
        f"concurrency {args.concurrency}; load average {os.getloadavg()[0]:.1f}"
    )
    for mode in args.modes.split(","):
        command = [sys.executable, __file__, "--mode", mode, "--tasks", str(args.tasks)]
        command += ["--rounds", str(args.rounds), "--concurrency", str(args.concurrency)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        line = "  ".join(
            f"{stage} {max(rate for rate, _ in v):7.0f}/s {min(cpu for _, cpu in v):6.1f} us"
            for stage, v in result["figures"].items()
        )
        if result["calls"] is not None:
            line += f"  calls {result['calls']:5.1f} us"
        print(f"{mode:7s} {line}", flush=True)


if __name__ == "__main__":
    main()
