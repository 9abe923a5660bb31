"""Validation of submitted tasks: JSON in, a ``Submission`` or every problem found out.

Nothing here touches HTTP or the database. Each check appends a ``FieldError`` naming the
field's path (``tasks[10].command``), so one response lists every problem at once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from taskmill.common.jsontext import compact as compact_json
from taskmill.scheduler.errors import FieldError, InvalidRequest
from taskmill.scheduler.jsonbody import MAX_DEPTH, too_deep

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]+")
MAX_COMMAND_LENGTH = 200
MAX_QUEUE_LENGTH = 100
MAX_BATCH = 1000
MAX_ATTEMPTS = 100
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MAX_DELAY_SECONDS = 10 * 365 * 86400
MAX_TIMEOUT_SECONDS = 7 * 86400
#: The times a task may be scheduled at. The last day of year 9999 is left out so that the time
#: is still in year 9999 in every time zone a database session may show it in: Python's
#: datetime, and so the driver and every client, ends with that year.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
_OUT_OF_RANGE = "must be from 1970-01-01T00:00:00Z to 9999-12-30T23:59:59Z"
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(?P<offset>[Zz]|[+-]\d{2}:\d{2})"
)
_SUBMISSION_FIELDS = frozenset(
    {
        "command",
        "payload",
        "scheduled_at",
        "delay_seconds",
        "priority",
        "max_attempts",
        "timeout_seconds",
        "queue",
    }
)


class Submission(NamedTuple):
    """One validated task submission.

    A named tuple rather than a frozen dataclass: a batch makes a thousand, and a frozen
    dataclass sets each field through ``object.__setattr__``, which makes it dearer to build.

    Attributes:
        command: The handler name.
        payload: Any JSON value.
        queue: The queue name.
        priority: Higher runs first.
        max_attempts: How many execution attempts the task may have.
        timeout_seconds: Bound on one attempt, or ``None``.
        scheduled_at: When the task is due, or ``None`` for ``delay_seconds`` from now.
        delay_seconds: Seconds from now when ``scheduled_at`` is ``None``.
    """

    command: str
    payload: Any
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 1
    timeout_seconds: float | None = None
    scheduled_at: datetime | None = None
    delay_seconds: float = 0.0

    def canonical(self) -> dict[str, Any]:
        """The submission as plain JSON, the same for every equivalent request."""
        return {
            "command": self.command,
            "payload": self.payload,
            "queue": self.queue,
            "priority": self.priority,
            "max_attempts": self.max_attempts,
            "timeout_seconds": self.timeout_seconds,
            "scheduled_at": None if self.scheduled_at is None else self.scheduled_at.isoformat(),
            "delay_seconds": self.delay_seconds,
        }


def request_hash(submissions: list[Submission]) -> str:
    """The SHA-256 of the canonical JSON of validated submissions, to recognise a retry."""
    text = json.dumps(
        [s.canonical() for s in submissions],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_submission(value: Any, max_payload_bytes: int) -> Submission:
    """Validates one task submission (the body of ``POST /v1/tasks``).

    Raises:
        InvalidRequest: Listing every problem found.
    """
    errors: list[FieldError] = []
    submission = _submission(value, "", max_payload_bytes, errors)
    if errors or submission is None:
        raise InvalidRequest(errors)
    return submission


def parse_batch(value: Any, max_payload_bytes: int) -> list[Submission]:
    """Validates a batch (``{"tasks": [...]}``); every task is checked before any is stored.

    Raises:
        InvalidRequest: Listing every problem of every task, each path naming its index.
    """
    errors: list[FieldError] = []
    if not isinstance(value, dict):
        raise InvalidRequest([FieldError("body", "must be a JSON object with a tasks array")])
    errors.extend(FieldError(name, "unknown field") for name in sorted(value.keys() - {"tasks"}))
    tasks = value.get("tasks")
    if not isinstance(tasks, list):
        errors.append(FieldError("tasks", "required: an array of 1 to 1000 tasks"))
        raise InvalidRequest(errors)
    if not 1 <= len(tasks) <= MAX_BATCH:
        errors.append(FieldError("tasks", f"must hold 1 to {MAX_BATCH} tasks, not {len(tasks)}"))
        raise InvalidRequest(errors)
    # Checked without field paths first (building "tasks[917]." a thousand times costs), and
    # again with them only when a task is wrong, so the paths name its index.
    unnamed: list[FieldError] = []
    submissions = [
        _submission(item, "", max_payload_bytes, unnamed, payload=False) for item in tasks
    ]
    if unnamed:
        for index, item in enumerate(tasks):
            if submissions[index] is None:
                _submission(item, f"tasks[{index}].", max_payload_bytes, errors, payload=False)
    _check_payloads(tasks, max_payload_bytes, errors)
    if errors:
        raise InvalidRequest(errors)
    return [s for s in submissions if s is not None]


def _check_payloads(tasks: list[Any], max_bytes: int, errors: list[FieldError]) -> None:
    """Checks a batch's payloads, encoding them in one call while all are clearly fine."""
    payloads = [task.get("payload", {}) if type(task) is dict else {} for task in tasks]
    if _clearly_fine(payloads, max_bytes):
        return
    before = len(errors)
    for index, payload in enumerate(payloads):
        check_payload(payload, "payload", max_bytes, errors, f"tasks[{index}].")
    if len(errors) > before:
        errors.sort(key=_task_index)  # stable: each task's problems stay together, in order


