"""A task with ``max_attempts = 1`` runs at most once even when its worker is SIGKILLed before
the database learned that it started.

A worker's ``running`` report is sent on its own schedule (or folded into the final report), so
a worker killed just after a start may leave its task looking ``dispatched``, which recovery
gives to another worker. Worker A, one slot and a queue of four, takes five such tasks; then its
coordinator is SIGSTOPped, so no report and no ``RecordStarts`` call of A's can land, while A's
slot goes on through its queue. A is SIGKILLed, a worker B starts, the coordinator resumes,
declares A lost and recovers its tasks. With recorded starts (the default) a task runs only once
its start is recorded, so every task A started fails ``worker_lost`` or succeeded, and only the
ones it never started run on B. With ``--no-record-starts`` a task A started during the pause
runs again on B. The handler (``test.record``) notes each run in a file of its worker's own.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from taskmill.dev.harness import Cluster, Service, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

SUPPORT = Path(__file__).parent / "support"
#: Short, so A is declared lost seconds after the pause. A's fence closes 0.6 of it after its
#: last acknowledged heartbeat (1.4-2.4 s into the pause): time for its slot to start the next
#: two queued tasks, when nothing holds them back.
DEAD_AFTER = 4.0
#: All of them fit in A at once: one in its slot, the rest queued.
TASKS = 5
#: Long enough that A holds every task before its slot gets through the first few; short enough
#: that two finish well within the pause, before A's fence closes.
SECONDS = 0.5
#: How long A's slot gets to start queued tasks during the pause. It starts two within a second
#: when nothing holds them back; by default it may start only the one whose start was recorded
#: ahead of its slot, and then waits, so this deadline passes. Two: the first one's running
#: report may be sent at once and wait in the stopped coordinator's socket, to land when it
#: resumes; the second's waits in A behind that call.
PAUSE_RUNS, PAUSE_DEADLINE = 2, 3.0
A_FLAGS = ("--concurrency", "1", "--queue-size", "4")
HANDLERS = ("--handlers", "cluster_test_handlers")


def _start_worker(cluster: Cluster, coordinator: Service, runs: Path, *flags: str) -> Service:
    """A worker whose handler notes its runs in ``runs``. Not waited for: B starts while the
    coordinator is stopped, and registers once it answers."""
    cluster.env["TASKMILL_TEST_RUNS_FILE"] = str(runs)
    return cluster.start_worker(coordinator, *flags, *HANDLERS, wait=False)


def _registered(cluster: Cluster, worker: Service) -> str:
    """The worker's id, once it registered."""

    def ids() -> list[str]:
        return [w["id"] for w in cluster.workers() if w["address"] == worker.address]

    return str(wait_for(ids, 60, f"worker {worker.address} registered")[0])


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _stopped(pid: int) -> bool:
    """Whether the process is stopped: ``os.kill`` may return before SIGSTOP takes effect."""
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state in ("T", "t")


def _until(condition: Callable[[], bool], seconds: float) -> bool:
    """Polls ``condition`` for at most ``seconds``; returns whether it held (not an error)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_killed_worker_leaves_no_started_task_to_run_again(cluster: Cluster) -> None:
    pythonpath = [str(SUPPORT), *filter(None, [cluster.env.get("PYTHONPATH")])]
    cluster.env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator("--dead-after", str(DEAD_AFTER))
    runs_a, runs_b = cluster.tmp / "runs-a.txt", cluster.tmp / "runs-b.txt"
    worker_a = _start_worker(cluster, coordinator, runs_a, *A_FLAGS)
    a_id = _registered(cluster, worker_a)

    # One batch: the coordinator claims all five for A at once (it is A's whole capacity).
    payload = {"seconds": SECONDS}
    tasks = cluster.submit_batch([{"command": "test.record", "payload": payload}] * TASKS)
    ids = [task["id"] for task in tasks]
    assert all(task["max_attempts"] == 1 for task in tasks), tasks

    def held_by_a() -> bool:
        found = [cluster.task(task_id) for task_id in ids]
        return all(
            t["worker_id"] == a_id and t["status"] in ("running", "dispatched") for t in found
        )

    wait_for(held_by_a, 30, "A holding every task")

    # From here on nothing A says reaches the database: what it starts now stays unreported.
    os.kill(coordinator.process.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: _stopped(coordinator.process.pid), 10, "the coordinator stopped")
        before = len(_lines(runs_a))
        started = _until(lambda: len(_lines(runs_a)) >= before + PAUSE_RUNS, PAUSE_DEADLINE)
        during = len(_lines(runs_a)) - before
        worker_a.kill()
        # Registers once the coordinator answers again, and takes what recovery gives back.
        worker_b = _start_worker(cluster, coordinator, runs_b)
    finally:
        os.kill(coordinator.process.pid, signal.SIGCONT)
    _registered(cluster, worker_b)

    final = cluster.wait_final(ids, timeout=60)
    cluster.stop_all()  # no handler runs after this: every run is noted
    ran = Counter(line.split()[0] for line in _lines(runs_a) + _lines(runs_b))
    print(
        f"A ran {before} before the pause, {during} during it (deadline passed: {not started});"
        f" B ran {len(_lines(runs_b))};",
        {t: (final[t]["status"], (final[t]["error"] or {}).get("type"), ran[t]) for t in ids},
    )
    assert all(task["status"] in ("succeeded", "failed") for task in final.values()), final
    twice = {task_id: count for task_id, count in ran.items() if count > 1}
    assert not twice, f"tasks with max_attempts = 1 ran more than once: {twice}"
    lost = {t["id"]: t["error"] for t in final.values() if t["status"] == "failed"}
    assert all(error["type"] == "worker_lost" for error in lost.values()), lost
    assert all(ran[t] == 1 for t in ids if final[t]["status"] == "succeeded"), (final, ran)
