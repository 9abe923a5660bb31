"""The cluster token in both directions, and several coordinators sharing one database."""

from __future__ import annotations

from collections import Counter

import grpc
import pytest

from taskmill.common.grpcutil import GrpcSecurity, check_health

TOKEN = GrpcSecurity(cluster_token="s3cret")


def test_calls_without_the_cluster_token_are_refused(harness) -> None:
    coordinator = harness.coordinator(security=TOKEN)
    target = f"127.0.0.1:{coordinator.port}"
    for security in (GrpcSecurity(), GrpcSecurity(cluster_token="wrong")):
        worker = harness.worker(coordinator, security=security, register=False)
        with pytest.raises(grpc.RpcError) as error:
            worker.register()
        assert error.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert harness.worker_ids() == []
    # Health stays open to probes without a secret.
    assert check_health(target)


def test_with_the_token_workers_register_and_get_tasks(harness) -> None:
    coordinator = harness.coordinator(security=TOKEN)
    # The fake worker demands the token too: an assignment arrives only if the coordinator
    # sends it.
    worker = harness.worker(coordinator, security=TOKEN)
    [task_id] = harness.submit(1)
    harness.wait_until(lambda: worker.assignments)
    assert worker.assignments[0].task_id == str(task_id)


def test_two_coordinators_share_the_work_without_overlap(harness) -> None:
    coordinators = [harness.coordinator(), harness.coordinator()]
    workers = [harness.worker(c, capacity=60) for c in coordinators for _ in range(2)]
    ids = harness.submit(200)
    harness.wait_until(lambda: sum(len(w.assignments) for w in workers) == 200, timeout=30)
    assigned = Counter(task_id for w in workers for task_id in w.task_ids())
    assert set(assigned) == {str(i) for i in ids}
    assert set(assigned.values()) == {1}
    for worker in workers:
        assert len(worker.assignments) <= 60
        assert worker.overfilled == 0
    with harness.db.connection() as conn:
        owners = {row["id"]: row["coordinator_id"] for row in conn.rows("list_workers")}
    assert {owners[w.worker_id] for w in workers} == {c.coordinator_id for c in coordinators}
