"""How tasks and workers look in JSON responses.

Times are RFC 3339 in UTC with a ``Z`` suffix and microseconds, always in the same shape so
they sort as strings.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from taskmill.common.models import Task, Worker

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def rfc3339(value: datetime | None) -> str | None:
    """Formats a time as RFC 3339 in UTC, such as ``2030-01-01T00:00:00.000000Z``."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def valid_traceparent(value: str | None) -> str | None:
    """The W3C ``traceparent`` header if it is well formed, else ``None`` (it is ignored)."""
    if value is None:
        return None
    value = value.strip()
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, span_id, _ = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return value


def trace_id(trace_context: str | None) -> str | None:
    """The trace id of a stored ``traceparent``, or ``None``."""
    if trace_context is None:
        return None
    parts = trace_context.split("-")
    return parts[1] if len(parts) >= 4 else None


def task_json(task: Task) -> dict[str, Any]:
    """A task as the API returns it."""
    return {
        "id": str(task.id),
        "command": task.command,
        "payload": task.payload,
        "status": str(task.status),
        "queue": task.queue,
        "priority": task.priority,
        "attempt": task.attempt,
        "max_attempts": task.max_attempts,
        "timeout_seconds": task.timeout_seconds,
        "scheduled_at": rfc3339(task.scheduled_at),
        "created_at": rfc3339(task.created_at),
        "dispatched_at": rfc3339(task.dispatched_at),
        "started_at": rfc3339(task.started_at),
        "finished_at": rfc3339(task.finished_at),
        "worker_id": task.worker_id,
        "result": task.result,
        "error": None if task.error is None else task.error.to_json(),
        "trace_id": trace_id(task.trace_context),
        "cancel_requested": task.cancel_requested_at is not None,
    }


def worker_json(worker: Worker) -> dict[str, Any]:
    """A worker as ``GET /v1/workers`` returns it."""
    return {
        "id": worker.id,
        "address": worker.address,
        "state": str(worker.state),
        "capacity": worker.capacity,
        "free_slots": worker.free_slots,
        "last_heartbeat_at": rfc3339(worker.last_heartbeat_at),
        "registered_at": rfc3339(worker.registered_at),
        "hostname": worker.hostname,
        "version": worker.version,
        "handlers": list(worker.handlers),
        "coordinator_id": worker.coordinator_id,
    }
