"""The HTTP resources: each parses the request, calls one service method, writes the response.

Errors are raised, never rendered here: ``problems.py`` turns them into responses.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import falcon

from taskmill.common.errors import TaskNotFound
from taskmill.common.migrate import latest_version
from taskmill.common.traceparent import header_traceparent
from taskmill.scheduler import legacy
from taskmill.scheduler.errors import (
    ContentTooLarge,
    FieldError,
    InvalidRequest,
    UnsupportedMediaType,
)
from taskmill.scheduler.jsonbody import parse_json
from taskmill.scheduler.listing import parse_list_query
from taskmill.scheduler.representation import (
    encode_task,
    encode_tasks,
    encode_waiting_task,
    worker_json,
)
from taskmill.scheduler.service import TaskService
from taskmill.scheduler.tracing import request_traceparent
from taskmill.scheduler.validation import parse_batch, parse_submission

_IDEMPOTENCY_KEY_MAX = 255


@dataclass(frozen=True)
class Limits:
    """Size limits on request bodies.

    Attributes:
        payload_bytes: The largest payload of one task, encoded as JSON.
        body_bytes: The largest body of a single-task request.
        batch_bytes: The largest body of a batch request.
    """

    payload_bytes: int
    body_bytes: int
    batch_bytes: int


def send_json(resp: falcon.Response, body: Any, status: int = 200) -> None:
    """Writes a JSON response."""
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(body)


def send_encoded(resp: falcon.Response, text: str, status: int = 200) -> None:
    """Writes a response already encoded as JSON."""
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.text = text


def read_json(req: falcon.Request, limit: int, *, strict_type: bool = True) -> Any:
    """Reads the body as JSON, refusing a wrong content type or more than ``limit`` bytes.

    Raises:
        UnsupportedMediaType: ``strict_type`` and the content type is not JSON.
        ContentTooLarge: The body is over the limit.
        InvalidRequest: The body is empty or not JSON.
    """
    if strict_type:
        media = (req.content_type or "").partition(";")[0].strip().lower()
        if media != "application/json" and not (
            media.startswith("application/") and media.endswith("+json")
        ):
            got = f"got {media}" if media else "no Content-Type was sent"
            raise UnsupportedMediaType(f"send the body as Content-Type: application/json ({got})")
    length = req.content_length
    if length is not None and length > limit:
        raise ContentTooLarge(f"the body is {length} bytes; the limit is {limit}")
    body = req.bounded_stream.read(limit + 1)
    if len(body) > limit:
        raise ContentTooLarge(f"the body is over the limit of {limit} bytes")
    if not body.strip():
        raise InvalidRequest([FieldError("body", "required: a JSON document")])
    return parse_json(body)


def idempotency_key(req: falcon.Request) -> str | None:
    """The ``Idempotency-Key`` header: 1 to 255 visible ASCII characters, or absent.

    Raises:
        InvalidRequest: The header is malformed.
    """
    key = req.get_header("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= _IDEMPOTENCY_KEY_MAX or not all("!" <= c <= "~" for c in key):
        raise InvalidRequest(
            [FieldError("Idempotency-Key", "must be 1 to 255 visible ASCII characters")]
        )
    return key


def _traceparent(req: falcon.Request) -> str:
    """The trace context stored with a task submitted by this request."""
    return request_traceparent(header_traceparent(req.get_header("traceparent")))


class TasksResource:
    """``/v1/tasks``: submit one task; list tasks."""

    def __init__(self, service: TaskService, limits: Limits) -> None:
        self._service = service
        self._limits = limits

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Submits one task."""
        submission = parse_submission(
            read_json(req, self._limits.body_bytes), self._limits.payload_bytes
        )
        submitted = self._service.submit(
            [submission],
            idempotency_key=idempotency_key(req),
            trace_context=_traceparent(req),
        )
        task = submitted.tasks[0]
        resp.location = f"/v1/tasks/{task.id}"
        send_encoded(resp, encode_task(task), 201 if submitted.created else 200)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Lists tasks, newest first."""
        page = self._service.list_tasks(parse_list_query(req.params))
        cursor = "null" if page.next_cursor is None else f'"{page.next_cursor}"'
        send_encoded(resp, f'{{"tasks": {encode_tasks(page.tasks)}, "next_cursor": {cursor}}}')


class BatchResource:
    """``/v1/tasks/batch``: submit up to 1000 tasks at once, all or none."""

    def __init__(self, service: TaskService, limits: Limits) -> None:
        self._service = service
        self._limits = limits

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Submits a batch of tasks."""
        submissions = parse_batch(
            read_json(req, self._limits.batch_bytes), self._limits.payload_bytes
        )
        submitted = self._service.submit(
            submissions,
            idempotency_key=idempotency_key(req),
            batch=True,
        )
        status = 201 if submitted.created else 200
        send_encoded(resp, f'{{"tasks": {encode_tasks(submitted.tasks)}}}', status)


