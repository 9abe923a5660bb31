"""How bench_e2e.py measures: polling, percentiles, CPU time read from /proc, machine speed."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pg8000.native

from taskmill.dev.harness import Service

#: What CpuMeter measures beyond taskmill and its database backends.
OUTSIDE = ("machine", "postgres_other", "client")


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


def python_speed() -> float:
    """Milliseconds this machine takes for a million Python additions, the best of five.

    Sessions get VMs of different speeds (the same code gives very different throughputs on
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