def _clearly_fine(payloads: list[Any], max_bytes: int) -> bool:
    try:
        text = compact_json(payloads)
    except RecursionError:
        return False
    return (
        text.isascii()
        and len(text) <= max_bytes
        and "\\u0000" not in text
        and not _may_nest_too_deep(text, payloads)
    )


def _may_nest_too_deep(text: str, payloads: list[Any]) -> bool:
    """Whether a payload of the batch may nest too deep: walked only if the text allows it.

    ``text`` holds every array and object the payloads do, and each payload that is one holds
    at least itself: so no payload holds more than the text's count less the others'.
    """
    types = list(map(type, payloads))
    containers = types.count(dict) + types.count(list)
    if text.count("[") + text.count("{") - containers <= MAX_DEPTH:
        return False
    return too_deep(payloads)


def _task_index(error: FieldError) -> int:
    return int(error.field[6 : error.field.index("]")]) if error.field.startswith("tasks[") else -1


def _submission(
    value: Any,
    prefix: str,
    max_payload_bytes: int,
    errors: list[FieldError],
    *,
    payload: bool = True,
) -> Submission | None:
    # Field paths are only built when a field is wrong, and fields left out are not checked:
    # this runs for every task of a batch.
    if type(value) is not dict:
        errors.append(FieldError(prefix.rstrip(".") or "body", "must be a JSON object"))
        return None
    count = len(errors)
    if not value.keys() <= _SUBMISSION_FIELDS:
        unknown = sorted(value.keys() - _SUBMISSION_FIELDS)
        errors.extend(FieldError(prefix + name, "unknown field") for name in unknown)
    get = value.get
    command = check_name(get("command"), "command", MAX_COMMAND_LENGTH, errors, prefix)
    if payload:
        check_payload(get("payload", {}), "payload", max_payload_bytes, errors, prefix)
    at, delay_value = get("scheduled_at"), get("delay_seconds")
    scheduled_at = None if at is None else parse_rfc3339(at, prefix + "scheduled_at", errors)
    delay = 0.0
    if delay_value is not None:
        delay = _number(delay_value, prefix, "delay_seconds", errors, high=MAX_DELAY_SECONDS)
        if at is not None:
            errors.append(
                FieldError(prefix + "scheduled_at", "give scheduled_at or delay_seconds, not both")
            )
    return _with_settings(get, command, scheduled_at, delay, prefix, errors, count)


def _with_settings(
    get: Callable[..., Any],
    command: str,
    scheduled_at: datetime | None,
    delay: float,
    prefix: str,
    errors: list[FieldError],
    count: int,
) -> Submission | None:
    """Checks a submission's optional settings, then builds it (``get`` reads its fields).

    Returns ``None`` when ``errors`` grew past ``count``, through these checks or the caller's.
    """
    queue = get("queue")
    if queue is not None:
        queue = check_name(queue, "queue", MAX_QUEUE_LENGTH, errors, prefix)
    priority = get("priority")
    if priority is not None:
        priority = check_integer(priority, prefix, "priority", errors, INT32_MIN, INT32_MAX)
    attempts = get("max_attempts")
    if attempts is not None:
        attempts = check_integer(attempts, prefix, "max_attempts", errors, 1, MAX_ATTEMPTS)
    timeout = get("timeout_seconds")
    if timeout is not None:
        timeout = _number(
            timeout, prefix, "timeout_seconds", errors, high=MAX_TIMEOUT_SECONDS, exclusive=True
        )
    if len(errors) > count:
        return None
    return Submission(
        command,
        get("payload", {}),
        queue or "default",
        0 if priority is None else priority,
        1 if attempts is None else attempts,
        timeout,
        scheduled_at,
        delay,
    )


