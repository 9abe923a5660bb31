"""The queue routes: ``/v1/queues`` and one queue's ``/v1/queues/{name}`` (see it, set its
``max_concurrency``), ``/pause`` and ``/resume``.

A queue is named by the same rules as a task's ``queue`` at submit, so a queue an operator
steers is one a task can be in. Steering a queue that nothing names yet makes it: a queue can
be paused or limited before its first task arrives.
"""

from __future__ import annotations

from typing import Any

import falcon

from taskmill.common.store import QueueStats, QueueStore
from taskmill.scheduler.errors import FieldError, InvalidRequest, QueueNotFound
from taskmill.scheduler.representation import queue_json
from taskmill.scheduler.resources import read_json, send_json
from taskmill.scheduler.validation import INT32_MAX, MAX_QUEUE_LENGTH, check_integer, check_name

#: The body of ``PUT /v1/queues/{name}`` is one small field; anything near this is not one.
_BODY_LIMIT = 4096
_LIMIT_FIELD = "max_concurrency"


def parse_queue_name(name: str) -> str:
    """Checks a queue name from the path.

    Raises:
        InvalidRequest: The name breaks the rules of a task's ``queue`` (field ``name``).
    """
    errors: list[FieldError] = []
    check_name(name, "name", MAX_QUEUE_LENGTH, errors)
    if errors:
        raise InvalidRequest(errors)
    return name


def parse_limit(body: Any) -> int | None:
    """Checks the body of ``PUT /v1/queues/{name}``: ``{"max_concurrency": N}``, where ``N``
    is an integer of at least 1, or null to remove the limit.

    Raises:
        InvalidRequest: Listing every problem, each naming its field.
    """
    if type(body) is not dict:
        raise InvalidRequest([FieldError("body", f"must be a JSON object with {_LIMIT_FIELD}")])
    errors = [FieldError(name, "unknown field") for name in sorted(body.keys() - {_LIMIT_FIELD})]
    if _LIMIT_FIELD not in body:
        errors.append(
            FieldError(_LIMIT_FIELD, "required: an integer of at least 1, or null for no limit")
        )
    limit = check_integer(body.get(_LIMIT_FIELD), "", _LIMIT_FIELD, errors, 1, INT32_MAX)
    if errors:
        raise InvalidRequest(errors)
    return limit


class QueueService:
    """Finds, pauses, resumes and limits queues.

    Args:
        store: The queues' store.
    """

    def __init__(self, store: QueueStore) -> None:
        self._store = store

    def all(self) -> list[QueueStats]:
        """Every queue, by name."""
        return self._store.all()

    def get(self, name: str) -> QueueStats:
        """One queue.

        Raises:
            QueueNotFound: Nothing names the queue.
        """
        queue = self._store.get(name)
        if queue is None:
            raise QueueNotFound(
                f"no queue is named {name!r}: it has no settings, no unfinished task and no "
                "active worker"
            )
        return queue

    def set_paused(self, name: str, paused: bool) -> QueueStats:
        """Pauses or resumes a queue, and returns it."""
        return self._store.set_paused(name, paused)

    def set_limit(self, name: str, max_concurrency: int | None) -> QueueStats:
        """Sets or removes a queue's ``max_concurrency``, and returns it."""
        return self._store.set_limit(name, max_concurrency)


class QueuesResource:
    """``/v1/queues``: every queue."""

    def __init__(self, service: QueueService) -> None:
        self._service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Lists the queues, by name."""
        send_json(resp, {"queues": [queue_json(queue) for queue in self._service.all()]})


class QueueResource:
    """``/v1/queues/{name}``: one queue, and its limit."""

    def __init__(self, service: QueueService) -> None:
        self._service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        """Returns the queue."""
        send_json(resp, queue_json(self._service.get(parse_queue_name(name))))

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        """Sets or removes the queue's ``max_concurrency``; returns the queue."""
        queue = parse_queue_name(name)
        limit = parse_limit(read_json(req, _BODY_LIMIT))
        send_json(resp, queue_json(self._service.set_limit(queue, limit)))


class SteerResource:
    """``/v1/queues/{name}/pause`` or ``/resume``.

    Args:
        service: The queues.
        paused: What the route sets: ``True`` for pause, ``False`` for resume.
    """

    def __init__(self, service: QueueService, *, paused: bool) -> None:
        self._service = service
        self._paused = paused

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        """Pauses or resumes the queue; returns it."""
        queue = parse_queue_name(name)
        send_json(resp, queue_json(self._service.set_paused(queue, self._paused)))
