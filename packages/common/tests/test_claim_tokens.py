"""Fencing tokens against a real PostgreSQL: every claim mints one, and reports, give-backs and
lease extensions change a task only while it is still in the claim they name."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from taskmill.common.attempts import Held
from taskmill.common.models import TaskStatus as S
from taskmill.testing import Reported

from .task_harness import LEASE, WORKER, Harness


def _token(h: Harness, task_id: uuid.UUID) -> int:
    token = h.row(task_id)["claim_token"]
    assert isinstance(token, int)
    return token


def _claimed_twice(h: Harness, worker: str = WORKER) -> tuple[uuid.UUID, int, int]:
    """A task claimed, given back (its assignment failed, as the coordinator saw it) and
    claimed again by ``worker``: the same attempt, worker and id, but a new token."""
    task_id = h.to(S.DISPATCHED)
    first = _token(h, task_id)
    assert h.store.dispatch.release(WORKER, [Held(str(task_id), first)]) == [task_id]
    assert h.claim(worker) == task_id
    return task_id, first, _token(h, task_id)


def _report(h: Harness, task_id: uuid.UUID, status: S, token: int, **fields: object) -> bool:
    at = datetime.now(UTC)
    reported = Reported(task_id, 1, status, at, token=token, **fields)  # type: ignore[arg-type]
    return h.store.apply([reported], WORKER) == {task_id}


def test_every_claim_mints_a_new_token(h: Harness) -> None:
    ids = [h.submit() for _ in range(3)]
    claimed = [h.claim() for _ in ids]
    tokens = {_token(h, task_id) for task_id in claimed}
    assert len(tokens) == 3
    _, first, second = _claimed_twice(h)
    assert first != second and second not in tokens


def test_a_report_naming_an_earlier_claim_changes_nothing(h: Harness) -> None:
    # Same id, attempt and worker: without the token, the earlier copy's report would apply.
    task_id, stale, current = _claimed_twice(h)
    assert not _report(h, task_id, S.RUNNING, stale)
    assert not _report(h, task_id, S.SUCCEEDED, stale, result="stale copy")
    assert h.row(task_id)["status"] == S.DISPATCHED
    assert _report(h, task_id, S.SUCCEEDED, current, result="current copy")
    assert h.store.get(task_id).result == "current copy"


def test_a_give_back_naming_an_earlier_claim_leaves_the_new_one(h: Harness) -> None:
    task_id, stale, current = _claimed_twice(h)
    assert h.store.dispatch.release(WORKER, [Held(str(task_id), stale)]) == []
    assert (h.row(task_id)["status"], _token(h, task_id)) == (S.DISPATCHED, current)


def test_a_heartbeat_names_the_tokens_no_longer_the_workers(h: Harness) -> None:
    reclaimed, stale, current = _claimed_twice(h, "w-2")
    finished = h.to(S.SUCCEEDED)
    own = h.to(S.RUNNING)
    held = [
        Held(str(reclaimed), stale),  # given back and claimed by another worker
        Held(str(finished), _token(h, finished)),  # finished
        Held(str(own), _token(h, own)),  # still the worker's
    ]
    before = h.row(own)["lease_expires_at"]
    answer = h.store.dispatch.extend_held_leases(WORKER, held, LEASE * 10)
    assert sorted(answer) == sorted([stale, _token(h, finished)])
    assert h.row(own)["lease_expires_at"] > before
    assert (h.row(reclaimed)["worker_id"], _token(h, reclaimed)) == ("w-2", current)


def test_a_task_held_under_an_earlier_worker_id_moves_to_the_current_one(h: Harness) -> None:
    # A worker that registered again under a new id, still holding a task nobody took back.
    task_id = h.to(S.RUNNING)
    held = [Held(str(task_id), _token(h, task_id))]
    assert h.store.dispatch.extend_held_leases("w-new", held, LEASE) == []
    assert h.row(task_id)["worker_id"] == "w-new"
    assert _report_as(h, task_id, "w-new", _token(h, task_id))


def _report_as(h: Harness, task_id: uuid.UUID, worker: str, token: int) -> bool:
    reported = Reported(task_id, 1, S.SUCCEEDED, datetime.now(UTC), result=1, token=token)
    return h.store.apply([reported], worker) == {task_id}


def test_a_worker_without_tokens_is_matched_by_attempt_and_worker(h: Harness) -> None:
    # Token 0: a worker from before tokens, during a rolling upgrade.
    task_id = h.to(S.RUNNING)
    legacy = [Held(str(task_id), 0)]
    assert h.store.dispatch.extend_held_leases("w-other", legacy, LEASE) == []
    assert h.row(task_id)["worker_id"] == WORKER  # not the other worker's to extend or move
    assert h.store.dispatch.extend_held_leases(WORKER, legacy, LEASE) == []
    assert _report(h, task_id, S.SUCCEEDED, 0, result="legacy")
    assert h.store.get(task_id).result == "legacy"


def test_declaring_a_worker_dead_recovers_its_tasks_in_the_same_step(h: Harness) -> None:
    task_id = h.to(S.DISPATCHED)
    with h.db.connection() as conn:
        conn.execute(
            "INSERT INTO workers (id, address, capacity, coordinator_id, last_heartbeat_at)"
            " VALUES (:id, 'x:1', 1, 'c-1', now() - interval '1 hour')",
            id=WORKER,
        )
    dead, recovered = h.store.recovery.reap_and_recover(60.0)
    assert dead == [WORKER]
    assert recovered == {task_id: S.SCHEDULED}
    assert h.store.workers.get(WORKER) is None
