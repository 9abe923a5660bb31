"""The claim's routing against a real PostgreSQL: only the route's queues and commands, fair
turns between queues by weight, paused queues left alone, and a queue's max_concurrency held by
claims that lock its row, however many run at once."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

from taskmill.common.models import ServedQueue
from taskmill.common.store import Claim, Route, Share
from taskmill.testing import NewTask, Stores

LEASE = 60.0


def _route(*queues: str | tuple[str, int], commands: tuple[str, ...] = ("echo",)) -> Route:
    served = [ServedQueue(q) if isinstance(q, str) else ServedQueue(*q) for q in queues]
    return Route(tuple(served), commands)


def _insert(store: Stores, *tasks: NewTask) -> None:
    with store.db.transaction() as conn:
        store.insert(conn, tasks)


def _burst(
    queue: str, count: int, *, minutes_ago: int = 10, command: str = "echo"
) -> list[NewTask]:
    """``count`` tasks of a queue, each due a second after the one before."""
    start = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return [
        NewTask(command, queue=queue, payload={"n": n}, scheduled_at=start + timedelta(seconds=n))
        for n in range(count)
    ]


def _claim(store: Stores, route: Route, slots: int, *, locked: bool = False) -> Claim:
    return store.dispatch.claim_due(route, [Share("w-1", slots)], LEASE, locked=locked)


def _names(claim: Claim) -> list[tuple[str, int]]:
    return [(task.queue, json.loads(task.payload_json)["n"]) for task in claim.tasks]


def _steer(store: Stores, queue: str, *, paused: bool = False, limit: int | None = None) -> None:
    with store.db.connection() as conn:
        conn.execute(
            "INSERT INTO queues (name, paused, max_concurrency) VALUES (:name, :paused, :limit)"
            " ON CONFLICT (name) DO UPDATE SET paused = :paused, max_concurrency = :limit",
            name=queue,
            paused=paused,
            limit=limit,
        )


def test_a_claim_takes_only_its_queues_and_commands(store: Stores) -> None:
    _insert(
        store,
        NewTask("echo", queue="mail", payload={"n": 1}),
        NewTask("resize", queue="mail", payload={"n": 2}),
        NewTask("echo", queue="images", payload={"n": 3}),
        NewTask("echo", queue="default", payload={"n": 4}),
    )
    claim = _claim(store, _route("mail", "default"), 10)
    assert sorted(_names(claim)) == [("default", 4), ("mail", 1)]
    # What nobody here can run is not due for this route: nothing to wake up for.
    assert claim.next_due_in is None
    claim = _claim(store, _route("images", commands=("echo", "resize")), 10)
    assert _names(claim) == [("images", 3)]
    assert _names(_claim(store, _route("mail", commands=("resize",)), 10)) == [("mail", 2)]


def test_queues_take_turns_so_a_burst_does_not_starve_another(store: Stores) -> None:
    _insert(store, *_burst("bulk", 50, minutes_ago=20), *_burst("mail", 2, minutes_ago=1))
    claim = _claim(store, _route("bulk", "mail"), 4)
    assert _names(claim) == [("bulk", 0), ("mail", 0), ("bulk", 1), ("mail", 1)]


def test_weights_share_the_slots(store: Stores) -> None:
    _insert(store, *_burst("a", 20), *_burst("b", 20))
    claim = _claim(store, _route(("a", 3), ("b", 1)), 8)
    assert [queue for queue, _ in _names(claim)] == ["a", "a", "a", "b", "a", "a", "a", "b"]
    # The other order of the same queues (the next round's rotation) starts with b.
    claim = _claim(store, _route(("b", 1), ("a", 3)), 4)
    assert _names(claim) == [("b", 2), ("a", 6), ("a", 7), ("a", 8)]


def test_priority_orders_tasks_within_a_queue(store: Stores) -> None:
    _insert(
        store,
        NewTask("echo", queue="a", payload={"n": 1}),
        NewTask("echo", queue="a", payload={"n": 2}, priority=5),
        NewTask("resize", queue="a", payload={"n": 3}, priority=9),
    )
    claim = _claim(store, _route("a", commands=("echo", "resize")), 3)
    assert _names(claim) == [("a", 3), ("a", 2), ("a", 1)]


def test_a_paused_queue_gives_nothing_and_is_not_waited_for(store: Stores) -> None:
    _insert(store, *_burst("a", 3), *_burst("b", 1))
    _steer(store, "a", paused=True)
    claim = _claim(store, _route("a", "b"), 10)
    assert _names(claim) == [("b", 0)]
    assert claim.next_due_in is None
    _steer(store, "a", paused=False)
    assert [queue for queue, _ in _names(_claim(store, _route("a", "b"), 10))] == ["a"] * 3


def test_a_limited_queue_gives_only_under_its_lock_and_up_to_its_limit(store: Stores) -> None:
    _insert(store, *_burst("a", 10), *_burst("b", 2))
    _steer(store, "a", limit=3)
    unlocked = _claim(store, _route("a", "b"), 10)
    assert _names(unlocked) == [("b", 0), ("b", 1)]
    assert unlocked.limited
    locked = _claim(store, _route("a", "b"), 2, locked=True)
    assert (_names(locked), locked.capped) == ([("a", 0), ("a", 1)], False)
    locked = _claim(store, _route("a"), 5, locked=True)
    assert (_names(locked), locked.capped) == ([("a", 2)], True)
    # Full: nothing more, and nothing to wake up for until one of them finishes.
    full = _claim(store, _route("a"), 5, locked=True)
    assert (full.tasks, full.capped, full.next_due_in) == ([], True, None)
    with store.db.connection() as conn:
        conn.execute("UPDATE tasks SET status = 'succeeded' WHERE payload = '{\"n\": 0}'")
    assert _names(_claim(store, _route("a"), 5, locked=True)) == [("a", 3)]


def test_concurrent_locked_claims_never_exceed_the_limit(store: Stores) -> None:
    _insert(store, *_burst("a", 200))
    _steer(store, "a", limit=7)
    start = threading.Barrier(4)
    taken: list[int] = []

    def claim_one_at_a_time() -> None:
        start.wait()
        for _ in range(10):
            taken.append(len(_claim(store, _route("a"), 1, locked=True).tasks))

    threads = [threading.Thread(target=claim_one_at_a_time) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(taken) == 7
    with store.db.connection() as conn:
        [[in_flight]] = conn.execute("SELECT count(*) FROM tasks WHERE status = 'dispatched'")
    assert in_flight == 7


def test_a_limit_above_the_slots_claims_only_the_slots(store: Stores) -> None:
    _insert(store, *_burst("a", 10))
    _steer(store, "a", limit=5)
    route = _route("a")
    lean = store.dispatch.claim_due(route, [Share("w-1", 1)], LEASE, locked=True)
    pair = store.dispatch.claim_due(route, [Share("w-1", 1), Share("w-2", 1)], LEASE, locked=True)
    assert (len(lean.tasks), len(pair.tasks)) == (1, 2)
    with store.db.connection() as conn:
        rows = conn.execute(
            "SELECT worker_id, count(*) FROM tasks WHERE status = 'dispatched'"
            " GROUP BY 1 ORDER BY 1"
        )
    assert rows == [["w-1", 2], ["w-2", 1]]


def test_a_paused_limited_queue_is_not_waited_for(store: Stores) -> None:
    _insert(store, *_burst("a", 3))
    _steer(store, "a", paused=True, limit=5)
    claim = _claim(store, _route("a"), 5, locked=True)
    assert (claim.tasks, claim.next_due_in, claim.capped) == ([], None, False)


def test_a_submits_claim_answers_its_tasks_alone_or_runs_in_full(store: Stores) -> None:
    _insert(store, *_burst("a", 2), *_burst("a", 1, minutes_ago=-60))
    route = _route("a")
    lean = store.dispatch.claim_due(route, [Share("w-1", 1)], LEASE, wanted=1)
    assert (_names(lean), lean.complete, lean.next_due_in) == ([("a", 0)], False, None)
    full = store.dispatch.claim_due(route, [Share("w-1", 1)], LEASE)
    assert (_names(full), full.complete) == ([("a", 1)], True)
    assert full.next_due_in is not None and full.next_due_in > 3000  # the one due in an hour
    # Nothing due: the lean claim took nothing, and the full one says when the next is due.
    empty = store.dispatch.claim_due(route, [Share("w-1", 1)], LEASE, wanted=1)
    assert (empty.tasks, empty.complete) == ([], True)
    assert empty.next_due_in is not None and empty.next_due_in > 3000
