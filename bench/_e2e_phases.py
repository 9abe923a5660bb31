"""The three measured phases of bench_e2e.py, against a running taskmill cluster."""

from __future__ import annotations

import argparse
import http.client
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pg8000.native
from _e2e_measure import OUTSIDE, CpuMeter, percentiles, wait_until

from taskmill.dev.harness import Service


class Api:
    """One keep-alive HTTP connection to the scheduler."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self._conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)

    def post(self, path: str, body: bytes) -> Any:
        self._conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = self._conn.getresponse()
        data = response.read()
        if response.status != 201:
            raise SystemExit(f"POST {path} answered {response.status}: {data[:300]!r}")
        return json.loads(data)


def check_alive(services: Sequence[Service]) -> None:
    """Stops the run when a service died."""
    for service in services:
        if service.process.poll() is not None:
            raise SystemExit(f"{service.name} exited with {service.process.returncode}")


# -- phase 1 ------------------------------------------------------------------------------------


def batch_bodies(tasks: int, chunk: int) -> list[bytes]:
    """The request bodies, built before the clock starts."""
    return [
        json.dumps(
            {
                "tasks": [
                    {"command": "echo", "payload": {"n": n}}
                    for n in range(s, min(tasks, s + chunk))
                ]
            }
        ).encode()
        for s in range(0, tasks, chunk)
    ]


def throughput(
    api: Api,
    sql: pg8000.native.Connection,
    services: Sequence[Service],
    args: argparse.Namespace,
    bodies: Sequence[bytes] | None = None,
) -> dict[str, Any]:
    """Phase 1: the batch route to the last task succeeded. ``bodies`` are the requests, built
    before the clock starts (``--tasks`` tasks in all); by default ``batch_bodies``' echoes."""
    bodies = bodies or batch_bodies(args.tasks, args.chunk)
    first_seq = int(sql.run("SELECT coalesce(max(seq), 0) FROM tasks")[0][0])
    succeeded = "SELECT count(*) FROM tasks WHERE status = 'succeeded' AND seq > :seq"

    def done() -> int:
        check_alive(services)
        return int(sql.run(succeeded, seq=first_seq)[0][0])

    meter = CpuMeter(services, sql)
    meter.start()
    began = time.perf_counter()
    for body in bodies:
        api.post("/v1/tasks/batch", body)
    sql.run("ANALYZE tasks")  # as every PostgreSQL-backed peer gets (see README)
    submitted = time.perf_counter() - began
    finished = wait_until(lambda: done() >= args.tasks, args.timeout - submitted, 0.02)
    elapsed = time.perf_counter() - began
    cpu = meter.stop()
    count = done()
    ((span,),) = sql.run(
        "SELECT extract(epoch FROM max(finished_at) - min(created_at)) FROM tasks "
        "WHERE seq > :seq AND status = 'succeeded'",
        seq=first_seq,
    )
    return {
        "enqueue_seconds": round(submitted, 3),
        "seconds": round(elapsed, 3),
        "db_span_seconds": round(float(span or 0), 3),
        "completed": count,
        "tasks_per_s": round(count / elapsed, 1),
        "timed_out": not finished,
        **_cpu_figures(cpu, count, elapsed),
    }


def _cpu_figures(cpu: dict[str, float], count: int, elapsed: float) -> dict[str, Any]:
    """Phase 1's CPU time: per task for each part of taskmill, in cores for the machine."""
    return {
        "cpu_us_per_task": {
            k: round(v * 1e6 / max(count, 1)) for k, v in cpu.items() if k not in OUTSIDE
        },
        "machine_busy_cores": round(cpu["machine"] / elapsed, 2),
        "own_busy_cores": round(sum(v for k, v in cpu.items() if k not in OUTSIDE) / elapsed, 2),
        "postgres_other_cores": round(cpu["postgres_other"] / elapsed, 2),
        "client_cores": round(cpu["client"] / elapsed, 2),
    }


# -- phases 2 and 3 -----------------------------------------------------------------------------


def _one_at_a_time(
    api: Api, sql: pg8000.native.Connection, args: argparse.Namespace, body: Callable[[], bytes]
) -> tuple[list[str], list[float], bool]:
    """Submits ``--samples`` single tasks, each after the one before succeeded and ``--pause``.

    Returns their ids, each one's round trip (ms, submit call to the poll that saw it
    succeeded) and whether the phase ran out of time.
    """
    status = "SELECT status FROM tasks WHERE id = CAST(:id AS uuid)"
    ids: list[str] = []
    round_trips: list[float] = []
    deadline = time.monotonic() + args.timeout
    for _ in range(args.samples):
        began = time.perf_counter()
        task_id = str(api.post("/v1/tasks", body())["id"])
        left = deadline - time.monotonic()

        def succeeded(task_id: str = task_id) -> bool:
            return bool(sql.run(status, id=task_id)[0][0] == "succeeded")

        if left <= 0 or not wait_until(succeeded, left, 0.001):
            return ids, round_trips, True
        round_trips.append((time.perf_counter() - began) * 1000)
        ids.append(task_id)
        time.sleep(args.pause)
    return ids, round_trips, False


def latency(
    api: Api, sql: pg8000.native.Connection, args: argparse.Namespace, body: bytes | None = None
) -> dict[str, Any]:
    """Phase 2: single tasks on the idle cluster; each is ``body`` (by default an ``echo`` in
    the default queue)."""
    body = body or json.dumps({"command": "echo", "payload": {"n": 0}}).encode()
    ids, round_trips, timed_out = _one_at_a_time(api, sql, args, lambda: body)
    rows = sql.run(
        "SELECT extract(epoch FROM started_at - created_at) * 1000, "
        "extract(epoch FROM dispatched_at - created_at) * 1000, "
        "extract(epoch FROM started_at - dispatched_at) * 1000, "
        "extract(epoch FROM finished_at - started_at) * 1000 "
        "FROM tasks WHERE id = ANY(CAST(:ids AS uuid[]))",
        ids=ids,
    )
    columns = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
    return {
        **percentiles([float(v) for v in columns[0]], "pickup"),
        **percentiles([float(v) for v in columns[1]], "claim"),
        **percentiles([float(v) for v in columns[2]], "assign"),
        **percentiles([float(v) for v in columns[3]], "run"),
        **percentiles(round_trips, "roundtrip"),
        "latency_samples": len(round_trips),
        "latency_timed_out": timed_out,
    }


def lateness(api: Api, sql: pg8000.native.Connection, args: argparse.Namespace) -> dict[str, Any]:
    """Phase 3: single tasks due ``--due-in`` seconds after their submit, on the idle cluster.

    How late each starts: ``started_at`` minus ``scheduled_at``. These wake the coordinator's
    timer, not its ``LISTEN``: the submit's round finds nothing due yet.
    """

    def body() -> bytes:
        due = datetime.now(UTC) + timedelta(seconds=args.due_in)
        return json.dumps({"command": "echo", "scheduled_at": due.isoformat()}).encode()

    ids, _, timed_out = _one_at_a_time(api, sql, args, body)
    rows = sql.run(
        "SELECT extract(epoch FROM started_at - scheduled_at) * 1000 "
        "FROM tasks WHERE id = ANY(CAST(:ids AS uuid[]))",
        ids=ids,
    )
    late = [float(row[0]) for row in rows]
    return {
        **percentiles(late, "late"),
        "late_min_ms": round(min(late), 2) if late else None,
        "late_max_ms": round(max(late), 2) if late else None,
        "late_timed_out": timed_out,
    }
