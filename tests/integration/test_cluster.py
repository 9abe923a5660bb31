"""Whole-cluster flows with real processes: PostgreSQL, scheduler, coordinator, workers."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from taskmill.common.testing import admin_connection
from taskmill.dev.harness import Cluster, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_500_tasks_all_succeed_once(cluster: Cluster) -> None:
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator()
    for _ in range(2):
        cluster.start_worker(coordinator, "--concurrency", "4")
    tasks = cluster.submit_batch([{"command": "echo", "payload": {"n": n}} for n in range(500)])
    done = cluster.wait_final([t["id"] for t in tasks], timeout=120)
    for task in tasks:
        final = done[task["id"]]
        assert final["status"] == "succeeded", final
        assert final["result"] == task["payload"]
        assert final["attempt"] == 1


def test_idle_workers_share_tasks_round_robin(cluster: Cluster) -> None:
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator()
    for _ in range(4):
        cluster.start_worker(coordinator, "--concurrency", "2", "--queue-size", "0")
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
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator()
    tasks = [cluster.submit("echo", {"n": n}) for n in range(5)]
    # Nothing can run them: they stay scheduled while the coordinator polls and wakes.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert {cluster.task(t["id"])["status"] for t in tasks} == {"scheduled"}
        time.sleep(0.1)
    cluster.start_worker(coordinator)
    done = cluster.wait_final([t["id"] for t in tasks])
    assert {t["status"] for t in done.values()} == {"succeeded"}


def test_killed_worker_tasks_fail_or_move(cluster: Cluster) -> None:
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator("--dead-after", "3")
    victim = cluster.start_worker(coordinator, "--concurrency", "2", "--queue-size", "2")
    lost = cluster.submit("sleep", {"seconds": 30})
    retried = cluster.submit("sleep", {"seconds": 2}, max_attempts=2)
    queued = [cluster.submit("echo", {"n": n}) for n in range(2)]
    wait_for(
        lambda: all(cluster.task(t["id"])["status"] == "running" for t in (lost, retried)),
        30,
        "both sleeps running on the first worker",
    )
    victim.kill()
    cluster.start_worker(coordinator, "--concurrency", "4")
    done = cluster.wait_final([lost["id"], retried["id"]] + [t["id"] for t in queued], 60)
    assert done[lost["id"]]["status"] == "failed"
    assert done[lost["id"]]["error"]["type"] == "worker_lost"
    assert done[retried["id"]]["status"] == "succeeded"
    assert done[retried["id"]]["attempt"] == 2
    for task in queued:
        assert done[task["id"]]["status"] == "succeeded"


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
    cluster.start_scheduler()
    first = cluster.start_coordinator()
    second = cluster.start_coordinator()
    for coordinator in (first, second):
        cluster.start_worker(coordinator, "--concurrency", "4")
    tasks = []
    for chunk in range(2):
        tasks += cluster.submit_batch(
            [{"command": "echo", "payload": {"n": chunk * 1000 + n}} for n in range(1000)]
        )
    done = cluster.wait_final([t["id"] for t in tasks], timeout=180)
    assert {t["status"] for t in done.values()} == {"succeeded"}
    assert {t["attempt"] for t in done.values()} == {1}
    assert len({t["worker_id"] for t in done.values()}) == 2


def test_failing_task_retries_with_backoff(cluster: Cluster) -> None:
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator("--retry-backoff-base", "0.2")
    cluster.start_worker(coordinator)
    retried = cluster.submit("fail", {"message": "boom"}, max_attempts=3)
    once = cluster.submit("fail", {"message": "once"})
    done = cluster.wait_final([retried["id"], once["id"]])
    assert done[retried["id"]]["status"] == "failed"
    assert done[retried["id"]]["attempt"] == 3
    assert done[retried["id"]]["error"]["message"] == "boom"
    assert done[once["id"]]["status"] == "failed"
    assert done[once["id"]]["attempt"] == 1


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
