"""The submit notification tells coordinators how many tasks became scheduled."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from taskmill.common.db import Connection, Database
from taskmill.common.models import NewTask
from taskmill.common.settings import DatabaseSettings
from taskmill.common.tasks import SubmitRow, TaskStore


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(DatabaseSettings.from_url(database_url), max_connections=2)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def listening(db: Database) -> Iterator[Connection]:
    conn = db.connect()
    try:
        conn.execute("LISTEN taskmill_submitted")
        yield conn
    finally:
        conn.close()


def _row(key: str | None = None) -> SubmitRow:
    return (str(uuid.uuid4()), "echo", {}, "default", 0, 1, None, None, 0.0, key, None, None)


def test_a_submit_notifies_how_many_tasks_it_inserted(db: Database, listening: Connection) -> None:
    store = TaskStore(db)
    store.submit([_row(), _row(), _row("k")])
    assert listening.poll_notifications() == [("taskmill_submitted", "3")]
    # The keyed task is taken: one inserted, one notification of one.
    store.submit([_row(), _row("k")])
    assert listening.poll_notifications() == [("taskmill_submitted", "1")]


def test_a_submit_that_inserts_nothing_notifies_nobody(db: Database, listening: Connection) -> None:
    store = TaskStore(db)
    store.submit([_row("k")])
    listening.poll_notifications()
    store.submit([_row("k")])
    assert listening.poll_notifications() == []


def test_an_insert_notifies_its_count_too(db: Database, listening: Connection) -> None:
    store = TaskStore(db)
    with db.transaction() as conn:
        store.insert(conn, [NewTask("echo"), NewTask("echo")])
    assert listening.poll_notifications() == [("taskmill_submitted", "2")]
