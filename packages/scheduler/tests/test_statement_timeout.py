"""The statement timeout of the scheduler's pool: a request's statement that runs on is cancelled,
and the request answered 503, so no request holds a connection for minutes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import falcon.testing
import pytest

from taskmill.common.db import Database
from taskmill.common.dberrors import StatementCancelled
from taskmill.scheduler import SchedulerSettings, create_app
from taskmill.scheduler.app import create_database
from taskmill.testing import admin_connection

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def bounded(settings: SchedulerSettings) -> Iterator[Database]:
    """The scheduler's own pool, with a statement timeout far below any test's patience."""
    pool = create_database(dataclasses.replace(settings, statement_timeout=0.2))
    yield pool
    pool.close()


def test_the_pool_cancels_a_statement_past_its_timeout(bounded: Database) -> None:
    with bounded.connection() as conn:
        assert conn.execute("SHOW statement_timeout") == [["200ms"]]
        with pytest.raises(StatementCancelled, match="statement timeout"):
            conn.execute("SELECT pg_sleep(5)")
        # The connection stays in step, and in use.
        assert conn.execute("SELECT 1") == [[1]]
        assert not conn.broken


def test_by_default_a_statement_may_run_thirty_seconds(settings: SchedulerSettings) -> None:
    pool = create_database(SchedulerSettings(database=settings.database))
    try:
        with pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout") == [["30s"]]
    finally:
        pool.close()


def test_zero_means_no_timeout(settings: SchedulerSettings) -> None:
    pool = create_database(dataclasses.replace(settings, statement_timeout=0.0))
    try:
        with pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout") == [["0"]]
    finally:
        pool.close()


def test_a_request_waiting_on_a_lock_past_the_timeout_is_503_and_retryable(
    settings: SchedulerSettings, bounded: Database, database_url: str
) -> None:
    client = falcon.testing.TestClient(create_app(settings, bounded))
    created = client.simulate_post("/v1/tasks", body='{"command": "echo"}', headers=JSON)
    assert created.status_code == 201
    task = f"/v1/tasks/{created.json['id']}"

    def requests() -> list[falcon.testing.Result]:
        return [
            client.simulate_get(task),
            client.simulate_get("/v1/tasks"),
            client.simulate_post("/v1/tasks", body='{"command": "echo"}', headers=JSON),
            client.simulate_post(f"{task}/cancel"),
        ]

    with ThreadPoolExecutor(1) as sender, admin_connection(database_url) as holder:
        # Another session holds the table, as a long migration or a stuck transaction would.
        holder.run("BEGIN")
        holder.run("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        try:
            # A deadline, not a measure: unbounded, the requests would wait for the lock until
            # it is released below.
            answers = sender.submit(requests).result(timeout=30)
        finally:
            holder.run("ROLLBACK")

    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == str(settings.retry_after_seconds)
        assert answer.json["type"].endswith("database-timeout")
        assert "statement timeout" in answer.json["detail"]
    # Once the lock is gone, the same pool answers again.
    assert client.simulate_get(task).json["status"] == "scheduled"
