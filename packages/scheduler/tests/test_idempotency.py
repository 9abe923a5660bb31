"""Idempotency-Key: a retried submit returns the original; a reused key with another body is 409."""

from __future__ import annotations

import threading

import pytest


def _submit(api, body: object, key: str, path: str = "/v1/tasks"):
    return api.post(path, body, headers={"Idempotency-Key": key})


def test_the_same_key_and_body_return_the_original_with_200(api) -> None:
    first = _submit(api, {"command": "charge", "payload": {"cents": 500}}, "order-42")
    again = _submit(api, {"command": "charge", "payload": {"cents": 500}}, "order-42")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json == first.json
    assert again.headers["Location"] == first.headers["Location"]
    assert api.count_tasks() == 1


def test_equivalent_bodies_count_as_the_same_request(api) -> None:
    # Defaults spelled out, keys reordered, the same instant in another offset.
    first = _submit(api, {"command": "a", "scheduled_at": "2030-01-01T00:00:00Z"}, "k")
    again = _submit(
        api,
        {
            "scheduled_at": "2030-01-01T01:00:00+01:00",
            "priority": 0,
            "queue": "default",
            "payload": {},
            "command": "a",
        },
        "k",
    )

    assert again.status_code == 200
    assert again.json["id"] == first.json["id"]


def test_the_same_key_with_another_body_is_409_and_stores_nothing(api) -> None:
    first = _submit(api, {"command": "charge", "payload": {"cents": 500}}, "order-42")
    other = _submit(api, {"command": "charge", "payload": {"cents": 999}}, "order-42")

    assert first.status_code == 201
    assert other.status_code == 409
    assert "Idempotency-Key" in other.json["detail"]
    assert other.json["type"].endswith("idempotency-key-reused")
    assert api.count_tasks() == 1


def test_without_a_key_every_submit_is_a_new_task(api) -> None:
    ids = {api.submit()["id"] for _ in range(3)}

    assert len(ids) == 3


def test_identical_submits_racing_store_one_task(api) -> None:
    # Several threads submit with one key at the same moment: one insert wins, the others wait
    # for it on the unique index and then return it.
    racers = 8
    barrier = threading.Barrier(racers)
    results: list[object] = [None] * racers

    def race(index: int) -> None:
        barrier.wait()
        results[index] = _submit(api, {"command": "once"}, "race-key")

    threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    statuses = sorted(r.status_code for r in results)  # type: ignore[attr-defined]
    assert statuses == [200] * (racers - 1) + [201]
    assert len({r.json["id"] for r in results}) == 1  # type: ignore[attr-defined]
    assert api.count_tasks() == 1


def test_a_batch_with_a_key_is_idempotent_as_a_whole(api) -> None:
    body = {"tasks": [{"command": "a"}, {"command": "b"}, {"command": "c"}]}

    first = _submit(api, body, "batch-1", "/v1/tasks/batch")
    again = _submit(api, body, "batch-1", "/v1/tasks/batch")
    other = _submit(api, {"tasks": [{"command": "a"}]}, "batch-1", "/v1/tasks/batch")

    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert again.json == first.json
    assert api.count_tasks() == 3


def test_a_larger_batch_reusing_a_key_is_409_and_leaves_nothing_to_run(api) -> None:
    _submit(api, {"tasks": [{"command": "a"}]}, "grow", "/v1/tasks/batch")

    other = _submit(api, {"tasks": [{"command": "a"}, {"command": "b"}]}, "grow", "/v1/tasks/batch")

    assert other.status_code == 409
    scheduled = api.get("/v1/tasks", params={"status": "scheduled"}).json["tasks"]
    assert [t["command"] for t in scheduled] == ["a"]


def test_single_and_batch_keys_do_not_collide(api) -> None:
    single = _submit(api, {"command": "a"}, "shared")
    batch = _submit(api, {"tasks": [{"command": "a"}]}, "shared", "/v1/tasks/batch")

    assert (single.status_code, batch.status_code) == (201, 201)


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\there", "ümlaut"])
def test_a_malformed_key_is_400(offline_api, key: str) -> None:
    result = offline_api.post("/v1/tasks", {"command": "a"}, headers={"Idempotency-Key": key})

    assert result.status_code == 400
    assert result.json["errors"][0]["field"] == "Idempotency-Key"
    assert offline_api.count_tasks() == 0
