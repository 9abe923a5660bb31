"""Fixtures for common's tests: a connection pool, a task store and the state machine harness
on a fresh database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskmill.common.db import Database
from taskmill.common.models import Backoff
from taskmill.common.settings import DatabaseSettings
from taskmill.testing import Stores

from .task_harness import BACKOFF, Harness


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(DatabaseSettings.from_url(database_url), max_connections=4)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def store(db: Database) -> Stores:
    # A fixed backoff of 30 s, so a retried task's due time is known to within its jitter.
    return Stores(db, Backoff(30.0, 30.0))


@pytest.fixture
def h(db: Database) -> Harness:
    """The stores on the test's database, with shortcuts to put a task in each status."""
    return Harness(db, Stores(db, BACKOFF))
