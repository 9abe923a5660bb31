"""The in-memory worker view: round-robin planning and free-slot accounting (no network)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest

from taskmill.common.models import Worker, WorkerState
from taskmill.coordinator.registry import WorkerRegistry


def _worker(worker_id: str, capacity: int) -> Worker:
    now = datetime.now(UTC)
    return Worker(
        id=worker_id,
        address="127.0.0.1:1",
        hostname="h",
        version="v",
        capacity=capacity,
        free_slots=capacity,
        handlers=(),
        coordinator_id="c",
        state=WorkerState.ACTIVE,
        registered_at=now,
        last_heartbeat_at=now,
    )


@pytest.fixture
def registry() -> Iterator[WorkerRegistry]:
    # Channels are lazy: nothing connects to the address.
    registry = WorkerRegistry(grpc.insecure_channel)
    yield registry
    registry.close()


def test_plan_interleaves_workers_up_to_their_room(registry: WorkerRegistry) -> None:
    registry.add(_worker("a", 1))
    registry.add(_worker("b", 3))
    registry.add(_worker("c", 2))
    assert registry.plan(100) == [("a", 1), ("b", 3), ("c", 2)]  # a, b, c, b, c, b
    assert registry.plan(4) == [("a", 1), ("b", 2), ("c", 1)]  # a, b, c, b
    assert registry.plan(5) == [("a", 1), ("b", 2), ("c", 2)]  # a, b, c, b, c
    assert registry.plan(2) == [("a", 1), ("b", 1)]


@pytest.mark.parametrize("seed", range(40))
def test_plan_shares_are_the_first_slots_of_the_round_robin(seed: int) -> None:
    rng = random.Random(seed)
    rooms = {f"w{n}": rng.randint(0, 7) for n in range(rng.randint(1, 5))}
    limit = rng.randint(0, 30)
    # Spelled out: one slot per worker per turn while it has room, cut at the limit.
    slots = [w for turn in range(8) for w, room in rooms.items() if room > turn][:limit]
    registry = WorkerRegistry(grpc.insecure_channel)
    try:
        for worker_id, room in rooms.items():
            registry.add(_worker(worker_id, room))
        shares = registry.plan(limit)
    finally:
        registry.close()
    assert shares == [(w, slots.count(w)) for w in rooms if w in slots]


def test_plan_starts_after_the_worker_served_last(registry: WorkerRegistry) -> None:
    for name in "abc":
        registry.add(_worker(name, 2))
    registry.served("b")
    assert registry.plan(4) == [("c", 2), ("a", 1), ("b", 1)]  # c, a, b, c
    registry.served("c")
    assert registry.plan(1) == [("a", 1)]
    registry.remove("c")
    assert registry.plan(3) == [("a", 2), ("b", 1)]  # a, b, a


def test_reserved_slots_are_not_planned_again(registry: WorkerRegistry) -> None:
    registry.add(_worker("a", 2))
    registry.add(_worker("b", 2))
    assert registry.reserve("a", [uuid.uuid4(), uuid.uuid4()])
    assert registry.plan(10) == [("b", 2)]
    assert not registry.reserve("gone", [uuid.uuid4()])


def test_a_refusal_blocks_the_worker_until_its_heartbeat(registry: WorkerRegistry) -> None:
    registry.add(_worker("a", 4))
    ids = [uuid.uuid4()]
    registry.reserve("a", ids)
    registry.refused("a", ids, full=False)
    assert registry.plan(10) == []
    assert not registry.has_room()
    assert registry.finished("a", [uuid.uuid4()]) == 0
    assert registry.room("a") == 0
    assert registry.heartbeat("a", 4, set())
    assert registry.room("a") == 4


def test_a_full_worker_gets_room_when_a_task_finishes(registry: WorkerRegistry) -> None:
    registry.add(_worker("a", 4))
    running = [uuid.uuid4()]
    registry.reserve("a", running)
    registry.accepted("a", running, 3)
    extra = [uuid.uuid4()]
    registry.reserve("a", extra)
    registry.refused("a", extra, full=True)
    assert registry.room("a") == 0
    assert registry.finished("a", extra) == 0  # never taken, frees nothing
    assert registry.finished("a", running) == 1
    assert registry.room("a") == 1


def test_final_reports_free_slots(registry: WorkerRegistry) -> None:
    registry.add(_worker("a", 2))
    ids = [uuid.uuid4(), uuid.uuid4()]
    registry.reserve("a", ids)
    registry.accepted("a", ids, 0)
    assert registry.room("a") == 0
    assert registry.finished("a", [ids[0]]) == 1
    assert registry.finished("a", [ids[0]]) == 0  # a duplicate report frees nothing
    assert registry.room("a") == 1


def test_a_heartbeat_sent_before_an_assignment_does_not_overfill(
    registry: WorkerRegistry,
) -> None:
    registry.add(_worker("a", 4))
    ids = [uuid.uuid4(), uuid.uuid4(), uuid.uuid4()]
    registry.reserve("a", ids)
    registry.accepted("a", ids, 1)
    # The heartbeat was sent before the worker took the batch: it lists none of it.
    registry.heartbeat("a", 4, set())
    assert registry.room("a") == 1
    registry.heartbeat("a", 1, set(ids))
    assert registry.room("a") == 1


def test_a_heartbeat_during_an_assignment_counts_it(registry: WorkerRegistry) -> None:
    registry.add(_worker("a", 4))
    ids = [uuid.uuid4(), uuid.uuid4()]
    registry.reserve("a", ids)
    registry.heartbeat("a", 4, set())
    assert registry.room("a") == 2


def test_tasks_never_reported_stop_counting_after_some_heartbeats(
    registry: WorkerRegistry,
) -> None:
    registry.add(_worker("a", 2))
    ids = [uuid.uuid4(), uuid.uuid4()]
    registry.reserve("a", ids)
    registry.accepted("a", ids, 0)
    rooms = []
    for _ in range(4):
        registry.heartbeat("a", 2, set())
        rooms.append(registry.room("a"))
    assert rooms[0] == 0
    assert rooms[-1] == 2


def test_promptness_follows_the_last_answer_and_goes_with_the_worker(
    registry: WorkerRegistry,
) -> None:
    registry.add(_worker("a", 4))
    assert not registry.is_prompt("a")  # nothing answered yet
    first, second = [str(uuid.uuid4())], [str(uuid.uuid4())]
    registry.reserve("a", first)
    registry.accepted("a", first, 3, prompt=True)
    assert registry.is_prompt("a")
    registry.reserve("a", second)
    registry.refused("a", second, full=False)
    assert not registry.is_prompt("a")
    registry.accepted("a", [], 3, prompt=True)
    registry.remove("a")
    assert not registry.is_prompt("a")
    registry.add(_worker("a", 4))  # adopted again: a new entry, not yet known to be prompt
    assert not registry.is_prompt("a")
