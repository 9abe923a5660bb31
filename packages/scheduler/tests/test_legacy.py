"""The seed-compatible routes: POST /schedule, GET /status?task_id= and GET /status/{id}."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from taskmill.common.models import TaskStatus
from taskmill.testing import Reported, claim


def _schedule(api, body: object, content_type: str | None = "application/json"):
    headers = {} if content_type is None else {"Content-Type": content_type}
    return api.client.simulate_post("/schedule", body=json.dumps(body), headers=headers)


@pytest.mark.parametrize(
    ("given", "unix"),
    [
        (1893456000, 1893456000),
        (1893456000.25, 1893456000.25),
        ("1893456000", 1893456000),
        ("2030-01-01T00:00:00Z", 1893456000),
        ("2030-01-01T02:00:00+02:00", 1893456000),
        ("2030-01-01T00:00:00", 1893456000),  # no offset: the seed read it as UTC
        ("2030-01-01 00:00:00.5", 1893456000.5),
    ],
)
def test_schedule_accepts_what_seed_callers_send(api, given: object, unix: float) -> None:
    result = _schedule(api, {"command": "report", "scheduled_at": given})

    assert result.status_code == 200, result.text
    body = result.json
    assert body == {"command": "report", "scheduled_at": unix, "task_id": body["task_id"]}
    assert type(body["scheduled_at"]) is type(unix)
    task = api.get(f"/v1/tasks/{body['task_id']}").json
    assert datetime.fromisoformat(task["scheduled_at"]).timestamp() == unix


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_schedule_reads_json_whatever_the_content_type(api, content_type: str | None) -> None:
    result = _schedule(api, {"command": "report", "scheduled_at": 1893456000}, content_type)

    assert result.status_code == 200


def test_schedule_without_a_time_runs_now_and_ignores_unknown_fields(api) -> None:
    before = datetime.now(UTC).timestamp() - 5

    result = _schedule(api, {"command": "report", "owner": "legacy-app"})

    assert result.status_code == 200
    assert before < result.json["scheduled_at"] < before + 60


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scheduled_at": 1893456000}, "command"),
        ({"command": "a b"}, "command"),
        ({"command": "a", "scheduled_at": "next week"}, "scheduled_at"),
        ({"command": "a", "scheduled_at": -1}, "scheduled_at"),
        ({"command": "a", "scheduled_at": 1e300}, "scheduled_at"),
        ({"command": "a", "scheduled_at": True}, "scheduled_at"),
        (["a"], "body"),
    ],
)
def test_schedule_refuses_what_cannot_be_a_task(offline_api, body: object, field: str) -> None:
    result = _schedule(offline_api, body)

    assert result.status_code == 400
    assert [e["field"] for e in result.json["errors"]] == [field]
    assert offline_api.count_tasks() == 0


def test_status_of_a_new_task_has_only_the_times_that_are_set(api) -> None:
    task_id = _schedule(api, {"command": "report", "scheduled_at": 1893456000}).json["task_id"]

    for path, params in ((f"/status/{task_id}", None), ("/status", {"task_id": task_id})):
        result = api.get(path, params=params)
        assert result.status_code == 200
        assert result.json == {
            "task_id": task_id,
            "command": "report",
            "scheduled_at": "2030-01-01T00:00:00.000000Z",
            "status": "scheduled",
        }


@pytest.mark.parametrize(
    ("final", "time_field"),
    [(TaskStatus.SUCCEEDED, "completed_at"), (TaskStatus.FAILED, "failed_at")],
)
def test_status_of_a_finished_task_names_its_times(
    api, store, final: TaskStatus, time_field: str
) -> None:
    task_id = _schedule(api, {"command": "report"}).json["task_id"]
    (claimed,) = claim(store, ["w-1"], lease_seconds=60)
    now = datetime.now(UTC)
    store.apply(
        [
            Reported(claimed.id, 1, TaskStatus.RUNNING, now),
            Reported(claimed.id, 1, final, now, retryable=False),
        ]
    )

    body = api.get("/status", params={"task_id": task_id}).json

    assert body["status"] == final.value
    assert set(body) == {"task_id", "command", "scheduled_at", "status", "picked_at",
                         "started_at", time_field}  # fmt: skip


def test_status_of_an_unknown_or_malformed_id_is_404(api) -> None:
    assert api.get(f"/status/{uuid.uuid4()}").status_code == 404
    assert api.get("/status", params={"task_id": str(uuid.uuid4())}).status_code == 404
    assert api.get("/status/not-an-id").status_code == 404
    assert api.get("/status", params={"task_id": "not-an-id"}).status_code == 404


def test_status_without_a_task_id_is_400(offline_api) -> None:
    result = offline_api.get("/status")

    assert result.status_code == 400
    assert result.json["errors"][0]["field"] == "task_id"


def test_status_does_not_redirect(api) -> None:
    task_id = _schedule(api, {"command": "report"}).json["task_id"]

    result = api.get("/status", params={"task_id": task_id})

    assert result.status_code == 200 and "Location" not in result.headers
