"""SubmitBatcher: concurrent submits share statements, and each caller gets only its own fate."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from taskmill.common.dberrors import QueryError
from taskmill.common.errors import DatabaseUnavailable
from taskmill.common.store import Decided, SubmitRow
from taskmill.scheduler.batcher import SubmitBatcher

DEADLINE = 30.0
CREATED = datetime(2030, 1, 1, tzinfo=UTC)


def _row(command: str) -> SubmitRow:
    return (str(uuid.uuid4()), command, {}, "default", 0, 1, None, None, 0.0, None, None, None)


class FakeStore:
    """Records each statement; the first one blocks until released, so others queue up.

    Each command is due at its own time, so an answer shows whose task it is about; commands
    starting with ``dup`` are skipped, as a taken idempotency key is.
    """

    def __init__(self) -> None:
        self.statements: list[list[str]] = []
        self.first_started = threading.Event()
        self.release_first = threading.Event()
        self.refuse: set[str] = set()
        self.unavailable = False
        self.due: dict[str, datetime] = {}

    def submit(self, tasks: Sequence[SubmitRow]) -> list[Decided | None]:
        self.statements.append([t[1] for t in tasks])
        if len(self.statements) == 1:
            self.first_started.set()
            assert self.release_first.wait(DEADLINE)
        if self.unavailable:
            raise DatabaseUnavailable("database unavailable: gone")
        if any(t[1] in self.refuse for t in tasks):
            raise QueryError("value refused", "22P05")
        return [None if t[1].startswith("dup") else self.answer(t[1]) for t in tasks]

    def answer(self, command: str) -> Decided:
        """What the fake database decided for the task of this command."""
        due = self.due.setdefault(command, CREATED + timedelta(seconds=len(self.due)))
        return (CREATED, due)


def _run_concurrently(batcher: SubmitBatcher, store: FakeStore, commands: list[list[str]]):
    """Starts one caller, waits until its statement is running, then queues the others."""
    outcomes: dict[int, object] = {}

    def call(index: int) -> None:
        try:
            outcomes[index] = batcher([_row(c) for c in commands[index]])
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[index] = exc

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert store.first_started.wait(DEADLINE)
    others = [threading.Thread(target=call, args=(i,)) for i in range(1, len(commands))]
    for thread in others:
        thread.start()
    # Let the others queue behind the running statement before it returns.
    _wait_until(lambda: len(batcher._queue) == len(others))
    store.release_first.set()
    for thread in [first, *others]:
        thread.join(DEADLINE)
    return outcomes


def _wait_until(condition) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.01)


def test_a_lone_call_goes_straight_through() -> None:
    store = FakeStore()
    store.release_first.set()
    batcher = SubmitBatcher(store.submit)

    decided = batcher([_row("a"), _row("dup-b"), _row("c")])

    assert decided == [store.answer("a"), None, store.answer("c")]
    assert store.statements == [["a", "dup-b", "c"]]


def test_calls_arriving_during_a_statement_share_the_next_one() -> None:
    store = FakeStore()
    batcher = SubmitBatcher(store.submit)

    outcomes = _run_concurrently(batcher, store, [["first"], ["a"], ["b", "c"], ["d"]])

    assert store.statements[0] == ["first"]
    assert sorted(store.statements[1]) == ["a", "b", "c", "d"] and len(store.statements) == 2
    assert outcomes[2] == [store.answer("b"), store.answer("c")]
    assert outcomes[3] == [store.answer("d")]


def test_a_statement_carries_at_most_max_tasks() -> None:
    store = FakeStore()
    batcher = SubmitBatcher(store.submit, max_tasks=3)

    _run_concurrently(batcher, store, [["first"], ["a", "b"], ["c", "d"], ["e"]])

    assert all(len(statement) <= 3 for statement in store.statements)
    assert sorted(c for s in store.statements[1:] for c in s) == ["a", "b", "c", "d", "e"]


def test_skipped_tasks_are_missing_only_from_their_own_callers_answer() -> None:
    store = FakeStore()
    batcher = SubmitBatcher(store.submit)

    outcomes = _run_concurrently(batcher, store, [["first"], ["dup-key"], ["fresh", "dup-2"]])

    assert outcomes[1] == [None]
    assert outcomes[2] == [store.answer("fresh"), None]


def test_a_refused_statement_is_retried_per_caller_so_only_the_culprit_fails() -> None:
    store = FakeStore()
    store.refuse = {"poison"}
    batcher = SubmitBatcher(store.submit)

    outcomes = _run_concurrently(batcher, store, [["first"], ["a"], ["poison"], ["b"]])

    assert isinstance(outcomes[2], QueryError)
    assert outcomes[1] == [store.answer("a")]
    assert outcomes[3] == [store.answer("b")]


def test_an_unavailable_database_fails_every_caller_of_the_statement() -> None:
    store = FakeStore()
    store.unavailable = True
    batcher = SubmitBatcher(store.submit)

    outcomes = _run_concurrently(batcher, store, [["first"], ["a"], ["b"]])

    assert all(isinstance(outcome, DatabaseUnavailable) for outcome in outcomes.values())


def test_it_keeps_working_after_a_failure() -> None:
    store = FakeStore()
    store.unavailable = True
    batcher = SubmitBatcher(store.submit)
    _run_concurrently(batcher, store, [["first"], ["a"]])
    store.unavailable = False

    assert batcher([_row("later")]) == [store.answer("later")]
