"""The wire types of one task attempt, shared by the coordinator and the worker.

The coordinator sends an :class:`Assignment`; the worker runs it to an :class:`Outcome` and
sends back a :class:`Report` of each change (``running``, then the final one). Each message's
conversion sits beside its type, so both ends agree on every field: times are seconds since the
epoch (UTC), JSON travels as UTF-8 text, an unset timeout is ``0``.

They are named tuples rather than the frozen dataclasses used elsewhere: every task makes an
assignment, an outcome and two reports on the worker's hot path, and one report on the
coordinator's, and a frozen dataclass sets each field through ``object.__setattr__``, which
makes it dearer to build. A named tuple is as immutable and reads its fields as fast. On a hot
path, build them positionally: binding keywords is dearer too.

Importing this module loads no protobuf: a ``process=True`` child unpickles its
``Assignment``, and loading the generated code would slow every child's start. Messages are
only read and built through the objects the caller passes in.
"""

from __future__ import annotations

import re
import time
import uuid
from enum import StrEnum
from json.encoder import encode_basestring as _string
from typing import TYPE_CHECKING, NamedTuple, cast

from taskmill.common.jsontext import compact as _json
from taskmill.common.models import TaskError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
    from google.protobuf.timestamp_pb2 import Timestamp

    from taskmill.common.store.dispatch import ClaimedTask
    from taskmill.v1 import common_pb2

#: A uuid as the database writes it, and as the coordinator sends it in every assignment.
_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class ReportStatus(StrEnum):
    """The state of an attempt, as a worker reports it; the first four values are the
    ``TaskStatus`` strings the coordinator stores."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: The task is given back unstarted (the worker is draining); its attempt does not count.
    REJECTED = "rejected"


#: Each status's number in ``taskmill.v1.TaskStatus``, written out rather than read from the
#: generated module so that importing this one loads no protobuf (see the module's docstring);
#: ``test_attempts`` pins them to the generated enum.
_STATUS_TO_PROTO = cast(
    "dict[ReportStatus, common_pb2.TaskStatus]",
    {
        ReportStatus.RUNNING: 1,
        ReportStatus.SUCCEEDED: 2,
        ReportStatus.FAILED: 3,
        ReportStatus.CANCELLED: 4,
        ReportStatus.REJECTED: 5,
    },
)
#: The statuses that are outcomes of an attempt, by number: a rejection is not one.
_OUTCOME_FROM_PROTO: dict[int, ReportStatus] = {
    number: status
    for status, number in _STATUS_TO_PROTO.items()
    if status is not ReportStatus.REJECTED
}


def _set_time(field: Timestamp, seconds: float) -> None:
    # Set in place: a Timestamp built apart is then copied in, which is dearer.
    whole = int(seconds)
    field.seconds = whole
    field.nanos = int((seconds - whole) * 1_000_000_000)


def task_id_text(value: str) -> str:
    """A task id from a worker, in the database's canonical form (lowercase, with hyphens).

    The id a worker got in its assignment comes back as it was, and is checked with one regular
    expression, which is far cheaper than parsing a ``uuid.UUID`` and printing it again; any
    other form ``uuid.UUID`` reads is written canonically.

    Raises:
        ValueError: The text is not a uuid.
    """
    if _CANONICAL_ID.fullmatch(value):
        return value
    return str(uuid.UUID(value))


class Assignment(NamedTuple):
    """One attempt of one task, handed to a worker.

    Attributes:
        task_id: The task's UUID in text form.
        command: The handler's name.
        payload_json: The payload as JSON text.
        attempt: The 1-based attempt number.
        max_attempts: How many attempts the task may have in all.
        timeout_seconds: The task's timeout, or ``None`` for the handler's default.
        queue: The task's queue.
        traceparent: The W3C trace context of the dispatch.
        token: The claim's fencing token: every report of this attempt carries it.
        start_recorded: Whether the claim recorded the start (the task went to an idle slot):
            the worker starts it without asking, and sends no ``running`` report.
    """

    task_id: str
    command: str
    payload_json: str = "null"
    attempt: int = 1
    max_attempts: int = 1
    timeout_seconds: float | None = None
    queue: str = "default"
    traceparent: str = ""
    token: int = 0
    start_recorded: bool = False

    @classmethod
    def from_proto(cls, message: common_pb2.Assignment) -> Assignment:
        """Reads an assignment; an empty payload means ``null``, a zero timeout none."""
        timeout = message.timeout_seconds
        return cls(
            message.task_id,
            message.command,
            message.payload_json or "null",
            message.attempt,
            message.max_attempts,
            timeout if timeout > 0 else None,
            message.queue,
            message.traceparent,
            message.token,
            message.start_recorded,
        )


def add_assignments(
    assignments: RepeatedCompositeFieldContainer[common_pb2.Assignment],
    tasks: Sequence[ClaimedTask],
    traceparents: Sequence[str],
) -> None:
    """Adds the assignments of claimed tasks to a request's list, built in place: the
    coordinator's side of :meth:`Assignment.from_proto`.

    ``add`` builds each message where it goes (a built message would be copied into the list),
    and a time's ``Timestamp`` is built once for all the tasks that share it (one claim's tasks
    share their lease, one submit's their due time).

    Args:
        assignments: The ``assignments`` field of an ``AssignTasksRequest``.
        tasks: The claimed tasks.
        traceparents: The W3C trace context each assignment carries, in the same order.
    """
    # Imported here, not at the top: the worker's process children import this module.
    from google.protobuf.timestamp_pb2 import Timestamp

    add = assignments.add
    stamps: dict[float, Timestamp] = {}
    for task, traceparent in zip(tasks, traceparents, strict=True):
        scheduled_at = stamps.get(task.scheduled_at)
        if scheduled_at is None:
            scheduled_at = stamps[task.scheduled_at] = _stamp(Timestamp(), task.scheduled_at)
        lease_expires_at = stamps.get(task.lease_expires_at)
        if lease_expires_at is None:
            lease_expires_at = stamps[task.lease_expires_at] = _stamp(
                Timestamp(), task.lease_expires_at
            )
        add(
            task_id=task.id,
            command=task.command,
            payload_json=task.payload_json,
            attempt=task.attempt,
            max_attempts=task.max_attempts,
            timeout_seconds=task.timeout_seconds or 0.0,
            queue=task.queue,
            traceparent=traceparent,
            scheduled_at=scheduled_at,
            lease_expires_at=lease_expires_at,
            token=task.token,
            start_recorded=task.start_recorded,
        )


def _stamp(stamp: Timestamp, seconds: float) -> Timestamp:
    # The database keeps microseconds: round to them rather than carry float noise in nanos.
    whole, fraction = divmod(round(seconds * 1_000_000), 1_000_000)
    stamp.seconds, stamp.nanos = whole, fraction * 1000
    return stamp


class Held(NamedTuple):
    """A task a worker holds, by its claim's token (``HeldTask``); 0 from workers before tokens."""

    task_id: str
    token: int

    @classmethod
    def from_proto(cls, message: common_pb2.HeldTask) -> Held:
        """Reads a held task, its id made canonical; ``ValueError`` if the id is not a uuid."""
        return cls(task_id_text(message.task_id), message.token)

    def to_proto(self) -> common_pb2.HeldTask:
        """The ``HeldTask`` message of this task."""
        from taskmill.v1 import common_pb2  # not at the top: process children import this module

        return common_pb2.HeldTask(task_id=self.task_id, token=self.token)

    @staticmethod
    def to_columns(held: Sequence[Held]) -> tuple[list[str], list[int]]:
        """The ids and the tokens of held tasks, in one order: as ``RecordStarts`` sends them."""
        return [task_id for task_id, _ in held], [token for _, token in held]

    @classmethod
    def from_columns(cls, task_ids: Sequence[str], tokens: Sequence[int]) -> list[Held]:
        """Pairs what :meth:`to_columns` gives; ``ValueError`` if the lengths differ."""
        return [cls(task_id, token) for task_id, token in zip(task_ids, tokens, strict=True)]


