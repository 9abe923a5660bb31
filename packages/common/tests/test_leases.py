"""Heartbeat lease extension against a real PostgreSQL: it never waits on a row being changed."""

from __future__ import annotations

import threading

import pytest

from taskmill.common.store import Share
from taskmill.testing import NewTask, Stores, every_route


def test_extending_leases_skips_rows_a_report_holds(store: Stores) -> None:
    db = store.db
    with db.transaction() as conn:
        store.insert(conn, [NewTask("a"), NewTask("b")])
    locked, free = store.dispatch.claim_due(every_route(store), [Share("w-1", 2)], 60.0).tasks
    done = threading.Event()
    with db.transaction() as conn:
        # Stands in for a report batch holding one of the worker's rows.
        conn.execute("SELECT id FROM tasks WHERE id = :id FOR UPDATE", id=locked.id)
        extend = threading.Thread(
            target=lambda: (
                store.dispatch.extend_held_leases("w-1", store.held(locked.id, free.id), 600.0),
                done.set(),
            )
        )
        extend.start()
        assert done.wait(30), "the heartbeat waited for the locked row"
    extend.join()
    assert store.get(free.id).lease_expires_at != store.get(locked.id).lease_expires_at
    assert store.get(locked.id).lease_expires_at.timestamp() == pytest.approx(
        locked.lease_expires_at, abs=1e-6
    )
