"""The library against a real scheduler (create_app on waitress) and a real PostgreSQL."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from taskmill.client import (
    AuthError,
    Client,
    Conflict,
    SubmitSpec,
    TaskFailed,
    TaskNotFound,
    TaskStatus,
    ValidationError,
    WaitTimeout,
)
from taskmill.client._render import workers_table
from taskmill.common.models import ServedQueue
from taskmill.common.models import TaskError as StoredError

from .conftest import Scheduler  # type: ignore[import-not-found]

MakeClient = Callable[..., Client]


def test_submit_and_get_mirror_the_task(client: Client) -> None:
    at = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
    task = client.submit(
        "images.resize", {"path": "a.png", "sizes": [1, 2]}, at=at, priority=7,
        max_attempts=3, timeout=timedelta(seconds=90), queue="images",
    )  # fmt: skip
    assert uuid.UUID(task.id)
    assert task.status == TaskStatus.SCHEDULED
    assert (task.command, task.queue, task.priority) == ("images.resize", "images", 7)
    assert (task.attempt, task.max_attempts, task.timeout_seconds) == (0, 3, 90)
    assert task.payload == {"path": "a.png", "sizes": [1, 2]}
    assert task.scheduled_at == at
    assert task.created_at is not None and task.created_at.tzinfo is not None
    assert task.finished_at is None and task.error is None and not task.cancel_requested
    assert client.get(task.id) == task
    assert client.get(uuid.UUID(task.id)) == task


def test_delay_and_defaults(client: Client) -> None:
    before = datetime.now(UTC)
    task = client.submit("echo", delay=3600)
    assert task.payload == {}
    assert task.queue == "default"
    assert task.scheduled_at is not None
    assert timedelta(minutes=59) < task.scheduled_at - before < timedelta(minutes=61)


def test_an_idempotency_key_returns_the_original_or_conflicts(client: Client) -> None:
    first = client.submit("echo", {"n": 1}, idempotency_key="order-7")
    again = client.submit("echo", {"n": 1}, idempotency_key="order-7")
    assert again == first
    with pytest.raises(Conflict):
        client.submit("echo", {"n": 2}, idempotency_key="order-7")
    assert [t.id for t in client.list(command="echo")] == [first.id]


class _DropFirstResponse:
    """A TCP proxy that forwards the first request but drops its response, then forwards all.

    The scheduler stores the task; the client sees its connection die without an answer and
    cannot know the task exists, exactly the case its automatic idempotency key is for.
    """

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            drop = self.connections == 1
            upstream = socket.create_connection(("127.0.0.1", self._target))
            for args in ((downstream, upstream, False), (upstream, downstream, drop)):
                thread = threading.Thread(target=self._pipe, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, drop: bool) -> None:
        try:
            while data := _recv(source):
                if drop:
                    return  # the server answered, so it handled the request: hang up
                sink.sendall(data)
        except OSError:
            pass
        finally:
            # shutdown() (unlike close()) also wakes the other direction's blocked recv().
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        # close() alone leaves a blocked accept() waiting for ever; shutdown() wakes it.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._acceptor.join(timeout=10)
        for thread in self._threads:
            thread.join(timeout=10)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


@pytest.fixture
def dropping_proxy(scheduler: Scheduler) -> Iterator[_DropFirstResponse]:
    proxy = _DropFirstResponse(int(scheduler.url.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


def test_a_submit_retried_after_a_lost_answer_creates_one_task(
    scheduler: Scheduler, dropping_proxy: _DropFirstResponse, make_client: MakeClient
) -> None:
    client = make_client(f"http://127.0.0.1:{dropping_proxy.port}", token=scheduler.token)
    task = client.submit("once", {"n": 1})
    client.close()
    assert dropping_proxy.connections == 2
    direct = make_client(scheduler.url, token=scheduler.token)
    assert [t.id for t in direct.list(command="once")] == [task.id]


def test_list_pages_through_everything_once_newest_first(client: Client) -> None:
    tasks = client.submit_many([SubmitSpec("page", {"i": i}) for i in range(23)])
    client.submit("other")
    listed = list(client.list(command="page", page_size=5))
    assert [t.id for t in listed] == [t.id for t in reversed(tasks)]
    assert len(list(client.list(page_size=1000))) == 24
    client.cancel(tasks[0].id)
    assert [t.id for t in client.list(status="cancelled")] == [tasks[0].id]


def test_submit_many_splits_into_batches_of_1000_in_order(client: Client) -> None:
    tasks = client.submit_many(
        [{"command": "bulk", "payload": i, "priority": i % 3} for i in range(1001)]
    )
    assert [t.payload for t in tasks] == list(range(1001))
    assert len({t.id for t in tasks}) == 1001
    assert sum(1 for _ in client.list(command="bulk", page_size=1000)) == 1001


def test_cancel_a_scheduled_task_then_conflict(client: Client) -> None:
    task = client.submit("echo", delay=600)
    cancelled = client.cancel(task.id)
    assert cancelled.status == TaskStatus.CANCELLED
    assert cancelled.finished_at is not None
    with pytest.raises(Conflict):
        client.cancel(task.id)
    assert client.wait(task.id, timeout=5).status == "cancelled"


def test_unknown_and_malformed_ids_are_not_found(client: Client) -> None:
    with pytest.raises(TaskNotFound):
        client.get(uuid.uuid4())
    with pytest.raises(TaskNotFound):
        client.get("not-a-uuid")
    with pytest.raises(TaskNotFound):
        client.cancel(uuid.uuid4())


def test_validation_errors_carry_the_field_problems(client: Client) -> None:
    with pytest.raises(ValidationError) as caught:
        client.submit("bad command!", max_attempts=0)
    fields = {problem.field for problem in caught.value.errors}
    assert fields == {"command", "max_attempts"}
    assert caught.value.status == 400
    with pytest.raises(ValidationError) as batch:
        client.submit_many([{"command": "ok"}, {"command": ""}])
    assert [p.field for p in batch.value.errors] == ["tasks[1].command"]
    assert list(client.list()) == []


def test_a_wrong_token_is_an_auth_error(scheduler: Scheduler, make_client: MakeClient) -> None:
    with pytest.raises(AuthError) as caught:
        make_client(scheduler.url, token="wrong").submit("echo")
    assert caught.value.status == 401


def test_wait_returns_finished_tasks_and_result_raises_on_failure(
    scheduler: Scheduler, client: Client
) -> None:
    ok, bad = client.submit("echo", {"x": 1}), client.submit("boom", priority=-1)
    scheduler.finish(ok.id, TaskStatus.SUCCEEDED, result={"x": 1})
    scheduler.finish(bad.id, TaskStatus.FAILED, error=StoredError("ValueError", "no", "tb"))
    done = client.wait_many([bad.id, ok.id], timeout=10)
    assert list(done) == [bad.id, ok.id]
    assert done[ok.id].succeeded and done[ok.id].result == {"x": 1}
    assert done[bad.id].status == TaskStatus.FAILED
    assert done[bad.id].error is not None and done[bad.id].error.type == "ValueError"
    assert client.result(ok.id) == {"x": 1}
    with pytest.raises(TaskFailed) as caught:
        client.result(bad.id, timeout=5)
    assert caught.value.task.error is not None
    assert "ValueError: no" in caught.value.message


def test_wait_follows_a_task_that_finishes_later(scheduler: Scheduler, client: Client) -> None:
    task = client.submit("later")
    finisher = threading.Timer(0.5, scheduler.finish, (task.id, TaskStatus.SUCCEEDED, 42))
    finisher.start()
    try:
        assert client.wait(task.id, timeout=30).result == 42
    finally:
        finisher.join()


def test_wait_times_out_on_a_task_that_never_runs(client: Client) -> None:
    task = client.submit("never")
    with pytest.raises(WaitTimeout) as caught:
        client.wait(task.id, timeout=0.3)
    assert [t.id for t in caught.value.pending] == [task.id]


def test_workers_lists_the_fleet(scheduler: Scheduler, client: Client) -> None:
    assert client.workers() == []
    registered = scheduler.workers.register(
        address="10.0.0.5:50051", capacity=4, coordinator_id="c-1", hostname="box", version="9"
    )
    (worker,) = client.workers()
    assert worker.id == registered.id
    assert (worker.address, worker.capacity, worker.hostname, worker.version) == (
        "10.0.0.5:50051", 4, "box", "9",
    )  # fmt: skip
    assert worker.state == "active"
    assert worker.last_heartbeat_at is not None and worker.last_heartbeat_at.tzinfo is not None


def test_workers_show_their_queues_and_handlers(scheduler: Scheduler, client: Client) -> None:
    scheduler.workers.register(
        address="10.0.0.6:50051",
        capacity=4,
        coordinator_id="c-1",
        handlers=["send", "echo"],
        queues=[ServedQueue("mail", 3), ServedQueue("default")],
    )
    (worker,) = client.workers()
    assert (worker.handlers, worker.queues) == (("send", "echo"), {"mail": 3, "default": 1})
    assert "mail=3,default" in workers_table([worker])
