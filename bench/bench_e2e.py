"""End-to-end benchmark of a real taskmill cluster, with its peers side by side.

Prints figures, asserts nothing. Starts the real processes (``taskmill.dev.harness``): one
scheduler, one coordinator and ``--workers`` workers against a throwaway database on the local
PostgreSQL (127.0.0.1:5432, user postgres), dropped afterwards. Then:

1. Throughput: ``--tasks`` ``echo`` tasks through ``POST /v1/tasks/batch`` in chunks of
   ``--chunk``, from the first submit until a direct ``count(*)`` of succeeded tasks (polled
   every 20 ms) reaches them all. Also the database's own span: last ``finished_at`` minus first
   ``created_at``.
2. Pickup latency on the idle cluster: ``--samples`` single ``POST /v1/tasks``, one after the
   other (each waits for the previous one to succeed, then ``--pause``): ``started_at`` (the
   worker's clock as the handler starts) minus ``created_at`` (the database's ``now()`` in the
   submit's transaction), split at ``dispatched_at`` (the claim's ``now()``); and the client's
   round trip from the submit call to the poll (every 1 ms, direct SQL) that saw it succeeded.
   Then as many single tasks due ``--due-in`` seconds after their submit (the coordinator's
   timer, not its ``LISTEN``): how late each starts, ``started_at`` minus ``scheduled_at``.
3. Peers: each script in ``bench/peers/`` runs with the peers' own interpreter (made by
   ``bench/peers/setup.sh``), with the same tasks, chunk, workers and concurrency, and prints
   one JSON line; all of them end in one table.

    uv run python bench/bench_e2e.py                   # everything, ~4 minutes on 2 cores
    uv run python bench/bench_e2e.py --peers none      # taskmill only
    uv run python bench/bench_e2e.py --profile DIR     # py-spy of each service in phase 1
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pg8000.native

from taskmill.common.migrate import migrate
from taskmill.common.settings import DatabaseSettings
from taskmill.dev.harness import Cluster, Service

ROOT = Path(__file__).resolve().parent
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PEERS = ("procrastinate", "pgqueuer", "celery")
PEERS_VENV = Path(os.environ.get("TASKMILL_BENCH_PEERS_VENV", "/tmp/taskmill-bench-peers"))


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


def wait_until(condition: Callable[[], bool], timeout: float, poll: float) -> bool:
    """Polls until ``condition()`` holds; False when ``timeout`` ran out first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def percentiles(values: Sequence[float], prefix: str) -> dict[str, float | None]:
    """p50, p95, p99 (nearest rank), rounded to 0.01."""
    ordered = sorted(values)
    result: dict[str, float | None] = {}
    for p in (50, 95, 99):
        rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
        result[f"{prefix}_p{p}_ms"] = round(ordered[rank], 2) if ordered else None
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def postgres_processes() -> dict[int, float]:
    """Every PostgreSQL server process on this machine and the CPU seconds it has used."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    found[int(entry.name)] = cpu_seconds(int(entry.name))
            except OSError:
                continue
    return found


class CpuMeter:
    """CPU time used by each service and by the database's backends of the bench database.

    Also what the phase cost outside them: PostgreSQL's other processes (WAL writer,
    autovacuum, this client's own connection) and this client itself, so that the machine's
    busy time is accounted for.
    """

    def __init__(self, services: Sequence[Service], sql: pg8000.native.Connection) -> None:
        self._services = services
        self._sql = sql
        self._start: dict[str, float] = {}
        self._backends: dict[int, float] = {}
        self._postgres: dict[int, float] = {}
        self._client = 0.0

    def _sample(self) -> dict[str, float]:
        sample: dict[str, float] = {}
        for service in self._services:
            key = "worker" if service.name == "worker" else service.name
            sample[key] = sample.get(key, 0.0) + cpu_seconds(service.process.pid)
        return sample

    def start(self) -> None:
        """Marks the start of a phase."""
        self._start = self._sample()
        self._machine = machine_busy_seconds()
        self._backends = {pid: cpu_seconds(pid) for pid in self._bench_backends()}
        self._postgres = postgres_processes()
        self._client = time.process_time()

    def _bench_backends(self) -> list[int]:
        """The backends of the bench database, but this client's own."""
        pids = self._sql.run(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return [int(pid) for (pid,) in pids]

    def stop(self) -> dict[str, float]:
        """CPU seconds each part used since ``start``.

        Backends the services opened during the phase (a pool growing under load) count from
        their start; one that closed during the phase is missed.
        """
        used = {k: v - self._start.get(k, 0.0) for k, v in self._sample().items()}
        for pid in self._bench_backends():
            self._backends.setdefault(pid, 0.0)
        used["postgres"] = sum(
            max(0.0, cpu_seconds(pid) - before) for pid, before in self._backends.items()
        )
        used["machine"] = machine_busy_seconds() - self._machine
        used["postgres_other"] = sum(
            max(0.0, seconds - self._postgres.get(pid, 0.0))
            for pid, seconds in postgres_processes().items()
            if pid not in self._backends
        )
        used["client"] = time.process_time() - self._client
        return used


def _check_alive(services: Sequence[Service]) -> None:
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


#: What CpuMeter measures beyond taskmill and its database backends.
_OUTSIDE = ("machine", "postgres_other", "client")


def throughput(
    api: Api, sql: pg8000.native.Connection, services: Sequence[Service], args: argparse.Namespace
) -> dict[str, Any]:
    """Phase 1: the batch route to the last task succeeded."""
    bodies = batch_bodies(args.tasks, args.chunk)
    first_seq = int(sql.run("SELECT coalesce(max(seq), 0) FROM tasks")[0][0])
    succeeded = "SELECT count(*) FROM tasks WHERE status = 'succeeded' AND seq > :seq"

    def done() -> int:
        _check_alive(services)
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
        "cpu_us_per_task": {
            k: round(v * 1e6 / max(count, 1)) for k, v in cpu.items() if k not in _OUTSIDE
        },
        "machine_busy_cores": round(cpu["machine"] / elapsed, 2),
        "own_busy_cores": round(sum(v for k, v in cpu.items() if k not in _OUTSIDE) / elapsed, 2),
        "postgres_other_cores": round(cpu["postgres_other"] / elapsed, 2),
        "client_cores": round(cpu["client"] / elapsed, 2),
    }


