"""POST /v1/tasks: what a stored task looks like, and every way a submit is refused."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_submit_stores_the_task_and_returns_it_with_its_location(api) -> None:
    result = api.post(
        "/v1/tasks",
        {
            "command": "resize_image",
            "payload": {"path": "/tmp/a.png", "sizes": [1, 2]},
            "priority": 5,
            "max_attempts": 3,
            "timeout_seconds": 30,
            "queue": "images",
            "scheduled_at": "2030-01-01T02:00:00+02:00",
        },
    )

    assert result.status_code == 201, result.text
    task = result.json
    assert result.headers["Location"] == f"/v1/tasks/{task['id']}"
    assert task["command"] == "resize_image"
    assert task["payload"] == {"path": "/tmp/a.png", "sizes": [1, 2]}
    assert (task["priority"], task["max_attempts"], task["timeout_seconds"]) == (5, 3, 30)
    assert (task["queue"], task["status"], task["attempt"]) == ("images", "scheduled", 0)
    # Input carries an offset; output is UTC.
    assert task["scheduled_at"] == "2030-01-01T00:00:00.000000Z"
    for name in ("dispatched_at", "started_at", "finished_at", "worker_id", "result", "error"):
        assert task[name] is None
    assert task["cancel_requested"] is False
    # What GET returns is what POST returned, and that a task not yet due waits for nothing.
    assert api.get(result.headers["Location"]).json == task | {"waiting": None}


def test_defaults_are_an_empty_payload_now_priority_0_one_attempt_default_queue(api) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)

    task = api.submit()

    assert task["payload"] == {}
    assert (task["priority"], task["max_attempts"], task["queue"]) == (0, 1, "default")
    assert task["timeout_seconds"] is None
    # Every task gets a trace, even with tracing off and no traceparent from the caller.
    assert re.fullmatch("[0-9a-f]{32}", task["trace_id"])
    scheduled = datetime.fromisoformat(task["scheduled_at"])
    assert before < scheduled < datetime.now(UTC) + timedelta(seconds=5)
    assert task["scheduled_at"] == task["created_at"]


def test_delay_seconds_schedules_relative_to_the_database_clock(api) -> None:
    task = api.submit(delay_seconds=3600)

    created = datetime.fromisoformat(task["created_at"])
    scheduled = datetime.fromisoformat(task["scheduled_at"])
    assert scheduled - created == timedelta(hours=1)


@pytest.mark.parametrize("payload", [None, 0, "text", [1, "two", {"three": 3}], {"ü": "ünï"}])
def test_any_json_payload_is_kept(api, payload: object) -> None:
    task = api.submit(payload=payload)

    assert task["payload"] == payload
    assert api.get(f"/v1/tasks/{task['id']}").json["payload"] == payload


def test_a_valid_traceparent_is_stored_and_gives_the_trace_id(api, store) -> None:
    result = api.post("/v1/tasks", {"command": "echo"}, headers={"traceparent": TRACEPARENT})

    assert result.json["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    # Stored: a span of this request in the caller's trace (nothing is exported here).
    stored = store.get(uuid.UUID(result.json["id"])).trace_context
    assert stored.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert stored != TRACEPARENT


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    ],
)
def test_an_invalid_traceparent_is_ignored(api, header: str) -> None:
    result = api.post("/v1/tasks", {"command": "echo"}, headers={"traceparent": header})

    assert result.status_code == 201
    # A new trace instead of the malformed one.
    assert re.fullmatch("[0-9a-f]{32}", result.json["trace_id"])
    assert result.json["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736"


def test_every_problem_is_listed_and_nothing_is_stored(api) -> None:
    result = api.post(
        "/v1/tasks",
        {
            "payload": {},
            "scheduled_at": "2030-01-01T00:00:00",
            "delay_seconds": 10,
            "priority": "high",
            "max_attempts": 101,
            "timeout_seconds": -1,
            "queue": "",
            "colour": "blue",
        },
    )

    assert result.status_code == 400
    assert result.headers["Content-Type"] == "application/problem+json"
    problem = result.json
    assert problem["status"] == 400 and problem["title"] == "Bad Request"
    fields: dict[str, list[str]] = {}
    for error in problem["errors"]:
        fields.setdefault(error["field"], []).append(error["message"])
    assert fields.keys() == {
        "command",
        "scheduled_at",
        "priority",
        "max_attempts",
        "timeout_seconds",
        "queue",
        "colour",
    }
    assert fields["command"] == ["required"]
    assert any("not both" in message for message in fields["scheduled_at"])
    assert any("offset" in message for message in fields["scheduled_at"])
    assert fields["colour"] == ["unknown field"]
    assert api.count_tasks() == 0


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"command": "has space"}, "command", "letters, digits"),
        ({"command": "x" * 201}, "command", "1 to 200"),
        ({"command": 7}, "command", "must be a string"),
        ({"command": "a", "scheduled_at": "2030-01-01T00:00:00"}, "scheduled_at", "offset"),
        ({"command": "a", "scheduled_at": "tomorrow"}, "scheduled_at", "RFC 3339"),
        ({"command": "a", "scheduled_at": 1893456000}, "scheduled_at", "RFC 3339"),
        ({"command": "a", "scheduled_at": "2030-02-30T00:00:00Z"}, "scheduled_at", "valid"),
        ({"command": "a", "delay_seconds": -1}, "delay_seconds", "at least 0"),
        ({"command": "a", "delay_seconds": "5"}, "delay_seconds", "number"),
        ({"command": "a", "priority": 2**31}, "priority", "between"),
        ({"command": "a", "priority": 1.5}, "priority", "integer"),
        ({"command": "a", "priority": True}, "priority", "integer"),
        ({"command": "a", "max_attempts": 0}, "max_attempts", "between 1 and 100"),
        ({"command": "a", "timeout_seconds": 0}, "timeout_seconds", "above 0"),
        ({"command": "a", "queue": "a/b"}, "queue", "letters, digits"),
        ({"command": "a", "payload": {"text": "nul\u0000"}}, "payload", "NUL"),
        ({"command": "a", "payload": {"k\u0000": 1}}, "payload", "NUL"),
    ],
)
def test_each_bad_field_is_named(
    offline_api, fields: dict[str, object], field: str, message: str
) -> None:
    result = offline_api.post("/v1/tasks", fields)

    assert result.status_code == 400, result.text
    assert [error["field"] for error in result.json["errors"]] == [field]
    assert message in result.json["errors"][0]["message"]
    assert offline_api.count_tasks() == 0


def test_a_literal_backslash_u0000_in_text_is_not_a_nul(api) -> None:
    task = api.submit(payload={"text": "\\u0000"})

    assert task["payload"] == {"text": "\\u0000"}


@pytest.mark.parametrize(
    "body",
    [b"{", b"not json", b'{"command": "a",}', b"\xff\xfe", b"", b"   "],
)
def test_a_body_that_is_not_json_is_400(offline_api, body: bytes) -> None:
    result = offline_api.client.simulate_post(
        "/v1/tasks", body=body, headers={"Content-Type": "application/json"}
    )

    assert result.status_code == 400
    assert result.json["errors"][0]["field"] == "body"
    assert offline_api.count_tasks() == 0


@pytest.mark.parametrize("body", [[], "echo", 1, None])
def test_a_body_that_is_not_an_object_is_400(offline_api, body: object) -> None:
    result = offline_api.post("/v1/tasks", body)

    assert result.status_code == 400
    assert result.json["errors"] == [{"field": "body", "message": "must be a JSON object"}]


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_non_json_content_type_is_415(offline_api, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    result = offline_api.client.simulate_post(
        "/v1/tasks", body=b'{"command": "a"}', headers=headers
    )

    assert result.status_code == 415
    assert "application/json" in result.json["detail"]
    assert offline_api.count_tasks() == 0


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "APPLICATION/JSON", "application/x+json"]
)
def test_json_content_types_with_parameters_or_suffixes_are_accepted(
    api, content_type: str
) -> None:
    result = api.client.simulate_post(
        "/v1/tasks", body=b'{"command": "a"}', headers={"Content-Type": content_type}
    )

    assert result.status_code == 201


def test_a_payload_over_the_limit_is_413_and_names_the_payload(api, settings) -> None:
    # The fixture's limit is 1024 bytes of JSON.
    result = api.post("/v1/tasks", {"command": "a", "payload": "x" * 1100})

    assert result.status_code == 413
    assert result.json["errors"][0]["field"] == "payload"
    assert str(settings.max_payload_bytes) in result.json["errors"][0]["message"]
    assert api.count_tasks() == 0


def test_a_payload_just_under_the_limit_is_accepted(api) -> None:
    task = api.submit(payload="x" * 1022)  # 1024 bytes with its quotes

    assert len(task["payload"]) == 1022


def test_a_body_over_the_limit_is_413_before_it_is_parsed(offline_api) -> None:
    limit = 1024 + 64 * 1024  # the fixture's payload limit and room for the other fields
    body = b"[" + b" " * limit + b"]"

    result = offline_api.client.simulate_post(
        "/v1/tasks", body=body, headers={"Content-Type": "application/json"}
    )

    assert result.status_code == 413
    assert str(limit) in result.json["detail"]


def test_size_and_other_problems_together_are_400(api) -> None:
    result = api.post("/v1/tasks", {"payload": "x" * 1100})

    assert result.status_code == 400
    assert {error["field"] for error in result.json["errors"]} == {"command", "payload"}
