"""How tasks, workers and queues look in JSON responses.

Times are RFC 3339 in UTC with a ``Z`` suffix and microseconds, always in the same shape so
they sort as strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from taskmill.common.models import Task, Worker
from taskmill.common.store import QueueStats, Waiting
from taskmill.common.traceparent import trace_id_field
from taskmill.scheduler.service import StoredTask


def rfc3339(value: datetime | None) -> str | None:
    """Formats a time as RFC 3339 in UTC, such as ``2030-01-01T00:00:00.000000Z``."""
    if value is None:
        return None
    # isoformat, not strftime: "%Y" leaves years before 1000 unpadded ("1-01-01"), which is
    # not RFC 3339 and does not sort.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_TASK = (
    '{"id": "%s", "command": %s, "payload": %s, "status": "%s", "queue": %s, "priority": %d, '
    '"attempt": %d, "max_attempts": %d, "timeout_seconds": %s, "scheduled_at": %s, '
    '"created_at": %s, "dispatched_at": %s, "started_at": %s, "finished_at": %s, '
    '"worker_id": %s, "result": %s, "error": %s, "trace_id": %s, "cancel_requested": %s}'
)
_PLAIN = re.compile(r"[A-Za-z0-9_.:\-]*")


# json.dumps's own C encoder, made once: json.dumps builds one per call, which costs more than
# encoding a small payload. No circular-reference markers: the values come from parsed JSON.
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_ENCODE: Callable[[Any, int], Any] | None = (
    None
    if _C_ENCODER is None
    else _C_ENCODER(
        None,
        json.JSONEncoder().default,
        json.encoder.encode_basestring_ascii,
        None,
        ": ",
        ", ",
        False,
        False,
        True,
    )
)


def _dumps(value: Any) -> str:
    """``json.dumps(value)``, faster for the small values of a task."""
    if _ENCODE is None:
        return json.dumps(value)
    return "".join(_ENCODE(value, 0))


def _json(value: Any) -> str:
    return "null" if value is None else _dumps(value)


@lru_cache(maxsize=1024)
def _text(value: str) -> str:
    # Command and queue names are plain by validation; anything else is escaped properly.
    # Cached: a few names recur in every response.
    return f'"{value}"' if _PLAIN.fullmatch(value) else json.dumps(value)


@lru_cache(maxsize=4096)
def _time(value: datetime | None) -> str:
    # Cached: the tasks of one response mostly share their times (one statement's now()).
    return "null" if value is None else f'"{rfc3339(value)}"'


def _trace_id_json(trace_context: str) -> str:
    value = trace_id_field(trace_context)
    if value is None:
        return "null"
    return f'"{value}"' if value.isalnum() and value.isascii() else json.dumps(value)


def encode_task(task: Task | StoredTask) -> str:
    """A task as the API returns it, encoded as JSON.

    Written out with a template rather than built as a dict and dumped: a batch response
    encodes a thousand tasks, and the template spares each a dict and the encoder's walk over it.
    """
    if isinstance(task, StoredTask):
        return _encode_stored(task)
    error = task.error
    trace_context = task.trace_context
    return _TASK % (
        task.id,
        _text(task.command),
        _dumps(task.payload),
        task.status.value,
        _text(task.queue),
        task.priority,
        task.attempt,
        task.max_attempts,
        _json(task.timeout_seconds),
        _time(task.scheduled_at),
        _time(task.created_at),
        "null" if task.dispatched_at is None else _time(task.dispatched_at),
        "null" if task.started_at is None else _time(task.started_at),
        "null" if task.finished_at is None else _time(task.finished_at),
        "null" if task.worker_id is None else _dumps(task.worker_id),
        "null" if task.result is None else _dumps(task.result),
        "null" if error is None else _dumps(error.to_json()),
        "null" if trace_context is None else _trace_id_json(trace_context),
        "false" if task.cancel_requested_at is None else "true",
    )


def _encode_stored(task: StoredTask) -> str:
    # encode_task's output for a task just stored: its other fields are known (scheduled,
    # attempt 0, nothing else set). One f-string is one join, cheaper than %-formatting.
    timeout = task.timeout_seconds
    trace_context = task.trace_context
    return (
        f'{{"id": "{task.id}", "command": {_text(task.command)}, '
        f'"payload": {_dumps(task.payload)}, "status": "scheduled", '
        f'"queue": {_text(task.queue)}, "priority": {task.priority}, "attempt": 0, '
        f'"max_attempts": {task.max_attempts}, '
        f'"timeout_seconds": {"null" if timeout is None else _dumps(timeout)}, '
        f'"scheduled_at": {_time(task.scheduled_at)}, "created_at": {_time(task.created_at)}, '
        '"dispatched_at": null, "started_at": null, "finished_at": null, "worker_id": null, '
        '"result": null, "error": null, '
        f'"trace_id": {"null" if trace_context is None else _trace_id_json(trace_context)}, '
        '"cancel_requested": false}'
    )


def encode_waiting_task(task: Task, waiting: Waiting | None) -> str:
    """A task as ``GET /v1/tasks/{id}`` returns it: with ``waiting``, why a scheduled, due task
    has not been claimed (``null`` for every other task)."""
    shown = (
        "null"
        if waiting is None
        else _dumps({"reason": str(waiting.reason), "message": waiting.message})
    )
    return f'{encode_task(task)[:-1]}, "waiting": {shown}}}'


def encode_tasks(tasks: Iterable[Task | StoredTask]) -> str:
    """A JSON array of tasks."""
    return "[" + ", ".join(map(encode_task, tasks)) + "]"


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
        "queues": [{"name": name, "weight": weight} for name, weight in worker.queues],
        "concurrency": worker.concurrency,
        "coordinator_id": worker.coordinator_id,
    }


def queue_json(queue: QueueStats) -> dict[str, Any]:
    """A queue as ``GET /v1/queues`` and the routes of one queue return it."""
    return {
        "name": queue.name,
        "scheduled": queue.scheduled,
        "due": queue.due,
        "running": queue.running,
        "oldest_due_age_seconds": queue.oldest_due_age_seconds,
        "workers": queue.workers,
        "paused": queue.paused,
        "max_concurrency": queue.max_concurrency,
    }
