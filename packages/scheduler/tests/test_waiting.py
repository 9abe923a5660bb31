"""GET /v1/tasks/{id} says why a scheduled, due task waits: the first reason that holds of
queue_paused, queue_at_limit, no_worker, waiting_for_slot; and null for every other task."""

from __future__ import annotations

from typing import Any

import pytest


def _waiting(api, task: dict[str, Any]) -> dict[str, str] | None:
    result = api.get(f"/v1/tasks/{task['id']}")
    assert result.status_code == 200, result.text
    waiting: dict[str, str] | None = result.json["waiting"]
    return waiting


def _reason(api, task: dict[str, Any]) -> str | None:
    waiting = _waiting(api, task)
    return None if waiting is None else waiting["reason"]


def test_a_due_task_a_live_worker_can_run_waits_for_a_slot(api) -> None:
    api.worker(["other", "mail"], ["resize", "send"])
    task = api.submit(queue="mail", command="send")

    waiting = _waiting(api, task)

    assert waiting is not None and waiting["reason"] == "waiting_for_slot"
    assert "'mail'" in waiting["message"] and "'send'" in waiting["message"]
    # Only the one task's GET asks why: lists and other answers leave the field out.
    assert "waiting" not in task
    assert "waiting" not in api.get("/v1/tasks").json["tasks"][0]


@pytest.mark.parametrize(
    ("queues", "handlers", "state"),
    [
        (["mail"], ["resize"], "active"),  # serves the queue, not the command
        (["images"], ["send"], "active"),  # has the handler, for another queue
        (["mail"], ["send"], "draining"),
        (["mail"], ["send"], "dead"),
    ],
)
def test_a_task_no_active_worker_serves_with_its_handler_has_no_worker(
    api, queues: list[str], handlers: list[str], state: str
) -> None:
    api.worker(queues, handlers, state)
    task = api.submit(queue="mail", command="send")

    waiting = _waiting(api, task)

    assert waiting is not None and waiting["reason"] == "no_worker"
    assert "'mail'" in waiting["message"] and "'send'" in waiting["message"]


def test_a_paused_queue_is_the_reason_before_any_other(api) -> None:
    # Full, and served by no worker, as well as paused: paused comes first.
    api.put("/v1/queues/mail", {"max_concurrency": 1})
    api.move(api.submit(queue="mail"), "running")
    task = api.submit(queue="mail")
    api.client.simulate_post("/v1/queues/mail/pause")

    waiting = _waiting(api, task)

    assert waiting is not None and waiting["reason"] == "queue_paused"
    assert "'mail'" in waiting["message"]
    api.client.simulate_post("/v1/queues/mail/resume")
    assert _reason(api, task) == "queue_at_limit"


@pytest.mark.parametrize("flight", [["dispatched", "running"], ["running", "running"]])
def test_a_queue_with_its_limit_in_flight_holds_its_task_before_no_worker(
    api, flight: list[str]
) -> None:
    api.put("/v1/queues/mail", {"max_concurrency": 2})
    for status in flight:
        api.move(api.submit(queue="mail"), status)
    api.move(api.submit(queue="other"), "running")  # another queue's tasks do not count
    task = api.submit(queue="mail")

    waiting = _waiting(api, task)

    assert waiting is not None and waiting["reason"] == "queue_at_limit"
    assert "2" in waiting["message"] and "'mail'" in waiting["message"]


def test_a_queue_below_its_limit_holds_nothing(api) -> None:
    api.put("/v1/queues/mail", {"max_concurrency": 3})
    api.worker(["mail"], ["echo"])
    for status in ("running", "running", "succeeded", "failed", "cancelled"):
        api.move(api.submit(queue="mail"), status)
    task = api.submit(queue="mail")

    assert _reason(api, task) == "waiting_for_slot"
    api.put("/v1/queues/mail", {"max_concurrency": 2})
    assert _reason(api, task) == "queue_at_limit"
    api.put("/v1/queues/mail", {"max_concurrency": None})
    assert _reason(api, task) == "waiting_for_slot"


@pytest.mark.parametrize("status", ["dispatched", "running", "succeeded", "failed", "cancelled"])
def test_a_task_no_longer_scheduled_has_no_waiting(api, status: str) -> None:
    api.client.simulate_post("/v1/queues/default/pause")
    task = api.submit()
    api.move(task, status)

    assert _waiting(api, task) is None


def test_a_task_not_due_yet_has_no_waiting(api) -> None:
    api.client.simulate_post("/v1/queues/default/pause")
    task = api.submit(delay_seconds=3600)

    assert _waiting(api, task) is None
    api.sql("UPDATE tasks SET scheduled_at = now() - interval '1 second'")
    assert _reason(api, task) == "queue_paused"
