"""Procrastinate through the shape of bench_e2e.py; prints one JSON line of figures.

    /tmp/taskmill-bench-peers/bin/python bench/peers/procrastinate_peer.py [--tasks 20000]

Throughput: ``Task.batch_defer`` of ``--chunk`` jobs per call into a throwaway database, run by
``--workers`` processes of ``App.run_worker(concurrency=N)`` (asyncio; the no-op task is
``async`` so it runs on the event loop, procrastinate's fastest path; LISTEN/NOTIFY on);
finished = ``status = 'succeeded'`` in ``procrastinate_jobs``. ``ANALYZE procrastinate_jobs``
right after the enqueue (inside the timed window): without statistics, procrastinate's one-job
fetch sorts the whole backlog every time. Pickup latency: the job's ``started`` event minus its
``deferred`` event (both the database's ``now()``).
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from typing import Any

import _peerlib as lib
import procrastinate
import psycopg


def make_app(url: str) -> tuple[procrastinate.App, Any]:
    """The app and its one no-op task."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="echo", queue="bench")
    async def echo(**payload: Any) -> Any:
        return payload

    return app, echo


def worker(url: str, concurrency: int) -> None:
    """One worker process, until SIGTERM."""
    app, _ = make_app(url)
    app.run_worker(
        queues=["bench"],
        concurrency=concurrency,
        listen_notify=True,
        delete_jobs="never",
        install_signal_handlers=True,
    )


def main() -> None:
    if sys.argv[1:2] == ["worker"]:
        worker(sys.argv[2], int(sys.argv[3]))
        return
    args = lib.arguments(__doc__.split("\n\n")[0]).parse_args()
    with lib.throwaway_database("bench_procrastinate") as url:
        app, echo = make_app(url)
        with app.open(), psycopg.connect(url, autocommit=True) as sql:
            app.schema_manager.apply_schema()
            argv = lib.self_argv("worker", url, str(args.concurrency))
            with lib.worker_processes(
                [argv] * args.workers, args.log_dir, "procrastinate"
            ) as procs:
                figures = run(args, echo, sql, procs)
    lib.emit(figures)


def _scalar(sql: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = sql.execute(query, params).fetchone()
    return row[0] if row else None


_SUCCEEDED = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"


def _warm_up(args: Any, echo: Any, sql: psycopg.Connection[Any], procs: Any) -> None:
    def workers_up() -> bool:
        lib.check_alive(procs)
        return _scalar(sql, "SELECT count(*) FROM procrastinate_workers") >= args.workers

    if not lib.wait_until(workers_up, 30, poll=0.05):
        raise SystemExit("the procrastinate workers did not start within 30 s")
    echo.batch_defer(*({"n": i} for i in range(200)))
    if not lib.wait_until(lambda: _scalar(sql, _SUCCEEDED) >= 200, 30):
        raise SystemExit("the procrastinate warm-up did not finish within 30 s")
    sql.execute("TRUNCATE procrastinate_events, procrastinate_jobs CASCADE")


def _throughput(args: Any, echo: Any, sql: psycopg.Connection[Any]) -> dict[str, Any]:
    def enqueue_all() -> None:
        for start in range(0, args.tasks, args.chunk):
            stop = min(args.tasks, start + args.chunk)
            echo.batch_defer(*({"n": i} for i in range(start, stop)))
        sql.execute("ANALYZE procrastinate_jobs")

    lib.note(f"procrastinate: throughput of {args.tasks} jobs")
    figures = lib.throughput(
        enqueue_all, lambda: _scalar(sql, _SUCCEEDED), args.tasks, args.timeout
    )
    sql.execute("TRUNCATE procrastinate_events, procrastinate_jobs CASCADE")
    return figures


def _latency(
    args: Any, echo: Any, sql: psycopg.Connection[Any]
) -> tuple[list[float], list[float], bool]:
    """Single jobs one at a time: pickups and round trips (ms), and whether time ran out."""
    lib.note(f"procrastinate: pickup latency of {args.samples} single jobs")
    status = "SELECT status = 'succeeded' FROM procrastinate_jobs WHERE id = %s"
    ids, round_trips, timed_out = lib.latency(
        lambda: echo.defer(n=0),
        lambda job_id: bool(_scalar(sql, status, job_id)),
        args.samples,
        args.pause,
        args.timeout,
    )
    rows = sql.execute(
        "SELECT extract(epoch FROM s.at - d.at) * 1000 FROM procrastinate_events d "
        "JOIN procrastinate_events s USING (job_id) "
        "WHERE d.type = 'deferred' AND s.type = 'started' AND d.job_id = ANY(%s)",
        (ids,),
    ).fetchall()
    return [float(r[0]) for r in rows], round_trips, timed_out


def run(args: Any, echo: Any, sql: psycopg.Connection[Any], procs: Any) -> dict[str, Any]:
    """Warm-up, throughput, then latency; returns the figures."""
    _warm_up(args, echo, sql, procs)
    figures = _throughput(args, echo, sql)
    pickups, round_trips, timed_out = _latency(args, echo, sql)
    return {
        "system": "procrastinate",
        "version": version("procrastinate"),
        "enqueue": f"Task.batch_defer, {args.chunk} per call",
        "workers": args.workers,
        "concurrency": args.concurrency,
        "model": "asyncio worker, async no-op task, LISTEN/NOTIFY",
        "tasks": args.tasks,
        **figures,
        **lib.percentiles(pickups, "pickup"),
        **lib.percentiles(round_trips, "roundtrip"),
        "latency_samples": len(round_trips),
        "latency_timed_out": timed_out,
    }


if __name__ == "__main__":
    main()