class Outcome(NamedTuple):
    """How an attempt ended (or, with ``RUNNING``, that it started)."""

    status: ReportStatus
    result_json: str = ""
    error: TaskError | None = None

    @classmethod
    def succeeded(cls, result_json: str) -> Outcome:
        """The handler returned ``result_json``."""
        return cls(ReportStatus.SUCCEEDED, result_json=result_json)

    @classmethod
    def failed(cls, type_: str, message: str, traceback: str = "") -> Outcome:
        """The attempt failed."""
        return cls(ReportStatus.FAILED, error=TaskError(type_, message, traceback))

    @classmethod
    def cancelled(cls) -> Outcome:
        """The attempt stopped after a cancellation request."""
        return cls(ReportStatus.CANCELLED)

    @classmethod
    def rejected(cls) -> Outcome:
        """The task is given back before it started."""
        return cls(ReportStatus.REJECTED)


class Report(NamedTuple):
    """One state change of one attempt: sent by the worker, applied by the coordinator.

    The id and the result stay text and the times epoch seconds, as they travel to the
    database, which checks and parses them anyway.

    Attributes:
        task_id: The task's id; in its canonical form (lowercase, with hyphens) once read by
            :meth:`from_proto`.
        attempt: The attempt from the assignment.
        status: The new state.
        occurred_at: When it happened, in seconds since the epoch.
        result_json: The result as JSON text, for ``SUCCEEDED``; empty means ``null``.
        error: The failure, for ``FAILED``.
        traceparent: The W3C trace context of the worker's execution span.
        started_at: When a final attempt started, in seconds since the epoch, if its
            ``running`` report was folded into this one.
        retryable: Whether a failed attempt may be retried when attempts remain. Not part of
            the message: a report read from one is always retryable.
        token: The fencing token of the attempt's assignment; 0 when unknown (a worker older
            than tokens), and the report then matches the attempt and the worker instead.
    """

    task_id: str
    attempt: int
    status: ReportStatus
    occurred_at: float
    result_json: str = ""
    error: TaskError | None = None
    traceparent: str = ""
    started_at: float | None = None
    retryable: bool = True
    token: int = 0

    def add_to(
        self,
        reports: RepeatedCompositeFieldContainer[common_pb2.StatusReport],
        started_at: float | None = None,
    ) -> common_pb2.StatusReport:
        """Appends this report's message to ``reports``, built in place rather than copied.

        Args:
            reports: The request's repeated field.
            started_at: When the attempt started, for a final report that took in its
                ``running`` report (see :mod:`taskmill.worker.reporter`); defaults to
                ``self.started_at``.

        Returns:
            The message added.
        """
        message = reports.add(
            task_id=self.task_id,
            attempt=self.attempt,
            status=_STATUS_TO_PROTO[self.status],
            result_json=self.result_json,
            traceparent=self.traceparent,
            token=self.token,
        )
        _set_time(message.occurred_at, self.occurred_at)
        error = self.error
        if error is not None:
            field = message.error
            field.type = error.type
            field.message = error.message
            field.traceback = error.traceback
        if started_at is None:
            started_at = self.started_at
        if started_at is not None:
            _set_time(message.started_at, started_at)
        return message

    @staticmethod
    def is_rejection(message: common_pb2.StatusReport) -> bool:
        """Whether a report's message gives an unstarted task back: a rejection is not an
        outcome, and :meth:`from_proto` refuses it."""
        return message.status == _STATUS_TO_PROTO[ReportStatus.REJECTED]

    @classmethod
    def from_proto(cls, message: common_pb2.StatusReport) -> Report:
        """Reads a worker's report of an outcome, in the lean form the report store takes.

        Nothing the database checks anyway is parsed: the result stays JSON text (the database
        refuses text that is not JSON). The task id is made canonical; a missing
        ``occurred_at`` means now; a failure without an error gets a generic one. The
        traceparent is not read: the coordinator has no use for it.

        Raises:
            ValueError: The report is a rejection, or has no valid status or task id.
        """
        status = _OUTCOME_FROM_PROTO.get(message.status)
        if status is None:
            raise ValueError(f"report status {message.status} is not an outcome")
        task_id = task_id_text(message.task_id)
        # Microseconds, truncated as ``Timestamp.ToDatetime`` does: the database keeps no more.
        # Read inline, as a helper's call costs more than the arithmetic, on every report.
        occurred = message.occurred_at
        seconds, nanos = occurred.seconds, occurred.nanos
        at = seconds + (nanos // 1000) / 1e6 if seconds or nanos else time.time()
        error = None
        if status is ReportStatus.FAILED:
            if message.HasField("error"):
                field = message.error
                error = TaskError(field.type, field.message, field.traceback)
            else:
                error = TaskError("error", "the worker reported a failure without details")
        started_at = None
        if message.HasField("started_at"):
            started = message.started_at
            seconds, nanos = started.seconds, started.nanos
            started_at = seconds + (nanos // 1000) / 1e6 if seconds or nanos else None
        result_json = message.result_json if status is ReportStatus.SUCCEEDED else ""
        return cls(
            task_id,
            message.attempt,
            status,
            at,
            result_json,
            error,
            "",
            started_at,
            True,
            message.token,
        )

    def to_json_text(self) -> str:
        """The report as the report queries take it: one JSON object.

        Written with one format rather than ``json.dumps`` of a dict, which is dearer, as it
        runs once per report on the coordinator's hot path.
        Strings go through the JSON encoder's escaping (the id too, so no text can add a
        field), and the result goes as a JSON string, which the query casts to jsonb.
        """
        task_id, attempt, status, at, result_json, error, _, started_at, retryable, token = self
        text = f'{{"id":{_string(task_id)},"attempt":{attempt:d},"at":{at!r}'
        if token:
            text += f',"token":{token:d}'
        if status is ReportStatus.RUNNING:
            return text + "}"
        if started_at is not None:
            text += f',"started_at":{started_at!r}'
        if status is ReportStatus.SUCCEEDED:
            return f'{text},"result":{_string(result_json)}}}' if result_json else text + "}"
        if status is ReportStatus.FAILED:
            error_json = _json((error or TaskError("error", "")).to_json())
            return f'{text},"error":{error_json},"retryable":{"true" if retryable else "false"}}}'
        return text + "}"
