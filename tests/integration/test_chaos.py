"""Chaos (issue 16, point 10): a few thousand tasks run while workers are SIGKILLed and SIGSTOPped
past the dead interval, a coordinator and the scheduler are SIGKILLed, and PostgreSQL restarts.

Every task must end final, none lost or stuck; a task with ``max_attempts = 1`` never runs twice;
the only failures are ``worker_lost``, of tasks that were running on a killed or paused worker;
no task starts before its ``scheduled_at``. The handler itself counts executions
(``support/chaos_test_handlers.py``): each worker notes its runs in a file of its own, so a run
can be traced to the worker that ran it, whatever the cluster recorded.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from taskmill.dev.harness import Cluster, Service, wait_for
from taskmill.dev.pgserver import PostgresServer

from .support.chaos import (
    Run,
    Submitter,
    answers,
    epoch,
    held_by,
    list_tasks,
    noted_runs,
    unfinished,
    worker_ids,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

SUPPORT = Path(__file__).parent / "support"
#: Short, so a pause past it is seconds; long enough that the workers of a killed coordinator
#: heartbeat through its successor before the other one, still watching, declares them dead:
#: their silence is a heartbeat interval (1 s), the restart (over 1 s, more when loaded) and
#: their reconnect backoff (up to 2 s).
DEAD_AFTER = 8.0
COORDINATOR_FLAGS = ("--dead-after", str(DEAD_AFTER), "--retry-backoff-base", "0.5")
#: A queue as long as the slots: a killed worker holds tasks it has not started. Default
#: settings otherwise: a task with no retry left runs only once its start is recorded, so a
#: SIGKILLed worker leaves none that ran looking unstarted (with ``--no-record-starts``, 3-5
#: tasks ran twice per kill).
WORKER_FLAGS = ("--concurrency", "4", "--queue-size", "4")
#: The worker to pause: behind its one slot, busy with a slow task, its queue holds tasks that
#: others run while it is paused (and it must not, once back): its fence is closed, and its
#: registration again answers their tokens stale.
PAUSED_FLAGS = ("--concurrency", "1", "--queue-size", "4")
#: ``time.time()`` is noted to the microsecond; ``scheduled_at`` is stored to it.
CLOCK_SLACK = 0.001


@pytest.fixture
def database_url(own_database_url: str) -> str:
    """The ``cluster`` fixture's database: a server of the test's own, which it restarts."""
    return own_database_url


@dataclass
class Worker:
    """A worker process, and the file its handler notes its runs in."""

    service: Service
    runs: Path


@dataclass
class Victim:
    """A worker that was killed or paused: its ids, and when (epoch seconds)."""

    worker: Worker
    ids: set[str]
    at: float
    how: str
    held: dict[str, int]


@dataclass
class Chaos:
    """The cluster's services as the chaos changes them, and its victims."""

    cluster: Cluster
    coordinators: list[Service]
    workers: list[Worker] = field(default_factory=list)
    victims: list[Victim] = field(default_factory=list)

    def start_worker(self, coordinator: Service, flags: tuple[str, ...] = WORKER_FLAGS) -> Worker:
        """Starts a worker whose handler notes its runs in a file of its own."""
        runs = self.cluster.tmp / f"runs-{len(self.workers)}.txt"
        self.cluster.env["TASKMILL_TEST_RUNS_FILE"] = str(runs)
        # Not the harness's wait, which counts the listed workers: a killed one may be removed
        # while this one registers, and the count never grows.
        handlers = ("--handlers", "chaos_test_handlers")
        service = self.cluster.start_worker(coordinator, *flags, *handlers, wait=False)
        wait_for(lambda: worker_ids(self.cluster, service.address), 60, "worker registered")
        self.workers.append(Worker(service, runs))
        return self.workers[-1]

    def alive(self) -> list[str]:
        return [w.service.address for w in self.workers if w.service.process.poll() is None]


