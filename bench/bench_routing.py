"""Routing benchmark: throughput over many queues and worker pools next to one queue, and the
pickup of one queue's tasks while another queue's burst keeps the workers busy.

Prints figures, asserts nothing. Like ``bench_e2e.py`` it starts the real processes
(``taskmill.dev.harness``): one scheduler, one coordinator and workers, each cluster against a
throwaway database of its own on the local PostgreSQL (127.0.0.1:5432, user postgres), dropped
afterwards. Each cluster first runs 200 ``echo`` tasks before any clock starts.

1. Throughput, measured as ``bench_e2e.py``'s phase 1 (``_e2e_phases.throughput``): ``--tasks``
   ``echo`` tasks through ``POST /v1/tasks/batch`` in chunks of ``--chunk``, from the first
   submit until a ``count(*)`` of succeeded tasks reaches them all. Three clusters, one row each:

   - ``1 queue``, ``--workers`` workers: ``bench_e2e.py``'s shape (2 x 8, queue size 1000);
   - ``1 queue``, ``--pools`` workers: the next row's fleet, every worker serving ``default``;
   - ``--queues`` queues (``q00``, ``q01``, ...), the tasks spread over them in turn, served by
     ``--pools`` pools of one worker each, each pool a slice of the queues of its own
     (``q00-q06``, ``q07-q13``, ``q14-q19``): every task has one pool that may run it.

   Every worker has ``--concurrency`` slots and ``--queue-size``. ``vs 1 queue`` divides a
   row's tasks/s by the one-queue row with as many workers.
2. Pickup in queue ``b`` on a cluster of ``--workers`` workers that each serve ``a,b``: first
   ``--samples`` single ``echo`` tasks in ``b`` on the idle cluster, one after the other, as
   ``bench_e2e.py``'s phase 2 (``_e2e_phases.latency``: pickup is ``started_at`` minus
   ``created_at``, split at ``dispatched_at``; round trip is the client's, submit call to the
   poll that saw it succeeded); then as many again while a feeder thread keeps at least
   ``--backlog`` tasks of ``a`` scheduled (batches of 1000), so the workers stay full of ``a``
   all along: ``echo`` (as many as the machine runs), or ``sleep`` of ``--burst-seconds`` (the
   slots busy, the CPU not). ``ANALYZE tasks`` runs once the backlog is in, before the clock,
   as phase 1's does after its enqueue. The row says how many tasks of ``a`` ran meanwhile, and
   the fewest ever seen scheduled (0 would mean the burst ran dry during the phase).

    uv run python bench/bench_routing.py                          # everything, ~2 minutes
    uv run python bench/bench_routing.py --tasks 2000 --samples 20   # a quick try
    uv run python bench/bench_routing.py --phases pickup
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pg8000.native
from _e2e_measure import wait_until
from _e2e_phases import Api, latency, throughput
from _e2e_report import machine
from _e2e_taskmill import _connect, throwaway_database

from taskmill.dev.harness import Cluster, Service

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PHASES = ("throughput", "pickup")
WARM_UP = 200


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--phases", default=",".join(PHASES), help="comma list of " + ", ".join(PHASES)
    )
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--queues", type=int, default=20, help="queues of the pools' row")
    parser.add_argument("--pools", type=int, default=3, help="pools (one worker each)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the one-queue row")
    parser.add_argument("--concurrency", type=int, default=8, help="slots per worker")
    parser.add_argument("--queue-size", type=int, default=1000, help="taskmill worker queue")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--pause", type=float, default=0.02)
    parser.add_argument("--backlog", type=int, default=5000, help="a's tasks kept scheduled")
    parser.add_argument(
        "--burst-seconds",
        type=float,
        default=0.0,
        help="a's tasks: echo (0, the default: as many as the machine runs) or sleep this long "
        "(the slots stay busy, the CPU does not)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline of each phase")
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in the services' environment (repeatable), e.g. TASKMILL_LOG_LEVEL=DEBUG",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs")
    parser.add_argument("--json", metavar="FILE", help="also write every row here")
    return parser.parse_args()


@contextlib.contextmanager
def cluster(
    url: str, args: argparse.Namespace, workers: Sequence[Sequence[str]]
) -> Iterator[tuple[Cluster, list[Service]]]:
    """Scheduler, coordinator and one worker per entry of ``workers`` (its extra flags)."""
    logs = Path(tempfile.mkdtemp(prefix="taskmill-bench-routing-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKMILL_", "OTEL_"))}
    env.update(TASKMILL_DATABASE_URL=url, TASKMILL_MIGRATE="false")
    env.update(item.split("=", 1) for item in args.env)
    running = Cluster(url, logs, env)
    slots = ("--concurrency", str(args.concurrency), "--queue-size", str(args.queue_size))
    try:
        scheduler = running.start_scheduler()
        coordinator = running.start_coordinator()
        started = [running.start_worker(coordinator, *slots, *extra) for extra in workers]
        print(f"  cluster up; service logs in {logs}", flush=True)
        yield running, [scheduler, coordinator, *started]
    finally:
        running.stop_all()
        if not args.keep_logs:
            shutil.rmtree(logs, ignore_errors=True)


def bodies(tasks: int, chunk: int, queues: Sequence[str]) -> list[bytes]:
    """Batch request bodies of ``tasks`` echo tasks, spread over ``queues`` in turn."""
    return [
        json.dumps(
            {
                "tasks": [
                    {"command": "echo", "queue": queues[n % len(queues)], "payload": {"n": n}}
                    for n in range(start, min(tasks, start + chunk))
                ]
            }
        ).encode()
        for start in range(0, tasks, chunk)
    ]


def warm_up(api: Api, sql: pg8000.native.Connection, queues: Sequence[str]) -> None:
    """Runs a first batch through the cluster before any clock starts."""
    (body,) = bodies(WARM_UP, WARM_UP, queues)
    api.post("/v1/tasks/batch", body)
    count = "SELECT count(*) FROM tasks WHERE status = 'succeeded'"
    if not wait_until(lambda: sql.run(count)[0][0] >= WARM_UP, 60, 0.05):
        raise SystemExit("the warm-up did not finish within 60 s")


# -- 1. throughput ------------------------------------------------------------------------------


def pool_queues(args: argparse.Namespace) -> list[list[str]]:
    """The queues, cut into ``--pools`` slices as even as they go."""
    names = [f"q{n:02d}" for n in range(args.queues)]
    cuts = [round(p * len(names) / args.pools) for p in range(args.pools + 1)]
    return [names[cuts[p] : cuts[p + 1]] for p in range(args.pools)]


def throughput_row(
    args: argparse.Namespace, label: str, workers: Sequence[Sequence[str]], queues: Sequence[str]
) -> dict[str, Any]:
    """One fresh cluster, warmed up, and phase 1 over ``queues``."""
    print(f"{label}: {len(workers)} workers x concurrency {args.concurrency}", flush=True)
    with throwaway_database(args.admin_url) as url, cluster(url, args, workers) as (c, services):
        api, sql = Api(c.url), _connect(url)
        try:
            warm_up(api, sql, queues)
            print(f"  throughput of {args.tasks} echo tasks", flush=True)
            # One queue: bench_e2e.py's very requests (no queue named, so "default").
            requests = None if queues == ["default"] else bodies(args.tasks, args.chunk, queues)
            figures = throughput(api, sql, services, args, requests)
        finally:
            sql.close()
    return {"row": label, "workers": len(workers), "queues": len(queues), **figures}


def throughput_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    one = ["default"]
    rows = [
        throughput_row(args, f"1 queue, {n} workers", [()] * n, one)
        for n in dict.fromkeys((args.workers, args.pools))  # once when they are equal
    ]
    slices = pool_queues(args)
    print("  pools: " + "; ".join(f"{s[0]}-{s[-1]}" for s in slices), flush=True)
    workers = [("--queues", ",".join(s)) for s in slices]
    names = [name for s in slices for name in s]
    rows.append(throughput_row(args, f"{args.queues} queues, {args.pools} pools", workers, names))
    return rows


# -- 2. pickup under a burst --------------------------------------------------------------------


class Feeder:
    """Keeps at least ``backlog`` tasks of queue ``a`` scheduled while its ``with`` block runs,
    on a thread with an HTTP connection and a database connection of its own."""

    def __init__(self, base_url: str, db_url: str, backlog: int, seconds: float) -> None:
        self._api = Api(base_url)
        self._sql = _connect(db_url)
        self._backlog = backlog
        task = {"command": "sleep", "queue": "a", "payload": {"seconds": seconds}}
        if not seconds:
            task = {"command": "echo", "queue": "a", "payload": {"n": 0}}
        self._body = json.dumps({"tasks": [task] * 1000}).encode()
        self._over = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self._error: BaseException | None = None
        self.fewest: int | None = None  # the fewest scheduled once the burst was up
        self.submitted = 0

    def _scheduled(self) -> int:
        query = "SELECT count(*) FROM tasks WHERE queue = 'a' AND status = 'scheduled'"
        return int(self._sql.run(query)[0][0])

    def fill(self) -> None:
        """Submits until the backlog is there (before the phase's clock)."""
        while self._scheduled() < self._backlog:
            self._api.post("/v1/tasks/batch", self._body)
            self.submitted += 1000

    def _run(self) -> None:
        try:
            while not self._over.is_set():
                scheduled = self._scheduled()
                self.fewest = scheduled if self.fewest is None else min(self.fewest, scheduled)
                if scheduled < self._backlog:
                    self._api.post("/v1/tasks/batch", self._body)
                    self.submitted += 1000
                else:
                    self._over.wait(0.02)
        except BaseException as exc:  # noqa: BLE001 - raised again by __exit__
            self._error = exc

    def __enter__(self) -> Feeder:
        self.fill()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._over.set()
        self._thread.join(60)
        self._sql.close()
        if self._error is not None:
            raise self._error


def pickup_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Phase 2: pickup in ``b``, idle and then under ``a``'s burst, on one cluster."""
    burst = f"sleep {args.burst_seconds} s" if args.burst_seconds else "echo"
    print(
        f"pickup in b: {args.workers} workers serving a,b x concurrency {args.concurrency}; "
        f"a's burst of {burst} tasks",
        flush=True,
    )
    workers = [("--queues", "a,b")] * args.workers
    body = json.dumps({"command": "echo", "queue": "b", "payload": {"n": 0}}).encode()
    done = "SELECT count(*) FROM tasks WHERE queue = 'a' AND status = 'succeeded'"
    with throwaway_database(args.admin_url) as url, cluster(url, args, workers) as (c, _):
        api, sql = Api(c.url), _connect(url)
        try:
            warm_up(api, sql, ["a", "b"])
            sql.run("VACUUM ANALYZE tasks")  # as bench_e2e.py before its pickup phase
            print(f"  {args.samples} single tasks in b, idle", flush=True)
            idle = latency(api, sql, args, body)
            print(f"  {args.samples} single tasks in b, a's burst running", flush=True)
            with Feeder(c.url, url, args.backlog, args.burst_seconds) as feeder:
                # Statistics with the burst in, as phase 1 gets after its enqueue: with those
                # of the idle table, b's pickup was once ~20 times longer (600 ms at p50).
                sql.run("ANALYZE tasks")
                before, began = int(sql.run(done)[0][0]), time.perf_counter()
                busy = latency(api, sql, args, body)
                ran, seconds = int(sql.run(done)[0][0]) - before, time.perf_counter() - began
        finally:
            sql.close()
    figures = {
        "a_ran": ran,
        "a_per_s": round(ran / seconds, 1),
        "a_fewest_scheduled": feeder.fewest,
    }
    return [{"row": "b, idle", **idle}, {"row": f"b, a's {burst} burst", **busy, **figures}]


# -- report -------------------------------------------------------------------------------------


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    def cell(row: dict[str, Any], key: str, form: str) -> str:
        value = row.get(key)
        return "-" if value is None else form.format(value)

    cells = [[title for title, _, _ in columns]]
    cells += [[cell(row, key, form) for _, key, form in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


THROUGHPUT_COLUMNS = [
    ("throughput", "row", "{}"),
    ("tasks/s", "tasks_per_s", "{:,.0f}"),
    ("vs 1 queue", "ratio", "{:.0%}"),
    ("total s", "seconds", "{:.2f}"),
    ("enqueue s", "enqueue_seconds", "{:.2f}"),
    ("CPU us/task", "cpu_us", "{:,}"),
    ("busy cores", "machine_busy_cores", "{:.2f}"),
    ("completed", "completed", "{:,}"),
]
PICKUP_COLUMNS = [
    ("pickup (ms)", "row", "{}"),
    ("p50", "pickup_p50_ms", "{:.2f}"),
    ("p95", "pickup_p95_ms", "{:.2f}"),
    ("p99", "pickup_p99_ms", "{:.2f}"),
    ("claim p50", "claim_p50_ms", "{:.2f}"),
    ("assign p50", "assign_p50_ms", "{:.2f}"),
    ("round trip p50", "roundtrip_p50_ms", "{:.2f}"),
    ("p95", "roundtrip_p95_ms", "{:.2f}"),
    ("samples", "latency_samples", "{}"),
    ("a ran", "a_ran", "{:,}"),
    ("a/s", "a_per_s", "{:,.0f}"),
    ("a fewest waiting", "a_fewest_scheduled", "{:,}"),
]


def report(rows: Sequence[dict[str, Any]]) -> None:
    by_workers = {r["workers"]: r for r in rows if r.get("queues") == 1}
    for row in rows:
        if "tasks_per_s" in row:
            base = by_workers.get(row["workers"])
            row["ratio"] = row["tasks_per_s"] / base["tasks_per_s"] if base else None
            row["cpu_us"] = sum(row["cpu_us_per_task"].values())
            if row.get("timed_out"):
                row["row"] += " (timeout)"
    print()
    for columns, key in ((THROUGHPUT_COLUMNS, "tasks_per_s"), (PICKUP_COLUMNS, "pickup_p50_ms")):
        shown = [row for row in rows if key in row]
        if shown:
            print(_table(shown, columns), end="\n\n")
    print(f"  load average at the end {os.getloadavg()[0]:.2f}")


def main() -> None:
    args = parse_args()
    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        raise SystemExit(f"unknown phases: {', '.join(sorted(unknown))}")
    print(machine(), flush=True)
    rows: list[dict[str, Any]] = []
    if "throughput" in phases:
        rows += throughput_rows(args)
    if "pickup" in phases:
        rows += pickup_rows(args)
    report(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
