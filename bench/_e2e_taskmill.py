"""bench_e2e.py's taskmill run: a throwaway database, the cluster's processes, its phases."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pg8000.native
from _e2e_measure import wait_until
from _e2e_phases import Api, latency, lateness, throughput

from taskmill.common.migrate import migrate
from taskmill.common.settings import DatabaseSettings
from taskmill.dev.harness import Cluster, Service


def _connect(url: str) -> pg8000.native.Connection:
    s = DatabaseSettings.from_url(url)
    return pg8000.native.Connection(
        s.user, host=s.host, port=s.port, database=s.database, password=s.password, timeout=30
    )


@contextlib.contextmanager
def throwaway_database(admin_url: str) -> Iterator[str]:
    """A new, migrated database, dropped afterwards."""
    name = f"taskmill_bench_e2e_{os.getpid()}_{secrets.token_hex(3)}"
    admin = _connect(admin_url)
    try:
        admin.run(f"CREATE DATABASE {name}")
        url = urlsplit(admin_url)._replace(path=f"/{name}").geturl()
        migrate(url)
        yield url
    finally:
        admin.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@contextlib.contextmanager
def cluster(url: str, args: argparse.Namespace) -> Iterator[tuple[Cluster, list[Service]]]:
    """Scheduler, coordinator and workers as real processes; logs in a temporary folder."""
    logs = Path(tempfile.mkdtemp(prefix="taskmill-bench-e2e-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKMILL_", "OTEL_"))}
    env.update(TASKMILL_DATABASE_URL=url, TASKMILL_MIGRATE="false")
    env.update(item.split("=", 1) for item in args.env)
    running = Cluster(url, logs, env)
    try:
        scheduler = running.start_scheduler()
        coordinator = running.start_coordinator()
        workers = [
            running.start_worker(
                coordinator,
                "--concurrency",
                str(args.concurrency),
                "--queue-size",
                str(args.queue_size),
            )
            for _ in range(args.workers)
        ]
        print(f"  cluster up; service logs in {logs}", flush=True)
        yield running, [scheduler, coordinator, *workers]
    finally:
        running.stop_all()
        if not args.keep_logs:
            shutil.rmtree(logs, ignore_errors=True)


@contextlib.contextmanager
def profiling(services: Sequence[Service], folder: str | None, seconds: float) -> Iterator[None]:
    """Runs ``py-spy record`` on every service for ``seconds`` while the block runs."""
    if not folder:
        yield
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    spies = [
        subprocess.Popen(
            [
                *_py_spy(),
                "record",
                "--pid",
                str(s.process.pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "100",
                "--gil",  # only the thread holding the GIL: where the Python CPU goes
                "--format",
                "raw",
                "--output",
                str(Path(folder) / f"{s.name}-{n}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n, s in enumerate(services)
    ]
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        for spy in spies:
            try:
                spy.wait(seconds + 30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
        print(f"  py-spy profiles (collapsed stacks) in {folder}", flush=True)


def _py_spy() -> list[str]:
    found = shutil.which("py-spy")
    return [found] if found else ["uv", "tool", "run", "py-spy"]


def _warm_up(api: Api, sql: pg8000.native.Connection) -> None:
    """Runs a first batch through the cluster before any clock starts."""
    warm = json.dumps({"tasks": [{"command": "echo", "payload": {}}] * 200}).encode()
    api.post("/v1/tasks/batch", warm)
    count = "SELECT count(*) FROM tasks WHERE status = 'succeeded'"
    if not wait_until(lambda: sql.run(count)[0][0] >= 200, 60, 0.05):
        raise SystemExit("the warm-up did not finish within 60 s")


def _phases(
    api: Api, sql: pg8000.native.Connection, services: Sequence[Service], args: argparse.Namespace
) -> dict[str, Any]:
    """Phases 1 to 3 on the warm cluster; their figures."""
    print(f"  throughput of {args.tasks} echo tasks", flush=True)
    with profiling(services, args.profile, args.profile_seconds):
        figures = throughput(api, sql, services, args)
    wait_until(lambda: False, 1.0, 1.0)  # let the cluster go idle
    if not args.no_vacuum:
        # What autovacuum does to an idle cluster within a minute or so: without it the
        # claim plans from the burst's statistics ("most rows scheduled") and scans the
        # whole table, and the claim index is full of dead entries (see README).
        sql.run("VACUUM ANALYZE tasks")
    print(f"  pickup latency of {args.samples} single tasks", flush=True)
    figures.update(latency(api, sql, args))
    print(f"  start after the due time of {args.samples} future tasks", flush=True)
    figures.update(lateness(api, sql, args))
    return figures


def run_taskmill(args: argparse.Namespace) -> dict[str, Any]:
    """Phases 1 to 3 on a fresh cluster; its row of the report."""
    print(
        f"taskmill: 1 coordinator, {args.workers} workers x concurrency {args.concurrency}, "
        f"queue size {args.queue_size}",
        flush=True,
    )
    with throwaway_database(args.admin_url) as url, cluster(url, args) as (running, services):
        api = Api(running.url)
        sql = _connect(url)
        try:
            _warm_up(api, sql)
            figures = _phases(api, sql, services, args)
        finally:
            sql.close()
    return {
        "system": "taskmill",
        "version": "workspace",
        "enqueue": f"POST /v1/tasks/batch, {args.chunk} per request",
        "workers": args.workers,
        "concurrency": args.concurrency,
        "model": f"gRPC push, thread slots, queue size {args.queue_size}",
        "tasks": args.tasks,
        **figures,
    }
