"""DispatchStore.claim_due, the coordinator's lean claim, against a real PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from taskmill.common.models import TaskStatus
from taskmill.common.queries import query
from taskmill.common.store import Share
from taskmill.testing import NewTask, Stores, every_route

LEASE = 60.0


def _insert(store: Stores, *tasks: NewTask) -> None:
    with store.db.transaction() as conn:
        store.insert(conn, tasks)


def _insert_by_urgency(store: Stores, *, tie: bool = False) -> None:
    """Due tasks whose urgency is b, d, c, a (then e, due with a but submitted after it, when
    ``tie``), and one due in an hour."""
    now = datetime.now(UTC)
    tasks = [
        NewTask("a", priority=1, scheduled_at=now - timedelta(minutes=1)),
        NewTask("b", priority=3),
        NewTask("c", priority=1, scheduled_at=now - timedelta(minutes=2)),
        NewTask("d", priority=2),
        NewTask("future", priority=9, scheduled_at=now + timedelta(hours=1)),
    ]
    if tie:
        tasks.append(NewTask("e", priority=1, scheduled_at=now - timedelta(minutes=1)))
    _insert(store, *tasks)


def test_claim_due_fills_slots_in_priority_order_and_skips_future_tasks(store: Stores) -> None:
    _insert_by_urgency(store)

    claim = store.dispatch.claim_due(
        every_route(store), [Share(w, 1) for w in ("w-a", "w-b", "w-c", "w-d", "w-e", "w-f")], LEASE
    )

    assert [(t.command, t.worker_id) for t in claim.tasks] == [
        ("b", "w-a"),
        ("d", "w-b"),
        ("c", "w-c"),
        ("a", "w-d"),
    ]
    # The future task is what is due next: in an hour, by the database clock.
    assert claim.next_due_in == pytest.approx(3600, abs=60)
    assert store.dispatch.claim_due(every_route(store), [Share("w-a", 1)], LEASE).tasks == []


#: A claim for one worker runs the lean statement; a second worker with no room makes the same
#: claim run the round robin's.
BOTH_STATEMENTS = pytest.mark.parametrize(
    "idle", [[], [Share("w-idle", 0)]], ids=["lean", "round-robin"]
)


@BOTH_STATEMENTS
def test_claim_due_returns_what_the_row_holds(store: Stores, idle: list[Share]) -> None:
    traceparent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    _insert(
        store,
        NewTask(
            "sleep",
            {"seconds": 0.5, "text": "é"},
            queue="slow",
            max_attempts=3,
            timeout_seconds=9.5,
            trace_context=traceparent,
        ),
    )

    (claimed,) = store.dispatch.claim_due(every_route(store), [Share("w-1", 1), *idle], LEASE).tasks

    task = store.get(claimed.id)
    assert task.status is TaskStatus.DISPATCHED
    assert (task.worker_id, claimed.worker_id) == ("w-1", "w-1")
    assert (claimed.command, json.loads(claimed.payload_json), claimed.queue) == (
        "sleep",
        {"seconds": 0.5, "text": "é"},
        "slow",
    )
    # The id and the payload come as text, passed on to the worker as they are.
    assert claimed.id == str(task.id)
    assert (claimed.attempt, claimed.max_attempts) == (task.attempt, 3) == (1, 3)
    assert claimed.timeout_seconds == 9.5
    assert claimed.trace_context == traceparent
    assert task.lease_expires_at is not None
    assert claimed.scheduled_at == pytest.approx(task.scheduled_at.timestamp(), abs=1e-6)
    assert claimed.lease_expires_at == pytest.approx(task.lease_expires_at.timestamp(), abs=1e-6)


@BOTH_STATEMENTS
def test_claim_due_says_when_the_next_task_is_due(store: Stores, idle: list[Share]) -> None:
    _insert(store, NewTask("a"), NewTask("b"))
    # One slot for two due tasks: the one left is due already.
    first = store.dispatch.claim_due(every_route(store), [Share("w-1", 1), *idle], LEASE)
    assert first.next_due_in is not None
    assert first.next_due_in <= 0
    # The claimed tasks do not count, though the statement still sees them scheduled.
    assert (
        store.dispatch.claim_due(every_route(store), [Share("w-1", 5), *idle], LEASE).next_due_in
        is None
    )


def test_claim_due_of_no_slots_is_refused(store: Stores) -> None:
    _insert(store, NewTask("a"))
    with pytest.raises(ValueError):
        store.dispatch.claim_due(every_route(store), [], LEASE)
    with pytest.raises(ValueError):
        store.dispatch.claim_due(every_route(store), [Share("w-1", 0)], LEASE)
    assert (
        store.dispatch.claim_due(every_route(store), [Share("w-1", 1)], LEASE).tasks[0].command
        == "a"
    )


@pytest.mark.parametrize(
    ("due", "expected"),
    [
        (9, ["a", "b", "c", "b", "c", "b"]),  # every slot filled, then nothing more
        (4, ["a", "b", "c", "b"]),  # the first slots of the round robin
        (1, ["a"]),
    ],
)
def test_claim_due_spreads_the_tasks_round_robin_over_the_shares(
    store: Stores, due: int, expected: list[str]
) -> None:
    _insert(
        store,
        *(
            NewTask(f"t{n:02}", scheduled_at=datetime(2026, 1, 1, 0, n, tzinfo=UTC))
            for n in range(due)
        ),
    )

    claim = store.dispatch.claim_due(
        every_route(store), [Share("a", 1), Share("b", 3), Share("c", 2)], LEASE
    )

    # The most urgent task fills the first slot, and so on.
    assert [(t.command, t.worker_id) for t in claim.tasks] == [
        (f"t{n:02}", worker) for n, worker in enumerate(expected)
    ]


def test_claim_due_for_one_worker_takes_the_most_urgent_tasks_first(store: Stores) -> None:
    _insert_by_urgency(store, tie=True)

    claim = store.dispatch.claim_due(every_route(store), [Share("w-a", 4)], LEASE)

    assert [(t.command, t.worker_id, t.attempt) for t in claim.tasks] == [
        ("b", "w-a", 1),
        ("d", "w-a", 1),
        ("c", "w-a", 1),
        ("a", "w-a", 1),
    ]
    assert claim.next_due_in is not None
    assert claim.next_due_in <= 0  # e is still due
    rest = store.dispatch.claim_due(every_route(store), [Share("w-b", 4)], LEASE)
    assert [(t.command, t.worker_id) for t in rest.tasks] == [("e", "w-b")]
    assert rest.next_due_in == pytest.approx(3600, abs=60)


@BOTH_STATEMENTS
def test_claim_due_skips_tasks_another_transaction_holds(store: Stores, idle: list[Share]) -> None:
    # Another coordinator's claim holds its tasks' rows until it commits: this claim takes the
    # next ones instead of waiting.
    _insert(store, NewTask("held", priority=5), NewTask("free"))
    with store.db.transaction() as other:
        other.execute("SELECT id FROM tasks WHERE command = 'held' FOR UPDATE")
        claim = store.dispatch.claim_due(every_route(store), [Share("w-1", 2), *idle], LEASE)
    assert [t.command for t in claim.tasks] == ["free"]
    assert [
        t.command
        for t in store.dispatch.claim_due(every_route(store), [Share("w-1", 2), *idle], LEASE).tasks
    ] == ["held"]


def _scans(plan: dict[str, object]) -> list[tuple[object, object]]:
    found = [(plan.get("Node Type"), plan.get("Relation Name"))]
    for child in plan.get("Plans", []):  # type: ignore[attr-defined]
        found += _scans(child)
    return found


#: The parameters of a claim of 512 slots in the default queue for workers that run echo.
_ECHO_LANES = {
    "queues": "{default}",
    "weights": "{1}",
    "commands": "{echo}",
    "slots": 512,
    "lease_seconds": LEASE,
    "locked": "{}",
}


def test_claim_due_finds_its_tasks_by_key_not_by_scanning_the_table(store: Stores) -> None:
    # Joining the due tasks with the round robin's slots was estimated at 100,000 rows, and
    # the planner hashed the whole table for each claim: a cost that grew with the history.
    _insert(store, *(NewTask("echo", payload={"n": n}) for n in range(3000)))
    with store.db.connection() as conn:
        conn.execute("VACUUM ANALYZE tasks")
        [[plan]] = conn.execute(
            "EXPLAIN (FORMAT JSON) " + query("claim_due_assignments"),
            shares=json.dumps([["w-1", 256], ["w-2", 256]]),
            **_ECHO_LANES,
        )
    scans = _scans(plan[0]["Plan"])
    assert ("Seq Scan", "tasks") not in scans, scans


def test_claim_due_for_one_worker_finds_its_tasks_by_key(store: Stores) -> None:
    _insert(store, *(NewTask("echo", payload={"n": n}) for n in range(3000)))
    with store.db.connection() as conn:
        conn.execute("VACUUM ANALYZE tasks")
        [[plan]] = conn.execute(
            "EXPLAIN (FORMAT JSON) " + query("claim_due_for_worker"),
            worker_id="w-1",
            started=False,
            **_ECHO_LANES,
        )
    scans = _scans(plan[0]["Plan"])
    assert ("Seq Scan", "tasks") not in scans, scans
