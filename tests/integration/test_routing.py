"""Routing with real processes (issue 17): worker pools by queue and handler, a task no worker
can run waiting for one, fairness between the queues of one worker, pausing a queue, and a
queue's ``max_concurrency`` held across two coordinators.

Every worker here loads ``support/routing_test_handlers.py`` with a handler set of its own (the
commands in ``TASKMILL_TEST_ROUTING_COMMANDS``) and a name (``TASKMILL_TEST_ROUTING_WORKER``).
Its handler notes, in one file shared by every worker, each task's entry and exit with the
worker's name: where a task ran, which ran before which and how many ran at once are read from
the order of those lines, never from clocks.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from taskmill.dev.harness import Cluster, Service, wait_for
from taskmill.testing import admin_connection

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

SUPPORT = Path(__file__).parent / "support"
#: A coordinator that polls often: the rounds that would wrongly let a held task go come
#: quickly, and the while a test watches a held task spans several of them.
COORDINATOR_FLAGS = ("--poll-interval", "0.5")


class Note(NamedTuple):
    """One line a handler noted."""

    event: str  # enter or exit
    task_id: str
    command: str
    worker: str


@dataclass
class Fleet:
    """A cluster whose workers are named and load the routing test handlers."""

    cluster: Cluster
    notes: Path
    ids: dict[str, str] = field(default_factory=dict)  # worker name -> its registered id

    @classmethod
    def of(cls, cluster: Cluster) -> Fleet:
        pythonpath = [str(SUPPORT), *filter(None, [cluster.env.get("PYTHONPATH")])]
        notes = cluster.tmp / "notes.txt"
        cluster.env.update(
            PYTHONPATH=os.pathsep.join(pythonpath), TASKMILL_TEST_ROUTING_FILE=str(notes)
        )
        return cls(cluster, notes)

    def start_worker(
        self, coordinator: Service, name: str, queues: str, commands: str = "", *flags: str
    ) -> Service:
        """Starts worker ``name`` serving ``queues`` with handlers for ``commands`` (and the
        builtins); returns once it is registered."""
        self.cluster.env.update(
            TASKMILL_TEST_ROUTING_WORKER=name, TASKMILL_TEST_ROUTING_COMMANDS=commands
        )
        service = self.cluster.start_worker(
            coordinator,
            "--queues",
            queues,
            "--handlers",
            "routing_test_handlers",
            *flags,
            wait=False,
        )

        def registered() -> str | None:
            ids = [w["id"] for w in self.cluster.workers() if w["address"] == service.address]
            return ids[0] if ids else None

        self.ids[name] = str(wait_for(registered, 60, f"worker {name} registered"))
        return service

    def name_of(self, worker_id: str | None) -> str | None:
        return next((name for name, id_ in self.ids.items() if id_ == worker_id), None)

    def read_notes(self) -> list[Note]:
        if not self.notes.exists():
            return []
        return [Note(*line.split()) for line in self.notes.read_text().splitlines()]


def _ok(cluster: Cluster, method: str, path: str, body: Any = None) -> dict[str, Any]:
    status, answer = cluster.request(method, path, body)
    assert status == 200, (method, path, status, answer)
    return dict(answer)


def _statuses(cluster: Cluster, tasks: list[dict[str, Any]]) -> Counter[str]:
    return Counter(cluster.task(t["id"])["status"] for t in tasks)


def _due_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def _watch_held(
    cluster: Cluster, held: list[dict[str, Any]], probes: list[dict[str, Any]], what: str
) -> None:
    """Waits until every probe succeeded, checking at every look that ``held`` all stay
    ``scheduled`` meanwhile."""

    def probes_done() -> bool:
        assert _statuses(cluster, held) == Counter({"scheduled": len(held)}), what
        return _statuses(cluster, probes) == Counter({"succeeded": len(probes)})

    wait_for(probes_done, 60, f"the probes to succeed while {what}")
    assert _statuses(cluster, held) == Counter({"scheduled": len(held)}), what


# -- pools -----------------------------------------------------------------------------------

#: Pool -> (queues, commands beyond the builtins).
POOLS = {
    "images": ("images", "image.resize,image.thumbnail"),
    "mail": ("mail,default", "mail.send,mail.bounce"),
    "general": ("default", "general.report"),
}
#: (command, queue) -> the pools that may run it: those serving the queue with the handler.
KINDS = {
    ("image.resize", "images"): {"images"},
    ("image.thumbnail", "images"): {"images"},
    ("echo", "images"): {"images"},
    ("mail.send", "mail"): {"mail"},
    ("echo", "mail"): {"mail"},
    ("mail.bounce", "default"): {"mail"},
    ("general.report", "default"): {"general"},
    ("echo", "default"): {"mail", "general"},
    ("sleep", "default"): {"mail", "general"},
}


def _mixed(count: int, offset: int) -> list[dict[str, Any]]:
    kinds = list(KINDS)
    tasks = []
    for n in range(offset, offset + count):
        command, queue = kinds[n % len(kinds)]
        payload: dict[str, Any] = {"seconds": 0} if command == "sleep" else {"n": n}
        tasks.append({"command": command, "queue": queue, "payload": payload})
    return tasks


def test_three_pools_run_each_task_on_a_worker_of_its_pool(cluster: Cluster) -> None:
    fleet = Fleet.of(cluster)
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator(*COORDINATOR_FLAGS)
    # Half the tasks wait before any worker is up: each pool's first worker joins a fleet that
    # cannot run the others' tasks, and must leave them alone.
    tasks = cluster.submit_batch(_mixed(150, 0))
    for pool, (queues, commands) in POOLS.items():
        fleet.start_worker(coordinator, pool, queues, commands, "--concurrency", "4")
    tasks += cluster.submit_batch(_mixed(150, 150))

    done = cluster.wait_final([t["id"] for t in tasks], timeout=120)
    failed = [d for d in done.values() if d["status"] != "succeeded"]
    assert not failed, [(t["command"], t["queue"], t["error"]) for t in failed[:5]]
    notes = fleet.read_notes()
    entered = Counter(note.task_id for note in notes if note.event == "enter")
    noted = {note.task_id: note.worker for note in notes}
    wrong = []
    for task in tasks:
        final = done[task["id"]]
        allowed = KINDS[(task["command"], task["queue"])]
        ran_on = fleet.name_of(final["worker_id"])
        if ran_on not in allowed:
            wrong.append((task["command"], task["queue"], ran_on))
        if task["command"] not in ("echo", "sleep"):  # the test handlers: what they saw
            assert final["result"] == {"worker": ran_on}, final
            assert noted[task["id"]] == ran_on and entered[task["id"]] == 1, task
    assert not wrong, f"{len(wrong)} tasks on a worker of the wrong pool, e.g. {wrong[:5]}"
    per_pool = Counter(fleet.name_of(d["worker_id"]) for d in done.values())
    assert set(per_pool) == set(POOLS), per_pool
    served = {q["name"]: q["workers"] for q in _ok(cluster, "GET", "/v1/queues")["queues"]}
    assert served == {"images": 1, "mail": 1, "default": 2}, served


def test_a_task_no_worker_can_run_waits_for_one(cluster: Cluster) -> None:
    fleet = Fleet.of(cluster)
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator(*COORDINATOR_FLAGS)
    fleet.start_worker(coordinator, "general", "default", "general.report")
    # No worker has the handler of the first; none serves the queue of the second.
    no_handler = cluster.submit("rare.job", {"n": 1})
    no_queue = cluster.submit("echo", {"n": 2}, queue="rare")
    held = [no_handler, no_queue]
    # Submitted after them, run by the worker that is up: a round for the submit, then the
    # coordinator's timer for the one due later, its polls in between.
    probes = [
        cluster.submit("general.report", {}),
        cluster.submit("echo", {}, scheduled_at=_due_in(1.5)),
    ]
    _watch_held(cluster, held, probes, "no worker can run the held tasks")
    for task in held:
        waiting = cluster.task(task["id"])["waiting"]
        assert waiting is not None and waiting["reason"] == "no_worker", waiting
    rare = _ok(cluster, "GET", "/v1/queues/rare")
    assert (rare["scheduled"], rare["workers"]) == (1, 0), rare

    fleet.start_worker(coordinator, "rare", "default,rare", "rare.job")
    done = cluster.wait_final([t["id"] for t in held], timeout=60)
    for task in held:
        final = done[task["id"]]
        assert final["status"] == "succeeded", final
        assert fleet.name_of(final["worker_id"]) == "rare", final
        assert (final["attempt"], final["error"]) == (1, None), final


# -- fairness ---------------------------------------------------------------------------------

#: The burst, and what the worker may hold of it (running or waiting for a slot): about half,
#: so that both halves of fairness count. Its other half waits in the database, where a claim
#: that took tasks oldest first would give b's tasks only once all of it was claimed; and b's
#: tasks reach a worker already holding its half, where one line would put them behind it.
BURST, HELD = 3000, 1500
#: Long enough that the burst outlasts b's pickup many times over (~4 s on 4 slots).
BURST_TASK_SECONDS = 0.005


def test_a_burst_in_one_queue_does_not_starve_another(cluster: Cluster) -> None:
    fleet = Fleet.of(cluster)
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator(*COORDINATOR_FLAGS)
    burst: list[dict[str, Any]] = []
    for start in range(0, BURST, 1000):
        burst += cluster.submit_batch(
            [
                {"command": "burst", "queue": "a", "payload": {"seconds": BURST_TASK_SECONDS}}
                for _ in range(start, start + 1000)
            ]
        )
    queue_size = str(HELD - 4)
    fleet.start_worker(
        coordinator, "ab", "a,b", "burst", "--concurrency", "4", "--queue-size", queue_size
    )
    # b's tasks come once the worker holds most of what it may of the burst, unstarted.
    dispatched = "SELECT count(*) FROM tasks WHERE queue = 'a' AND status = 'dispatched'"
    with admin_connection(cluster.database_url) as admin:
        ahead = wait_for(
            lambda: (n := admin.run(dispatched)[0][0]) >= HELD * 4 // 5 and n,
            60,
            "the worker to fill up with the burst",
        )
    later = cluster.submit_batch(
        [{"command": "burst", "queue": "b", "payload": {"n": n}} for n in range(5)]
    )
    done = cluster.wait_final([t["id"] for t in later], timeout=60)
    assert {d["status"] for d in done.values()} == {"succeeded"}, done

    # How much of the burst ran before the last of b's tasks ended, in the handlers' order:
    # without fairness in the claim, at least the burst less what the worker holds (1500);
    # without it in the worker, at least what the worker held when b's tasks came (1200).
    later_ids = {t["id"] for t in later}
    notes = fleet.read_notes()
    last_b = max(
        i for i, note in enumerate(notes) if note.task_id in later_ids and note.event == "exit"
    )
    burst_ids = {t["id"] for t in burst}
    burst_before = sum(
        1 for note in notes[:last_b] if note.event == "exit" and note.task_id in burst_ids
    )
    print(f"{burst_before} of the burst's {BURST} ended before the last of b's 5 ({ahead} held)")
    assert burst_before < BURST / 3, f"{burst_before} of the burst's {BURST} ran before b's 5"

    finished = "SELECT count(*) FROM tasks WHERE status IN ('succeeded', 'failed', 'cancelled')"
    with admin_connection(cluster.database_url) as admin:
        wait_for(lambda: admin.run(finished) == [[BURST + 5]], 90, "the burst to finish")
        assert admin.run("SELECT status, count(*) FROM tasks GROUP BY status") == [
            ["succeeded", BURST + 5]
        ]


# -- pause ------------------------------------------------------------------------------------


def test_a_paused_queue_holds_its_tasks_until_resumed(cluster: Cluster) -> None:
    fleet = Fleet.of(cluster)
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator(*COORDINATOR_FLAGS)
    fleet.start_worker(coordinator, "pd", "p,default", "", "--concurrency", "4")
    running = cluster.submit("sleep", {"seconds": 1.5}, queue="p")
    wait_for(lambda: cluster.task(running["id"])["status"] == "running", 30, "a task of p running")

    paused = _ok(cluster, "POST", "/v1/queues/p/pause")
    assert paused["paused"] is True, paused
    held = cluster.submit_batch(
        [{"command": "echo", "queue": "p", "payload": {"n": n}} for n in range(5)]
    )
    # Time passes for the held tasks: the running task of p ends (pausing stops no running
    # task), and tasks of another queue submitted after them run, one at once and one due
    # later (the coordinator's timer), its polls in between.
    probes = [
        running,
        cluster.submit("echo", {}),
        cluster.submit("echo", {}, scheduled_at=_due_in(1.5)),
    ]
    _watch_held(cluster, held, probes, "p is paused")
    waiting = cluster.task(held[0]["id"])["waiting"]
    assert waiting is not None and waiting["reason"] == "queue_paused", waiting
    queue = _ok(cluster, "GET", "/v1/queues/p")
    assert (queue["paused"], queue["scheduled"], queue["due"]) == (True, 5, 5), queue

    resumed = _ok(cluster, "POST", "/v1/queues/p/resume")
    assert resumed["paused"] is False, resumed
    done = cluster.wait_final([t["id"] for t in held], timeout=60)
    assert {d["status"] for d in done.values()} == {"succeeded"}, done


# -- max_concurrency --------------------------------------------------------------------------

LIMIT = 3


def _most_at_once(notes: list[Note], task_ids: set[str]) -> int:
    """The most handlers of these tasks between their entry and their exit at once."""
    running = most = 0
    for note in notes:
        if note.task_id in task_ids:
            running += 1 if note.event == "enter" else -1
            most = max(most, running)
    return most


def test_max_concurrency_holds_across_two_coordinators(cluster: Cluster) -> None:
    fleet = Fleet.of(cluster)
    cluster.start_scheduler()
    coordinators = [cluster.start_coordinator(*COORDINATOR_FLAGS) for _ in range(2)]
    limited = _ok(cluster, "PUT", "/v1/queues/limited", {"max_concurrency": LIMIT})
    assert limited["max_concurrency"] == LIMIT, limited
    # 4 slots over two workers, one at each coordinator, none queued: without the limit, 4
    # would run at once, and neither coordinator's worker can hold all 3 the limit allows.
    for n, coordinator in enumerate(coordinators):
        fleet.start_worker(
            coordinator, f"w{n}", "limited", "hold", "--concurrency", "2", "--queue-size", "0"
        )
    tasks = cluster.submit_batch(
        [{"command": "hold", "queue": "limited", "payload": {"seconds": 0.3}} for _ in range(30)]
    )
    done = cluster.wait_final([t["id"] for t in tasks], timeout=90)
    assert {d["status"] for d in done.values()} == {"succeeded"}, done
    most = _most_at_once(fleet.read_notes(), {t["id"] for t in tasks})
    per_worker = Counter(fleet.name_of(d["worker_id"]) for d in done.values())
    print(f"at most {most} at once; tasks per worker {dict(per_worker)}")
    assert most <= LIMIT, f"{most} ran at once, over the limit of {LIMIT}"
    assert most == LIMIT, f"never more than {most} at once: the limit was never reached"
    # Both coordinators claimed from the queue: the limit held across them, not within one.
    assert set(per_worker) == {"w0", "w1"}, per_worker
