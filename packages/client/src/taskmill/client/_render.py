"""Parsing and printing for the CLI: durations, times, tables, task details, JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from taskmill.client._models import Queue, Task, Worker

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Parses a duration such as ``30s``, ``5m``, ``1h30m``, ``250ms``, ``2d`` or ``90``.

    A bare number is seconds.

    Args:
        text: The duration.

    Returns:
        The duration in seconds.

    Raises:
        ValueError: ``text`` is not a duration.
    """
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds >= 0 and seconds != float("inf"):
            return seconds
        raise ValueError(f"not a duration: {text!r}")
    position, total = 0, 0.0
    for match in _PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not value or position != len(value):
        raise ValueError(f"not a duration: {text!r} (try 30s, 5m, 1h30m)")
    return total


def parse_when(text: str) -> datetime:
    """Parses a point in time: ISO 8601 / RFC 3339, or Unix seconds.

    A time without an offset is read as local time, as a person typing it means.

    Raises:
        ValueError: ``text`` is not a time.
    """
    value = text.strip()
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (try 2030-01-31T09:00:00+01:00 or 2030-01-31 09:00)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.astimezone()


def show_time(value: datetime | None) -> str:
    """A time in UTC to the second, for tables; ``-`` when absent."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def compact_json(value: Any, limit: int | None = None) -> str:
    """JSON on one line, cut to ``limit`` characters with an ellipsis."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if limit is not None and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def print_json(value: Any, out: TextIO) -> None:
    """Prints a JSON document for scripts: indented, UTF-8, newline-terminated."""
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Formats rows as left-aligned columns under a header; no trailing spaces."""
    all_rows = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in all_rows
    ]
    return "\n".join(lines) + "\n"


def tasks_table(tasks: Iterable[Task]) -> str:
    """The ``taskmill list`` table."""
    headers = ("ID", "STATUS", "COMMAND", "QUEUE", "PRI", "ATTEMPT", "SCHEDULED", "FINISHED")
    rows = (
        (
            t.id,
            t.status,
            t.command,
            t.queue,
            str(t.priority),
            f"{t.attempt}/{t.max_attempts}",
            show_time(t.scheduled_at),
            show_time(t.finished_at),
        )
        for t in tasks
    )
    return table(headers, rows)


def workers_table(workers: Iterable[Worker]) -> str:
    """The ``taskmill workers`` table."""
    headers = (
        "ID", "ADDRESS", "STATE", "FREE/CAP", "QUEUES", "LAST HEARTBEAT", "HOSTNAME", "VERSION"
    )  # fmt: skip
    rows = (
        (
            w.id,
            w.address,
            w.state,
            f"{w.free_slots}/{w.capacity}",
            ",".join(
                name if weight == 1 else f"{name}={weight}" for name, weight in w.queues.items()
            )
            or "-",
            show_time(w.last_heartbeat_at),
            w.hostname,
            w.version,
        )
        for w in workers
    )
    return table(headers, rows)


def task_detail(task: Task) -> str:
    """The ``taskmill status`` view: one field a line."""
    fields: list[tuple[str, str]] = [
        ("id", task.id),
        ("command", task.command),
        ("status", task.status + (" (cancel requested)" if task.cancel_requested else "")),
        ("queue", task.queue),
        ("priority", str(task.priority)),
        ("attempt", f"{task.attempt} of {task.max_attempts}"),
        ("created", show_time(task.created_at)),
        ("scheduled", show_time(task.scheduled_at)),
        ("started", show_time(task.started_at)),
        ("finished", show_time(task.finished_at)),
        ("worker", task.worker_id or "-"),
        ("payload", compact_json(task.payload, 200)),
    ]
    if task.timeout_seconds is not None:
        fields.insert(6, ("timeout", f"{task.timeout_seconds:g}s"))
    if task.trace_id:
        fields.append(("trace", task.trace_id))
    if task.result is not None:
        fields.append(("result", compact_json(task.result, 1000)))
    if task.error is not None:
        fields.append(("error", f"{task.error.type}: {task.error.message}"))
    if task.waiting is not None:
        fields.append(("waiting", f"{task.waiting.reason}: {task.waiting.message}"))
    text = _fields(fields)
    if task.error is not None and task.error.traceback:
        text += task.error.traceback.rstrip("\n") + "\n"
    return text


def _fields(fields: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{name + ':':<11}{value}\n" for name, value in fields)


def show_age(seconds: float | None) -> str:
    """A duration for people, to the second past a minute (``42.5s``, ``3m07s``, ``2h05m``,
    ``3d04h``); ``-`` when absent."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    for unit, size, smaller, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}{whole % size // small_size:02d}{smaller}"
    return f"{whole // 60}m{whole % 60:02d}s"


def queues_table(queues: Iterable[Queue]) -> str:
    """The ``taskmill queues`` table."""
    headers = ("NAME", "PAUSED", "LIMIT", "SCHEDULED", "DUE", "RUNNING", "OLDEST DUE", "WORKERS")
    rows = (
        (
            q.name,
            "yes" if q.paused else "no",
            "-" if q.max_concurrency is None else str(q.max_concurrency),
            str(q.scheduled),
            str(q.due),
            str(q.running),
            show_age(q.oldest_due_age_seconds),
            str(q.workers),
        )
        for q in queues
    )
    return table(headers, rows)


def queue_detail(queue: Queue) -> str:
    """The ``taskmill queue show`` view (and what ``pause``, ``resume`` and ``limit`` print)."""
    limit = queue.max_concurrency
    age = queue.oldest_due_age_seconds
    return _fields(
        [
            ("queue", queue.name),
            ("paused", "yes" if queue.paused else "no"),
            ("limit", "none" if limit is None else f"{limit} dispatched or running at once"),
            ("scheduled", str(queue.scheduled)),
            ("due", str(queue.due) + ("" if age is None else f", the oldest for {show_age(age)}")),
            ("running", str(queue.running)),
            ("workers", str(queue.workers)),
        ]
    )


def outcome_line(task: Task) -> str:
    """One line for ``taskmill wait``: id, status, and the result or the error."""
    if task.error is not None and not task.succeeded:
        detail = f"{task.error.type}: {task.error.message}"
    elif task.result is not None:
        detail = compact_json(task.result, 120)
    else:
        detail = ""
    return f"{task.id}  {task.status}  {detail}".rstrip() + "\n"


def progress_bar(done: int, total: int, width: int = 30) -> str:
    """A one-line text progress bar, ``[#####.....]  5/10``, to redraw with ``\\r``."""
    filled = width * done // total if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
