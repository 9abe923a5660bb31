"""Recorded starts against a real PostgreSQL: a claim that starts the tasks of idle slots, the
worker's started tokens, and recovery that fails (rather than requeues) a lost worker's task
whose start it recorded, so a task with one attempt never runs twice."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskmill.common.attempts import Held
from taskmill.common.db import Connection
from taskmill.common.models import Task, WorkerState
from taskmill.common.models import TaskStatus as S
from taskmill.common.store import ClaimedTask, Share
from taskmill.testing import NewTask, Stores, every_route, set_worker_state

from .task_harness import check_invariants

LEASE = 60.0


def _insert(store: Stores, count: int, *, max_attempts: int = 1) -> list[uuid.UUID]:
    """``count`` due tasks, most urgent first (t0, t1, ...)."""
    start = datetime.now(UTC) - timedelta(hours=1)
    tasks = [
        NewTask(f"t{n}", max_attempts=max_attempts, scheduled_at=start + timedelta(minutes=n))
        for n in range(count)
    ]
    with store.db.transaction() as conn:
        return [task.id for task in store.insert(conn, tasks)]


def _claim(store: Stores, *shares: Share) -> list[ClaimedTask]:
    return store.dispatch.claim_due(every_route(store), list(shares), LEASE).tasks


def _slots(store: Stores, claimed: list[ClaimedTask]) -> list[tuple[Any, ...]]:
    """What the claim said of each task, and what its row holds."""
    rows = [(t, store.get(t.id)) for t in claimed]
    return [
        (t.command, t.worker_id, t.start_recorded, task.status, task.started_at is not None)
        for t, task in rows
    ]


def _checked(store: Stores, task_id: uuid.UUID | str) -> Task:
    """The task, its row checked against what every row in its status must look like."""
    with store.db.connection() as conn:
        row = conn.row("get_task", id=task_id)
    assert row is not None
    check_invariants(row)
    return Task.from_row(row)


def _worker(store: Stores) -> str:
    return store.workers.register(address="x:1", capacity=4, coordinator_id="c-1", concurrency=2).id


def _started_tokens(store: Stores, worker_id: str) -> list[int]:
    with store.db.connection() as conn:
        [[tokens]] = conn.execute("SELECT started_tokens FROM workers WHERE id = :id", id=worker_id)
    return list(tokens)


def _expire_leases(store: Stores, *task_ids: uuid.UUID) -> None:
    with store.db.connection() as conn:
        for task_id in task_ids:
            conn.execute(
                "UPDATE tasks SET lease_expires_at = now() - interval '1 minute' WHERE id = :id",
                id=task_id,
            )


def test_claim_records_the_start_of_each_workers_first_tasks(store: Stores) -> None:
    # Slots a, b, a, b, a: the first two turns of w-a and the first of w-b are idle slots.
    _insert(store, 5)
    claimed = _claim(store, Share("w-a", 3, started=2), Share("w-b", 2, started=1))
    assert _slots(store, claimed) == [
        ("t0", "w-a", True, S.RUNNING, True),
        ("t1", "w-b", True, S.RUNNING, True),
        ("t2", "w-a", True, S.RUNNING, True),
        ("t3", "w-b", False, S.DISPATCHED, False),
        ("t4", "w-a", False, S.DISPATCHED, False),
    ]


def test_a_lone_share_with_some_started_records_only_those(store: Stores) -> None:
    _insert(store, 3)
    claimed = _claim(store, Share("w-a", 3, started=2))
    assert _slots(store, claimed) == [
        ("t0", "w-a", True, S.RUNNING, True),
        ("t1", "w-a", True, S.RUNNING, True),
        ("t2", "w-a", False, S.DISPATCHED, False),
    ]


@pytest.mark.parametrize(("started", "status"), [(2, S.RUNNING), (0, S.DISPATCHED)])
def test_a_lone_share_started_all_or_none(store: Stores, started: int, status: S) -> None:
    _insert(store, 2)
    claimed = _claim(store, Share("w-a", 2, started=started))
    recorded = status is S.RUNNING
    assert _slots(store, claimed) == [
        (f"t{n}", "w-a", recorded, status, recorded) for n in range(2)
    ]


def test_only_the_worker_itself_gives_back_a_task_whose_start_the_claim_recorded(
    store: Stores,
) -> None:
    [task_id] = _insert(store, 1)
    [claimed] = _claim(store, Share("w-a", 1, started=1))
    held = store.held(task_id)
    # The coordinator's give-back (the worker may have got it) and stale or legacy tokens.
    assert store.dispatch.release("w-a", held) == []
    assert store.dispatch.release("w-a", [Held(claimed.id, claimed.token + 1)], recorded=True) == []
    assert store.dispatch.release("w-a", [Held(claimed.id, 0)], recorded=True) == []
    assert store.dispatch.release("w-b", held, recorded=True) == []
    task = _checked(store, task_id)
    assert (task.status, task.attempt, task.worker_id) == (S.RUNNING, 1, "w-a")
    assert task.started_at is not None

    assert store.dispatch.release("w-a", held, recorded=True) == [task_id]
    task = _checked(store, task_id)
    assert (task.status, task.attempt, task.worker_id) == (S.SCHEDULED, 0, None)
    assert (task.started_at, task.lease_expires_at, task.dispatched_at) == (None, None, None)


def test_record_started_replaces_the_workers_tokens(store: Stores) -> None:
    worker_id = _worker(store)
    assert _started_tokens(store, worker_id) == []
    assert store.workers.record_started(worker_id, [11, 7]) == []
    assert sorted(_started_tokens(store, worker_id)) == [7, 11]
    assert store.workers.record_started(worker_id, [12]) == []
    assert _started_tokens(store, worker_id) == [12]
    assert store.workers.record_started(worker_id, []) == []
    assert _started_tokens(store, worker_id) == []


def test_record_started_for_an_unknown_worker_says_so(store: Stores) -> None:
    assert store.workers.record_started("w-nobody", [1]) is None
    declared_dead = _worker(store)
    assert set_worker_state(store.db, declared_dead, WorkerState.DEAD) is not None
    assert store.workers.record_started(declared_dead, [1]) is None
    assert _started_tokens(store, declared_dead) == []
    worker_id = _worker(store)
    assert store.recovery.retire(worker_id) == {}
    assert store.workers.record_started(worker_id, [1]) is None


def _lose(store: Stores, worker_id: str, how: str) -> dict[uuid.UUID, S]:
    if how == "retire":
        return store.recovery.retire(worker_id)
    with store.db.connection() as conn:
        conn.execute(
            "UPDATE workers SET last_heartbeat_at = now() - interval '1 hour' WHERE id = :id",
            id=worker_id,
        )
    dead, recovered = store.recovery.reap_and_recover(60.0)
    assert dead == [worker_id]
    return recovered


@pytest.mark.parametrize("how", ["retire", "reap"])
@pytest.mark.parametrize(
    ("max_attempts", "ends"), [(1, S.FAILED), (2, S.SCHEDULED)], ids=["last", "retried"]
)
def test_a_lost_workers_recorded_start_counts_as_a_run(
    store: Stores, how: str, max_attempts: int, ends: S
) -> None:
    worker_id = _worker(store)
    _insert(store, 2, max_attempts=max_attempts)
    started, unstarted = _claim(store, Share(worker_id, 2))
    assert store.workers.record_started(worker_id, [started.token]) == []

    recovered = _lose(store, worker_id, how)

    started_id, unstarted_id = uuid.UUID(started.id), uuid.UUID(unstarted.id)
    assert recovered == {started_id: ends, unstarted_id: S.SCHEDULED}
    ran = _checked(store, started_id)
    assert (ran.status, ran.attempt) == (ends, 1)  # the attempt is used up
    assert ran.error is not None and ran.error.type == "worker_lost"
    requeued = _checked(store, unstarted_id)
    assert (requeued.status, requeued.attempt, requeued.error) == (S.SCHEDULED, 0, None)
    assert store.workers.get(worker_id) is None


def test_an_expired_lease_under_a_live_workers_recorded_start_fails(store: Stores) -> None:
    worker_id = _worker(store)
    _insert(store, 2)
    started, unstarted = _claim(store, Share(worker_id, 2))
    assert store.workers.record_started(worker_id, [started.token]) == []
    started_id, unstarted_id = uuid.UUID(started.id), uuid.UUID(unstarted.id)
    _expire_leases(store, started_id, unstarted_id)

    recovered = store.recover_lost([], expired_leases=True)

    assert recovered == {started_id: S.FAILED, unstarted_id: S.SCHEDULED}
    ran = _checked(store, started_id)
    assert ran.error is not None and ran.error.type == "worker_lost"
    requeued = _checked(store, unstarted_id)
    assert (requeued.status, requeued.attempt) == (S.SCHEDULED, 0)
    assert store.workers.get(worker_id) is not None  # the worker itself lives on


def test_started_tokens_passed_to_recover_lost_fail_a_dispatched_task(store: Stores) -> None:
    # The tokens of workers already removed, as reap_and_recover passes them.
    _insert(store, 2)
    started, unstarted = _claim(store, Share("w-gone", 2))
    recovered = store.recover_lost(["w-gone"], started=[started.token])
    assert recovered == {uuid.UUID(started.id): S.FAILED, uuid.UUID(unstarted.id): S.SCHEDULED}


def test_a_task_claimed_while_its_worker_retires_is_not_failed(
    store: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A coordinator may claim for the worker between recovery's two statements (the worker is
    # still in its fleet): that task never started, so it must not fail as a lost one.
    worker = store.workers.register(address="x:1", capacity=4, coordinator_id="c", concurrency=2)
    [first, late] = _insert(store, 2)
    _claim(store, Share(worker.id, 1))
    real_run = Connection.run

    def run(conn: Connection, name: str, /, **params: Any) -> list[list[Any]]:
        rows = real_run(conn, name, **params)
        if name == "requeue_lost_unstarted":
            assert [t.id for t in _claim(store, Share(worker.id, 1))] == [str(late)]
        return rows

    monkeypatch.setattr(Connection, "run", run)
    store.recovery.retire(worker.id)
    monkeypatch.undo()
    assert store.get(first).status is S.SCHEDULED  # requeued: never started
    assert store.get(late).status is S.DISPATCHED  # left for its lease, not failed


def test_a_start_asked_for_a_task_no_longer_the_workers_is_refused(store: Stores) -> None:
    worker = store.workers.register(address="x:1", capacity=4, coordinator_id="c")
    [task_id] = _insert(store, 1)
    [claimed] = _claim(store, Share(worker.id, 1))
    asked = [Held(claimed.id, claimed.token)]
    assert store.dispatch.release(worker.id, asked) == [task_id]  # a late answer: given back
    assert store.workers.record_started(worker.id, [claimed.token], asked) == [claimed.token]
    assert _started_tokens(store, worker.id) == []


def test_the_coordinators_give_back_leaves_a_task_whose_start_the_worker_recorded(
    store: Stores,
) -> None:
    worker = store.workers.register(address="x:1", capacity=4, coordinator_id="c")
    [task_id] = _insert(store, 1)
    [claimed] = _claim(store, Share(worker.id, 1))
    asked = [Held(claimed.id, claimed.token)]
    assert store.workers.record_started(worker.id, [claimed.token], asked) == []
    assert store.dispatch.release(worker.id, asked) == []  # the worker has it: it stays
    assert store.get(task_id).status is S.DISPATCHED
    assert store.dispatch.release(worker.id, asked, recorded=True) == [task_id]  # its own


def _started_tokens(store: Stores, worker_id: str) -> list[int]:
    with store.db.connection() as conn:
        [[tokens]] = conn.execute("SELECT started_tokens FROM workers WHERE id = :id", id=worker_id)
    return list(tokens)


def test_a_claim_started_task_its_live_worker_never_listed_goes_back_at_its_lease(
    store: Stores,
) -> None:
    # Its coordinator died between the claim and the call: the worker never got it, and its
    # heartbeats went on without listing it, so the lease ran out under a live worker.
    worker = store.workers.register(address="x:1", capacity=4, coordinator_id="c", concurrency=2)
    never_sent, silent = _insert(store, 2)
    _claim(store, Share(worker.id, 2, started=2))
    with store.db.connection() as conn:
        # The worker last heartbeated 5 s ago: after never_sent's lease ran out (10 s ago), so
        # a whole lease of its heartbeats passed without listing it; before silent's ran out.
        conn.execute(
            "UPDATE workers SET last_heartbeat_at = now() - interval '5 seconds' WHERE id = :id",
            id=worker.id,
        )
        for task_id, ago in ((never_sent, 10), (silent, 1)):
            conn.execute(
                "UPDATE tasks SET lease_expires_at = now() - make_interval(secs => :ago)"
                " WHERE id = :id",
                ago=ago,
                id=str(task_id),
            )
    recovered = store.recover_lost([], expired_leases=True)
    assert recovered[never_sent] is S.SCHEDULED
    task = store.get(never_sent)
    assert (task.attempt, task.started_at, task.worker_id) == (0, None, None)
    # The other's lease ran out after the worker last heartbeated: it may be running there.
    assert recovered[silent] is S.FAILED
