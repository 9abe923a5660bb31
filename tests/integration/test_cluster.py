"""Whole-cluster flows with real processes: PostgreSQL, scheduler, coordinator, workers."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from taskmill.dev.harness import Cluster, Service, wait_for
from taskmill.testing import admin_connection

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

SUPPORT = Path(__file__).parent / "support"
#: The worker flags that load ``support/cluster_test_handlers.py``.
TEST_HANDLERS = ("--handlers", "cluster_test_handlers")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _record_runs(cluster: Cluster) -> Path:
    """Lets the workers started from now on load the test handlers; returns their runs file."""
    runs = cluster.tmp / "runs.txt"
    pythonpath = [str(SUPPORT), *filter(None, [cluster.env.get("PYTHONPATH")])]
    cluster.env.update(PYTHONPATH=os.pathsep.join(pythonpath), TASKMILL_TEST_RUNS_FILE=str(runs))
    return runs


def _runs(path: Path) -> list[tuple[str, int, float]]:
    """The runs the test handlers noted: task id, attempt and start time (epoch seconds)."""
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text().splitlines()]
    return [(task_id, int(attempt), float(at)) for task_id, attempt, at in lines]


def _worker_id(cluster: Cluster, worker: Service) -> str:
    """The id a worker process was registered under, once it is registered."""

    def registered() -> str | None:
        ids = [w["id"] for w in cluster.workers() if w["address"] == worker.address]
        return ids[0] if ids else None

    return str(wait_for(registered, 60, f"worker at {worker.address} registered"))


def _executions(cluster: Cluster, runs: Path) -> Counter[str]:
    """How many times each task's handler ran, counted once no worker can run anything more."""
    cluster.stop_all()
    return Counter(task_id for task_id, _, _ in _runs(runs))


def test_500_tasks_all_succeed_once(cluster: Cluster) -> None:
    runs = _record_runs(cluster)
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator()
    for _ in range(2):
        cluster.start_worker(coordinator, "--concurrency", "4", *TEST_HANDLERS)
    # ``test.record`` returns its payload, and notes every run of its handler.
    tasks = cluster.submit_batch(
        [{"command": "test.record", "payload": {"n": n}} for n in range(500)]
    )
    done = cluster.wait_final([t["id"] for t in tasks], timeout=120)
    for task in tasks:
        final = done[task["id"]]
        assert final["status"] == "succeeded", final
        assert final["result"] == task["payload"]
        assert final["attempt"] == 1
    executions = _executions(cluster, runs)
    assert executions == Counter({t["id"]: 1 for t in tasks}), executions.most_common(3)


def test_idle_workers_share_tasks_round_robin(cluster: Cluster) -> None:
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator()
    # 16 free slots for 8 tasks: a dispatcher that filled one worker before the next would give
    # 4 to each of two workers; only round robin gives each of the four its 2.
    for _ in range(4):
        cluster.start_worker(coordinator, "--concurrency", "4", "--queue-size", "0")
    tasks = cluster.submit_batch(
        [{"command": "sleep", "payload": {"seconds": 1}} for _ in range(8)]
    )
    done = cluster.wait_final([t["id"] for t in tasks], timeout=60)
    per_worker = Counter(task["worker_id"] for task in done.values())
    assert sorted(per_worker.values()) == [2, 2, 2, 2], per_worker


def test_future_task_starts_on_time(cluster: Cluster) -> None:
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator()
    cluster.start_worker(coordinator)
    due = datetime.now(UTC) + timedelta(seconds=3)
    task = cluster.submit("echo", {"x": 1}, scheduled_at=due.isoformat())
    final = cluster.wait_final([task["id"]], timeout=30)[task["id"]]
    started = _parse(final["started_at"])
    assert started >= _parse(final["scheduled_at"])
    assert started - _parse(final["scheduled_at"]) < timedelta(seconds=0.5)


def test_tasks_wait_for_a_worker(cluster: Cluster) -> None:
    poll_interval = 0.5
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator("--poll-interval", str(poll_interval))
    tasks = [cluster.submit("echo", {"n": n}) for n in range(5)]
    # Nothing can run them: they stay scheduled while the coordinator wakes for the submits and
    # then polls several times over (the watch spans four slow polls).
    deadline = time.monotonic() + 4 * poll_interval
    while time.monotonic() < deadline:
        assert {cluster.task(t["id"])["status"] for t in tasks} == {"scheduled"}
        time.sleep(0.1)
    cluster.start_worker(coordinator)
    done = cluster.wait_final([t["id"] for t in tasks])
    assert {t["status"] for t in done.values()} == {"succeeded"}


def _held(cluster: Cluster, tasks: list[dict[str, Any]], status: str, worker_id: str) -> bool:
    return all(
        (task := cluster.task(t["id"]))["status"] == status and task["worker_id"] == worker_id
        for t in tasks
    )


