"""POST /v1/tasks/batch: all or none, in order, every bad task named by its index."""

from __future__ import annotations

import os
import re
import uuid

import pytest

from taskmill.scheduler import service


def test_a_batch_is_stored_in_order(api) -> None:
    tasks = [{"command": f"job_{i}", "payload": {"i": i}, "priority": i % 3} for i in range(25)]

    result = api.post("/v1/tasks/batch", {"tasks": tasks})

    assert result.status_code == 201, result.text
    stored = result.json["tasks"]
    assert [t["command"] for t in stored] == [f"job_{i}" for i in range(25)]
    assert [t["payload"] for t in stored] == [{"i": i} for i in range(25)]
    assert len({t["id"] for t in stored}) == 25
    assert api.count_tasks() == 25
    got = api.get(f"/v1/tasks/{stored[7]['id']}").json
    assert got.pop("waiting")["reason"] == "no_worker"
    assert got == stored[7]


def test_a_batch_of_1000_is_accepted(api) -> None:
    result = api.post("/v1/tasks/batch", {"tasks": [{"command": "echo"}] * 1000})

    assert result.status_code == 201
    assert len(result.json["tasks"]) == 1000
    assert api.count_tasks() == 1000


def test_one_bad_task_names_its_index_and_nothing_is_stored(offline_api) -> None:
    tasks = [{"command": "echo"}] * 20
    tasks[10] = {"command": "no spaces allowed"}
    tasks[15] = {"command": "echo", "max_attempts": 0, "extra": 1}

    result = offline_api.post("/v1/tasks/batch", {"tasks": tasks})

    assert result.status_code == 400
    assert [e["field"] for e in result.json["errors"]] == [
        "tasks[10].command",
        "tasks[15].extra",
        "tasks[15].max_attempts",
    ]
    assert offline_api.count_tasks() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tasks": []}, "tasks"),
        ({"tasks": [{"command": "a"}] * 1001}, "tasks"),
        ({"tasks": {"command": "a"}}, "tasks"),
        ({}, "tasks"),
        ([{"command": "a"}], "body"),
        ({"tasks": ["echo"]}, "tasks[0]"),
        ({"tasks": [{"command": "a"}], "atomic": True}, "atomic"),
    ],
)
def test_a_malformed_batch_is_400(offline_api, body: object, field: str) -> None:
    result = offline_api.post("/v1/tasks/batch", body)

    assert result.status_code == 400
    assert field in [e["field"] for e in result.json["errors"]]
    assert offline_api.count_tasks() == 0


def test_a_batch_body_over_its_limit_is_413(offline_api) -> None:
    # The fixture's batch limit is 256 KiB.
    body = {"tasks": [{"command": "echo", "payload": "x" * 1000}] * 300}

    result = offline_api.post("/v1/tasks/batch", body)

    assert result.status_code == 413
    assert offline_api.count_tasks() == 0


def test_a_batch_with_an_oversized_payload_is_413_naming_the_task(offline_api) -> None:
    body = {"tasks": [{"command": "echo"}, {"command": "echo", "payload": "x" * 2000}]}

    result = offline_api.post("/v1/tasks/batch", body)

    assert result.status_code == 413
    assert [e["field"] for e in result.json["errors"]] == ["tasks[1].payload"]


def test_a_batch_needs_a_json_content_type(offline_api) -> None:
    result = offline_api.client.simulate_post(
        "/v1/tasks/batch", body=b'{"tasks": [{"command": "a"}]}', headers={}
    )

    assert result.status_code == 415


def test_problems_are_listed_in_task_order_with_payload_problems_among_them(offline_api) -> None:
    tasks = [
        {"command": "a", "payload": "x" * 2000},
        {"command": "bad command"},
        {"command": "b", "payload": {"nul": "\u0000"}, "priority": "high"},
    ]

    result = offline_api.post("/v1/tasks/batch", {"tasks": tasks})

    assert result.status_code == 400
    assert [e["field"] for e in result.json["errors"]] == [
        "tasks[0].payload",
        "tasks[1].command",
        "tasks[2].priority",
        "tasks[2].payload",
    ]


def test_the_batch_response_is_byte_for_byte_what_get_returns(api) -> None:
    # The batch route writes new tasks out without reading them back: it must still say
    # exactly what a read of each stored task says.
    tasks = [
        {"command": "a"},
        {"command": "b.c:d-e_f", "payload": None, "queue": "q-1", "priority": -7},
        {"command": "c", "payload": {"ü": ["ünï", 1.5, True, None]}, "max_attempts": 5},
        {"command": "d", "payload": 'x\ny"z\\', "timeout_seconds": 30, "delay_seconds": 90},
        {"command": "e", "payload": [1e-05, 2**40], "timeout_seconds": 0.25},
        {"command": "f", "scheduled_at": "2030-06-01T12:00:00.5+02:00", "priority": 2**31 - 1},
        {"command": "g", "payload": "\U0001f600", "delay_seconds": 0.000001},
    ]

    result = api.post("/v1/tasks/batch", {"tasks": tasks})

    assert result.status_code == 201, result.text
    reads = [api.get(f"/v1/tasks/{task['id']}").text for task in result.json["tasks"]]
    # A read of one task ends with why it waits, which no other answer tells.
    unexplained = [re.sub(r', "waiting": (null|\{.*\})\}$', "}", read) for read in reads]
    assert all(len(read) < len(original) for read, original in zip(unexplained, reads, strict=True))
    assert result.text == '{"tasks": [' + ", ".join(unexplained) + "]}"


def test_task_ids_are_version_4_uuids_made_from_the_random_bytes(monkeypatch) -> None:
    # Every value of the bytes that hold the version and the variant, and random ones.
    given = b"".join(bytes([i]) * 16 for i in range(256)) + os.urandom(16 * 100)
    monkeypatch.setattr(service, "random_bytes", lambda count: given[:count])

    ids = service._new_ids(356)

    expected = [
        str(uuid.UUID(bytes=given[i : i + 16], version=4)) for i in range(0, len(given), 16)
    ]
    assert ids == expected
