"""Bearer tokens on every route but /healthz; loopback clients only when no token is set."""

from __future__ import annotations

from collections.abc import Iterator

import falcon.testing
import pytest

from taskmill.common.db import Database
from taskmill.common.settings import DatabaseSettings
from taskmill.scheduler import SchedulerSettings, create_app

TOKENS = ("first-token", "second-token")
REMOTE = "203.0.113.7"


def _client(database_url: str, tokens: tuple[str, ...]) -> Iterator[falcon.testing.TestClient]:
    database = DatabaseSettings.from_url(database_url)
    db = Database(database, connect_timeout=1)
    yield falcon.testing.TestClient(create_app(SchedulerSettings(database, api_tokens=tokens), db))
    db.close()


@pytest.fixture
def secured() -> Iterator[falcon.testing.TestClient]:
    """An app with tokens configured and no database (these requests never need one)."""
    yield from _client("postgresql://postgres@127.0.0.1:9/none", TOKENS)


@pytest.fixture
def open_to_loopback() -> Iterator[falcon.testing.TestClient]:
    """An app without tokens and no database."""
    yield from _client("postgresql://postgres@127.0.0.1:9/none", ())


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer wrong", "Basic Zmlyc3QtdG9rZW4=", "first-token",
     "Bearer first-token-and-more", "Bearer first"],
)  # fmt: skip
def test_a_missing_or_wrong_token_is_401(secured, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    result = secured.simulate_get("/openapi.json", headers=headers, remote_addr=REMOTE)

    assert result.status_code == 401
    assert result.headers["WWW-Authenticate"].startswith("Bearer")
    assert result.headers["Content-Type"] == "application/problem+json"
    assert "Bearer" in result.json["detail"]


@pytest.mark.parametrize("token", TOKENS)
def test_every_configured_token_is_accepted(secured, token: str) -> None:
    for scheme in ("Bearer", "bearer"):
        headers = {"Authorization": f"{scheme} {token}"}
        result = secured.simulate_get("/openapi.json", headers=headers, remote_addr=REMOTE)
        assert result.status_code == 200


def test_with_tokens_loopback_clients_need_one_too(secured) -> None:
    assert secured.simulate_get("/openapi.json", remote_addr="127.0.0.1").status_code == 401


def test_every_route_is_checked_before_anything_else(secured) -> None:
    # Bad bodies, unknown routes and wrong methods all get 401 first: nothing leaks.
    requests = [("POST", "/v1/tasks"), ("GET", "/v1/tasks/x"), ("GET", "/nowhere"),
                ("DELETE", "/v1/workers"), ("POST", "/schedule"),
                ("GET", "/v1/workers"), ("GET", "/v1/queues"), ("PUT", "/v1/queues/q"),
                ("POST", "/v1/queues/q/pause")]  # fmt: skip
    for method, path in requests:
        result = secured.simulate_request(method, path, remote_addr=REMOTE)
        assert result.status_code == 401, (method, path)


def test_healthz_needs_no_token(secured) -> None:
    assert secured.simulate_get("/healthz", remote_addr=REMOTE).status_code == 200


def test_readyz_needs_no_token(secured) -> None:
    # Kubernetes and compose probes send no Authorization header. This app has no database,
    # so getting past auth means an honest "not ready".
    assert secured.simulate_get("/readyz", remote_addr=REMOTE).status_code == 503


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_without_tokens_loopback_clients_are_served(open_to_loopback, address: str) -> None:
    assert open_to_loopback.simulate_get("/openapi.json", remote_addr=address).status_code == 200


@pytest.mark.parametrize("address", [REMOTE, "10.0.0.5", "::ffff:10.0.0.5", "fe80::1", "bogus"])
def test_without_tokens_other_clients_are_refused_naming_the_variable(
    open_to_loopback, address: str
) -> None:
    result = open_to_loopback.simulate_get("/openapi.json", remote_addr=address)

    assert result.status_code == 401
    assert "TASKMILL_API_TOKENS" in result.json["detail"]
    assert open_to_loopback.simulate_get("/healthz", remote_addr=address).status_code == 200


def test_a_token_holder_can_submit_and_read_from_anywhere(database_url: str) -> None:
    for client in _client(database_url, TOKENS):
        headers = {"Authorization": "Bearer second-token", "Content-Type": "application/json"}
        created = client.simulate_post(
            "/v1/tasks", body='{"command": "echo"}', headers=headers, remote_addr=REMOTE
        )
        assert created.status_code == 201
        location = created.headers["Location"]
        got = client.simulate_get(location, headers=headers, remote_addr=REMOTE).json
        assert got.pop("waiting")["reason"] == "no_worker"
        assert got == created.json
