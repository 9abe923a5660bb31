"""Celery with the local Redis through the shape of bench_e2e.py; prints one JSON line.

    /tmp/taskmill-bench-peers/bin/python bench/peers/celery_peer.py [--tasks 20000]

Redis is the broker (database ``--broker-db``) and the result backend (``--result-db``); both
must be empty at start, and both are flushed at the end. Throughput: ``group(...)
.apply_async()`` of ``--chunk`` signatures per call (Celery publishes one message per task),
run by ``--workers`` ``celery worker`` processes with the thread pool and ``--concurrency``
threads each (the model nearest taskmill's slot threads; default prefetch multiplier 4);
finished = the number of results stored in the result database. Pickup latency: the task
stamps ``time.time()`` when it starts, minus the client's ``time.time()`` just before
``apply_async`` (one host, one clock). Round trip: ``apply_async`` to ``AsyncResult.get``.
"""

from __future__ import annotations

import sys
import time
from importlib.metadata import version
from typing import Any

import _peerlib as lib
import redis
from celery import Celery, group
from celery.exceptions import TimeoutError as CeleryTimeout

REDIS = "redis://127.0.0.1:6379"


def make_app(broker_db: int, result_db: int | None) -> Celery:
    """The app and its tasks; without a result database, an app that only sends by name."""
    backend = None if result_db is None else f"{REDIS}/{result_db}"
    app = Celery("bench", broker=f"{REDIS}/{broker_db}", backend=backend)
    if result_db is None:
        return app
    app.conf.update(
        broker_connection_retry_on_startup=True,
        task_ignore_result=False,
        result_expires=3600,
        worker_hijack_root_logger=False,
    )

    @app.task(name="echo")
    def echo(payload: Any) -> Any:
        return payload

    @app.task(name="stamp")
    def stamp() -> float:
        return time.time()

    return app


def worker(broker_db: int, result_db: int, concurrency: int, name: str) -> None:
    """One worker process, until SIGTERM."""
    make_app(broker_db, result_db).worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            "--loglevel=WARNING",
            f"--hostname={name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


def main() -> None:
    if sys.argv[1:2] == ["worker"]:
        worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    parser = lib.arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--broker-db", type=int, default=13)
    parser.add_argument("--result-db", type=int, default=14)
    args = parser.parse_args()
    broker = redis.Redis.from_url(f"{REDIS}/{args.broker_db}")
    results = redis.Redis.from_url(f"{REDIS}/{args.result_db}")
    if broker.dbsize() or results.dbsize():
        raise SystemExit(f"redis databases {args.broker_db} and {args.result_db} must be empty")
    app = make_app(args.broker_db, args.result_db)
    # The redis result backend subscribes the sending client to every task's result channel
    # (to serve AsyncResult.get); for the 20,000 sends, a client without a backend does not.
    sender = make_app(args.broker_db, None)
    argvs = [
        lib.self_argv(
            "worker", str(args.broker_db), str(args.result_db), str(args.concurrency), f"bench{n}"
        )
        for n in range(args.workers)
    ]
    try:
        with lib.worker_processes(argvs, args.log_dir, "celery") as procs:
            figures = run(args, app, sender, results, procs)
    finally:
        broker.flushdb()
        results.flushdb()
    lib.emit(figures)


def _echo(sender: Celery, n: int) -> Any:
    return sender.signature("echo", args=({"n": n},))


def _warm_up(args: Any, app: Celery, sender: Celery, results: redis.Redis, procs: Any) -> None:
    def workers_up() -> bool:
        lib.check_alive(procs)
        return len(app.control.ping(timeout=0.5) or []) >= args.workers

    if not lib.wait_until(workers_up, 30, poll=0.1):
        raise SystemExit("the celery workers did not answer within 30 s")
    group(_echo(sender, i) for i in range(200)).apply_async()
    if not lib.wait_until(lambda: results.dbsize() >= 200, 30):
        raise SystemExit("the celery warm-up did not finish within 30 s")
    results.flushdb()


def _throughput(args: Any, sender: Celery, results: redis.Redis, procs: Any) -> dict[str, Any]:
    def enqueue_all() -> None:
        for start in range(0, args.tasks, args.chunk):
            stop = min(args.tasks, start + args.chunk)
            group(_echo(sender, i) for i in range(start, stop)).apply_async()

    def done() -> int:
        lib.check_alive(procs)
        return int(results.dbsize())

    lib.note(f"celery: throughput of {args.tasks} tasks")
    figures = lib.throughput(enqueue_all, done, args.tasks, args.timeout)
    results.flushdb()
    return figures


def _latency(args: Any, app: Celery) -> tuple[list[float], list[float], bool]:
    """Single tasks one at a time: pickups and round trips (ms), and whether time ran out."""
    stamp = app.tasks["stamp"]
    lib.note(f"celery: pickup latency of {args.samples} single tasks")
    pickups: list[float] = []
    round_trips: list[float] = []
    deadline = time.monotonic() + args.timeout
    for _ in range(args.samples):
        sent = time.time()
        began = time.perf_counter()
        try:
            started = stamp.apply_async().get(timeout=max(0.1, deadline - time.monotonic()))
        except CeleryTimeout:
            return pickups, round_trips, True
        round_trips.append((time.perf_counter() - began) * 1000)
        pickups.append((started - sent) * 1000)
        time.sleep(args.pause)
    return pickups, round_trips, False


def run(args: Any, app: Celery, sender: Celery, results: redis.Redis, procs: Any) -> dict[str, Any]:
    """Warm-up, throughput, then latency; returns the figures."""
    _warm_up(args, app, sender, results, procs)
    figures = _throughput(args, sender, results, procs)
    pickups, round_trips, timed_out = _latency(args, app)
    return {
        "system": "celery+redis",
        "version": version("celery"),
        "enqueue": f"group(...).apply_async(), {args.chunk} per call",
        "workers": args.workers,
        "concurrency": args.concurrency,
        "model": "thread pool, sync no-op task, redis broker and result backend",
        "tasks": args.tasks,
        **figures,
        **lib.percentiles(pickups, "pickup"),
        **lib.percentiles(round_trips, "roundtrip"),
        "latency_samples": len(round_trips),
        "latency_timed_out": timed_out,
    }


if __name__ == "__main__":
    main()
