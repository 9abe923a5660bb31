"""The fleet, the in-memory worker view: round-robin planning and free-slot accounting, and
the joins and leaves it passes on to the worker client (no network)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import pytest

from taskmill.common.models import ServedQueue, Worker, WorkerState
from taskmill.common.store import Route, Share
from taskmill.coordinator.fleet import Fleet

#: The route of the workers _worker makes: the default queue, no handlers.
ROUTE = Route((ServedQueue("default"),), ())


def _worker(
    worker_id: str,
    capacity: int,
    concurrency: int | None = None,
    *,
    handlers: tuple[str, ...] = (),
    queues: tuple[ServedQueue, ...] = ROUTE.queues,
) -> Worker:
    now = datetime.now(UTC)
    return Worker(
        queues=queues,
        concurrency=concurrency,
        id=worker_id,
        address="127.0.0.1:1",
        hostname="h",
        version="v",
        capacity=capacity,
        free_slots=capacity,
        handlers=handlers,
        coordinator_id="c",
        state=WorkerState.ACTIVE,
        registered_at=now,
        last_heartbeat_at=now,
    )


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


def test_plan_interleaves_workers_up_to_their_room(fleet: Fleet) -> None:
    fleet.add(_worker("a", 1))
    fleet.add(_worker("b", 3))
    fleet.add(_worker("c", 2))
    assert _sizes(_shares(fleet, 100)) == [("a", 1), ("b", 3), ("c", 2)]  # a, b, c, b, c, b
    assert _sizes(_shares(fleet, 4)) == [("a", 1), ("b", 2), ("c", 1)]  # a, b, c, b
    assert _sizes(_shares(fleet, 5)) == [("a", 1), ("b", 2), ("c", 2)]  # a, b, c, b, c
    assert _sizes(_shares(fleet, 2)) == [("a", 1), ("b", 1)]


@pytest.mark.parametrize("seed", range(40))
def test_plan_shares_are_the_first_slots_of_the_round_robin(seed: int) -> None:
    rng = random.Random(seed)
    rooms = {f"w{n}": rng.randint(0, 7) for n in range(rng.randint(1, 5))}
    limit = rng.randint(0, 30)
    # Spelled out: one slot per worker per turn while it has room, cut at the limit.
    slots = [w for turn in range(8) for w, room in rooms.items() if room > turn][:limit]
    fleet = Fleet()
    for worker_id, room in rooms.items():
        fleet.add(_worker(worker_id, room))
    shares = _shares(fleet, limit)
    assert [(w, size) for w, size, _ in shares] == [
        (w, slots.count(w)) for w in rooms if w in slots
    ]


def test_plan_starts_after_the_worker_served_last(fleet: Fleet) -> None:
    for name in "abc":
        fleet.add(_worker(name, 2))
    fleet.served(ROUTE, "b", ["default"])
    assert _sizes(_shares(fleet, 4)) == [("c", 2), ("a", 1), ("b", 1)]  # c, a, b, c
    fleet.served(ROUTE, "c", ["default"])
    assert _sizes(_shares(fleet, 1)) == [("a", 1)]
    fleet.remove("c")
    assert _sizes(_shares(fleet, 3)) == [("a", 2), ("b", 1)]  # a, b, a


def test_reserved_slots_are_not_planned_again(fleet: Fleet) -> None:
    fleet.add(_worker("a", 2))
    fleet.add(_worker("b", 2))
    assert fleet.reserve("a", [uuid.uuid4(), uuid.uuid4()])
    assert _sizes(_shares(fleet, 10)) == [("b", 2)]
    assert not fleet.reserve("gone", [uuid.uuid4()])


def test_a_refusal_blocks_the_worker_until_its_heartbeat(fleet: Fleet) -> None:
    fleet.add(_worker("a", 4))
    ids = [uuid.uuid4()]
    fleet.reserve("a", ids)
    fleet.refused("a", ids, full=False)
    assert _sizes(_shares(fleet, 10)) == []
    assert not fleet.has_room()
    assert fleet.finished("a", [uuid.uuid4()]) == 0
    assert fleet.room("a") == 0
    assert fleet.heartbeat("a", 4, set())
    assert fleet.room("a") == 4


def test_a_full_worker_gets_room_when_a_task_finishes(fleet: Fleet) -> None:
    fleet.add(_worker("a", 4))
    running = [uuid.uuid4()]
    fleet.reserve("a", running)
    fleet.accepted("a", running, 3)
    extra = [uuid.uuid4()]
    fleet.reserve("a", extra)
    fleet.refused("a", extra, full=True)
    assert fleet.room("a") == 0
    assert fleet.finished("a", extra) == 0  # never taken, frees nothing
    assert fleet.finished("a", running) == 1
    assert fleet.room("a") == 1


def test_final_reports_free_slots(fleet: Fleet) -> None:
    fleet.add(_worker("a", 2))
    ids = [uuid.uuid4(), uuid.uuid4()]
    fleet.reserve("a", ids)
    fleet.accepted("a", ids, 0)
    assert fleet.room("a") == 0
    assert fleet.finished("a", [ids[0]]) == 1
    assert fleet.finished("a", [ids[0]]) == 0  # a duplicate report frees nothing
    assert fleet.room("a") == 1


def test_a_heartbeat_sent_before_an_assignment_does_not_overfill(
    fleet: Fleet,
) -> None:
    fleet.add(_worker("a", 4))
    ids = [uuid.uuid4(), uuid.uuid4(), uuid.uuid4()]
    fleet.reserve("a", ids)
    fleet.accepted("a", ids, 1)
    # The heartbeat was sent before the worker took the batch: it lists none of it.
    fleet.heartbeat("a", 4, set())
    assert fleet.room("a") == 1
    fleet.heartbeat("a", 1, set(ids))
    assert fleet.room("a") == 1


def test_a_heartbeat_during_an_assignment_counts_it(fleet: Fleet) -> None:
    fleet.add(_worker("a", 4))
    ids = [uuid.uuid4(), uuid.uuid4()]
    fleet.reserve("a", ids)
    fleet.heartbeat("a", 4, set())
    assert fleet.room("a") == 2


def test_tasks_never_reported_stop_counting_after_some_heartbeats(
    fleet: Fleet,
) -> None:
    fleet.add(_worker("a", 2))
    ids = [uuid.uuid4(), uuid.uuid4()]
    fleet.reserve("a", ids)
    fleet.accepted("a", ids, 0)
    rooms = []
    for _ in range(4):
        fleet.heartbeat("a", 2, set())
        rooms.append(fleet.room("a"))
    assert rooms[0] == 0
    assert rooms[-1] == 2


def test_promptness_follows_the_last_answer_and_goes_with_the_worker(
    fleet: Fleet,
) -> None:
    fleet.add(_worker("a", 4))
    assert not fleet.is_prompt("a")  # nothing answered yet
    first, second = [str(uuid.uuid4())], [str(uuid.uuid4())]
    fleet.reserve("a", first)
    fleet.accepted("a", first, 3, prompt=True)
    assert fleet.is_prompt("a")
    fleet.reserve("a", second)
    fleet.refused("a", second, full=False)
    assert not fleet.is_prompt("a")
    fleet.accepted("a", [], 3, prompt=True)
    fleet.remove("a")
    assert not fleet.is_prompt("a")
    fleet.add(_worker("a", 4))  # adopted again: a new entry, not yet known to be prompt
    assert not fleet.is_prompt("a")


class _Connections:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def open(self, worker_id: str, address: str) -> None:
        self.calls.append(("open", worker_id, address))

    def close(self, worker_id: str) -> None:
        self.calls.append(("close", worker_id))


def test_joins_and_leaves_open_and_close_the_connections() -> None:
    # Every path that forgets a worker (a reaped one too) goes through ``remove``, so its
    # channel never outlives it.
    connections = _Connections()
    fleet = Fleet(connections)
    fleet.add(_worker("a", 2))
    fleet.add(_worker("b", 2))
    fleet.add(_worker("a", 3))  # adopted again: the connection is opened anew
    assert fleet.remove("a")
    assert not fleet.remove("a")  # already gone: nothing to close
    assert connections.calls == [
        ("open", "a", "127.0.0.1:1"),
        ("open", "b", "127.0.0.1:1"),
        ("open", "a", "127.0.0.1:1"),
        ("close", "a"),
    ]
    assert fleet.ids() == ["b"]


def _shares(fleet: Fleet, limit: int) -> list[Share]:
    """The round's shares of every route, for a fleet of one route."""
    return [share for plan in fleet.plan(limit) for share in plan.shares]


