"""GET /v1/tasks/{id}, GET /v1/tasks (filters, cursor pages) and POST /v1/tasks/{id}/cancel."""

from __future__ import annotations

import base64
import threading
import uuid
from datetime import UTC, datetime

import pytest

from taskmill.common.models import TaskError, TaskStatus
from taskmill.testing import Reported, claim


def _dispatch(store, worker: str = "w-1"):
    """Claims every due task for one worker, as a coordinator would."""
    return claim(store, [worker] * 10, lease_seconds=60)


def test_get_returns_every_field_of_a_finished_task(api, store) -> None:
    task = api.submit(payload={"n": 1}, max_attempts=1)
    (claimed,) = _dispatch(store)
    error = TaskError("ValueError", "bad n", "Traceback ...")
    now = datetime.now(UTC)
    store.apply(
        [
            Reported(claimed.id, 1, TaskStatus.RUNNING, now),
            Reported(claimed.id, 1, TaskStatus.FAILED, now, error=error),
        ]
    )

    got = api.get(f"/v1/tasks/{task['id']}").json

    assert got["status"] == "failed" and got["attempt"] == 1 and got["worker_id"] == "w-1"
    assert got["error"] == {"type": "ValueError", "message": "bad n", "traceback": "Traceback ..."}
    for name in ("dispatched_at", "started_at", "finished_at"):
        assert got[name].endswith("Z")
    assert got["waiting"] is None
    assert set(got) == {
        "id", "command", "payload", "status", "queue", "priority", "attempt", "max_attempts",
        "timeout_seconds", "scheduled_at", "created_at", "dispatched_at", "started_at",
        "finished_at", "worker_id", "result", "error", "trace_id", "cancel_requested", "waiting",
    }  # fmt: skip


def test_get_shows_the_result_of_a_succeeded_task(api, store) -> None:
    task = api.submit()
    (claimed,) = _dispatch(store)
    store.apply([Reported(claimed.id, 1, TaskStatus.SUCCEEDED, datetime.now(UTC), result=[1, 2])])

    got = api.get(f"/v1/tasks/{task['id']}").json

    assert (got["status"], got["result"], got["error"]) == ("succeeded", [1, 2], None)


def test_an_unknown_id_is_404(api) -> None:
    result = api.get(f"/v1/tasks/{uuid.uuid4()}")

    assert result.status_code == 404
    assert result.headers["Content-Type"] == "application/problem+json"
    assert result.json["type"].endswith("task-not-found")


@pytest.mark.parametrize("task_id", ["not-a-uuid", "1", "%00", "' OR 1=1 --", "x" * 5000])
def test_a_malformed_id_is_404_not_500(offline_api, task_id: str) -> None:
    assert offline_api.get(f"/v1/tasks/{task_id}").status_code == 404
    assert offline_api.client.simulate_post(f"/v1/tasks/{task_id}/cancel").status_code == 404


def test_list_is_newest_first_and_filters_by_status_command_and_queue(api, store) -> None:
    first = api.submit(command="a")
    second = api.submit(command="b", queue="q2")
    third = api.submit(command="a", queue="q2")
    store.tasks.cancel(uuid.UUID(first["id"]))

    def ids(**params: str) -> list[str]:
        result = api.get("/v1/tasks", params=params)
        assert result.status_code == 200, result.text
        return [t["id"] for t in result.json["tasks"]]

    assert ids() == [third["id"], second["id"], first["id"]]
    assert ids(command="a") == [third["id"], first["id"]]
    assert ids(queue="q2") == [third["id"], second["id"]]
    assert ids(status="cancelled") == [first["id"]]
    assert ids(status="scheduled", command="a", queue="q2") == [third["id"]]
    assert ids(status="running") == []


def test_limit_and_cursor_page_through_everything_once(api) -> None:
    submitted = [api.submit(payload=i)["id"] for i in range(7)]

    pages = []
    params = {"limit": "3"}
    while True:
        body = api.get("/v1/tasks", params=params).json
        pages.append([t["id"] for t in body["tasks"]])
        if body["next_cursor"] is None:
            break
        params = {"limit": "3", "cursor": body["next_cursor"]}

    assert pages == [submitted[6:3:-1], submitted[3:0:-1], submitted[0:1]]


def test_an_exact_last_page_has_no_next_cursor(api) -> None:
    for _ in range(2):
        api.submit()

    body = api.get("/v1/tasks", params={"limit": "2"}).json

    assert len(body["tasks"]) == 2 and body["next_cursor"] is None


