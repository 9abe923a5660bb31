"""Queues through the library and the ``taskmill`` CLI, against a real scheduler and
PostgreSQL: listing, one queue, pause, resume and limit, and why a task waits."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from taskmill.client import (
    Client,
    NotFound,
    Queue,
    QueueNotFound,
    ValidationError,
    Waiting,
)

from .conftest import Scheduler  # type: ignore[import-not-found]
from .test_cli import _one_line_error, taskmill  # type: ignore[import-not-found]


def _sql(scheduler: Scheduler, text: str, **params: object) -> None:
    with scheduler.store.db.connection() as conn:
        conn.execute(text, **params)


def _worker(scheduler: Scheduler, queues: Sequence[str], handlers: Sequence[str]) -> None:
    _sql(
        scheduler,
        "INSERT INTO workers (id, address, capacity, coordinator_id, handlers, queues)"
        " VALUES ('w-1', '127.0.0.1:1', 4, 'c-1', CAST(:handlers AS text[]),"
        " CAST(:queues AS text[]))",
        handlers=list(handlers),
        queues=list(queues),
    )


def _running(scheduler: Scheduler, task_id: str) -> None:
    _sql(
        scheduler,
        "UPDATE tasks SET status = 'running', worker_id = 'w-1', dispatched_at = now(),"
        " started_at = now() WHERE id = CAST(:id AS uuid)",
        id=task_id,
    )


def test_queues_and_queue_mirror_the_api(scheduler: Scheduler, client: Client) -> None:
    client.submit("send", queue="mail")
    client.submit("send", queue="mail", delay=3600)
    _running(scheduler, client.submit("send", queue="mail").id)
    _worker(scheduler, ["mail", "images"], ["send"])

    (images, mail) = client.queues()

    assert images == Queue("images", workers=1)
    assert mail.oldest_due_age_seconds is not None and 0 <= mail.oldest_due_age_seconds < 60
    assert mail == Queue("mail", 2, 1, 1, mail.oldest_due_age_seconds, 1, False, None)
    assert mail.raw["name"] == "mail"
    one = client.queue("mail")
    assert (one.scheduled, one.due, one.running, one.workers) == (2, 1, 1, 1)


def test_pause_resume_and_limit_answer_the_queue(client: Client) -> None:
    assert client.pause_queue("later") == Queue("later", paused=True)
    assert client.set_queue_limit("later", 4) == Queue("later", paused=True, max_concurrency=4)
    assert client.queue("later").max_concurrency == 4
    assert client.set_queue_limit("later", None).max_concurrency is None
    assert client.resume_queue("later") == Queue("later")
    assert client.queues() == [Queue("later")]


def test_an_unknown_queue_is_not_found_and_bad_input_is_refused(client: Client) -> None:
    with pytest.raises(QueueNotFound) as caught:
        client.queue("nothing")
    assert isinstance(caught.value, NotFound) and caught.value.status == 404
    assert caught.value.message == "no queue named 'nothing'"
    with pytest.raises(QueueNotFound):
        client.queue("a/b")  # no route has a slash in a queue's name
    with pytest.raises(ValidationError) as bad_name:
        client.pause_queue("a b")
    assert [problem.field for problem in bad_name.value.errors] == ["name"]
    with pytest.raises(ValidationError) as bad_limit:
        client.set_queue_limit("mail", 0)
    assert [problem.field for problem in bad_limit.value.errors] == ["max_concurrency"]
    with pytest.raises(ValueError, match="queue name"):
        client.queue("")
    assert client.queues() == []


def test_get_says_why_a_due_task_waits(client: Client) -> None:
    task = client.submit("send", queue="mail")
    later = client.submit("send", queue="mail", delay=3600)

    waiting = client.get(task.id).waiting
    assert waiting is not None and waiting.reason == "no_worker"
    assert "'mail'" in waiting.message
    client.pause_queue("mail")
    paused = client.get(task.id).waiting
    assert isinstance(paused, Waiting) and paused.reason == "queue_paused"
    assert client.get(later.id).waiting is None
    assert [t.waiting for t in client.list()] == [None, None]


def test_cli_queues_prints_a_table_or_json(scheduler: Scheduler, client: Client) -> None:
    client.submit("send", queue="mail")
    client.set_queue_limit("mail", 3)

    table = taskmill(scheduler, "queues")

    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "PAUSED", "LIMIT"]
    assert row.split()[:6] == ["mail", "no", "3", "1", "1", "0"]
    listed = json.loads(taskmill(scheduler, "queues", "--json").stdout)
    assert [queue["name"] for queue in listed["queues"]] == ["mail"]
    assert listed["queues"][0]["max_concurrency"] == 3


def test_cli_queue_pause_limit_resume_and_show(scheduler: Scheduler, client: Client) -> None:
    paused = taskmill(scheduler, "queue", "pause", "mail")
    assert paused.returncode == 0, paused.stderr
    assert "queue:     mail\n" in paused.stdout and "paused:    yes\n" in paused.stdout
    assert client.queue("mail").paused

    limited = taskmill(scheduler, "queue", "limit", "mail", "5")
    assert "limit:     5 dispatched or running at once\n" in limited.stdout
    assert client.queue("mail").max_concurrency == 5
    assert "limit:     none\n" in taskmill(scheduler, "queue", "limit", "mail", "none").stdout
    assert client.queue("mail").max_concurrency is None

    assert "paused:    no\n" in taskmill(scheduler, "queue", "resume", "mail").stdout
    shown = json.loads(taskmill(scheduler, "queue", "show", "mail", "--json").stdout)
    assert shown == client.queue("mail").raw


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("queue", "show", "nothing"), 3, "no queue named 'nothing'"),
        (("queue", "limit", "mail", "0"), 2, "max_concurrency"),
        (("queue", "pause", "a b"), 2, "name"),
    ],
)
def test_cli_queue_errors_exit_in_one_line(
    scheduler: Scheduler, args: tuple[str, ...], code: int, text: str
) -> None:
    _one_line_error(taskmill(scheduler, *args), code, text)


def test_cli_queue_limit_refuses_what_is_no_number(scheduler: Scheduler) -> None:
    result = taskmill(scheduler, "queue", "limit", "mail", "many")

    assert result.returncode == 2
    assert "not a limit: 'many'" in result.stderr


def test_cli_status_prints_why_a_task_waits(scheduler: Scheduler, client: Client) -> None:
    task = client.submit("send", queue="mail")
    client.pause_queue("mail")

    shown = taskmill(scheduler, "status", task.id)

    assert shown.returncode == 0, shown.stderr
    assert "waiting:   queue_paused: queue 'mail' is paused" in shown.stdout
