"""Unit tests of the CLI's parsing and printing: no server needed."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from taskmill.client import Queue, Task, TaskError, Waiting
from taskmill.client._render import (
    compact_json,
    outcome_line,
    parse_duration,
    parse_when,
    print_json,
    progress_bar,
    queue_detail,
    queues_table,
    show_age,
    task_detail,
    tasks_table,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("250ms", 0.25),
        ("2d", 172800.0),
        ("1.5h", 5400.0),
        ("90", 90.0),
        ("0.5", 0.5),
        ("0s", 0.0),
        (" 10M ", 600.0),
    ],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "h", "1h 30m", "-5s", "-3", "m5", "1h30", "nan", "inf"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_times_with_offsets_keep_them_and_naive_times_are_local() -> None:
    assert parse_when("2030-01-31T09:00:00+01:00") == datetime(2030, 1, 31, 8, 0, tzinfo=UTC)
    assert parse_when("2030-01-31T09:00:00Z") == datetime(2030, 1, 31, 9, 0, tzinfo=UTC)
    local = parse_when("2030-01-31 09:00")
    assert local.tzinfo is not None
    assert local.replace(tzinfo=None) == datetime(2030, 1, 31, 9, 0)
    assert parse_when("1900000000") == datetime.fromtimestamp(1900000000, UTC)
    with pytest.raises(ValueError, match="not a time"):
        parse_when("tomorrow")


def _task(**fields: object) -> Task:
    data = {
        "id": "7d3c2f8e-0000-4000-8000-000000000001",
        "command": "resize",
        "status": "failed",
        "payload": {"w": 10},
        "queue": "images",
        "priority": 5,
        "attempt": 2,
        "max_attempts": 3,
        "scheduled_at": "2030-01-01T00:00:00.000000Z",
        "finished_at": "2030-01-01T00:00:05.250000Z",
        "error": {"type": "ValueError", "message": "bad size", "traceback": "Traceback...\n"},
    }
    data.update(fields)
    return Task.from_json(data)


def test_list_table_is_aligned_and_shows_the_fields() -> None:
    ok = _task(id="short", status="succeeded", error=None, finished_at=None)
    lines = tasks_table([_task(), ok]).splitlines()
    assert lines[0].split() == [
        "ID", "STATUS", "COMMAND", "QUEUE", "PRI", "ATTEMPT", "SCHEDULED", "FINISHED",
    ]  # fmt: skip
    # Every column starts at the same offset on every line.
    status_column = lines[0].index("STATUS")
    assert lines[1][status_column:].startswith("failed")
    assert lines[2][status_column:].startswith("succeeded")
    assert "2/3" in lines[1]
    assert "2030-01-01 00:00:05Z" in lines[1]
    assert lines[2].rstrip().endswith("-")
    assert all(line == line.rstrip() for line in lines)


def test_detail_shows_error_and_traceback_of_a_failed_task() -> None:
    text = task_detail(_task())
    assert "status:    failed\n" in text
    assert "error:     ValueError: bad size\n" in text
    assert text.endswith("Traceback...\n")
    assert "attempt:   2 of 3\n" in text


def test_outcome_line_shows_result_or_error() -> None:
    assert outcome_line(_task()) == (
        "7d3c2f8e-0000-4000-8000-000000000001  failed  ValueError: bad size\n"
    )
    done = _task(status="succeeded", error=None, result={"ok": True})
    assert outcome_line(done).endswith('  succeeded  {"ok":true}\n')


def test_json_output_is_valid_utf8_json() -> None:
    out = io.StringIO()
    print_json({"payload": "héllo", "n": [1, 2]}, out)
    assert json.loads(out.getvalue()) == {"payload": "héllo", "n": [1, 2]}
    assert "héllo" in out.getvalue()
    assert compact_json({"a": "x" * 50}, 20) == '{"a":"xxxxxxxxxxxxx…'
    assert len(compact_json({"a": "x" * 50}, 20)) == 20


def test_progress_bar() -> None:
    assert progress_bar(0, 4, width=8) == "[........] 0/4"
    assert progress_bar(2, 4, width=8) == "[####....] 2/4"
    assert progress_bar(4, 4, width=8) == "[########] 4/4"


def test_submit_spec_times_go_out_in_utc() -> None:
    from taskmill.client import SubmitSpec

    at = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    body = SubmitSpec("echo", at=at, timeout=timedelta(minutes=1)).to_json()
    assert body == {
        "command": "echo",
        "scheduled_at": "2030-01-01T06:30:00+00:00",
        "timeout_seconds": 60.0,
    }
    with pytest.raises(ValueError, match="naive"):
        SubmitSpec("echo", at=datetime(2030, 1, 1)).to_json()
    with pytest.raises(ValueError, match="at most one"):
        SubmitSpec("echo", at=at, delay=5).to_json()


def test_tasks_tolerate_unknown_fields_and_statuses() -> None:
    task = Task.from_json(
        {"id": "x", "command": "c", "status": "paused", "novel": 1, "error": None}
    )
    assert task.status == "paused"
    assert not task.is_final
    assert task.raw["novel"] == 1
    assert task.scheduled_at is None
    failed = _task()
    assert failed.is_final
    assert not failed.succeeded
    assert failed.error == TaskError("ValueError", "bad size", "Traceback...\n")
    assert failed.scheduled_at == datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (0.04, "0.0s"),
        (42.46, "42.5s"),
        (60, "1m00s"),
        (187.9, "3m07s"),
        (7500, "2h05m"),
        (86400 * 3 + 3600 * 4 + 59, "3d04h"),
    ],
)
def test_ages_read_as_durations(seconds: float | None, shown: str) -> None:
    assert show_age(seconds) == shown


def test_queues_table_and_detail_show_every_field() -> None:
    busy = Queue("mail", 5, 3, 2, 187.9, 4, True, 10)
    idle = Queue("default")

    lines = queues_table([busy, idle]).splitlines()

    assert lines[0].split() == [
        "NAME", "PAUSED", "LIMIT", "SCHEDULED", "DUE", "RUNNING", "OLDEST", "DUE", "WORKERS",
    ]  # fmt: skip
    assert lines[1].split() == ["mail", "yes", "10", "5", "3", "2", "3m07s", "4"]
    assert lines[2].split() == ["default", "no", "-", "0", "0", "0", "-", "0"]
    assert queue_detail(busy) == (
        "queue:     mail\n"
        "paused:    yes\n"
        "limit:     10 dispatched or running at once\n"
        "scheduled: 5\n"
        "due:       3, the oldest for 3m07s\n"
        "running:   2\n"
        "workers:   4\n"
    )
    assert "limit:     none\n" in queue_detail(idle) and "due:       0\n" in queue_detail(idle)


def test_detail_says_why_a_task_waits() -> None:
    waiting = {"reason": "queue_paused", "message": "queue 'mail' is paused"}
    task = _task(status="scheduled", error=None, waiting=waiting)

    assert task.waiting == Waiting("queue_paused", "queue 'mail' is paused")
    assert "waiting:   queue_paused: queue 'mail' is paused\n" in task_detail(task)
    assert "waiting" not in task_detail(_task())


def test_queues_and_waiting_parse_leniently() -> None:
    queue = Queue.from_json({"name": "q", "max_concurrency": 3, "novel": True})
    assert queue == Queue("q", max_concurrency=3)
    assert queue.raw["novel"] is True
    task = Task.from_json(
        {"id": "x", "command": "c", "status": "scheduled", "waiting": {"reason": "new"}}
    )
    assert task.waiting == Waiting("new", "")
