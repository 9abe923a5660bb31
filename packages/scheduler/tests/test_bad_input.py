"""Input that used to reach a 5xx: each is a 400 naming the field, and nothing is stored.

Run against the real database, so that whatever slipped past validation would be refused by
PostgreSQL (or break a later read) and show as the 500 it used to be.
"""

from __future__ import annotations

import base64
import http.client
import json
from urllib.parse import urlsplit

import pytest

from taskmill.scheduler.jsonbody import MAX_DEPTH

from .conftest import API_TOKEN

JSON = {"Content-Type": "application/json"}


def _post(api, path: str, text: str):
    return api.client.simulate_post(path, body=text, headers=JSON)


def _fields(result) -> list[str]:
    return [error["field"] for error in result.json["errors"]]


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("path", "body", "fields"),
    [
        ("/v1/tasks", '{"command": "a", "payload": {"x": 1e999}}', ["payload.x"]),
        ("/v1/tasks", '{"command": "a", "payload": [1, -1e999, 2.5e400]}',
         ["payload[1]", "payload[2]"]),
        ("/v1/tasks", '{"command": "a", "payload": {"x": NaN, "y": -Infinity}}',
         ["payload.x", "payload.y"]),
        ("/v1/tasks", '{"command": "a", "delay_seconds": 1e999}', ["delay_seconds"]),
        ("/v1/tasks", "1e999", ["body"]),
        (
            "/v1/tasks/batch",
            '{"tasks": [{"command": "a"}, {"command": "b", "payload": {"k": [0, 1E+999]}}]}',
            ["tasks[1].payload.k[1]"],
        ),
        ("/schedule", '{"command": "a", "payload": {"v": 1e999}}', ["payload.v"]),
    ],
)  # fmt: skip
def test_a_non_finite_number_is_400_naming_where_it_is(
    api, path: str, body: str, fields: list[str]
) -> None:
    result = _post(api, path, body)

    assert result.status_code == 400, result.text
    assert _fields(result) == fields
    assert "finite" in result.json["errors"][0]["message"]
    assert api.count_tasks() == 0


def test_finite_numbers_of_every_size_are_kept(api) -> None:
    payload = {"big": 1.7976931348623157e308, "tiny": 5e-324, "int": 10**300, "neg": -2.5}

    result = _post(api, "/v1/tasks", json.dumps({"command": "a", "payload": payload}))

    assert result.status_code == 201, result.text
    kept = api.get(result.headers["Location"]).json["payload"]
    # jsonb keeps numbers as decimals: 1.7976931348623157e308 comes back as an integer.
    assert {k: float(v) for k, v in kept.items()} == {k: float(v) for k, v in payload.items()}


@pytest.mark.parametrize(
    "at",
    [
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC: Python cannot even convert it
        "9999-12-31T23:00:00-05:00",  # after year 9999 in UTC
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999999Z",
        "9999-12-31T00:00:00Z",
        "1970-01-01T01:00:00+01:00:01",  # not RFC 3339 at all
    ],
)
@pytest.mark.parametrize("path", ["/v1/tasks", "/v1/tasks/batch", "/schedule"])
def test_scheduled_at_outside_1970_to_9999_is_400(api, path: str, at: str) -> None:
    task = {"command": "a", "scheduled_at": at}
    body = {"tasks": [task]} if path.endswith("batch") else task

    result = api.post(path, body)

    assert result.status_code == 400, result.text
    expected = "tasks[0].scheduled_at" if path.endswith("batch") else "scheduled_at"
    assert _fields(result) == [expected]
    assert api.count_tasks() == 0


@pytest.mark.parametrize("unix", [-1, 253402214400, "253402214399.9999999", 1e300, "1e999"])
def test_legacy_unix_seconds_outside_the_range_are_400(api, unix: float) -> None:
    result = api.post("/schedule", {"command": "a", "scheduled_at": unix})

    assert result.status_code == 400, result.text
    assert _fields(result) == ["scheduled_at"]


