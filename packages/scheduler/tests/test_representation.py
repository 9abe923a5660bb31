"""The JSON form of tasks: valid JSON with the right values, whatever the stored text holds."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from taskmill.common.models import Task, TaskError, TaskStatus
from taskmill.scheduler.representation import encode_task, encode_tasks, rfc3339

AT = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def _task(**changes: object) -> Task:
    fields: dict[str, object] = {
        "id": uuid.UUID("7c1e4b2a-9a57-4a55-9a8c-55d5d1d0e0a1"), "seq": 1, "command": "echo",
        "payload": {}, "status": TaskStatus.SCHEDULED, "queue": "default", "priority": 0,
        "attempt": 0, "max_attempts": 1, "timeout_seconds": None, "created_at": AT,
        "scheduled_at": AT, "dispatched_at": None, "started_at": None, "finished_at": None,
        "worker_id": None, "lease_expires_at": None, "cancel_requested_at": None,
        "result": None, "error": None, "idempotency_key": None, "trace_context": None,
    }  # fmt: skip
    fields.update(changes)
    return Task(**fields)  # type: ignore[arg-type]


def test_a_new_task() -> None:
    assert json.loads(encode_task(_task())) == {
        "id": "7c1e4b2a-9a57-4a55-9a8c-55d5d1d0e0a1", "command": "echo", "payload": {},
        "status": "scheduled", "queue": "default", "priority": 0, "attempt": 0,
        "max_attempts": 1, "timeout_seconds": None, "scheduled_at": "2030-01-02T03:04:05.678901Z",
        "created_at": "2030-01-02T03:04:05.678901Z", "dispatched_at": None, "started_at": None,
        "finished_at": None, "worker_id": None, "result": None, "error": None, "trace_id": None,
        "cancel_requested": False,
    }  # fmt: skip


def test_a_finished_task_with_awkward_text_everywhere() -> None:
    east = timezone(timedelta(hours=5, minutes=30))
    task = _task(
        command='quote"back\\slash',
        queue="ünïcode\n",
        payload={"nested": [1, 2.5, None, True, "é\u2028"], "": "empty key"},
        status=TaskStatus.FAILED,
        priority=-7,
        attempt=2,
        max_attempts=3,
        timeout_seconds=1.5,
        dispatched_at=AT.astimezone(east),
        started_at=AT,
        finished_at=AT + timedelta(seconds=1),
        worker_id='w-"1"',
        result=["ignored", {"x": 1}],
        error=TaskError("ValueError", 'bad "n"\nline two', "Traceback:\n  \\ here"),
        cancel_requested_at=AT,
        trace_context="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )

    body = json.loads(encode_task(task))

    assert body["command"] == 'quote"back\\slash' and body["queue"] == "ünïcode\n"
    assert body["payload"] == {"nested": [1, 2.5, None, True, "é\u2028"], "": "empty key"}
    assert (body["status"], body["priority"], body["attempt"]) == ("failed", -7, 2)
    assert body["timeout_seconds"] == 1.5
    assert body["dispatched_at"] == "2030-01-02T03:04:05.678901Z"  # converted to UTC
    assert body["finished_at"] == "2030-01-02T03:04:06.678901Z"
    assert body["worker_id"] == 'w-"1"' and body["result"] == ["ignored", {"x": 1}]
    assert body["error"] == {
        "type": "ValueError",
        "message": 'bad "n"\nline two',
        "traceback": "Traceback:\n  \\ here",
    }
    assert body["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert body["cancel_requested"] is True


@pytest.mark.parametrize("count", [0, 1, 3])
def test_a_list_of_tasks_is_a_json_array(count: int) -> None:
    tasks = [_task(id=uuid.uuid4(), priority=i) for i in range(count)]

    assert [t["priority"] for t in json.loads(encode_tasks(tasks))] == list(range(count))


def test_times_without_microseconds_keep_six_digits() -> None:
    assert rfc3339(datetime(2030, 1, 1, tzinfo=UTC)) == "2030-01-01T00:00:00.000000Z"


@pytest.mark.parametrize(
    ("at", "shown"),
    [
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00.000000Z"),
        (datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC), "0999-12-31T23:59:59.000000Z"),
        (datetime(2030, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))),
         "2030-01-01T00:00:00.000000Z"),
    ],
)  # fmt: skip
def test_times_always_have_four_digit_years_and_are_in_utc(at: datetime, shown: str) -> None:
    assert rfc3339(at) == shown
    assert json.loads(encode_task(_task(id=uuid.uuid4(), scheduled_at=at)))["scheduled_at"] == shown
