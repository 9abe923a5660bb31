"""The OpenAPI 3.1 description of every route, served at ``/openapi.json``.

Written by hand, kept true by a test that validates it and compares its paths and methods with
the routes the app serves.
"""

from __future__ import annotations

from typing import Any

from taskmill.scheduler.openapi_schemas import (
    NAME,
    QUEUE_LIST,
    QUEUE_NAME,
    SCHEMAS,
    STATUS,
    TASK_LIST,
    ref,
)
from taskmill.scheduler.validation import INT32_MAX

_TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes the submit safe to retry: the same key and body return the "
    "original task(s) with 200; the same key with another body is refused with 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
_TRACEPARENT = {
    "name": "traceparent",
    "in": "header",
    "required": False,
    "description": "W3C trace context; stored with the task.",
    "schema": {"type": "string"},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problems(*statuses: int) -> dict[str, Any]:
    descriptions = {
        400: "The request is invalid; `errors` lists every problem.",
        401: "A valid bearer token is required.",
        404: "No such task or queue, or no route for the path.",
        409: "The request conflicts with the task's state or an earlier request.",
        413: "The body or a payload is too large.",
        415: "The body is not JSON.",
        503: "The database is unavailable; retry after `Retry-After` seconds.",
    }
    return {
        str(status): {
            "description": descriptions[status],
            "content": {"application/problem+json": {"schema": ref("Problem")}},
        }
        for status in (*statuses, 401, 503)
    }


def _body(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"required": True, "content": {media: {"schema": schema}}}


def _submit_paths() -> dict[str, Any]:
    tasks = {"type": "object", "properties": {"tasks": {"type": "array", "items": ref("Task")}}}
    return {
        "/v1/tasks": {
            "post": {
                "summary": "Submit a task",
                "operationId": "submitTask",
                "parameters": [_IDEMPOTENCY_KEY, _TRACEPARENT],
                "requestBody": _body(ref("TaskSubmission")),
                "responses": {
                    "201": {
                        **_json(ref("Task"), "The task was stored."),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    "200": _json(ref("Task"), "A repeat of an idempotent submit: the original."),
                    **_problems(400, 409, 413, 415),
                },
            },
            "get": {
                "summary": "List tasks, newest first",
                "operationId": "listTasks",
                "parameters": [
                    {"name": "status", "in": "query", "schema": STATUS},
                    {"name": "command", "in": "query", "schema": NAME},
                    {"name": "queue", "in": "query", "schema": NAME},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "The next_cursor of the page before.",
                        "schema": {"type": "string", "minLength": 1},
                    },
                ],
                "responses": {"200": _json(TASK_LIST, "One page of tasks."), **_problems(400)},
            },
        },
        "/v1/tasks/batch": {
            "post": {
                "summary": "Submit 1 to 1000 tasks, all or none",
                "operationId": "submitTasks",
                "parameters": [_IDEMPOTENCY_KEY, _TRACEPARENT],
                "requestBody": _body(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["tasks"],
                        "properties": {
                            "tasks": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 1000,
                                "items": ref("TaskSubmission"),
                            }
                        },
                    }
                ),
                "responses": {
                    "201": _json(tasks, "The tasks were stored, in order."),
                    "200": _json(tasks, "A repeat of an idempotent batch: the originals."),
                    **_problems(400, 409, 413, 415),
                },
            }
        },
    }


def _task_paths() -> dict[str, Any]:
    return {
        "/v1/tasks/{task_id}": {
            "get": {
                "summary": "Get a task",
                "operationId": "getTask",
                "parameters": [_TASK_ID],
                "responses": {"200": _json(ref("Task"), "The task."), **_problems(404)},
            }
        },
        "/v1/tasks/{task_id}/cancel": {
            "post": {
                "summary": "Cancel a task",
                "description": "A scheduled task is cancelled at once; a dispatched or running "
                "one is marked for cancellation and its worker asked to stop it.",
                "operationId": "cancelTask",
                "parameters": [_TASK_ID],
                "responses": {"200": _json(ref("Task"), "The task."), **_problems(404, 409)},
            }
        },
        "/v1/workers": {
            "get": {
                "summary": "The live fleet of workers",
                "operationId": "listWorkers",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"workers": {"type": "array", "items": ref("Worker")}},
                        },
                        "The workers.",
                    ),
                    **_problems(),
                },
            }
        },
    }