# -- phase 2 ------------------------------------------------------------------------------------


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


def latency(api: Api, sql: pg8000.native.Connection, args: argparse.Namespace) -> dict[str, Any]:
    """Phase 2: single tasks on the idle cluster."""
    body = json.dumps({"command": "echo", "payload": {"n": 0}}).encode()
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


# -- taskmill -----------------------------------------------------------------------------------


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


def run_taskmill(args: argparse.Namespace) -> dict[str, Any]:
    """Phases 1 and 2 on a fresh cluster."""
    print(
        f"taskmill: 1 coordinator, {args.workers} workers x concurrency {args.concurrency}, "
        f"queue size {args.queue_size}",
        flush=True,
    )
    with throwaway_database(args.admin_url) as url, cluster(url, args) as (running, services):
        api = Api(running.url)
        sql = _connect(url)
        try:
            warm = json.dumps({"tasks": [{"command": "echo", "payload": {}}] * 200}).encode()
            api.post("/v1/tasks/batch", warm)
            count = "SELECT count(*) FROM tasks WHERE status = 'succeeded'"
            if not wait_until(lambda: sql.run(count)[0][0] >= 200, 60, 0.05):
                raise SystemExit("the warm-up did not finish within 60 s")
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


# -- peers --------------------------------------------------------------------------------------


def run_peer(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Runs one peer script in the peers' environment; its JSON line, or an error."""
    python = PEERS_VENV / "bin" / "python"
    command = [
        str(python),
        str(ROOT / "peers" / f"{name}_peer.py"),
        *("--tasks", str(args.tasks), "--chunk", str(args.chunk)),
        *("--workers", str(args.workers), "--concurrency", str(args.concurrency)),
        *("--samples", str(args.samples), "--pause", str(args.pause)),
        *("--timeout", str(args.timeout)),
    ]
    print(f"{name}: {args.workers} workers x concurrency {args.concurrency}", flush=True)
    try:
        done = subprocess.run(
            command, stdout=subprocess.PIPE, timeout=2 * args.timeout + 90, check=False
        )
    except subprocess.TimeoutExpired:
        return {"system": name, "error": "timed out"}
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"system": name, "error": f"exit {done.returncode}"}
    return dict(json.loads(lines[-1]))


def setup_peers() -> None:
    """Creates or updates the peers' environment (outside the workspace)."""
    subprocess.run(
        ["bash", str(ROOT / "peers" / "setup.sh"), str(PEERS_VENV)], check=True, timeout=600
    )


# -- output -------------------------------------------------------------------------------------

