"""The seed-compatible routes ``POST /schedule`` and ``GET /status``, kept for existing callers.

Lenient in what they accept (unix seconds, numeric strings, ISO 8601 with or without an offset,
unknown fields ignored), because callers written against the seed send all of these; the
``/v1`` routes are strict.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from taskmill.common.models import Task, TaskStatus
from taskmill.scheduler.errors import FieldError, InvalidRequest
from taskmill.scheduler.representation import rfc3339
from taskmill.scheduler.service import StoredTask
from taskmill.scheduler.validation import (
    EARLIEST,
    LATEST,
    MAX_COMMAND_LENGTH,
    Submission,
    check_name,
    check_payload,
    check_time_range,
)

#: In whole seconds: LATEST as a float timestamp rounds up, past the range.
_MAX_UNIX_SECONDS = (LATEST - EARLIEST) // timedelta(seconds=1)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def parse_schedule(value: Any, max_payload_bytes: int) -> Submission:
    """Validates the body of ``POST /schedule``: ``{"command", "scheduled_at"}``.

    Raises:
        InvalidRequest: Listing every problem found.
    """
    if not isinstance(value, dict):
        raise InvalidRequest([FieldError("body", "must be a JSON object")])
    errors: list[FieldError] = []
    command = check_name(value.get("command"), "command", MAX_COMMAND_LENGTH, errors)
    payload = value.get("payload", {})
    check_payload(payload, "payload", max_payload_bytes, errors)
    scheduled_at = _lenient_time(value.get("scheduled_at"), errors)
    if errors:
        raise InvalidRequest(errors)
    return Submission(command=command, payload=payload, scheduled_at=scheduled_at)


def _lenient_time(value: Any, errors: list[FieldError]) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool):
        pass
    elif isinstance(value, int | float):
        if 0 <= value <= _MAX_UNIX_SECONDS:
            return datetime.fromtimestamp(value, UTC)
        errors.append(
            FieldError("scheduled_at", f"unix seconds must be from 0 to {_MAX_UNIX_SECONDS}")
        )
        return None
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:  # the seed read times without an offset as UTC
                parsed = parsed.replace(tzinfo=UTC)
            return check_time_range(parsed, "scheduled_at", errors)
    errors.append(
        FieldError(
            "scheduled_at", "must be unix seconds or an ISO 8601 time such as 2030-01-01T00:00:00Z"
        )
    )
    return None


def unix_seconds(value: datetime) -> int | float:
    """Seconds since the epoch: an int for a whole second, else a float."""
    whole = int(value.replace(microsecond=0).timestamp())
    return whole if value.microsecond == 0 else whole + value.microsecond / 1e6


def schedule_json(task: Task | StoredTask) -> dict[str, Any]:
    """The response of ``POST /schedule``."""
    return {
        "command": task.command,
        "scheduled_at": unix_seconds(task.scheduled_at),
        "task_id": str(task.id),
    }


def status_json(task: Task) -> dict[str, Any]:
    """The response of ``GET /status``: the seed's field names, with the times that are set."""
    body: dict[str, Any] = {
        "task_id": str(task.id),
        "command": task.command,
        "scheduled_at": rfc3339(task.scheduled_at),
        "status": str(task.status),
    }
    times = {
        "picked_at": task.dispatched_at,
        "started_at": task.started_at,
        "completed_at": task.finished_at if task.status is TaskStatus.SUCCEEDED else None,
        "failed_at": task.finished_at if task.status is TaskStatus.FAILED else None,
    }
    body.update((name, rfc3339(at)) for name, at in times.items() if at is not None)
    return body
