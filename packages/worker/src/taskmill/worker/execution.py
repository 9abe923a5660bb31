"""Calling one handler for one attempt and turning whatever happens into an :class:`Outcome`.

Used in a slot thread for ordinary handlers and inside the child process for ``process=True``
handlers, so both report results and errors the same way.
"""

from __future__ import annotations

import json
import traceback
from typing import Any

from taskmill.common.attempts import Assignment, Outcome
from taskmill.worker.context import CancelFlag, TaskCancelled, TaskContext, task_logger
from taskmill.worker.registry import Handler

#: Tracebacks keep their last this many characters: the innermost frames say the most.
MAX_TRACEBACK_CHARS = 8000
#: Error messages are cut to this many characters.
MAX_MESSAGE_CHARS = 2000
#: Results larger than this fail the task: they would not fit in a status report message.
MAX_RESULT_CHARS = 16 * 1024 * 1024

TIMEOUT = "timeout"
UNKNOWN_COMMAND = "unknown_command"
WORKER_SHUTDOWN = "worker_shutdown"
INVALID_PAYLOAD = "invalid_payload"
RESULT_NOT_SERIALIZABLE = "result_not_serializable"
RESULT_TOO_LARGE = "result_too_large"

# One encoder for every result: json.dumps with any option builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder()


def truncate_traceback(text: str, limit: int = MAX_TRACEBACK_CHARS) -> str:
    """Keeps the end of a traceback, marking the cut."""
    if len(text) <= limit:
        return text
    return "...(traceback truncated)\n" + text[-limit:]


def _message(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


def failure(exc: BaseException) -> Outcome:
    """The outcome of a handler that raised ``exc``."""
    formatted = "".join(traceback.format_exception(exc))
    return Outcome.failed(type(exc).__name__, _message(exc), truncate_traceback(formatted))


def encode_result(value: Any) -> Outcome:
    """The outcome of a handler that returned ``value``: its JSON text, or a clear failure."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        return Outcome.failed(
            RESULT_NOT_SERIALIZABLE,
            f"the handler returned a value that is not JSON-serialisable: {_message(exc)}",
        )
    if len(text) > MAX_RESULT_CHARS:
        return Outcome.failed(
            RESULT_TOO_LARGE,
            f"the result is {len(text)} characters of JSON; the limit is {MAX_RESULT_CHARS}",
        )
    return Outcome.succeeded(text)


def decode_payload(text: str) -> Any:
    """The payload's value, as ``json.loads`` reads it.

    Payloads come as compact JSON: read straight through ``raw_decode`` (cheaper than
    ``json.loads``, which first matches whitespace around the value); anything else
    (surrounding whitespace, extra data, invalid text) goes to ``json.loads`` for its value or
    its error.

    Raises:
        ValueError: The text is not one JSON value.
    """
    try:
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def _context(handler: Handler, assignment: Assignment, cancel: CancelFlag) -> TaskContext | None:
    if not handler.wants_context:
        return None
    return TaskContext(
        task_id=assignment.task_id,
        attempt=assignment.attempt,
        max_attempts=assignment.max_attempts,
        command=assignment.command,
        cancelled=cancel,
        logger=task_logger(assignment.command, assignment.task_id, assignment.attempt),
    )


def run_handler(handler: Handler, assignment: Assignment, cancel: CancelFlag) -> Outcome:
    """Runs one attempt in the calling thread.

    A handler that raises :class:`TaskCancelled`, or raises anything once its cancellation flag
    is set, ends ``cancelled``; one that returns ends ``succeeded`` even if a cancellation came
    too late to stop it.
    """
    try:
        payload = decode_payload(assignment.payload_json or "null")
    except ValueError as exc:
        return Outcome.failed(INVALID_PAYLOAD, f"the payload is not JSON: {exc}")
    try:
        value = handler.call(payload, _context(handler, assignment, cancel))
    except TaskCancelled:
        return Outcome.cancelled()
    # Whatever a handler raises fails its task; SystemExit too, or sys.exit() in a handler
    # would silently end its slot thread.
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        return Outcome.cancelled() if cancel.is_set() else failure(exc)
    return encode_result(value)