def _sizes(shares: list[Share]) -> list[tuple[str, int]]:
    return [(worker_id, size) for worker_id, size, _ in shares]


def test_plan_starts_in_the_claim_only_the_tasks_that_fill_idle_slots(fleet: Fleet) -> None:
    fleet.add(_worker("a", 6, concurrency=2))  # two slots, a queue of four
    fleet.add(_worker("old", 6))  # named no slots: none is known to be idle
    assert _shares(fleet, 2) == [Share("a", 1, 1), Share("old", 1, 0)]
    assert fleet.reserve("a", ["t1"])
    assert _shares(fleet, 12) == [Share("a", 5, 1), Share("old", 6, 0)]
    assert fleet.reserve("a", ["t2"])
    assert _shares(fleet, 12)[0] == Share("a", 4, 0)  # both slots taken: the rest queue
    fleet.finished("a", ["t1"])
    assert _shares(fleet, 12)[0] == Share("a", 5, 1)


def test_workers_that_run_different_tasks_are_planned_apart(fleet: Fleet) -> None:
    mail = (ServedQueue("mail", 3), ServedQueue("default"))
    fleet.add(_worker("a", 2, handlers=("echo", "send")))
    fleet.add(_worker("b", 2, handlers=("send", "echo", "echo"), queues=mail))
    fleet.add(_worker("c", 2, handlers=("echo",)))
    fleet.add(_worker("d", 1, handlers=("echo", "send"), queues=mail))
    plans = fleet.plan(3)
    assert [(plan.route, _sizes(plan.shares)) for plan in plans] == [
        (Route(ROUTE.queues, ("echo", "send")), [("a", 2)]),
        (Route(mail, ("echo", "send")), [("b", 2), ("d", 1)]),
        (Route(ROUTE.queues, ("echo",)), [("c", 2)]),
    ]
    fleet.served(Route(mail, ("echo", "send")), "b", ["mail"])
    again = fleet.plan(3)
    # The round starts after the route served last, and that route after the worker it
    # served last.
    assert [plan.route.commands for plan in again] == [
        ("echo",),
        ("echo", "send"),
        ("echo", "send"),
    ]
    assert _sizes(again[2].shares) == [("d", 1), ("b", 2)]


def test_a_routes_queues_take_turns_by_weight_across_rounds(fleet: Fleet) -> None:
    # Claims of one slot each: the weights hold across them, not only within one claim.
    route = Route((ServedQueue("a", 3), ServedQueue("b")), ("echo",))
    fleet.add(_worker("w", 1, handlers=("echo",), queues=route.queues))
    firsts = []
    for _ in range(40):
        [plan] = fleet.plan(1)
        first = plan.queues[0].name
        firsts.append(first)
        fleet.served(route, "w", [first])
    assert firsts.count("a") == 30
    assert "b" in firsts[:4]  # b's first turn comes within a's three


def test_a_queue_back_from_a_quiet_spell_shares_rather_than_takes_all(fleet: Fleet) -> None:
    route = Route((ServedQueue("a"), ServedQueue("b")), ("echo",))
    fleet.add(_worker("w", 1, handlers=("echo",), queues=route.queues))
    for _ in range(50):  # only a has tasks: b takes nothing
        fleet.served(route, "w", ["a"])
    firsts = []
    for _ in range(10):
        [plan] = fleet.plan(1)
        firsts.append(plan.queues[0].name)
        fleet.served(route, "w", [plan.queues[0].name])
    assert firsts.count("b") <= 6