@pytest.mark.parametrize(
    ("at", "shown"),
    [
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000000Z"),
        ("1970-01-01T01:00:00+01:00", "1970-01-01T00:00:00.000000Z"),
        ("9999-12-30T23:59:59.999999Z", "9999-12-30T23:59:59.999999Z"),
    ],
)
def test_the_ends_of_the_range_are_kept_and_read_back(api, at: str, shown: str) -> None:
    task = api.submit(scheduled_at=at)

    assert task["scheduled_at"] == shown
    assert api.get(f"/v1/tasks/{task['id']}").json["scheduled_at"] == shown
    assert api.get(f"/status/{task['id']}").json["scheduled_at"] == shown


def _cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


@pytest.mark.parametrize("seq", [2**63, 10**19 - 1])
def test_a_cursor_beyond_bigint_is_400_naming_the_cursor(api, seq: int) -> None:
    result = api.get("/v1/tasks", params={"cursor": _cursor(seq)})

    assert result.status_code == 400, result.text
    assert _fields(result) == ["cursor"]


def test_the_largest_bigint_cursor_lists_everything(api) -> None:
    task = api.submit()

    result = api.get("/v1/tasks", params={"cursor": _cursor(2**63 - 1)})

    assert result.status_code == 200, result.text
    assert [t["id"] for t in result.json["tasks"]] == [task["id"]]


@pytest.mark.parametrize(
    ("path", "template", "field"),
    [
        ("/v1/tasks", '{"command": "a", "payload": %s}', "payload"),
        ("/v1/tasks/batch", '{"tasks": [{"command": "a"}, {"command": "b", "payload": %s}]}',
         "tasks[1].payload"),
        ("/schedule", '{"command": "a", "payload": %s}', "payload"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900])
def test_a_payload_nested_too_deep_is_400(
    api, path: str, template: str, field: str, depth: int
) -> None:
    result = _post(api, path, template % _nested(depth))

    assert result.status_code == 400, result.text
    assert _fields(result) == [field]
    assert f"more than {MAX_DEPTH} levels" in result.json["errors"][0]["message"]
    assert api.count_tasks() == 0


def test_a_payload_at_the_depth_limit_is_kept_and_read_back(api) -> None:
    payload = json.loads(_nested(MAX_DEPTH))

    result = _post(api, "/v1/tasks", json.dumps({"command": "a", "payload": payload}))

    assert result.status_code == 201, result.text
    assert api.get(result.headers["Location"]).json["payload"] == payload
    assert api.get("/v1/tasks").json["tasks"][0]["payload"] == payload


def _request(base_url: str, method: str, path: str, body: str | None = None) -> int:
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=60)
    try:
        headers = {**JSON, "Authorization": f"Bearer {API_TOKEN}"}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_no_payload_depth_reaches_a_5xx_on_the_real_server(served: str) -> None:
    # Up to where the body cannot be parsed at all: just below it, a payload used to be stored
    # and then break every read of it, or break the submit itself.
    depths = [MAX_DEPTH + 1, 500, 900, *range(940, 1001, 5)]
    statuses = {}
    for depth in depths:
        body = '{"command": "a", "payload": ' + _nested(depth) + "}"
        statuses[depth] = _request(served, "POST", "/v1/tasks", body)

    assert statuses == dict.fromkeys(depths, 400)
    assert _request(served, "GET", "/v1/tasks") == 200


def test_a_body_too_deep_to_parse_is_400(offline_api) -> None:
    body = '{"command": "a", "payload": ' + _nested(5000) + "}"

    result = _post(offline_api, "/v1/tasks", body)

    assert result.status_code == 400
    assert _fields(result) == ["body"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"priority": 2**63}, "priority"),
        ({"priority": -(10**40)}, "priority"),
        ({"max_attempts": 2**31}, "max_attempts"),
        ({"timeout_seconds": 1e308}, "timeout_seconds"),
        ({"timeout_seconds": 10**40}, "timeout_seconds"),
        ({"delay_seconds": 1e308}, "delay_seconds"),
        ({"delay_seconds": 10**40}, "delay_seconds"),
        ({"queue": "q\u0000"}, "queue"),
        ({"command": "a\u0000"}, "command"),
        ({"payload": {"\ud800": 1}}, "payload"),
    ],
)
def test_numbers_beyond_the_columns_and_unstorable_text_are_400(
    api, fields: dict[str, object], field: str
) -> None:
    result = api.post("/v1/tasks", {"command": "a", **fields})

    assert result.status_code == 400, result.text
    assert _fields(result) == [field]
    assert api.count_tasks() == 0