def test_paging_through_10000_tasks_returns_each_once_while_new_ones_arrive(api) -> None:
    for start in range(0, 10_000, 1000):
        body = {"tasks": [{"command": "bulk", "payload": start + i} for i in range(1000)]}
        assert api.post("/v1/tasks/batch", body).status_code == 201
    stop = threading.Event()
    arrived: list[str] = []

    def keep_submitting() -> None:
        while not stop.is_set():
            arrived.append(api.submit(command="late")["id"])

    submitter = threading.Thread(target=keep_submitting)
    submitter.start()
    seen: list[str] = []
    try:
        params = {"command": "bulk", "limit": "1000"}
        while True:
            body = api.get("/v1/tasks", params=params).json
            seen.extend(t["id"] for t in body["tasks"])
            if body["next_cursor"] is None:
                break
            params = {**params, "cursor": body["next_cursor"]}
            # Unfiltered pages are interleaved with the new arrivals.
            api.get("/v1/tasks", params={"limit": "5"})
    finally:
        stop.set()
        submitter.join(timeout=60)

    assert len(seen) == 10_000 and len(set(seen)) == 10_000
    assert arrived, "no task arrived while paging; the test proved nothing"


def test_paging_everything_while_tasks_arrive_lists_each_old_task_once(api) -> None:
    batch = api.post("/v1/tasks/batch", {"tasks": [{"command": "x"}] * 50})
    old = {t["id"] for t in batch.json["tasks"]}
    seen: list[str] = []
    params = {"limit": "7"}
    while True:
        body = api.get("/v1/tasks", params=params).json
        seen.extend(t["id"] for t in body["tasks"])
        api.submit(command="new")  # lands above the cursor, never on a later page
        if body["next_cursor"] is None:
            break
        params = {"limit": "7", "cursor": body["next_cursor"]}

    assert len(seen) == len(set(seen))
    assert old <= set(seen)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "done"}, "status"),
        ({"command": "bad command"}, "command"),
        ({"queue": "a/b"}, "queue"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "9" * 5000}, "limit"),
        ({"cursor": "garbage!"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"seq:abc").decode()}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"\xff\xfe").decode()}, "cursor"),
        ({"page": "2"}, "page"),
        ({"status": ["scheduled", "failed"]}, "status"),
    ],
)
def test_bad_list_parameters_are_400(offline_api, params: dict[str, object], field: str) -> None:
    result = offline_api.get("/v1/tasks", params=params)

    assert result.status_code == 400
    assert [e["field"] for e in result.json["errors"]] == [field]


def test_cancel_a_scheduled_task_cancels_it_at_once(api) -> None:
    task = api.submit(delay_seconds=3600)

    result = api.client.simulate_post(f"/v1/tasks/{task['id']}/cancel")

    assert result.status_code == 200
    assert result.json["status"] == "cancelled"
    assert result.json["cancel_requested"] is True and result.json["finished_at"] is not None
    assert api.get(f"/v1/tasks/{task['id']}").json["status"] == "cancelled"


@pytest.mark.parametrize("running", [False, True])
def test_cancel_a_dispatched_or_running_task_marks_it(api, store, running: bool) -> None:
    task = api.submit()
    (claimed,) = _dispatch(store)
    if running:
        store.apply([Reported(claimed.id, 1, TaskStatus.RUNNING, datetime.now(UTC))])

    result = api.client.simulate_post(f"/v1/tasks/{task['id']}/cancel")

    assert result.status_code == 200
    assert result.json["status"] == ("running" if running else "dispatched")
    assert result.json["cancel_requested"] is True
    assert store.dispatch.cancel_requested("w-1") == [claimed.id]


@pytest.mark.parametrize("final", [TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED])
def test_cancel_a_finished_task_is_409(api, store, final: TaskStatus) -> None:
    task = api.submit()
    (claimed,) = _dispatch(store)
    store.apply([Reported(claimed.id, 1, final, datetime.now(UTC), retryable=False)])

    result = api.client.simulate_post(f"/v1/tasks/{task['id']}/cancel")

    assert result.status_code == 409
    assert final.value in result.json["detail"]
    assert api.get(f"/v1/tasks/{task['id']}").json["status"] == final.value


def test_cancel_an_unknown_task_is_404(api) -> None:
    assert api.client.simulate_post(f"/v1/tasks/{uuid.uuid4()}/cancel").status_code == 404
