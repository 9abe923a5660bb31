"""The queue routes: GET /v1/queues, GET and PUT /v1/queues/{name}, POST .../pause and
.../resume; their counts against tasks in every status and the workers table, and their
400s and 404s."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from .conftest import JSON
from .test_auth import REMOTE, TOKENS, _client


def _queue(name: str, **fields: Any) -> dict[str, Any]:
    """A queue object with nothing in it and nothing set, but ``fields``."""
    return {
        "name": name,
        "scheduled": 0,
        "due": 0,
        "running": 0,
        "oldest_due_age_seconds": None,
        "workers": 0,
        "paused": False,
        "max_concurrency": None,
        **fields,
    }


def _listed(api) -> dict[str, dict[str, Any]]:
    result = api.get("/v1/queues")
    assert result.status_code == 200, result.text
    names = [queue["name"] for queue in result.json["queues"]]
    assert names == sorted(names)
    return {queue["name"]: queue for queue in result.json["queues"]}


def _fill(api) -> None:
    """Queue ``mail``: 2 due, 1 not yet due, 1 dispatched, 1 running and 2 finished; ``images``:
    one task due for an hour; ``history``: finished tasks only; ``gpu``: an active worker only;
    ``old``: a dead worker only; ``draining``: a draining worker only."""
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for _ in range(2):
        api.submit(queue="mail")
    api.submit(queue="mail", delay_seconds=3600)
    api.move(api.submit(queue="mail"), "dispatched")
    api.move(api.submit(queue="mail", command="other"), "running")
    api.move(api.submit(queue="mail"), "succeeded")
    api.move(api.submit(queue="mail"), "cancelled")
    api.submit(queue="images", scheduled_at=hour_ago)
    api.move(api.submit(queue="history"), "failed")
    api.worker(["mail", "images"], ["echo"])
    api.worker(["mail", "gpu", "mail"], ["render"])
    api.worker(["mail", "old"], ["echo"], state="dead")
    api.worker(["mail", "draining"], ["echo"], state="draining")


def test_list_counts_unfinished_tasks_and_active_workers_of_each_queue(api) -> None:
    _fill(api)

    listed = _listed(api)

    assert set(listed) == {"gpu", "images", "mail"}
    assert listed["mail"] == _queue(
        "mail",
        scheduled=3,
        due=2,
        running=2,
        oldest_due_age_seconds=listed["mail"]["oldest_due_age_seconds"],
        workers=2,
    )
    assert 0 <= listed["mail"]["oldest_due_age_seconds"] < 60
    images = listed["images"]
    assert 3600 <= images["oldest_due_age_seconds"] < 3660
    assert images == _queue(
        "images", scheduled=1, due=1, oldest_due_age_seconds=images["oldest_due_age_seconds"]
    ) | {"workers": 1}
    assert listed["gpu"] == _queue("gpu", workers=1)


def test_one_queue_is_its_row_of_the_list(api) -> None:
    _fill(api)
    listed = _listed(api)

    for name in ("mail", "images", "gpu"):
        got = api.get(f"/v1/queues/{name}").json
        age = got["oldest_due_age_seconds"]
        assert got == listed[name] | {"oldest_due_age_seconds": age}
        if age is not None:
            assert age == pytest.approx(listed[name]["oldest_due_age_seconds"], abs=5)


@pytest.mark.parametrize("name", ["nothing", "history", "old", "draining"])
def test_a_queue_nothing_live_names_is_404(api, name: str) -> None:
    _fill(api)

    result = api.get(f"/v1/queues/{name}")

    assert result.status_code == 404, result.text
    assert result.headers["Content-Type"] == "application/problem+json"
    assert result.json["type"].endswith("queue-not-found")
    assert name in result.json["detail"]


def test_an_empty_database_lists_no_queue(api) -> None:
    assert api.get("/v1/queues").json == {"queues": []}


def test_pause_and_resume_set_paused_and_answer_the_queue(api) -> None:
    api.submit(queue="mail")

    paused = api.client.simulate_post("/v1/queues/mail/pause")

    assert paused.status_code == 200, paused.text
    assert paused.json == _queue(
        "mail", scheduled=1, due=1, paused=True,
        oldest_due_age_seconds=paused.json["oldest_due_age_seconds"],
    )  # fmt: skip
    assert api.get("/v1/queues/mail").json["paused"] is True
    assert api.sql("SELECT paused FROM queues WHERE name = 'mail'") == [[True]]
    for _ in range(2):  # resuming is idempotent
        resumed = api.client.simulate_post("/v1/queues/mail/resume")
        assert resumed.status_code == 200 and resumed.json["paused"] is False
    assert api.sql("SELECT paused FROM queues WHERE name = 'mail'") == [[False]]


def test_a_queue_can_be_paused_before_anything_names_it(api) -> None:
    result = api.client.simulate_post("/v1/queues/later/pause")

    assert result.status_code == 200
    assert result.json == _queue("later", paused=True)
    assert _listed(api) == {"later": _queue("later", paused=True)}
    assert api.get("/v1/queues/later").json == _queue("later", paused=True)


def test_put_sets_and_removes_the_limit_and_keeps_paused(api) -> None:
    api.client.simulate_post("/v1/queues/mail/pause")

    limited = api.put("/v1/queues/mail", {"max_concurrency": 3})

    assert limited.status_code == 200, limited.text
    assert limited.json == _queue("mail", paused=True, max_concurrency=3)
    assert api.put("/v1/queues/mail", {"max_concurrency": 2**31 - 1}).json["max_concurrency"] == (
        2**31 - 1
    )
    removed = api.put("/v1/queues/mail", {"max_concurrency": None})
    assert removed.status_code == 200
    assert removed.json == _queue("mail", paused=True)
    assert api.sql("SELECT paused, max_concurrency FROM queues") == [[True, None]]


def test_a_limit_set_before_the_first_task_shows_with_it(api) -> None:
    api.put("/v1/queues/mail", {"max_concurrency": 1})
    api.move(api.submit(queue="mail"), "running")

    assert api.get("/v1/queues/mail").json == _queue("mail", running=1, max_concurrency=1)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["max_concurrency"]),
        ({"max_concurrency": 0}, ["max_concurrency"]),
        ({"max_concurrency": -1}, ["max_concurrency"]),
        ({"max_concurrency": 2**31}, ["max_concurrency"]),
        ({"max_concurrency": "3"}, ["max_concurrency"]),
        ({"max_concurrency": True}, ["max_concurrency"]),
        ({"max_concurrency": 1.5}, ["max_concurrency"]),
        ({"max_concurrency": [3]}, ["max_concurrency"]),
        ({"max_concurrency": 3, "paused": True}, ["paused"]),
        ({"limit": 3}, ["limit", "max_concurrency"]),
        ([{"max_concurrency": 3}], ["body"]),
        (None, ["body"]),
        (3, ["body"]),
    ],
)
def test_a_bad_limit_body_is_400_naming_the_field_and_changes_nothing(
    api, body: Any, fields: list[str]
) -> None:
    result = api.put("/v1/queues/mail", body)

    assert result.status_code == 400, result.text
    assert [error["field"] for error in result.json["errors"]] == fields
    assert api.sql("SELECT count(*) FROM queues") == [[0]]


@pytest.mark.parametrize(
    ("text", "headers", "status"),
    [
        ("", JSON, 400),
        ("{", JSON, 400),
        ('{"max_concurrency": 1e999}', JSON, 400),
        ('{"max_concurrency": 3}', {"Content-Type": "text/plain"}, 415),
        ('{"max_concurrency": 3}' + " " * 5000, JSON, 413),
    ],
)
def test_a_body_that_is_not_small_json_is_refused(
    api, text: str, headers: dict[str, str], status: int
) -> None:
    result = api.client.simulate_put("/v1/queues/mail", body=text, headers=headers)

    assert result.status_code == status, result.text
    assert api.sql("SELECT count(*) FROM queues") == [[0]]


@pytest.mark.parametrize("name", ["a b", "x" * 101, "é", "a;b", "%00"])
@pytest.mark.parametrize(
    ("method", "suffix"), [("GET", ""), ("PUT", ""), ("POST", "/pause"), ("POST", "/resume")]
)
def test_a_bad_queue_name_is_400_on_every_route(api, name: str, method: str, suffix: str) -> None:
    body = '{"max_concurrency": 1}' if method == "PUT" else None
    result = api.client.simulate_request(
        method, f"/v1/queues/{name}{suffix}", body=body, headers=JSON
    )

    assert result.status_code == 400, result.text
    assert [error["field"] for error in result.json["errors"]] == ["name"]
    assert api.sql("SELECT count(*) FROM queues") == [[0]]


def test_the_longest_queue_name_a_task_may_have_is_served(api) -> None:
    name = "q" * 100

    assert api.client.simulate_post(f"/v1/queues/{name}/pause").json["name"] == name


def test_a_token_holder_steers_queues_from_anywhere(database_url: str) -> None:
    for client in _client(database_url, TOKENS):
        auth = {"Authorization": f"Bearer {TOKENS[0]}"}
        assert client.simulate_get("/v1/queues", remote_addr=REMOTE).status_code == 401
        paused = client.simulate_post("/v1/queues/q/pause", headers=auth, remote_addr=REMOTE)
        assert paused.status_code == 200 and paused.json["paused"] is True
        listed = client.simulate_get("/v1/queues", headers=auth, remote_addr=REMOTE)
        assert [queue["name"] for queue in listed.json["queues"]] == ["q"]
