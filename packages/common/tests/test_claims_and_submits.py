"""Claiming and submitting tasks through the production stores against a real PostgreSQL:
claim order and slots, concurrent claims, idempotency keys, what an insert keeps, and the pool."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from taskmill.common.db import Database
from taskmill.common.settings import DatabaseSettings
from taskmill.testing import NewTask, Stores, claim

from .task_harness import BACKOFF, LEASE, WORKER, Harness, S

# -- claiming ---------------------------------------------------------------------------------


def test_claim_takes_priority_then_scheduled_at_and_never_future_tasks(h: Harness) -> None:
    now = datetime.now(UTC)
    ids = {
        "low-old": h.submit(priority=0, scheduled_at=now - timedelta(minutes=3)),
        "low-older": h.submit(priority=0, scheduled_at=now - timedelta(minutes=4)),
        "high-new": h.submit(priority=5, scheduled_at=now - timedelta(minutes=1)),
        "high-old": h.submit(priority=5, scheduled_at=now - timedelta(minutes=2)),
        "top-future": h.submit(priority=9, scheduled_at=now + timedelta(hours=1)),
    }
    names = {task_id: name for name, task_id in ids.items()}

    one_at_a_time = [names[h.claim()] for _ in range(4)]

    assert one_at_a_time == ["high-old", "high-new", "low-older", "low-old"]
    assert claim(h.store, [WORKER, WORKER], LEASE) == []
    assert h.store.next_due_at() == h.row(ids["top-future"])["scheduled_at"]


def test_claim_fills_slots_in_order(h: Harness) -> None:
    for priority in (1, 3, 2):
        h.submit(priority=priority)

    tasks = claim(h.store, ["w-a", "w-b", "w-c", "w-d"], LEASE)

    assert [(t.priority, t.worker_id, t.attempt) for t in tasks] == [
        (3, "w-a", 1),
        (2, "w-b", 1),
        (1, "w-c", 1),
    ]
    assert all(t.status is S.DISPATCHED and t.lease_expires_at is not None for t in tasks)


def test_concurrent_claims_take_disjoint_tasks(h: Harness, database_url: str) -> None:
    with h.db.transaction() as conn:
        h.store.insert(conn, [NewTask("n", {"i": i}) for i in range(100)])
    start = threading.Barrier(2)

    def claimer(worker: str) -> list[uuid.UUID]:
        # Separate pools: the two claims are two sessions, as in two coordinators.
        db = Database(DatabaseSettings.from_url(database_url), max_connections=1)
        claimed: list[uuid.UUID] = []
        try:
            store = Stores(db, BACKOFF)
            start.wait(timeout=30)
            while batch := claim(store, [worker] * 7, LEASE):
                claimed.extend(task.id for task in batch)
        finally:
            db.close()
        return claimed

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {worker: pool.submit(claimer, worker) for worker in ("w-a", "w-b")}
        claimed = {worker: future.result(timeout=60) for worker, future in futures.items()}

    a, b = set(claimed["w-a"]), set(claimed["w-b"])
    assert len(a) + len(b) == len(claimed["w-a"]) + len(claimed["w-b"]) == 100
    assert a.isdisjoint(b)
    rows = h.store.tasks.page(limit=1000)
    assert {(t.status, t.attempt) for t in rows} == {(S.DISPATCHED, 1)}
    assert {t.id for t in rows if t.worker_id == "w-a"} == a


# -- submitting -------------------------------------------------------------------------------


def test_idempotency_key_is_taken_once(h: Harness) -> None:
    first = h.submit(idempotency_key="order-42")

    with h.db.transaction() as conn:
        again = h.store.insert(conn, [NewTask("other", idempotency_key="order-42")])
        fresh = h.store.insert(conn, [NewTask("other", idempotency_key="order-43")])
    found = {
        key: task
        for key, (task, _) in h.store.submits.by_idempotency_keys(
            ["order-42", "order-43", "order-44"]
        ).items()
    }

    assert again == []
    assert [t.command for t in fresh] == ["other"]
    assert found["order-42"].id == first
    assert found["order-42"].command == "send_email"
    assert set(found) == {"order-42", "order-43"}
    assert len(h.store.tasks.page(limit=10)) == 2


def test_insert_keeps_what_was_submitted(h: Harness) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    task = NewTask(
        "resize",
        {"w": 10, "tags": ["a", "é"]},
        queue="images",
        priority=4,
        max_attempts=5,
        timeout_seconds=2.5,
        scheduled_at=when,
        trace_context="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )

    with h.db.transaction() as conn:
        (stored,) = h.store.insert(conn, [task])

    assert stored == h.store.get(task.id)
    assert (stored.command, stored.payload, stored.queue) == ("resize", task.payload, "images")
    assert (stored.priority, stored.max_attempts, stored.timeout_seconds) == (4, 5, 2.5)
    assert (stored.scheduled_at, stored.trace_context) == (when, task.trace_context)
    assert (stored.status, stored.attempt) == (S.SCHEDULED, 0)


# -- the pool ---------------------------------------------------------------------------------


def test_pool_lends_each_thread_its_own_connection(database_url: str) -> None:
    db = Database(DatabaseSettings.from_url(database_url), max_connections=4)
    holding = threading.Barrier(4)

    def borrow() -> int:
        with db.connection() as conn:
            pid: int = conn.execute("SELECT pg_backend_pid()")[0][0]
            holding.wait(timeout=30)  # all four hold a connection at this moment
        return pid

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            pids = [f.result(timeout=60) for f in [pool.submit(borrow) for _ in range(4)]]
    finally:
        db.close()

    assert len(set(pids)) == 4