def _start(cluster: Cluster) -> Chaos:
    """Scheduler, two coordinators, and two workers at each."""
    pythonpath = [str(SUPPORT), *filter(None, [cluster.env.get("PYTHONPATH")])]
    cluster.env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    cluster.start_scheduler()
    chaos = Chaos(cluster, [cluster.start_coordinator(*COORDINATOR_FLAGS) for _ in range(2)])
    chaos.start_worker(chaos.coordinators[0], PAUSED_FLAGS)
    for coordinator in chaos.coordinators[1], *chaos.coordinators:
        chaos.start_worker(coordinator)
    return chaos


def _busy(held: list[dict[str, Any]]) -> bool:
    """Running a task, and holding another it may not have started."""
    return {task["status"] for task in held} == {"running", "dispatched"}


def _queued_behind_slow(held: list[dict[str, Any]]) -> bool:
    """Holding a task it has surely not started: its one slot is busy for half a second more."""

    def slow(task: dict[str, Any]) -> bool:
        if task["status"] != "running" or not task["started_at"]:
            return False
        ends = epoch(task["started_at"]) + float(task["payload"]["seconds"])
        return ends > time.time() + 0.5

    return any(map(slow, held)) and any(task["status"] == "dispatched" for task in held)


def _victim(chaos: Chaos, worker: Worker, how: str, ready: Callable[..., bool]) -> Victim:
    """Waits until ``worker``'s tasks are ``ready`` for the chaos, then names it a victim: now."""
    ids = worker_ids(chaos.cluster, worker.service.address)

    def holding() -> list[dict[str, Any]]:
        held = held_by(chaos.cluster, ids)
        return held if ready(held) else []

    held = wait_for(holding, 60, f"the worker to {how} to hold tasks ({ready.__name__})")
    counts = dict(Counter(task["status"] for task in held))
    chaos.victims.append(Victim(worker, ids, time.time(), how, counts))
    return chaos.victims[-1]


def _settled(chaos: Chaos, since: float, what: str) -> None:
    """Waits until the scheduler answers and every live worker heartbeated after ``since``."""

    def heartbeating() -> bool:
        if not answers(chaos.cluster):
            return False
        latest: dict[str, float] = defaultdict(float)
        for worker in chaos.cluster.workers():
            address = worker["address"]
            latest[address] = max(latest[address], epoch(worker["last_heartbeat_at"]))
        return all(latest[address] > since for address in chaos.alive())

    wait_for(heartbeating, 60, f"every worker heartbeating again after {what}")


def _pause_worker(chaos: Chaos) -> None:
    """SIGSTOP past the dead interval: its tasks are recovered and run elsewhere meanwhile."""
    victim = _victim(chaos, chaos.workers[0], "pause", _queued_behind_slow)
    pid = victim.worker.service.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(
            lambda: not held_by(chaos.cluster, victim.ids), 60, "the paused worker's tasks taken"
        )
        time.sleep(1)  # paces: the requeued tasks are dispatched to the others meanwhile
    finally:
        os.kill(pid, signal.SIGCONT)
    _settled(chaos, time.time(), "the pause")


def _kill_worker(chaos: Chaos) -> None:
    """SIGKILL, and a fresh worker at the same coordinator."""
    victim = _victim(chaos, chaos.workers[1], "kill", _busy)
    victim.worker.service.kill()
    chaos.start_worker(chaos.coordinators[1])
    _settled(chaos, time.time(), "the worker kill")


def _kill_coordinator(chaos: Chaos) -> None:
    """SIGKILL, and a new one on the same port, where its workers find it again."""
    old = chaos.coordinators[1]
    old.kill()
    port = int(old.address.rsplit(":", 1)[1])
    chaos.coordinators[1] = chaos.cluster.start_coordinator(*COORDINATOR_FLAGS, port=port)
    _settled(chaos, time.time(), "the coordinator kill")


def _kill_scheduler(chaos: Chaos) -> None:
    """SIGKILL, and a new one (on another port: ``cluster.url`` follows it)."""
    live = [s for s in chaos.cluster.services if s.process.poll() is None]
    scheduler = next(s for s in live if s.name == "scheduler")
    scheduler.kill()
    time.sleep(0.5)  # paces: submits fail meanwhile, and are sent again
    chaos.cluster.start_scheduler()
    _settled(chaos, time.time(), "the scheduler kill")