def _queue_operation(summary: str, operation: str, *statuses: int, **more: Any) -> dict[str, Any]:
    """An operation on one queue, answering the queue: its problems are ``statuses``'."""
    return {
        "summary": summary,
        "operationId": operation,
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": QUEUE_NAME}],
        "responses": {"200": _json(ref("Queue"), "The queue."), **_problems(*statuses)},
        **more,
    }


def _queue_paths() -> dict[str, Any]:
    limit = {
        "type": "object",
        "additionalProperties": False,
        "required": ["max_concurrency"],
        "properties": {
            "max_concurrency": {"type": ["integer", "null"], "minimum": 1, "maximum": INT32_MAX}
        },
    }
    # Steering a queue that nothing names yet makes it, so only GET answers 404 for the queue
    # itself; every route of one queue answers 404 for a path that leads to no route.
    return {
        "/v1/queues": {
            "get": {
                "summary": "Every queue: with a setting, an unfinished task or an active worker",
                "operationId": "listQueues",
                "responses": {"200": _json(QUEUE_LIST, "The queues, by name."), **_problems()},
            }
        },
        "/v1/queues/{name}": {
            "get": _queue_operation("One queue", "getQueue", 400, 404),
            "put": _queue_operation(
                "Set or remove the queue's max_concurrency",
                "setQueueLimit",
                *(400, 404, 413, 415),
                description="max_concurrency caps the queue's tasks dispatched or running at "
                "once, over every coordinator; null removes the cap.",
                requestBody=_body(limit),
            ),
        },
        "/v1/queues/{name}/pause": {
            "post": _queue_operation(
                "Pause a queue: its tasks stay scheduled, those running finish",
                "pauseQueue",
                *(400, 404),
            )
        },
        "/v1/queues/{name}/resume": {
            "post": _queue_operation("Resume a queue", "resumeQueue", 400, 404)
        },
    }


def _operational_paths() -> dict[str, Any]:
    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    return {
        "/healthz": {
            "get": {
                "summary": "Liveness (no authentication)",
                "operationId": "health",
                "security": [],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "status": {"const": "ok"},
                                "version": {"type": "string"},
                            },
                        },
                        "Alive.",
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the database answers and its schema is current "
                "(no authentication)",
                "operationId": "ready",
                "security": [],
                "responses": {"200": _json(status, "Ready."), **_problems()},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {
                    "200": _json({"type": "object"}, "The OpenAPI document."),
                    **_problems(),
                },
            }
        },
    }


def _legacy_paths() -> dict[str, Any]:
    legacy_status = {
        "200": _json(ref("LegacyStatus"), "The task's status."),
        **_problems(400, 404),
    }
    return {
        "/schedule": {
            "post": {
                "summary": "Submit a task (seed-compatible)",
                "description": "scheduled_at: unix seconds, or ISO 8601 (UTC when no offset), "
                "from 1970-01-01T00:00:00Z to 9999-12-30T23:59:59Z; null or left out: now. "
                "Other fields are ignored.",
                "operationId": "legacySchedule",
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["command"],
                        "properties": {
                            "command": NAME,
                            "payload": {"description": "As for POST /v1/tasks."},
                            "scheduled_at": {"type": ["number", "string", "null"]},
                        },
                    }
                ),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "command": {"type": "string"},
                                "scheduled_at": {"type": "number"},
                                "task_id": {"type": "string"},
                            },
                        },
                        "The task was stored.",
                    ),
                    **_problems(400, 413),
                },
            }
        },
        "/status": {
            "get": {
                "summary": "A task's status (seed-compatible)",
                "operationId": "legacyStatusByQuery",
                "parameters": [{**_TASK_ID, "in": "query"}],
                "responses": legacy_status,
            }
        },
        "/status/{task_id}": {
            "get": {
                "summary": "A task's status (seed-compatible)",
                "operationId": "legacyStatus",
                "parameters": [_TASK_ID],
                "responses": legacy_status,
            }
        },
    }


def document(version: str) -> dict[str, Any]:
    """The OpenAPI document of the scheduler at ``version``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "taskmill scheduler",
            "version": version,
            "description": "Submit tasks and follow what became of them. Errors are "
            "application/problem+json (RFC 9457). Times are RFC 3339; responses use UTC.",
        },
        "security": [{"bearer": []}],
        "paths": {
            **_submit_paths(),
            **_task_paths(),
            **_queue_paths(),
            **_operational_paths(),
            **_legacy_paths(),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
    }
