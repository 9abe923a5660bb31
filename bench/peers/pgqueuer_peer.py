"""PgQueuer through the shape of bench_e2e.py; prints one JSON line of figures.

    /tmp/taskmill-bench-peers/bin/python bench/peers/pgqueuer_peer.py [--tasks 20000]

Throughput: ``Queries.enqueue`` with lists of ``--chunk`` jobs per call into a throwaway
database, run by ``--workers`` processes of ``PgQueuer.run`` (asyncio over asyncpg, an
``async`` no-op entrypoint, LISTEN/NOTIFY; ``batch_size`` jobs per dequeue and
``max_concurrent_tasks`` = ``--concurrency`` per worker, raised to PgQueuer's minimum of twice
the batch size); finished = the job has left the ``pgqueuer`` table (PgQueuer deletes a
finished job and logs it, in one statement, from a buffer flushed every ~0.1 s or every
``batch_size`` jobs). Pickup latency: the job's ``picked`` log row minus its ``queued`` log row
(both the database's ``now()``). ``ANALYZE pgqueuer`` right after the enqueue, inside the
timed window, as for every PostgreSQL-backed system here.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta
from importlib.metadata import version
from typing import Any

import _peerlib as lib
import asyncpg
from pgqueuer import AsyncpgDriver, PgQueuer, Queries
from pgqueuer.models import Job

BATCH_SIZE = 10


def max_concurrent(concurrency: int) -> int:
    """PgQueuer refuses a cap under twice its batch size."""
    return max(concurrency, 2 * BATCH_SIZE)


async def worker(url: str, concurrency: int) -> None:
    """One worker process, until SIGTERM."""
    conn = await asyncpg.connect(url)
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("echo")
    async def echo(job: Job) -> None:
        return None

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, pgq.shutdown.set)
    await pgq.run(
        batch_size=BATCH_SIZE,
        max_concurrent_tasks=max_concurrent(concurrency),
        dequeue_timeout=timedelta(seconds=5),
        log_aggregation_interval=timedelta(0),  # keep the log rows the latency is read from
    )


class _Client:
    """The bench's side: one connection enqueues, the other polls the queue and its log."""

    def __init__(
        self, enqueuer: asyncpg.Connection, queries: Queries, poller: asyncpg.Connection, procs: Any
    ) -> None:
        self.enqueuer = enqueuer
        self.queries = queries
        self.poller = poller
        self.procs = procs
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, url: str, procs: Any) -> _Client:
        enqueuer = await asyncpg.connect(url)
        queries = Queries(AsyncpgDriver(enqueuer))
        poller = await asyncpg.connect(url)
        return cls(enqueuer, queries, poller, procs)

    async def close(self) -> None:
        await self.enqueuer.close()
        await self.poller.close()

    async def remaining(self) -> int:
        lib.check_alive(self.procs)
        return int(await self.poller.fetchval("SELECT count(*) FROM pgqueuer"))

    async def empty(self) -> bool:
        return bool(await self.remaining() == 0)

    async def wait(self, condition: Any, timeout: float, poll: float) -> bool:
        deadline = self.loop.time() + timeout
        while not await condition():
            if self.loop.time() > deadline:
                return False
            await asyncio.sleep(poll)
        return True

    async def enqueue(self, count: int) -> list[int]:
        return list(
            await self.queries.enqueue(["echo"] * count, [b'{"n": 1}'] * count, [0] * count)
        )


async def _warm_up(c: _Client) -> None:
    await asyncio.sleep(1.0)  # PgQueuer workers have no registry to wait on
    await c.enqueue(200)
    if not await c.wait(c.empty, 30, 0.02):
        raise SystemExit("the pgqueuer warm-up did not finish within 30 s")
    await c.poller.execute("TRUNCATE pgqueuer_log")