def check_name(
    value: Any, name: str, max_length: int, errors: list[FieldError], prefix: str = ""
) -> str:
    """Checks a command or queue name: 1 to ``max_length`` letters, digits, ``_ . : -``."""
    if type(value) is str and len(value) <= max_length and NAME_PATTERN.fullmatch(value):
        return value
    if value is None:
        message = "required"
    elif not isinstance(value, str):
        message = "must be a string"
    else:
        message = f"must be 1 to {max_length} letters, digits, or any of _ . : -"
    errors.append(FieldError(prefix + name, message))
    return ""


def check_payload(
    payload: Any, name: str, max_bytes: int, errors: list[FieldError], prefix: str = ""
) -> None:
    """Checks that a payload can be stored: its size, and text PostgreSQL can hold."""
    if payload == {} and type(payload) is dict:
        return
    try:
        text = compact_json(payload)
    except RecursionError:
        text = None
    # First: the checks below walk the payload recursively.
    if text is None or (
        # A payload nests no deeper than it has arrays and objects, of two characters each.
        len(text) > 2 * MAX_DEPTH
        and text.count("[") + text.count("{") > MAX_DEPTH
        and too_deep([payload])
    ):
        errors.append(FieldError(prefix + name, f"nests more than {MAX_DEPTH} levels deep"))
        return
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            errors.append(
                FieldError(prefix + name, "contains invalid Unicode (an unpaired surrogate)")
            )
            return
    if size > max_bytes:
        message = f"is {size} bytes as JSON; the limit is {max_bytes}"
        errors.append(FieldError(prefix + name, message, too_large=True))
    # json.dumps writes NUL as \u0000, which PostgreSQL's jsonb cannot store.
    if "\\u0000" in text and _has_nul(payload):
        message = "contains a NUL character (\\u0000), which cannot be kept"
        errors.append(FieldError(prefix + name, message))


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def parse_rfc3339(value: Any, path: str, errors: list[FieldError]) -> datetime | None:
    """Parses an RFC 3339 time, which must carry an offset; returns it in UTC."""
    if not isinstance(value, str):
        errors.append(FieldError(path, "must be an RFC 3339 string such as 2030-01-01T00:00:00Z"))
        return None
    match = _RFC3339.fullmatch(value)
    if match is None:
        has_offset = re.search(r"([Zz]|[+-]\d{2}:?\d{2})$", value) is not None
        message = (
            "must be an RFC 3339 time such as 2030-01-01T00:00:00Z"
            if has_offset or not re.match(r"\d{4}-\d{2}-\d{2}", value)
            else "needs a UTC offset, such as Z or +02:00"
        )
        errors.append(FieldError(path, message))
        return None
    try:
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        errors.append(FieldError(path, f"is not a valid time: {exc}"))
        return None
    return check_time_range(parsed, path, errors)


def check_time_range(value: datetime, path: str, errors: list[FieldError]) -> datetime | None:
    """``value`` (which carries an offset) in UTC, if it is a time a task may be scheduled at."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # a time of year 1 or 9999 whose offset crosses the year's edge
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        errors.append(FieldError(path, _OUT_OF_RANGE))
        return None
    return utc


def check_integer(
    value: Any, prefix: str, name: str, errors: list[FieldError], low: int, high: int
) -> int | None:
    """Checks an integer from ``low`` to ``high``; ``None`` (left out, or null) stays ``None``."""
    if type(value) is int and low <= value <= high:
        return value
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(FieldError(prefix + name, "must be an integer"))
    else:
        errors.append(FieldError(prefix + name, f"must be between {low} and {high}"))
    return None


def _number(
    value: Any,
    prefix: str,
    name: str,
    errors: list[FieldError],
    *,
    high: float,
    exclusive: bool = False,
) -> float:
    """Checks a number from 0 (or above 0 when ``exclusive``) up to ``high``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.append(FieldError(prefix + name, "must be a number"))
        return 0.0
    if (value <= 0 if exclusive else value < 0) or value > high:
        bound = "above" if exclusive else "at least"
        errors.append(FieldError(prefix + name, f"must be {bound} 0 and at most {high:g}"))
        return 0.0
    return float(value)
