"""What the API returns, as frozen dataclasses whose attributes mirror the JSON fields.

Parsing is lenient on purpose: fields the client does not know are ignored (and kept in
``raw``), and optional fields a server leaves out become ``None``, so a newer scheduler does not
break an older client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from taskmill.client._errors import ServerError


class TaskStatus(StrEnum):
    """A task's status. Members are strings, so ``task.status == "failed"`` works too."""

    SCHEDULED = "scheduled"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: The statuses a task never leaves.
FINAL_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})


def parse_time(value: Any) -> datetime | None:
    """Parses an RFC 3339 time from the API; ``None`` stays ``None``.

    Args:
        value: A string such as ``2024-05-01T12:00:00.123Z``, or ``None``.

    Returns:
        An aware datetime, or ``None``.

    Raises:
        ServerError: The value is not an RFC 3339 time with an offset.
    """
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise ServerError(f"the server sent an unreadable time: {value!r}") from None
    if parsed.tzinfo is None:
        # The API promises UTC; a bare time from an older server is read as UTC too.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def format_time(value: datetime) -> str:
    """Formats an aware datetime as RFC 3339 for the API.

    Raises:
        ValueError: ``value`` is naive: its meaning would depend on the machine's time zone.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a naive datetime is ambiguous: give it a tzinfo (e.g. timezone.utc)")
    # In UTC, because RFC 3339 offsets have no seconds (some historical zones do).
    return value.astimezone(UTC).isoformat()


def _status(value: Any) -> str:
    text = str(value)
    try:
        return TaskStatus(text)
    except ValueError:
        return text  # a status this client does not know yet


def _require(data: dict[str, Any], name: str, kind: str) -> Any:
    if name not in data:
        raise ServerError(f"the server sent a {kind} without {name!r}")
    return data[name]


@dataclass(frozen=True)
class TaskError:
    """Why a task's last attempt failed.

    Attributes:
        type: The exception class name, or a reason such as ``timeout`` or ``worker_lost``.
        message: The human-readable message.
        traceback: The formatted traceback; empty when there is none.
    """

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_json(cls, value: Any) -> TaskError | None:
        """Reads the ``error`` field of a task; ``None`` stays ``None``."""
        if not isinstance(value, dict):
            return None
        return cls(
            type=str(value.get("type") or ""),
            message=str(value.get("message") or ""),
            traceback=str(value.get("traceback") or ""),
        )


@dataclass(frozen=True)
class Waiting:
    """Why a scheduled task whose time has come is not claimed yet.

    Attributes:
        reason: ``queue_paused``, ``queue_at_limit`` (its queue has ``max_concurrency`` tasks
            dispatched or running), ``no_worker`` (no active worker serves its queue with a
            handler for its command) or ``waiting_for_slot``; the first that holds, in this
            order. A plain string, so a reason this client does not know still reads.
        message: The reason in words.
    """

    reason: str
    message: str = ""

    @classmethod
    def from_json(cls, value: Any) -> Waiting | None:
        """Reads the ``waiting`` field of a task; ``None`` stays ``None``."""
        if not isinstance(value, dict):
            return None
        return cls(reason=str(value.get("reason") or ""), message=str(value.get("message") or ""))


@dataclass(frozen=True)
class Task:
    """A task as the scheduler reports it.

    Attributes:
        id: The task id.
        command: The handler name.
        payload: The JSON payload it was submitted with.
        status: A ``TaskStatus`` (a plain string if this client does not know the status).
        queue: The queue name.
        priority: Higher runs first.
        attempt: How many execution attempts have started.
        max_attempts: How many attempts the task may have.
        timeout_seconds: The bound on one attempt's run time, or ``None``.
        scheduled_at: When the task is (or was) due.
        created_at: When it was submitted.
        dispatched_at: When it was last handed to a worker.
        started_at: When its last attempt started.
        finished_at: When it reached a final state.
        worker_id: The worker that has (or last had) it.
        result: The JSON result of a succeeded task.
        error: Why the last attempt failed, or ``None``.
        trace_id: The OpenTelemetry trace id that follows the task.
        cancel_requested: Whether a cancel was asked for while it was dispatched or running.
        waiting: Why it is not claimed yet, for a scheduled task whose time has come, as
            ``Client.get`` returns it; ``None`` otherwise (and in lists).
        raw: The JSON object the server sent, including fields this client does not know.
    """

    id: str
    command: str
    status: str
    payload: Any = None
    queue: str = "default"
    priority: int = 0
    attempt: int = 0
    max_attempts: int = 1
    timeout_seconds: float | None = None
    scheduled_at: datetime | None = None
    created_at: datetime | None = None
    dispatched_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker_id: str | None = None
    result: Any = None
    error: TaskError | None = None
    trace_id: str | None = None
    cancel_requested: bool = False
    waiting: Waiting | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_final(self) -> bool:
        """Whether the task has finished (succeeded, failed or cancelled) and never changes."""
        return self.status in FINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        """Whether the task finished successfully."""
        return self.status == TaskStatus.SUCCEEDED

    @classmethod
    def from_json(cls, data: Any) -> Task:
        """Builds a task from the API's JSON object.

        Raises:
            ServerError: ``data`` is not a task object.
        """
        if not isinstance(data, dict):
            raise ServerError("the server sent a task that is not a JSON object")
        return cls(
            id=str(_require(data, "id", "task")),
            command=str(_require(data, "command", "task")),
            status=_status(_require(data, "status", "task")),
            payload=data.get("payload"),
            queue=str(data.get("queue") or "default"),
            priority=int(data.get("priority") or 0),
            attempt=int(data.get("attempt") or 0),
            max_attempts=int(data.get("max_attempts") or 1),
            timeout_seconds=data.get("timeout_seconds"),
            scheduled_at=parse_time(data.get("scheduled_at")),
            created_at=parse_time(data.get("created_at")),
            dispatched_at=parse_time(data.get("dispatched_at")),
            started_at=parse_time(data.get("started_at")),
            finished_at=parse_time(data.get("finished_at")),
            worker_id=data.get("worker_id"),
            result=data.get("result"),
            error=TaskError.from_json(data.get("error")),
            trace_id=data.get("trace_id"),
            cancel_requested=bool(data.get("cancel_requested")),
            waiting=Waiting.from_json(data.get("waiting")),
            raw=data,
        )


@dataclass(frozen=True)
class Worker:
    """A live worker of the fleet.

    Attributes:
        id: The worker id.
        address: Where coordinators reach it (``host:port``).
        state: ``active`` or ``draining``.
        capacity: How many tasks it runs at once.
        free_slots: How many more it can take now.
        last_heartbeat_at: When it was last heard from.
        hostname: The machine it runs on.
        version: Its taskmill version.
        handlers: The commands it can run.
        queues: The queues it takes tasks from, each with its weight.
        raw: The JSON object the server sent, including fields this client does not know.
    """

    id: str
    address: str = ""
    state: str = ""
    capacity: int = 0
    free_slots: int = 0
    last_heartbeat_at: datetime | None = None
    hostname: str = ""
    version: str = ""
    handlers: tuple[str, ...] = ()
    queues: dict[str, int] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Worker:
        """Builds a worker from the API's JSON object.

        Raises:
            ServerError: ``data`` is not a worker object.
        """
        if not isinstance(data, dict):
            raise ServerError("the server sent a worker that is not a JSON object")
        return cls(
            id=str(_require(data, "id", "worker")),
            address=str(data.get("address") or ""),
            state=str(data.get("state") or ""),
            capacity=int(data.get("capacity") or 0),
            free_slots=int(data.get("free_slots") or 0),
            last_heartbeat_at=parse_time(data.get("last_heartbeat_at")),
            hostname=str(data.get("hostname") or ""),
            version=str(data.get("version") or ""),
            handlers=tuple(str(name) for name in data.get("handlers") or ()),
            queues={
                str(queue.get("name")): int(queue.get("weight") or 1)
                for queue in data.get("queues") or ()
                if isinstance(queue, dict)
            },
            raw=data,
        )


@dataclass(frozen=True)
class Queue:
    """A queue: its tasks, the workers that serve it, and what an operator set.

    Attributes:
        name: The queue name.
        scheduled: Its tasks waiting to be claimed, due or not.
        due: Those of them whose time has come.
        running: Its tasks dispatched or running.
        oldest_due_age_seconds: How long its longest-waiting due task has been due, or
            ``None`` when none is due.
        workers: The active workers that serve it.
        paused: Whether its tasks are held (they stay scheduled; running ones finish).
        max_concurrency: The most of its tasks dispatched or running at once, over the whole
            cluster, or ``None`` for no limit.
        raw: The JSON object the server sent, including fields this client does not know.
    """

    name: str
    scheduled: int = 0
    due: int = 0
    running: int = 0
    oldest_due_age_seconds: float | None = None
    workers: int = 0
    paused: bool = False
    max_concurrency: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Queue:
        """Builds a queue from the API's JSON object.

        Raises:
            ServerError: ``data`` is not a queue object.
        """
        if not isinstance(data, dict):
            raise ServerError("the server sent a queue that is not a JSON object")
        age, limit = data.get("oldest_due_age_seconds"), data.get("max_concurrency")
        return cls(
            name=str(_require(data, "name", "queue")),
            scheduled=int(data.get("scheduled") or 0),
            due=int(data.get("due") or 0),
            running=int(data.get("running") or 0),
            oldest_due_age_seconds=None if age is None else float(age),
            workers=int(data.get("workers") or 0),
            paused=bool(data.get("paused")),
            max_concurrency=None if limit is None else int(limit),
            raw=data,
        )


@dataclass(frozen=True)
class SubmitSpec:
    """One task to submit with ``Client.submit_many``; the fields are ``Client.submit``'s.

    Attributes:
        command: The handler name.
        payload: Any JSON value; ``None`` means the server's default (``{}``).
        at: When the task becomes due (an aware datetime); not with ``delay``.
        delay: Seconds (or a timedelta) from now until the task becomes due; not with ``at``.
        priority: Higher runs first.
        max_attempts: How many execution attempts the task may have (1-100).
        timeout: Bound on one attempt's run time, in seconds (or a timedelta).
        queue: The queue name; ``None`` means the server's default.
    """

    command: str
    payload: Any = None
    at: datetime | None = None
    delay: float | timedelta | None = None
    priority: int = 0
    max_attempts: int = 1
    timeout: float | timedelta | None = None
    queue: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The request body for this task.

        Raises:
            ValueError: Both ``at`` and ``delay`` are given, or ``at`` is naive.
        """
        if self.at is not None and self.delay is not None:
            raise ValueError("give at most one of 'at' and 'delay'")
        body: dict[str, Any] = {"command": self.command}
        if self.payload is not None:
            body["payload"] = self.payload
        if self.at is not None:
            body["scheduled_at"] = format_time(self.at)
        if self.delay is not None:
            body["delay_seconds"] = _seconds(self.delay)
        if self.priority:
            body["priority"] = self.priority
        if self.max_attempts != 1:
            body["max_attempts"] = self.max_attempts
        if self.timeout is not None:
            body["timeout_seconds"] = _seconds(self.timeout)
        if self.queue is not None:
            body["queue"] = self.queue
        return body


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
