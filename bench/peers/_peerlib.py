"""What the peer scripts share: arguments, throwaway databases, worker processes, the two
measured phases, and the JSON line each script prints.

Runs in the peers' own environment (``bench/peers/setup.sh``), never in taskmill's: it imports
nothing from taskmill. Every phase has a deadline; a phase that runs out reports what it got
with ``"timed_out": true`` rather than hanging.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ADMIN_URL = os.environ.get(
    "TASKMILL_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def arguments(description: str) -> argparse.ArgumentParser:
    """The options every peer script takes (the same shape as bench_e2e.py's)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tasks", type=int, default=20_000, help="jobs in the throughput run")
    parser.add_argument("--chunk", type=int, default=1000, help="jobs per enqueue call")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=8, help="jobs at once per worker")
    parser.add_argument("--samples", type=int, default=200, help="single jobs for latency")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between them")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline of each phase")
    parser.add_argument("--log-dir", help="where worker logs go (default: a temporary dir)")
    return parser


# -- PostgreSQL ---------------------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_database(prefix: str) -> Iterator[str]:
    """A new database on the local server, dropped (connections and all) afterwards."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base, _, _ = ADMIN_URL.rpartition("/")
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- processes ----------------------------------------------------------------------------------


@contextlib.contextmanager
def worker_processes(
    argvs: Sequence[Sequence[str]], log_dir: str | None, name: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Starts the workers (output to log files) and stops them: SIGTERM, then SIGKILL."""
    folder = Path(log_dir or tempfile.mkdtemp(prefix=f"bench-{name}-"))
    folder.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for n, argv in enumerate(argvs):
            with (folder / f"{name}-worker-{n}.log").open("wb") as log:
                processes.append(subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT))
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def self_argv(*args: str) -> list[str]:
    """Runs this same script again with the same interpreter (a worker process)."""
    return [sys.executable, os.path.abspath(sys.argv[0]), *args]


def check_alive(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Stops the run when a worker died."""
    for process in processes:
        if process.poll() is not None:
            raise SystemExit(f"a worker exited with {process.returncode}")


# -- phases -------------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = 0.01) -> bool:
    """Polls until ``condition()`` holds; returns False when ``timeout`` ran out first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def throughput(
    enqueue_all: Callable[[], None], done: Callable[[], int], tasks: int, timeout: float
) -> dict[str, Any]:
    """Enqueues everything, then waits until ``done()`` reaches ``tasks``.

    The clock runs from the first enqueue to the poll that saw the last job finished (polled
    every 20 ms). ``enqueue_all`` includes the ``ANALYZE`` of the queue table that every
    PostgreSQL-backed system gets right after its enqueue (see README).
    """
    began = time.perf_counter()
    enqueue_all()
    enqueued = time.perf_counter() - began
    finished = wait_until(lambda: done() >= tasks, max(0.0, timeout - enqueued), poll=0.02)
    elapsed = time.perf_counter() - began
    count = done()
    return {
        "enqueue_seconds": round(enqueued, 3),
        "seconds": round(elapsed, 3),
        "completed": count,
        "tasks_per_s": round(count / elapsed, 1),
        "timed_out": not finished,
    }


def latency(
    submit: Callable[[], Any],
    finished: Callable[[Any], bool],
    samples: int,
    pause: float,
    timeout: float,
) -> tuple[list[Any], list[float], bool]:
    """Submits single jobs one at a time, each after the previous one finished.

    Returns the handles, each job's client round trip (submit call to the poll that saw it
    finished, polled every 1 ms) in ms, and whether the phase ran out of time.
    """
    deadline = time.monotonic() + timeout
    handles: list[Any] = []
    round_trips: list[float] = []
    for _ in range(samples):
        began = time.perf_counter()
        handle = submit()
        left = deadline - time.monotonic()
        if left <= 0 or not wait_until(lambda h=handle: finished(h), left, poll=0.001):
            return handles, round_trips, True
        round_trips.append((time.perf_counter() - began) * 1000)
        handles.append(handle)
        time.sleep(pause)
    return handles, round_trips, False


def percentiles(values: Sequence[float], prefix: str) -> dict[str, float | None]:
    """p50, p95 and p99 (nearest rank) of ``values``, rounded to 0.01."""
    ordered = sorted(values)
    result: dict[str, float | None] = {}
    for p in (50, 95, 99):
        key = f"{prefix}_p{p}_ms"
        if not ordered:
            result[key] = None
            continue
        rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
        result[key] = round(ordered[rank], 2)
    return result


def emit(figures: dict[str, Any]) -> None:
    """Prints the script's one JSON line (the only line on stdout)."""
    print(json.dumps(figures), flush=True)


def note(message: str) -> None:
    """Progress, on stderr so stdout stays one JSON line."""
    print(message, file=sys.stderr, flush=True)