COLUMNS = [
    ("system", "system", "{}"),
    ("tasks/s", "tasks_per_s", "{:,.0f}"),
    ("total s", "seconds", "{:.2f}"),
    ("enqueue s", "enqueue_seconds", "{:.2f}"),
    ("pickup p50", "pickup_p50_ms", "{:.2f}"),
    ("p95", "pickup_p95_ms", "{:.2f}"),
    ("p99", "pickup_p99_ms", "{:.2f}"),
    ("round trip p50", "roundtrip_p50_ms", "{:.2f}"),
    ("p95", "roundtrip_p95_ms", "{:.2f}"),
]


def _cell(row: dict[str, Any], key: str, form: str) -> str:
    value = row.get(key)
    if value is None:
        return row.get("error", "-") if key == "tasks_per_s" else "-"
    text = form.format(value)
    if key == "tasks_per_s" and row.get("timed_out"):
        text += " (timeout)"
    return text


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The side-by-side table (latencies in ms)."""
    cells = [[title for title, _, _ in COLUMNS]]
    cells += [[_cell(row, key, form) for _, key, form in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def details(rows: Sequence[dict[str, Any]]) -> str:
    """How each system was driven."""
    return "\n".join(
        f"  {row['system']}: {row.get('enqueue', '?')}; {row.get('workers', '?')} workers x "
        f"{row.get('concurrency', '?')}; {row.get('model', '?')}; "
        f"completed {row.get('completed', '?')}/{row.get('tasks', '?')}"
        for row in rows
        if "error" not in row
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8, help="slots per worker")
    parser.add_argument("--queue-size", type=int, default=1000, help="taskmill worker queue")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--pause", type=float, default=0.02)
    parser.add_argument(
        "--due-in", type=float, default=0.05, help="phase 3: tasks due this long after submit"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline of each phase")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma list, or none")
    parser.add_argument("--no-taskmill", action="store_true", help="run the peers only")
    parser.add_argument("--no-setup", action="store_true", help="use the peers' venv as it is")
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument(
        "--no-vacuum", action="store_true", help="no VACUUM ANALYZE between phases 1 and 2"
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy the services during phase 1")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
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


def python_speed() -> float:
    """Milliseconds this machine takes for a million Python additions, the best of five.

    Sessions get VMs of different speeds (the same code has given 4,700 and 11,000 tasks/s on
    two of them), so every run says how fast its machine was.
    """
    best = math.inf
    for _ in range(5):
        began = time.perf_counter()
        total = 0
        for n in range(1_000_000):
            total += n
        best = min(best, time.perf_counter() - began)
    return best * 1e3


def main() -> None:
    args = parse_args()
    peers = [p for p in args.peers.split(",") if p and p != "none"]
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}, a million Python additions in "
        f"{python_speed():.0f} ms",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    if not args.no_taskmill:
        rows.append(run_taskmill(args))
    if peers and not args.no_setup:
        setup_peers()
    for name in peers:
        rows.append(run_peer(name, args))
    print()
    print(table(rows))
    print(details(rows))
    mine = next((r for r in rows if r["system"] == "taskmill" and "claim_p50_ms" in r), None)
    if mine:
        print(
            "  taskmill pickup split (ms): created->dispatched p50 {claim_p50_ms} "
            "p95 {claim_p95_ms}; dispatched->started p50 {assign_p50_ms} p95 {assign_p95_ms}; "
            "handler p50 {run_p50_ms}; DB span of phase 1 {db_span_seconds} s".format(**mine)
        )
    if mine and "late_p50_ms" in mine:
        print(
            "  taskmill start after the due time (ms), tasks due {due_in} s after submit: "
            "p50 {late_p50_ms} p95 {late_p95_ms} p99 {late_p99_ms}, min {late_min_ms}, "
            "max {late_max_ms}{late_cut}".format(
                due_in=args.due_in,
                late_cut=" (timeout)" if mine["late_timed_out"] else "",
                **mine,
            )
        )
    if mine and "cpu_us_per_task" in mine:
        parts = mine["cpu_us_per_task"]
        listed = ", ".join(f"{k} {v}" for k, v in parts.items())
        print(
            f"  taskmill CPU per task in phase 1 (us): {listed}; total {sum(parts.values())} "
            f"(2 cores at 10,000 tasks/s leave 200 us per task for everything)"
        )
        print(
            f"  machine busy during phase 1: {mine['machine_busy_cores']} of {os.cpu_count()} "
            f"cores, of which taskmill and its database backends {mine['own_busy_cores']}, "
            f"PostgreSQL's other processes {mine['postgres_other_cores']} (autovacuum, WAL "
            f"writer, this client's connection), this client "
            f"{mine['client_cores']}"
        )
    print(f"  load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
