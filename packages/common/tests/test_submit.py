"""SubmitStore.submit, the scheduler's insert: one task or a batch, and the notification that tells
coordinators how many tasks became scheduled."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from taskmill.common.db import Connection, Database
from taskmill.common.store import SubmitRow
from taskmill.testing import NewTask, Stores


@pytest.fixture
def listening(db: Database) -> Iterator[Connection]:
    conn = db.connect()
    try:
        conn.execute("LISTEN taskmill_submitted")
        yield conn
    finally:
        conn.close()


def _row(key: str | None = None) -> SubmitRow:
    return SubmitRow(
        str(uuid.uuid4()), "echo", {}, "default", 0, 1, None, None, 0.0, key, None, None
    )


def _stored(db: Database, task_id: str) -> dict[str, object]:
    with db.connection() as conn:
        row = conn.row("get_task", id=task_id)
    assert row is not None
    return {
        name: value
        for name, value in row.items()
        if name not in ("id", "seq", "created_at", "scheduled_at")
    }


@pytest.mark.parametrize(
    "fields",
    [
        (None, "echo", {"n": 1, "text": "é"}, "q", 5, 3, 2.5, None, 0.0, "key", "hash", "00-tp"),
        (None, "sleep", None, "default", -2, 1, None, "2030-01-02T03:04:05+00:00", 0.0, None,
         None, None),
        (None, "echo", [1, "two"], "default", 0, 1, None, None, 1.5, None, None, None),
    ],
)  # fmt: skip
def test_a_lone_task_is_stored_as_in_a_batch(db: Database, fields: tuple[Any, ...]) -> None:
    # A lone task goes as parameters, a batch as one JSON document: the rows they store match.
    store = Stores(db)
    row = SubmitRow(*fields)
    key = row.idempotency_key
    alone = row._replace(id=str(uuid.uuid4()), idempotency_key=key and key + "-alone")
    batch = [row._replace(id=str(uuid.uuid4())), _row()]
    [alone_times] = store.submits.submit([alone])
    batch_times = store.submits.submit(batch)[0]
    assert alone_times is not None and batch_times is not None
    stored_alone, stored_batch = _stored(db, alone.id), _stored(db, batch[0].id)
    assert stored_alone.pop("idempotency_key") == (key and key + "-alone")
    assert stored_batch.pop("idempotency_key") == key
    assert stored_alone == stored_batch
    # Each scheduled_at is the one asked for, or created_at plus the delay.
    for (created, scheduled), task in ((alone_times, alone), (batch_times, batch[0])):
        if task.scheduled_at is not None:
            assert scheduled.isoformat() == task.scheduled_at
        else:
            assert (scheduled - created).total_seconds() == pytest.approx(task.delay_seconds)


def test_a_lone_task_whose_key_is_taken_is_skipped(db: Database) -> None:
    store = Stores(db)
    assert store.submits.submit([_row("k")])[0] is not None
    assert store.submits.submit([_row("k")]) == [None]


def test_a_submit_notifies_how_many_tasks_it_inserted(db: Database, listening: Connection) -> None:
    store = Stores(db)
    store.submits.submit([_row()])
    assert listening.poll_notifications() == [("taskmill_submitted", "1")]
    store.submits.submit([_row(), _row(), _row("k")])
    assert listening.poll_notifications() == [("taskmill_submitted", "3")]
    # The keyed task is taken: one inserted, one notification of one.
    store.submits.submit([_row(), _row("k")])
    assert listening.poll_notifications() == [("taskmill_submitted", "1")]


def test_a_submit_that_inserts_nothing_notifies_nobody(db: Database, listening: Connection) -> None:
    store = Stores(db)
    store.submits.submit([_row("k")])
    listening.poll_notifications()
    store.submits.submit([_row("k")])  # alone
    store.submits.submit([_row("k"), _row("k")])  # in a batch
    assert listening.poll_notifications() == []


def test_an_insert_notifies_its_count_too(db: Database, listening: Connection) -> None:
    store = Stores(db)
    with db.transaction() as conn:
        store.insert(conn, [NewTask("echo"), NewTask("echo")])
    assert listening.poll_notifications() == [("taskmill_submitted", "2")]
