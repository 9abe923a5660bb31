"""The ``Client``: one method per API operation, plus waiting for tasks to finish."""

from __future__ import annotations

import builtins
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from taskmill.client._errors import NotFound, ServerError, TaskFailed, WaitTimeout
from taskmill.client._models import Queue, SubmitSpec, Task, Worker
from taskmill.client._retry import Caller, RetryPolicy

DEFAULT_URL = "http://127.0.0.1:8081"

#: How many tasks one batch request may carry (the scheduler's limit).
BATCH_LIMIT = 1000

_Item = TypeVar("_Item")

#: What names one of a collection's items, and how an error says it is missing.
_NAMED_BY = {"tasks": ("a task id", "task with id"), "queues": ("a queue name", "queue named")}

_FIRST_POLL = 0.05
_POLL_GROWTH = 1.5


class Client:
    """A client of the taskmill scheduler's HTTP API.

    Safe to share between threads; it keeps a small pool of keep-alive connections. Use it as a
    context manager, or call ``close()``, to close them early.

    Args:
        url: The scheduler's base URL. Defaults to ``TASKMILL_URL``, else
            ``http://127.0.0.1:8081``.
        token: The bearer token. Defaults to ``TASKMILL_TOKEN``; none is sent when unset.
        timeout: Seconds to wait to connect and for each response.
        retries: How many times a failed request is retried (connection errors and ``503``;
            requests that may have reached the server only when they are safe to repeat).

    Raises:
        ValueError: The URL is not an http(s) URL.

    Example:
        >>> with Client("http://127.0.0.1:8081") as client:  # doctest: +SKIP
        ...     task = client.submit("echo", {"hello": "world"})
        ...     client.wait(task.id).result
        {'hello': 'world'}
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        retries: int = 3,
    ) -> None:
        self.url = (url or os.environ.get("TASKMILL_URL") or DEFAULT_URL).rstrip("/")
        token = token if token is not None else os.environ.get("TASKMILL_TOKEN")
        self._caller = Caller(self.url, token or None, timeout, RetryPolicy(retries=retries))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes idle connections. The client stays usable; it opens new ones as needed."""
        self._caller.close()

    def submit(
        self,
        command: str,
        payload: Any = None,
        *,
        at: datetime | None = None,
        delay: float | timedelta | None = None,
        priority: int = 0,
        max_attempts: int = 1,
        timeout: float | timedelta | None = None,
        queue: str | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        """Submits one task.

        The request is retried on connection errors and ``503`` with the same idempotency key
        (a random one when none is given), so a retry never creates a second task.

        Args:
            command: The handler name.
            payload: Any JSON value; ``None`` means ``{}``.
            at: When the task becomes due, an aware datetime; not with ``delay``.
            delay: Seconds (or a timedelta) from now until it becomes due; not with ``at``.
                With neither, it is due at once.
            priority: Higher runs first.
            max_attempts: How many execution attempts it may have (1-100).
            timeout: Bound on one attempt's run time, in seconds (or a timedelta).
            queue: The queue name; ``None`` means ``default``.
            idempotency_key: Makes the submit safe to repeat: the same key with the same
                arguments returns the original task.

        Returns:
            The new task (or the original one, for a repeated idempotency key).

        Raises:
            ValueError: Both ``at`` and ``delay`` given, or ``at`` is naive.
            ValidationError: The server rejected the arguments; ``errors`` lists each problem.
            Conflict: The idempotency key was used before with other arguments.
            AuthError: The token was refused.
            Unavailable: The scheduler could not be reached, after retries.
        """
        spec = SubmitSpec(command, payload, at, delay, priority, max_attempts, timeout, queue)
        key = idempotency_key or uuid.uuid4().hex
        data = self._caller.call(
            "POST", "/v1/tasks", spec.to_json(), idempotency_key=key, safe=True
        )
        return Task.from_json(data)

    def submit_many(
        self,
        specs: Iterable[SubmitSpec | Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> builtins.list[Task]:
        """Submits many tasks, ``BATCH_LIMIT`` per request, each request in one transaction.

        Each request carries an idempotency key (derived from ``idempotency_key``, else
        random), so it is retried like ``submit`` without ever storing a task twice.

        Args:
            specs: ``SubmitSpec`` objects, or dicts of ``SubmitSpec``'s fields.
            idempotency_key: Makes the whole call safe to repeat with the same tasks.

        Returns:
            The new tasks, in the order given.

        Raises:
            ValueError: A spec is invalid (see ``SubmitSpec.to_json``).
            ValidationError: A task was refused; nothing of its request was stored. Earlier
                requests (of more than ``BATCH_LIMIT`` tasks) stay stored.
            AuthError: The token was refused.
            Unavailable: The scheduler could not be reached, after retries.
        """
        bodies = [_spec(item).to_json() for item in specs]
        base_key = idempotency_key or uuid.uuid4().hex
        tasks: builtins.list[Task] = []
        for start in range(0, len(bodies), BATCH_LIMIT):
            chunk = bodies[start : start + BATCH_LIMIT]
            key = base_key if start == 0 else f"{base_key}+{start}"
            data = self._caller.call(
                "POST", "/v1/tasks/batch", {"tasks": chunk}, idempotency_key=key, safe=True
            )
            tasks.extend(Task.from_json(item) for item in _items(data, "tasks"))
        return tasks

    def get(self, task_id: str | uuid.UUID) -> Task:
        """Returns a task as it is now.

        Raises:
            TaskNotFound: No task has this id.
            AuthError: The token was refused.
            Unavailable: The scheduler could not be reached, after retries.
        """
        return self._task_call("GET", task_id, "")

    def list(
        self,
        *,
        status: str | None = None,
        command: str | None = None,
        queue: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Task]:
        """Iterates over tasks, newest first, fetching pages as they are needed.

        Args:
            status: Only tasks in this status.
            command: Only tasks of this command.
            queue: Only tasks of this queue.
            page_size: How many tasks each request fetches (1-1000).

        Yields:
            Each matching task exactly once, even while new tasks are submitted.

        Raises:
            ValidationError: A filter was refused.
            AuthError: The token was refused.
            Unavailable: The scheduler could not be reached, after retries.
        """
        filters = {"status": status, "command": command, "queue": queue, "limit": page_size}
        cursor: str | None = None
        while True:
            query = {k: v for k, v in {**filters, "cursor": cursor}.items() if v is not None}
            data = self._caller.call("GET", "/v1/tasks?" + urlencode(query), safe=True)
            yield from (Task.from_json(item) for item in _items(data, "tasks"))
            cursor = data.get("next_cursor")
            if not cursor:
                return

    def cancel(self, task_id: str | uuid.UUID) -> Task:
        """Cancels a task.

        A scheduled task is cancelled at once; a dispatched or running one is asked to stop
        (``cancel_requested`` becomes true) and ends ``cancelled`` when its worker stops it.

        Returns:
            The task after the request.

        Raises:
            TaskNotFound: No task has this id.
            Conflict: The task had already finished.
            AuthError: The token was refused.
            Unavailable: The scheduler could not be reached, after retries.
        """
        return self._task_call("POST", task_id, "/cancel")

    def workers(self) -> builtins.list[Worker]:
        """Returns the live workers of the fleet.

        Raises:
            AuthError: The token was refused.
            Unavailable: The scheduler could not be reached, after retries.
        """
        return self._every("workers", Worker.from_json)

    def queues(self) -> builtins.list[Queue]:
        """Returns every queue with a setting, an unfinished task or an active worker, by name.

        Raises:
            AuthError: The token was refused.
            Unavailable: The scheduler could not be reached, after retries.
        """
        return self._every("queues", Queue.from_json)

    def _every(self, collection: str, parse: Callable[[Any], _Item]) -> builtins.list[_Item]:
        """Reads a collection listed whole in one answer, as ``{collection: [...]}``."""
        data = self._caller.call("GET", f"/v1/{collection}", safe=True)
        return [parse(item) for item in _items(data, collection)]

    def queue(self, name: str) -> Queue:
        """Returns one queue.

        Raises:
            QueueNotFound: Nothing names the queue.
            ValidationError: The name is not one a task's queue may have.
        """
        return Queue.from_json(self._one("GET", "queues", name, ""))

    def pause_queue(self, name: str) -> Queue:
        """Pauses a queue, even one nothing names yet: its tasks stay scheduled, and those
        dispatched or running finish. Returns the queue.

        Raises:
            ValidationError: The name is not one a task's queue may have.
        """
        return Queue.from_json(self._one("POST", "queues", name, "/pause"))

    def resume_queue(self, name: str) -> Queue:
        """Resumes a paused queue; returns it.

        Raises:
            ValidationError: The name is not one a task's queue may have.
        """
        return Queue.from_json(self._one("POST", "queues", name, "/resume"))

    def set_queue_limit(self, name: str, max_concurrency: int | None) -> Queue:
        """Caps a queue's tasks dispatched or running at once, over the whole cluster
        (``None`` removes the cap); returns the queue.

        Raises:
            ValidationError: The name, or ``max_concurrency`` (below 1), was refused.
        """
        body = {"max_concurrency": max_concurrency}
        return Queue.from_json(self._one("PUT", "queues", name, "", body))

    def _task_call(self, method: str, task_id: str | uuid.UUID, suffix: str) -> Task:
        return Task.from_json(self._one(method, "tasks", str(task_id), suffix))

    def _one(self, method: str, collection: str, key: str, suffix: str, body: Any = None) -> Any:
        """Calls a route of one task or queue (``collection`` is ``tasks`` or ``queues``);
        every such call is safe to repeat."""
        key_name, missing = _NAMED_BY[collection]
        if not key:
            raise ValueError(f"{key_name} must not be empty")
        path = f"/v1/{collection}/" + quote(key, safe="") + suffix
        try:
            return self._caller.call(method, path, body, safe=True)
        except NotFound as exc:
            # For a malformed key the server's detail names a route; say what was asked instead.
            raise type(exc)(
                f"no {missing} {key!r}", status=exc.status, problem=exc.problem
            ) from None

    def wait(
        self, task_id: str | uuid.UUID, timeout: float | None = None, poll: float = 1.0
    ) -> Task:
        """Waits until a task finishes (succeeded, failed or cancelled) and returns it.

        Polls with a gentle backoff, from 50 ms up to ``poll`` seconds between requests.

        Args:
            task_id: The task.
            timeout: Seconds to wait at most; ``None`` waits for ever.
            poll: The longest pause between two polls, in seconds.

        Returns:
            The finished task. It is returned, not raised, when it failed: check
            ``task.succeeded``, or use ``result()``.

        Raises:
            WaitTimeout: The task had not finished within ``timeout`` (a ``TimeoutError``).
            TaskNotFound: No task has this id.
        """
        return self.wait_many([task_id], timeout=timeout, poll=poll)[str(task_id)]

    def wait_many(
        self,
        task_ids: Iterable[str | uuid.UUID],
        timeout: float | None = None,
        poll: float = 1.0,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Task]:
        """Waits until every task finishes.

        Args:
            task_ids: The tasks.
            timeout: Seconds to wait at most for all of them; ``None`` waits for ever.
            poll: The longest pause between two rounds of polls, in seconds.
            on_progress: Called with ``(finished, total)`` after each round of polls.

        Returns:
            The finished tasks by id, in the order given.

        Raises:
            WaitTimeout: Some task had not finished within ``timeout``; ``pending`` holds them.
            TaskNotFound: No task has one of the ids.
        """
        ids = builtins.list(dict.fromkeys(str(task_id) for task_id in task_ids))
        deadline = None if timeout is None else time.monotonic() + timeout
        done: dict[str, Task] = {}
        latest: dict[str, Task] = {}
        pause = _FIRST_POLL
        while True:
            for task_id in ids:
                if task_id not in done:
                    latest[task_id] = task = self.get(task_id)
                    if task.is_final:
                        done[task_id] = task
            if on_progress is not None:
                on_progress(len(done), len(ids))
            if len(done) == len(ids):
                return {task_id: done[task_id] for task_id in ids}
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                pending = tuple(latest[i] for i in ids if i not in done)
                raise WaitTimeout(
                    f"{len(pending)} of {len(ids)} tasks not finished after {timeout:g} s",
                    pending,
                )
            time.sleep(pause if left is None else min(pause, left))
            pause = min(pause * _POLL_GROWTH, max(poll, _FIRST_POLL))

    def result(self, task_id: str | uuid.UUID, timeout: float | None = None) -> Any:
        """Waits for a task and returns its result.

        Raises:
            TaskFailed: The task failed or was cancelled; ``task.error`` says why.
            WaitTimeout: It had not finished within ``timeout``.
            TaskNotFound: No task has this id.
        """
        task = self.wait(task_id, timeout=timeout)
        if not task.succeeded:
            raise TaskFailed(task)
        return task.result


def _spec(item: SubmitSpec | Mapping[str, Any]) -> SubmitSpec:
    if isinstance(item, SubmitSpec):
        return item
    return SubmitSpec(**item)


def _items(data: Any, key: str) -> builtins.list[Any]:
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, builtins.list):
        raise ServerError(f"the server's answer has no {key!r} list: {json.dumps(data)[:200]}")
    return items
