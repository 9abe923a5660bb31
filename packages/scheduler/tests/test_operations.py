"""The fleet, health and readiness, and the errors no route chooses: 404, 405, 500, 503."""

from __future__ import annotations

from collections.abc import Sequence

import falcon.testing
import pytest

from taskmill.common.db import Database
from taskmill.common.dberrors import QueryError
from taskmill.common.models import WorkerState
from taskmill.common.settings import DatabaseSettings
from taskmill.common.store import Decided, SubmitRow, WorkerStore
from taskmill.scheduler import VERSION, SchedulerSettings, create_app
from taskmill.testing import set_worker_state


def test_workers_lists_the_live_fleet(api, db) -> None:
    workers = WorkerStore(db)
    first = workers.register(
        address="10.0.0.1:9000", capacity=4, coordinator_id="c-1", hostname="h1", version="1.2"
    )
    second = workers.register(address="10.0.0.2:9000", capacity=2, coordinator_id="c-1")
    workers.heartbeat(second.id, free_slots=1)
    gone = workers.register(address="10.0.0.3:9000", capacity=1, coordinator_id="c-1")
    set_worker_state(db, gone.id, WorkerState.DEAD)

    listed = api.get("/v1/workers").json["workers"]

    assert [w["id"] for w in listed] == [first.id, second.id]
    assert listed[0]["address"] == "10.0.0.1:9000"
    assert (listed[0]["hostname"], listed[0]["version"], listed[0]["state"]) == (
        "h1",
        "1.2",
        "active",
    )
    assert (listed[1]["capacity"], listed[1]["free_slots"]) == (2, 1)
    assert listed[1]["last_heartbeat_at"].endswith("Z")


def test_workers_is_empty_without_a_fleet(api) -> None:
    assert api.get("/v1/workers").json == {"workers": []}


def test_healthz_says_alive_and_the_version(offline_api) -> None:
    # No database behind this app: liveness does not depend on it.
    result = offline_api.get("/healthz")

    assert result.status_code == 200
    assert result.json == {"status": "ok", "version": VERSION}


def test_readyz_is_200_with_a_current_schema(api) -> None:
    result = api.get("/readyz")

    assert result.status_code == 200
    assert result.json["status"] == "ready"


def test_readyz_is_503_without_the_schema(empty_database_url: str) -> None:
    database = DatabaseSettings.from_url(empty_database_url)
    db = Database(database)
    try:
        client = falcon.testing.TestClient(create_app(SchedulerSettings(database), db))
        result = client.simulate_get("/readyz")
    finally:
        db.close()

    assert result.status_code == 503
    assert "taskmill-migrate" in result.json["detail"]
    assert result.headers["Retry-After"] == "1"


def test_readyz_is_503_without_a_database(offline_api) -> None:
    result = offline_api.get("/readyz")

    assert result.status_code == 503
    assert result.headers["Retry-After"] == "1"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/tasks", {"GET", "POST"}),
        ("PUT", "/v1/tasks/batch", {"POST"}),
        ("GET", "/v1/tasks/batch", {"POST"}),
        ("DELETE", "/v1/tasks/7c1e4b2a-9a57-4a55-9a8c-55d5d1d0e0a1", {"GET"}),
        ("GET", "/v1/tasks/7c1e4b2a-9a57-4a55-9a8c-55d5d1d0e0a1/cancel", {"POST"}),
        ("POST", "/healthz", {"GET"}),
        ("GET", "/schedule", {"POST"}),
    ],
)
def test_a_wrong_method_is_405_with_allow(
    offline_api, method: str, path: str, allow: set[str]
) -> None:
    result = offline_api.client.simulate_request(method, path)

    assert result.status_code == 405
    assert {m.strip() for m in result.headers["Allow"].split(",")} - {"OPTIONS"} == allow
    assert result.headers["Content-Type"] == "application/problem+json"
    assert method in result.json["detail"]


@pytest.mark.parametrize("path", ["/", "/v2/tasks", "/v1/task", "/v1/tasks/x/y/z"])
def test_an_unknown_route_is_404_problem(offline_api, path: str) -> None:
    result = offline_api.get(path)

    assert result.status_code == 404
    assert result.headers["Content-Type"] == "application/problem+json"
    assert result.json["type"].endswith("route-not-found")


def test_an_unexpected_failure_is_500_without_a_stack_trace(db, settings, caplog) -> None:
    def broken(tasks: Sequence[SubmitRow]) -> list[Decided | None]:
        raise RuntimeError("secret internals at /srv/app.py line 12")

    client = falcon.testing.TestClient(create_app(settings, db, submit=broken))

    result = client.simulate_post(
        "/v1/tasks", body='{"command": "echo"}', headers={"Content-Type": "application/json"}
    )

    assert result.status_code == 500
    assert result.headers["Content-Type"] == "application/problem+json"
    assert "secret" not in result.text and "Traceback" not in result.text
    assert "RuntimeError: secret internals" in caplog.text  # the operator still learns why


def test_an_unreachable_database_is_503_with_retry_after(offline_api) -> None:
    for result in (
        offline_api.get("/v1/tasks"),
        offline_api.get("/v1/tasks/7c1e4b2a-9a57-4a55-9a8c-55d5d1d0e0a1"),
        offline_api.get("/v1/workers"),
    ):
        assert result.status_code == 503
        assert result.headers["Retry-After"] == "1"
        assert result.json["type"].endswith("database-unavailable")
        assert "Traceback" not in result.text


def test_a_database_error_is_500_without_the_database_message(db, settings, caplog) -> None:
    def refused(tasks: Sequence[SubmitRow]) -> list[Decided | None]:
        raise QueryError('duplicate key value violates unique constraint "tasks_pkey"', "23505")

    client = falcon.testing.TestClient(create_app(settings, db, submit=refused))

    result = client.simulate_post(
        "/v1/tasks", body='{"command": "echo"}', headers={"Content-Type": "application/json"}
    )

    assert result.status_code == 500
    assert "tasks_pkey" not in result.text
    assert "tasks_pkey" in caplog.text