async def _throughput(c: _Client, args: Any) -> dict[str, Any]:
    lib.note(f"pgqueuer: throughput of {args.tasks} jobs")
    began = c.loop.time()
    for start in range(0, args.tasks, args.chunk):
        await c.enqueue(min(args.chunk, args.tasks - start))
    await c.poller.execute("ANALYZE pgqueuer")
    enqueued = c.loop.time() - began
    finished = await c.wait(c.empty, max(0.0, args.timeout - enqueued), 0.02)
    elapsed = c.loop.time() - began
    completed = args.tasks - await c.remaining()
    figures = {
        "enqueue_seconds": round(enqueued, 3),
        "seconds": round(elapsed, 3),
        "completed": completed,
        "tasks_per_s": round(completed / elapsed, 1),
        "timed_out": not finished,
    }
    await c.poller.execute("TRUNCATE pgqueuer_log")
    return figures


async def _latency(c: _Client, args: Any) -> tuple[list[int], list[float], bool]:
    """Single jobs one at a time: their ids, round trips (ms), and whether time ran out."""
    lib.note(f"pgqueuer: pickup latency of {args.samples} single jobs")
    ids: list[int] = []
    round_trips: list[float] = []
    deadline = c.loop.time() + args.timeout
    for _ in range(args.samples):
        sent = c.loop.time()
        (job_id,) = await c.enqueue(1)

        async def gone(job_id: int = job_id) -> bool:
            row = await c.poller.fetchval("SELECT 1 FROM pgqueuer WHERE id = $1", job_id)
            return row is None

        if not await c.wait(gone, max(0.0, deadline - c.loop.time()), 0.001):
            return ids, round_trips, True
        round_trips.append((c.loop.time() - sent) * 1000)
        ids.append(job_id)
        await asyncio.sleep(args.pause)
    return ids, round_trips, False


async def _pickups(c: _Client, ids: list[int]) -> list[float]:
    """Each job's ``picked`` log row minus its ``queued`` one, in ms."""
    rows = await c.poller.fetch(
        "SELECT extract(epoch FROM p.created - q.created) * 1000 AS ms "
        "FROM pgqueuer_log q JOIN pgqueuer_log p USING (job_id) "
        "WHERE q.status = 'queued' AND p.status = 'picked' AND q.job_id = ANY($1::bigint[])",
        ids,
    )
    return [float(r["ms"]) for r in rows]


async def measure(args: Any, url: str, procs: Any) -> dict[str, Any]:
    """Warm-up, throughput, then latency; returns the figures."""
    c = await _Client.open(url, procs)
    await _warm_up(c)
    figures = await _throughput(c, args)
    ids, round_trips, timed_out = await _latency(c, args)
    pickups = await _pickups(c, ids)
    await c.close()
    return {
        "system": "pgqueuer",
        "version": version("pgqueuer"),
        "enqueue": f"Queries.enqueue with lists, {args.chunk} per call",
        "workers": args.workers,
        "concurrency": max_concurrent(args.concurrency),
        "model": f"asyncio worker, async no-op entrypoint, batch_size {BATCH_SIZE}, LISTEN/NOTIFY",
        "tasks": args.tasks,
        **figures,
        **lib.percentiles(pickups, "pickup"),
        **lib.percentiles(round_trips, "roundtrip"),
        "latency_samples": len(round_trips),
        "latency_timed_out": timed_out,
    }


async def install(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()


def main() -> None:
    if sys.argv[1:2] == ["worker"]:
        asyncio.run(worker(sys.argv[2], int(sys.argv[3])))
        return
    args = lib.arguments(__doc__.split("\n\n")[0]).parse_args()
    with lib.throwaway_database("bench_pgqueuer") as url:
        asyncio.run(install(url))
        argv = lib.self_argv("worker", url, str(args.concurrency))
        with lib.worker_processes([argv] * args.workers, args.log_dir, "pgqueuer") as procs:
            figures = asyncio.run(measure(args, url, procs))
    lib.emit(figures)


if __name__ == "__main__":
    main()
