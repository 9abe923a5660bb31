"""Listing tasks: the query parameters of ``GET /v1/tasks`` and the opaque page cursor.

The cursor is the ``seq`` of the last task a page returned, base64-encoded so callers treat it
as opaque. Pages walk ``seq`` downwards, so tasks submitted while a caller pages (which get
higher numbers) never shift the pages still to come: each task is listed once.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass

from taskmill.common.models import TaskStatus
from taskmill.scheduler.errors import FieldError, InvalidRequest
from taskmill.scheduler.validation import MAX_COMMAND_LENGTH, MAX_QUEUE_LENGTH, check_name

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_CURSOR = re.compile(r"seq:(\d{1,19})")
#: ``seq`` is a bigint: a larger number cannot be a position, and PostgreSQL refuses it.
_MAX_SEQ = 2**63 - 1
_PARAMETERS = frozenset({"status", "command", "queue", "limit", "cursor"})


@dataclass(frozen=True)
class ListQuery:
    """What ``GET /v1/tasks`` asked for.

    Attributes:
        status: Only tasks in this status.
        command: Only tasks of this command.
        queue: Only tasks in this queue.
        limit: At most this many tasks.
        before_seq: Only tasks older than this position (from the cursor).
    """

    status: TaskStatus | None = None
    command: str | None = None
    queue: str | None = None
    limit: int = DEFAULT_LIMIT
    before_seq: int | None = None


def encode_cursor(seq: int) -> str:
    """The opaque cursor that continues a listing after the task numbered ``seq``."""
    return base64.urlsafe_b64encode(f"seq:{seq}".encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The ``seq`` a cursor continues after.

    Raises:
        ValueError: The cursor was not made by ``encode_cursor``.
    """
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor returned by this API") from None
    match = _CURSOR.fullmatch(text)
    if match is None or int(match.group(1)) > _MAX_SEQ:
        raise ValueError("not a cursor returned by this API")
    return int(match.group(1))


def parse_list_query(params: Mapping[str, str | list[str]]) -> ListQuery:
    """Validates the query parameters of ``GET /v1/tasks``.

    Raises:
        InvalidRequest: Listing every bad or unknown parameter.
    """
    errors: list[FieldError] = []
    values: dict[str, str] = {}
    for name, value in params.items():
        if name not in _PARAMETERS:
            errors.append(FieldError(name, "unknown query parameter"))
        elif isinstance(value, list):
            errors.append(FieldError(name, "give this parameter once"))
        else:
            values[name] = value
    status = None
    if "status" in values:
        try:
            status = TaskStatus(values["status"])
        except ValueError:
            errors.append(FieldError("status", f"must be one of {', '.join(TaskStatus)}"))
    command = queue = None
    if "command" in values:
        command = check_name(values["command"], "command", MAX_COMMAND_LENGTH, errors)
    if "queue" in values:
        queue = check_name(values["queue"], "queue", MAX_QUEUE_LENGTH, errors)
    limit = DEFAULT_LIMIT
    if "limit" in values:
        text = values["limit"]
        valid = text.isascii() and text.isdigit() and len(text) <= 4
        if not (valid and 1 <= int(text) <= MAX_LIMIT):
            errors.append(FieldError("limit", f"must be an integer from 1 to {MAX_LIMIT}"))
        else:
            limit = int(text)
    before_seq = None
    if "cursor" in values:
        try:
            before_seq = decode_cursor(values["cursor"])
        except ValueError as exc:
            errors.append(FieldError("cursor", str(exc)))
    if errors:
        raise InvalidRequest(errors)
    return ListQuery(status, command, queue, limit, before_seq)