class TaskResource:
    """``/v1/tasks/{task_id}``: one task."""

    def __init__(self, service: TaskService) -> None:
        self._service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: uuid.UUID) -> None:
        """Returns the task, and why it waits when it is scheduled and due."""
        send_encoded(resp, encode_waiting_task(*self._service.get_waiting(task_id)))


class CancelResource:
    """``/v1/tasks/{task_id}/cancel``: cancel a task."""

    def __init__(self, service: TaskService) -> None:
        self._service = service

    def on_post(self, req: falcon.Request, resp: falcon.Response, task_id: uuid.UUID) -> None:
        """Cancels the task, or asks its worker to stop it."""
        send_encoded(resp, encode_task(self._service.cancel(task_id)))


class WorkersResource:
    """``/v1/workers``: the live fleet."""

    def __init__(self, service: TaskService) -> None:
        self._service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Lists the live workers."""
        send_json(resp, {"workers": [worker_json(w) for w in self._service.workers()]})


class HealthResource:
    """``/healthz``: the process is alive (no database check, no auth)."""

    def __init__(self, version: str) -> None:
        self._version = version

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answers that the scheduler is alive."""
        send_json(resp, {"status": "ok", "version": self._version})


class ReadyResource:
    """``/readyz``: the database answers and its schema is current."""

    def __init__(self, service: TaskService) -> None:
        self._service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answers 200 when ready; errors answer 503."""
        self._service.check_ready()
        send_json(resp, {"status": "ready", "schema_version": latest_version()})


class OpenApiResource:
    """``/openapi.json``: the API description."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._text = json.dumps(document)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Returns the OpenAPI document."""
        resp.content_type = falcon.MEDIA_JSON
        resp.text = self._text


class ScheduleResource:
    """``/schedule``: the seed's submit route."""

    def __init__(self, service: TaskService, limits: Limits) -> None:
        self._service = service
        self._limits = limits

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Submits a task the seed's way; any content type is read as JSON."""
        body = read_json(req, self._limits.body_bytes, strict_type=False)
        submitted = self._service.submit(
            [legacy.parse_schedule(body, self._limits.payload_bytes)],
            idempotency_key=idempotency_key(req),
            trace_context=_traceparent(req),
        )
        send_json(resp, legacy.schedule_json(submitted.tasks[0]))


class StatusResource:
    """``/status?task_id=`` and ``/status/{task_id}``: the seed's status route."""

    def __init__(self, service: TaskService) -> None:
        self._service = service

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, task_id: uuid.UUID | None = None
    ) -> None:
        """Returns the task's status in the seed's shape."""
        if task_id is None:
            text = req.get_param("task_id")
            if not text:
                raise InvalidRequest([FieldError("task_id", "required query parameter")])
            try:
                task_id = uuid.UUID(text)
            except ValueError:
                raise TaskNotFound("no task has this id (task ids are UUIDs)") from None
        send_json(resp, legacy.status_json(self._service.get(task_id)))