def _recovered(cluster: Cluster, lost: dict[str, Any], retried: dict[str, Any]) -> bool:
    """Whether the killed worker's running tasks were recovered: the one with no attempt left
    failed, the other scheduled again (or already dispatched again, as attempt 2)."""
    lost_now, retried_now = cluster.task(lost["id"]), cluster.task(retried["id"])
    return (
        lost_now["status"] == "failed"
        and (lost_now["error"] or {}).get("type") == "worker_lost"
        and (retried_now["error"] or {}).get("type") == "worker_lost"
        and (retried_now["status"] == "scheduled" or retried_now["attempt"] == 2)
    )


def _busy_victim(
    cluster: Cluster, victim_id: str
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Fills the victim's two slots with sleeps, one with no attempt left and one with a retry
    left, then its queue with two echoes; returns the three kinds."""
    lost = cluster.submit("sleep", {"seconds": 30})
    retried = cluster.submit("sleep", {"seconds": 10}, max_attempts=2)
    wait_for(
        lambda: _held(cluster, [lost, retried], "running", victim_id),
        30,
        "both sleeps running on the first worker",
    )
    # Both slots are busy: the echoes wait in the victim's queue, sent to it but not started.
    # (Submitted only now: assignments from different rounds may reach a worker in any order,
    # so echoes submitted with the sleeps could take a slot before one of them.)
    queued = [cluster.submit("echo", {"n": n}) for n in range(2)]
    wait_for(
        lambda: _held(cluster, queued, "dispatched", victim_id),
        30,
        "both echoes dispatched to the first worker",
    )
    assert _held(cluster, [lost, retried], "running", victim_id)
    return lost, retried, queued


def test_killed_worker_tasks_fail_or_move(cluster: Cluster) -> None:
    dead_after = 3
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator("--dead-after", str(dead_after))
    victim = cluster.start_worker(coordinator, "--concurrency", "2", "--queue-size", "2")
    lost, retried, queued = _busy_victim(cluster, _worker_id(cluster, victim))

    victim.kill()
    killed_at = time.monotonic()
    spare = cluster.start_worker(coordinator, "--concurrency", "4", wait=False)
    # The bound, counted from the kill: the dead interval + 5 s. (``wait_for`` checks
    # again only while the deadline has not passed.)
    deadline = killed_at + dead_after + 5
    wait_for(
        lambda: _recovered(cluster, lost, retried),
        deadline - time.monotonic(),
        "the killed worker's running tasks failed or rescheduled with worker_lost",
    )

    spare_id = _worker_id(cluster, spare)
    done = cluster.wait_final([lost["id"], retried["id"]] + [t["id"] for t in queued], 60)
    assert done[lost["id"]]["status"] == "failed"
    assert done[lost["id"]]["error"]["type"] == "worker_lost"
    assert done[lost["id"]]["attempt"] == 1
    assert done[retried["id"]]["status"] == "succeeded"
    assert done[retried["id"]]["attempt"] == 2
    assert done[retried["id"]]["worker_id"] == spare_id
    for task in queued:
        final = done[task["id"]]
        assert final["status"] == "succeeded", final
        assert final["worker_id"] == spare_id, final
        assert final["attempt"] == 1, final  # given back unstarted: no attempt used up


def test_coordinator_crash_loses_nothing(cluster: Cluster) -> None:
    cluster.start_scheduler()
    port_args = ("--dead-after", "3")
    coordinator = cluster.start_coordinator(*port_args)
    cluster.start_worker(coordinator, "--concurrency", "4")
    tasks = cluster.submit_batch(
        [{"command": "sleep", "payload": {"seconds": 0.2}} for _ in range(40)]
    )
    wait_for(
        lambda: any(cluster.task(t["id"])["status"] != "scheduled" for t in tasks),
        30,
        "dispatch to begin",
    )
    coordinator.kill()
    port = int(coordinator.address.rsplit(":", 1)[1])
    cluster.start_coordinator(*port_args, port=port)
    done = cluster.wait_final([t["id"] for t in tasks], timeout=120)
    assert {t["status"] for t in done.values()} == {"succeeded"}


def test_two_coordinators_execute_each_task_once(cluster: Cluster) -> None:
    runs = _record_runs(cluster)
    cluster.start_scheduler()
    first = cluster.start_coordinator()
    second = cluster.start_coordinator()
    for coordinator in (first, second):
        cluster.start_worker(coordinator, "--concurrency", "4", *TEST_HANDLERS)
    tasks = []
    for chunk in range(2):
        tasks += cluster.submit_batch(
            [{"command": "test.record", "payload": {"n": chunk * 1000 + n}} for n in range(1000)]
        )
    done = cluster.wait_final([t["id"] for t in tasks], timeout=180)
    assert {t["status"] for t in done.values()} == {"succeeded"}
    assert [done[t["id"]]["result"] for t in tasks] == [t["payload"] for t in tasks]
    assert {t["attempt"] for t in done.values()} == {1}
    assert len({t["worker_id"] for t in done.values()}) == 2
    executions = _executions(cluster, runs)
    assert executions == Counter({t["id"]: 1 for t in tasks}), executions.most_common(3)


def test_failing_task_retries_with_backoff(cluster: Cluster) -> None:
    base = 1.0
    runs = _record_runs(cluster)
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator("--retry-backoff-base", str(base))
    cluster.start_worker(coordinator, *TEST_HANDLERS)
    retried = cluster.submit("fail", {"message": "boom"}, max_attempts=3)
    # Fails like ``fail``, and notes when each attempt started.
    timed = cluster.submit("test.record_and_fail", {"message": "timed"}, max_attempts=3)
    once = cluster.submit("fail", {"message": "once"})
    done = cluster.wait_final([retried["id"], timed["id"], once["id"]])
    for task, message in ((retried, "boom"), (timed, "timed")):
        final = done[task["id"]]
        assert final["status"] == "failed", final
        assert final["attempt"] == 3, final
        assert final["error"]["message"] == message, final
    assert done[once["id"]]["status"] == "failed"
    assert done[once["id"]]["attempt"] == 1

    # Attempt n + 1 is due base * 2**(n - 1) times a jitter in [0.5, 1] after attempt n failed,
    # so it starts at least half that after attempt n started. (Lower bounds only: a loaded
    # machine may start an attempt late, never early.)
    attempts = sorted((attempt, at) for run, attempt, at in _runs(runs) if run == timed["id"])
    assert [attempt for attempt, _ in attempts] == [1, 2, 3], attempts
    (_, first), (_, second), (_, third) = attempts
    assert second - first >= 0.5 * base, attempts
    assert third - second >= 0.5 * 2 * base, attempts


def test_cancel_running_sleep(cluster: Cluster) -> None:
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator()
    cluster.start_worker(coordinator)
    task = cluster.submit("sleep", {"seconds": 60})
    wait_for(lambda: cluster.task(task["id"])["status"] == "running", 30, "sleep running")
    status, _ = cluster.request("POST", f"/v1/tasks/{task['id']}/cancel")
    assert status in (200, 202)
    final = cluster.wait_final([task["id"]], timeout=10)[task["id"]]
    assert final["status"] == "cancelled"


def test_cluster_token_is_required(cluster: Cluster) -> None:
    cluster.env["TASKMILL_CLUSTER_TOKEN"] = "test-token-" + str(time.monotonic_ns())
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator()
    cluster.start_worker(coordinator)
    task = cluster.submit("echo", {"ok": True})
    assert cluster.wait_final([task["id"]])[task["id"]]["status"] == "succeeded"

    import grpc

    from taskmill.v1 import coordinator_pb2, coordinator_pb2_grpc

    with grpc.insecure_channel(coordinator.address) as channel:
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.RegisterWorker(
                coordinator_pb2.RegisterWorkerRequest(address="127.0.0.1:1", capacity=1),
                timeout=5,
            )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_scheduler_killed_while_storing_a_batch_stores_it_once(cluster: Cluster) -> None:
    # The scheduler dies while its insert may be running: the batch is stored whole or not at
    # all, and the client, which got no answer, sends it again with the same key.
    scheduler = cluster.start_scheduler()
    coordinator = cluster.start_coordinator()
    cluster.start_worker(coordinator)
    tasks = [{"command": "echo", "payload": {"n": n}} for n in range(1000)]
    key = {"Idempotency-Key": "sent-while-the-scheduler-died"}

    def send() -> None:
        with contextlib.suppress(OSError, ValueError):  # no answer, or half of one
            cluster.request("POST", "/v1/tasks/batch", {"tasks": tasks}, key)

    sender = threading.Thread(target=send)
    sender.start()
    with admin_connection(cluster.database_url) as admin:
        deadline = time.monotonic() + 10
        # Killed once its insert runs, or, if that was too quick to see, once it answered.
        while sender.is_alive() and time.monotonic() < deadline:
            [[inserting]] = admin.run(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'taskmill-scheduler' AND state = 'active'"
            )
            if inserting:
                break
    scheduler.kill()
    sender.join(30)

    cluster.start_scheduler()
    status, body = cluster.request("POST", "/v1/tasks/batch", {"tasks": tasks}, key)
    assert status in (200, 201), body  # 200: stored before the kill; 201: stored now
    ids = [task["id"] for task in body["tasks"]]
    done = cluster.wait_final(ids, timeout=120)
    assert [done[i]["result"] for i in ids] == [task["payload"] for task in tasks]
    assert {done[i]["attempt"] for i in ids} == {1}
    with admin_connection(cluster.database_url) as admin:
        assert admin.run("SELECT count(*) FROM tasks") == [[1000]]
