"""A database outage: 503 with Retry-After while it lasts, and recovery on its own after."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest

from taskmill.common.db import Database
from taskmill.common.migrate import migrate
from taskmill.common.settings import DatabaseSettings
from taskmill.dev.pgserver import PostgresServer
from taskmill.scheduler import SchedulerSettings, create_app

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL whose data survives a stop, so it can be started again."""
    with tempfile.TemporaryDirectory(prefix="taskmill-outage-") as name:
        Path(name).chmod(0o755)  # reachable by the unprivileged user PostgreSQL runs as
        pg = PostgresServer()
        pg.start(Path(name) / "data")
        try:
            yield pg
        finally:
            pg.stop()


def test_submits_fail_with_503_during_an_outage_and_succeed_after(server) -> None:
    url, port, data_dir = server.url, server.port, server.data_dir
    migrate(url)
    settings = SchedulerSettings(DatabaseSettings.from_url(url))
    db = Database(settings.database, prepare_statements=True, connect_timeout=2)
    client = falcon.testing.TestClient(create_app(settings, db))
    try:
        before = client.simulate_post("/v1/tasks", body='{"command": "a"}', headers=JSON)
        assert before.status_code == 201
        # Hold a few pooled connections open, so the outage breaks connections in use too.
        assert client.simulate_get("/v1/tasks").status_code == 200

        server.stop()
        during = [
            client.simulate_post("/v1/tasks", body='{"command": "b"}', headers=JSON),
            client.simulate_get(before.headers["Location"]),
            client.simulate_get("/readyz"),
        ]

        server.start(data_dir, port=port)
        after = _first_success(client)
        listed = client.simulate_get("/v1/tasks")
    finally:
        db.close()

    for result in during:
        assert result.status_code == 503, result.text
        assert result.headers["Retry-After"] == "1"
        assert "Traceback" not in result.text
    assert after.status_code == 201
    assert [t["command"] for t in listed.json["tasks"]] == ["c", "a"]


def _first_success(client: falcon.testing.TestClient) -> falcon.testing.Result:
    """Submits until one succeeds: each pooled connection the outage broke fails once."""
    deadline = time.monotonic() + 30
    while True:
        result = client.simulate_post("/v1/tasks", body='{"command": "c"}', headers=JSON)
        if result.status_code != 503 or time.monotonic() > deadline:
            return result
        time.sleep(0.05)
