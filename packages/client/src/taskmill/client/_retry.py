"""One API call: JSON in and out, bounded retries, and HTTP errors mapped to the client's errors.

What is retried, and why it is safe:
- a connection that could not be opened, and ``503`` (the server says it did nothing): always;
- a failure after the request may have reached the server (timeout, connection dropped,
  ``502``/``504`` from a proxy): only for requests that are safe to repeat — reads, submits
  carrying an idempotency key, cancels.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from taskmill.client._errors import (
    AuthError,
    Conflict,
    FieldProblem,
    QueueNotFound,
    ServerError,
    TaskmillClientError,
    TaskNotFound,
    Unavailable,
    ValidationError,
)
from taskmill.client._transport import ConnectionPool, Response, TransportError

USER_AGENT = "taskmill-client/0.1.0"

_MAYBE_DONE = frozenset({502, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    Attributes:
        retries: Retries after the first try.
        base: The first pause, in seconds; it doubles each retry (with jitter).
        maximum: The longest pause the client chooses itself.
        max_retry_after: The longest ``Retry-After`` honoured; longer ones are cut to this.
    """

    retries: int = 3
    base: float = 0.1
    maximum: float = 2.0
    max_retry_after: float = 30.0

    def pause(self, retry: int, retry_after: float | None) -> float:
        """The pause before retry number ``retry`` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return min(self.maximum, self.base * 2.0**retry) * random.uniform(0.5, 1.0)


class Caller:
    """Sends JSON requests to one scheduler and returns parsed JSON answers.

    Args:
        url: The scheduler's base URL.
        token: The bearer token, or ``None``.
        timeout: Seconds to wait to connect and for each response.
        policy: The retry policy.
    """

    def __init__(self, url: str, token: str | None, timeout: float, policy: RetryPolicy) -> None:
        self.url = url
        self._pool = ConnectionPool(url, timeout)
        self._policy = policy
        self._headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        """Closes idle connections."""
        self._pool.close()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        safe: bool,
        idempotency_key: str | None = None,
    ) -> Any:
        """Sends one request, retrying per the policy, and returns the JSON answer.

        Args:
            method: The HTTP method.
            path: The path and query.
            body: A JSON value to send, or ``None`` for no body.
            safe: Whether repeating the request cannot change the outcome.
            idempotency_key: Sent as the ``Idempotency-Key`` header.

        Raises:
            TaskmillClientError: The matching subclass for the failure.
        """
        headers = dict(self._headers)
        payload = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        retry = 0
        while True:
            try:
                response = self._pool.request(method, path, payload, headers)
            except TransportError as exc:
                if retry < self._policy.retries and (safe or not exc.sent):
                    time.sleep(self._policy.pause(retry, None))
                    retry += 1
                    continue
                raise Unavailable(f"cannot reach the scheduler at {self.url}: {exc}") from None
            if retry < self._policy.retries and (
                response.status == 503 or (safe and response.status in _MAYBE_DONE)
            ):
                time.sleep(self._policy.pause(retry, _retry_after(response)))
                retry += 1
                continue
            return _answer(response, self.url, path)


def _answer(response: Response, url: str, path: str) -> Any:
    if 200 <= response.status < 300:
        try:
            return response.json()
        except ValueError:
            raise ServerError(
                f"the server answered {response.status} with a body that is not JSON",
                status=response.status,
            ) from None
    raise _error(response, url, path)


def _error(response: Response, url: str, path: str) -> TaskmillClientError:
    status = response.status
    problem = _problem(response)
    text = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    if status in (400, 413, 415, 422):
        errors = _field_problems(problem)
        if errors:
            text = "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)
        return ValidationError(
            f"invalid request: {text}", status=status, problem=problem, errors=errors
        )
    if status in (401, 403):
        return AuthError(f"not authorized: {text}", status=status, problem=problem)
    if status == 404 and path.startswith("/v1/tasks/"):
        return TaskNotFound(f"not found: {text}", status=status, problem=problem)
    if status == 404 and path.startswith("/v1/queues/"):
        return QueueNotFound(f"not found: {text}", status=status, problem=problem)
    if status == 404:
        # Not a task: the URL does not lead to the API (a wrong --url path, another server).
        return ServerError(
            f"{text} (is {url} a taskmill scheduler?)", status=status, problem=problem
        )
    if status == 409:
        return Conflict(f"conflict: {text}", status=status, problem=problem)
    if status == 503 or status in _MAYBE_DONE:
        return Unavailable(
            f"scheduler unavailable: {text}",
            status=status,
            problem=problem,
            retry_after=_retry_after(response),
        )
    return ServerError(f"server error {status}: {text}", status=status, problem=problem)


def _problem(response: Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _field_problems(problem: dict[str, Any]) -> tuple[FieldProblem, ...]:
    items = problem.get("errors")
    if not isinstance(items, list):
        return ()
    return tuple(
        FieldProblem(str(item.get("field") or ""), str(item.get("message") or ""))
        for item in items
        if isinstance(item, dict)
    )


def _retry_after(response: Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()
