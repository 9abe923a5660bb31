"""Errors as ``application/problem+json`` (RFC 9457): the one place errors become HTTP.

``install(app)`` registers one handler for every ``TaskmillError`` (its status chosen from
``STATUSES`` by the error's class), a catch-all that logs unexpected exceptions and answers
``500`` without any detail of the failure, and a serializer so Falcon's own errors (unknown
route ``404``, ``405`` ...) have the same shape.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon

from taskmill.common.dberrors import StatementCancelled
from taskmill.common.errors import (
    DatabaseUnavailable,
    InvalidTransition,
    SchemaError,
    TaskmillError,
    TaskNotFound,
)
from taskmill.scheduler.errors import (
    ContentTooLarge,
    IdempotencyKeyReused,
    InvalidRequest,
    QueueNotFound,
    Unauthorized,
    UnsupportedMediaType,
)

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_TYPE_PREFIX = "urn:taskmill:problem:"
_INTERNAL = "the scheduler failed; its log says why"

#: HTTP status and problem type of each error class; a subclass takes its nearest ancestor's.
STATUSES: dict[type[TaskmillError], tuple[int, str]] = {
    InvalidRequest: (400, "invalid-request"),
    Unauthorized: (401, "unauthorized"),
    TaskNotFound: (404, "task-not-found"),
    QueueNotFound: (404, "queue-not-found"),
    InvalidTransition: (409, "invalid-transition"),
    IdempotencyKeyReused: (409, "idempotency-key-reused"),
    ContentTooLarge: (413, "content-too-large"),
    UnsupportedMediaType: (415, "unsupported-media-type"),
    DatabaseUnavailable: (503, "database-unavailable"),
    # Past the pool's statement timeout, or cancelled by an operator: the database is too busy
    # for now, and nothing of the statement was kept, so the same request may be sent again.
    StatementCancelled: (503, "database-timeout"),
    SchemaError: (503, "schema-mismatch"),
}


def problem(status: int, kind: str, detail: str, **extra: Any) -> dict[str, Any]:
    """A problem document."""
    body = {
        "type": _TYPE_PREFIX + kind,
        "title": falcon.code_to_http_status(status)[4:],
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return body


def _status_of(error: TaskmillError) -> tuple[int, str]:
    for cls in type(error).__mro__:
        if cls in STATUSES:
            return STATUSES[cls]
    return 500, "internal-error"


def _respond(resp: falcon.Response, status: int, body: dict[str, Any]) -> None:
    resp.status = status
    resp.content_type = PROBLEM_JSON
    resp.text = json.dumps(body)


class TaskmillErrorHandler:
    """Answers a ``TaskmillError`` with its status and message.

    Args:
        retry_after_seconds: What ``Retry-After`` says on a ``503``.
    """

    def __init__(self, retry_after_seconds: int) -> None:
        self._retry_after = str(retry_after_seconds)

    def __call__(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        error: TaskmillError,
        params: dict[str, Any],
    ) -> None:
        """Renders the error."""
        status, kind = _status_of(error)
        extra: dict[str, Any] = {}
        if isinstance(error, InvalidRequest):
            if error.too_large:
                status, kind = 413, "content-too-large"
            extra["errors"] = [{"field": e.field, "message": e.message} for e in error.errors]
        if status == 503:
            resp.set_header("Retry-After", self._retry_after)
            logger.warning("%s %s: %s", req.method, req.path, error.message)
        elif status == 401:
            resp.set_header("WWW-Authenticate", 'Bearer realm="taskmill"')
        detail = error.message
        if status == 500:
            # A database's own message can quote data or schema: the log gets it, not the caller.
            logger.error("%s %s failed: %s", req.method, req.path, error.message)
            detail = _INTERNAL
        _respond(resp, status, problem(status, kind, detail, **extra))


def handle_unexpected(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]
) -> None:
    """Logs an unexpected exception and answers ``500`` without revealing anything of it."""
    logger.exception("%s %s failed", req.method, req.path)
    _respond(resp, 500, problem(500, "internal-error", _INTERNAL))


def serialize_http_error(
    req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError
) -> None:
    """Renders Falcon's own errors (unknown route, wrong method ...) as problems."""
    if error.status_code == 404:
        kind, detail = "route-not-found", f"no route matches {req.path}"
    elif error.status_code == 405:
        allowed = dict(error.headers or {}).get("Allow", "")
        kind, detail = "method-not-allowed", f"{req.method} is not allowed here; use {allowed}"
    else:
        kind, detail = "http-error", error.description or error.title or ""
    resp.content_type = PROBLEM_JSON
    resp.text = json.dumps(problem(error.status_code, kind, detail))


def install(app: falcon.App[falcon.Request, falcon.Response], retry_after_seconds: int) -> None:
    """Registers the error handlers and serializer on an app."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(TaskmillError, TaskmillErrorHandler(retry_after_seconds))
    app.set_error_serializer(serialize_http_error)
