"""The client's HTTP behaviour against a scripted server: retries, keep-alive, error mapping."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from taskmill.client import (
    AuthError,
    Client,
    Conflict,
    ServerError,
    TaskNotFound,
    Unavailable,
    ValidationError,
    WaitTimeout,
)
from taskmill.client._retry import Caller, RetryPolicy

# The conftest of this directory provides the fixture; its classes are imported by name.
from .conftest import FakeServer, Reply  # type: ignore[import-not-found]

MakeClient = Callable[..., Client]


def _task(status: str = "scheduled", **fields: Any) -> dict[str, Any]:
    return {"id": "t-1", "command": "echo", "status": status, **fields}


def test_submit_is_retried_after_503_with_the_same_idempotency_key(
    fake_server: FakeServer, make_client: MakeClient
) -> None:
    fake_server.script = [
        Reply(503, {"detail": "database unavailable"}, {"Retry-After": "0"}),
        Reply(503, {"detail": "database unavailable"}, {"Retry-After": "0"}),
        Reply(201, _task()),
    ]
    task = make_client(fake_server.url).submit("echo", {"x": 1}, priority=3)
    assert task.id == "t-1"
    assert len(fake_server.seen) == 3
    keys = {seen.headers["idempotency-key"] for seen in fake_server.seen}
    assert len(keys) == 1
    assert all(
        s.body == {"command": "echo", "payload": {"x": 1}, "priority": 3} for s in fake_server.seen
    )


def test_a_caller_given_key_is_sent_as_is(fake_server: FakeServer, make_client: MakeClient) -> None:
    fake_server.script = [Reply(201, _task())]
    make_client(fake_server.url).submit("echo", idempotency_key="order-42")
    assert fake_server.seen[0].headers["idempotency-key"] == "order-42"


def test_retries_are_bounded_and_end_in_unavailable(
    fake_server: FakeServer, make_client: MakeClient
) -> None:
    fake_server.default = lambda seen: Reply(503, {"detail": "busy"}, {"Retry-After": "0"})
    with pytest.raises(Unavailable, match="busy") as caught:
        make_client(fake_server.url, retries=2).get("t-1")
    assert len(fake_server.seen) == 3
    assert caught.value.retry_after == 0


def test_a_dropped_connection_is_retried_for_a_submit(
    fake_server: FakeServer, make_client: MakeClient
) -> None:
    fake_server.script = [Reply(drop=True), Reply(201, _task())]
    assert make_client(fake_server.url).submit("echo").id == "t-1"
    assert len(fake_server.seen) == 2
    assert (
        fake_server.seen[0].headers["idempotency-key"]
        == (fake_server.seen[1].headers["idempotency-key"])
    )


def test_a_request_unsafe_to_repeat_is_not_retried_once_sent(
    fake_server: FakeServer, make_client: MakeClient
) -> None:
    fake_server.script = [Reply(drop=True), Reply(201, _task())]
    caller = Caller(fake_server.url, None, 5.0, RetryPolicy(retries=3, base=0.01))
    with pytest.raises(Unavailable, match="cannot reach the scheduler"):
        caller.call("POST", "/v1/tasks", {"command": "echo"}, safe=False)
    caller.close()
    assert len(fake_server.seen) == 1


def test_connection_refused_is_retried_then_reported_in_one_line(
    make_client: MakeClient, unused_port: int
) -> None:
    client = make_client(f"http://127.0.0.1:{unused_port}", retries=1)
    with pytest.raises(Unavailable) as caught:
        client.submit("echo")
    assert "cannot reach the scheduler at http://127.0.0.1:" in caught.value.message
    assert "\n" not in caught.value.message


def test_connections_are_kept_alive_and_reused(
    fake_server: FakeServer, make_client: MakeClient
) -> None:
    fake_server.default = lambda seen: Reply(200, _task())
    client = make_client(fake_server.url)
    for _ in range(5):
        client.get("t-1")
    assert len(fake_server.seen) == 5
    assert len(fake_server.ports()) == 1


def test_a_connection_the_server_closed_while_idle_is_replaced(
    fake_server: FakeServer, make_client: MakeClient
) -> None:
    fake_server.script = [Reply(200, _task(), close_after=True)]
    fake_server.default = lambda seen: Reply(201, _task())
    caller = Caller(fake_server.url, None, 5.0, RetryPolicy(retries=0))
    caller.call("GET", "/v1/tasks/t-1", safe=True)
    # With no retries allowed, only the pool's fresh-connection retry can make this succeed.
    caller.call("POST", "/v1/tasks", {"command": "echo"}, safe=False)
    caller.close()
    assert len(fake_server.ports()) == 2
    assert [s.method for s in fake_server.seen] == ["GET", "POST"]


def test_one_client_is_safe_to_share_between_threads(
    fake_server: FakeServer, make_client: MakeClient
) -> None:
    fake_server.default = lambda seen: Reply(200, _task(id=seen.path.rsplit("/", 1)[1]))
    client = make_client(fake_server.url)
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(25):
                task_id = f"w{worker}-{i}"
                results[task_id] = client.get(task_id).id
        except Exception as exc:  # noqa: BLE001 (collected for the main thread to assert on)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(results) == 200
    assert all(key == value for key, value in results.items())
    assert len(fake_server.ports()) <= 8


def test_token_is_sent_as_bearer_and_not_without_one(
    fake_server: FakeServer, make_client: MakeClient
) -> None:
    fake_server.default = lambda seen: Reply(200, {"workers": []})
    make_client(fake_server.url, token="s3cret").workers()
    make_client(fake_server.url, token="").workers()
    assert fake_server.seen[0].headers["authorization"] == "Bearer s3cret"
    assert "authorization" not in fake_server.seen[1].headers


def test_environment_supplies_url_and_token(
    fake_server: FakeServer, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKMILL_URL", fake_server.url + "/")
    monkeypatch.setenv("TASKMILL_TOKEN", "from-env")
    fake_server.default = lambda seen: Reply(200, {"workers": []})
    assert make_client().workers() == []
    assert fake_server.seen[0].headers["authorization"] == "Bearer from-env"


@pytest.mark.parametrize(
    ("reply", "error", "text"),
    [
        (
            Reply(
                400,
                {
                    "detail": "2 problems",
                    "errors": [
                        {"field": "max_attempts", "message": "must be between 1 and 100"},
                        {"field": "command", "message": "required"},
                    ],
                },
            ),
            ValidationError,
            "invalid request: max_attempts: must be between 1 and 100; command: required",
        ),
        (Reply(401, {"detail": "missing bearer token"}), AuthError, "missing bearer token"),
        (Reply(404, {"detail": "no task t-1"}), TaskNotFound, "no task with id 't-1'"),
        (Reply(409, {"detail": "already finished"}), Conflict, "already finished"),
        (Reply(500, {"detail": "see its log"}), ServerError, "server error 500: see its log"),
        (Reply(200, raw=b"<html>"), ServerError, "not JSON"),
        (Reply(404, raw=b"nope"), TaskNotFound, "no task with id 't-1'"),
    ],
)
def test_errors_map_to_the_hierarchy(
    fake_server: FakeServer,
    make_client: MakeClient,
    reply: Reply,
    error: type[Exception],
    text: str,
) -> None:
    fake_server.script = [reply]
    with pytest.raises(error, match=text) as caught:
        make_client(fake_server.url).get("t-1")
    if isinstance(caught.value, ValidationError):
        assert [p.field for p in caught.value.errors] == ["max_attempts", "command"]


def test_a_404_outside_tasks_means_a_wrong_url(
    fake_server: FakeServer, make_client: MakeClient
) -> None:
    fake_server.default = lambda seen: Reply(404, {"detail": f"no route matches {seen.path}"})
    with pytest.raises(ServerError, match=r"no route matches /api/v1/tasks\?.* \(is http"):
        list(make_client(fake_server.url + "/api").list())


def test_ids_are_quoted_into_the_path(fake_server: FakeServer, make_client: MakeClient) -> None:
    fake_server.default = lambda seen: Reply(200, _task())
    make_client(fake_server.url + "/prefix").get("a/b?c")
    assert fake_server.seen[0].path == "/prefix/v1/tasks/a%2Fb%3Fc"
    with pytest.raises(ValueError, match="empty"):
        make_client(fake_server.url).get("")


def test_submit_many_sends_chunks_of_1000_each_with_its_own_key(
    fake_server: FakeServer, make_client: MakeClient
) -> None:
    def echo(seen: Any) -> Reply:
        tasks = [_task(id=f"t{i}", command=t["command"]) for i, t in enumerate(seen.body["tasks"])]
        return Reply(201, {"tasks": tasks})

    fake_server.default = echo
    tasks = make_client(fake_server.url).submit_many(
        [{"command": f"c{i}", "payload": i} for i in range(2500)]
    )
    assert [t.command for t in tasks] == [f"c{i}" for i in range(2500)]
    assert [len(s.body["tasks"]) for s in fake_server.seen] == [1000, 1000, 500]
    assert len({s.headers["idempotency-key"] for s in fake_server.seen}) == 3


def test_wait_polls_with_backoff_and_times_out_as_timeouterror(
    fake_server: FakeServer, make_client: MakeClient
) -> None:
    fake_server.default = lambda seen: Reply(200, _task("running"))
    started = time.monotonic()
    with pytest.raises(TimeoutError) as caught:
        make_client(fake_server.url).wait("t-1", timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert isinstance(caught.value, WaitTimeout)
    assert [t.status for t in caught.value.pending] == ["running"]
    # Backoff from 50 ms growing by half each poll: about 6 polls in 0.5 s, not hundreds
    # (at least 2 even when a loaded machine slows every request).
    assert 2 <= len(fake_server.seen) <= 12