def _restart_database(chaos: Chaos, server: PostgresServer) -> None:
    """A crash, and a restart on the same data and port: every service reconnects."""
    data, port = server.data_dir, server.port
    server.stop(crash=True)
    time.sleep(1)  # paces: every service notices
    server.start(data_dir=data, port=port)
    _settled(chaos, time.time(), "the database restart")


def _all_final(cluster: Cluster) -> list[dict[str, Any]]:
    """Every task, once none is unfinished (none stuck)."""
    wait_for(lambda: not unfinished(cluster), 90, "every task final")
    return list_tasks(cluster)


def _lost_on_a_victim(task: dict[str, Any], ran: list[Run], victims: list[Victim]) -> bool:
    """Whether the task's last attempt was on a victim when it was killed or paused: it ran
    there before, or it never ran, its start recorded there (a task with no retry left runs
    only then: by the claim, for an idle slot, or asked ahead of a slot, in the worker's started
    tokens) before the handler began."""
    return any(
        task["worker_id"] in victim.ids
        and (any(run.runs == victim.worker.runs and run.at < victim.at for run in ran) or not ran)
        for victim in victims
    )


def _violations(
    submitted: dict[str, dict[str, Any]],
    final: dict[str, dict[str, Any]],
    runs: dict[str, list[Run]],
    victims: list[Victim],
) -> dict[str, list[str]]:
    """What went wrong, by kind: the tasks, with their runs."""
    found: dict[str, list[str]] = defaultdict(list)
    found["lost"] = sorted(submitted.keys() - final.keys())
    found["not submitted (stored twice?)"] = sorted(final.keys() - submitted.keys())
    for task_id, task in final.items():
        ran, due = runs.get(task_id, []), epoch(submitted.get(task_id, task)["scheduled_at"])
        error = (task["error"] or {}).get("type")
        checks = {
            "not succeeded or failed": task["status"] not in ("succeeded", "failed"),
            "max_attempts = 1, ran twice": task["max_attempts"] == 1 and len(ran) > 1,
            "retried, ran more than max_attempts": 1 < task["max_attempts"] < len(ran),
            "succeeded without running": task["status"] == "succeeded" and not ran,
            "failed, not worker_lost": task["status"] == "failed" and error != "worker_lost",
            "worker_lost, not on a victim": task["status"] == "failed"
            and error == "worker_lost"
            and not _lost_on_a_victim(task, ran, victims),
            "started before scheduled_at": any(run.at < due - CLOCK_SLACK for run in ran),
        }
        for name, violated in checks.items():
            if violated:
                noted = ", ".join(f"{r.runs.stem}:{r.attempt}@{r.at:.3f}" for r in ran)
                found[name].append(f"{task_id} {task['status']} {error} due@{due:.3f} {noted}")
    return {name: ids for name, ids in found.items() if ids}


def _summary(
    final: dict[str, dict[str, Any]], runs: dict[str, list[Run]], victims: list[Victim]
) -> str:
    statuses = Counter(task["status"] for task in final.values())
    executions = Counter((t["max_attempts"], len(runs.get(i, []))) for i, t in final.items())
    hit = [f"{v.how} {v.worker.runs.stem} at {v.at:.3f} holding {v.held}" for v in victims]
    return (
        f"{len(final)} tasks; statuses {dict(statuses)}; "
        f"(max_attempts, executions): {dict(sorted(executions.items()))}; victims {hit}"
    )


def test_chaos_loses_nothing_and_runs_nothing_twice(
    server: PostgresServer, cluster: Cluster
) -> None:
    chaos = _start(cluster)
    with Submitter(cluster) as submitter:
        _pause_worker(chaos)
        _kill_worker(chaos)
        _kill_coordinator(chaos)
        _kill_scheduler(chaos)
        _restart_database(chaos, server)
    final = {task["id"]: task for task in _all_final(cluster)}
    cluster.stop_all()  # no handler runs after this: every run is noted
    runs = noted_runs(worker.runs for worker in chaos.workers)
    print(_summary(final, runs, chaos.victims))
    violations = _violations(submitter.tasks, final, runs, chaos.victims)
    for name, found in violations.items():
        print(f"{name}: {len(found)}", *found[:20], sep="\n  ")
    assert not violations, {name: (len(ids), ids[:5]) for name, ids in violations.items()}
