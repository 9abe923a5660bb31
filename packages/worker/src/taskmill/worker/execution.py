"""Calling one handler for one attempt and turning whatever happens into an :class:`Outcome`.

Used in a slot thread for ordinary handlers and inside the child process for ``process=True``
handlers, so both report results and errors the same way.
"""

from __future__ import annotations

import json
import re
import traceback
from typing import Any

from taskmill.common.attempts import Assignment, Outcome
from taskmill.worker.context import CancelFlag, TaskCancelled, TaskContext, task_logger
from taskmill.worker.registry import Handler

#: Tracebacks keep their last this many characters: the innermost frames say the most.
MAX_TRACEBACK_CHARS = 8000
#: Error messages are cut to this many characters.
MAX_MESSAGE_CHARS = 2000
#: Results larger than this, as UTF-8 JSON, fail the task: a report carries its result whole,
#: and the reporter's batches must stay under the gRPC message limit
#: (``taskmill.common.grpcutil.MAX_MESSAGE_BYTES``).
MAX_RESULT_BYTES = 16 * 1024 * 1024

TIMEOUT = "timeout"
UNKNOWN_COMMAND = "unknown_command"
WORKER_SHUTDOWN = "worker_shutdown"
INVALID_PAYLOAD = "invalid_payload"
RESULT_NOT_SERIALIZABLE = "result_not_serializable"
RESULT_TOO_LARGE = "result_too_large"

# One encoder for every result: json.dumps with any option builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# Only to tell a non-finite number from the other reasons a value does not encode.
_NAN_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=True)
_DECODER = json.JSONDecoder()
#: A NUL in JSON text: the escape ``\u0000`` after an even number of backslashes (after an odd
#: number, its backslash is an escaped one, and ``u0000`` plain text).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def truncate_traceback(text: str, limit: int = MAX_TRACEBACK_CHARS) -> str:
    """Keeps the end of a traceback, marking the cut."""
    if len(text) <= limit:
        return text
    return "...(traceback truncated)\n" + text[-limit:]


def storable(text: str) -> str:
    """``text`` as a report can carry it and the database store it: a lone surrogate (UTF-8
    cannot encode it, so the report could not be built) and NUL (PostgreSQL's jsonb refuses it)
    are written as backslash escapes."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _message(exc: BaseException) -> str:
    try:
        text = str(exc) or repr(exc)
    # A broken __str__ must not stop the task from failing: the slot would never settle it.
    except Exception:  # noqa: BLE001
        text = f"<{type(exc).__name__} whose str() raised>"
    text = storable(text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


def failure(exc: BaseException) -> Outcome:
    """The outcome of a handler that raised ``exc``, its texts made :func:`storable` (a class
    name cannot hold a lone surrogate or NUL: Python refuses them)."""
    formatted = "".join(traceback.format_exception(exc))
    return Outcome.failed(
        type(exc).__name__, _message(exc), truncate_traceback(storable(formatted))
    )


def encode_result(value: Any) -> Outcome:
    """The outcome of a handler that returned ``value``: its JSON text, or a clear failure if
    the value cannot be encoded, sent or stored."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        return Outcome.failed(RESULT_NOT_SERIALIZABLE, _unencodable(value, exc))
    except RecursionError:
        return Outcome.failed(
            RESULT_NOT_SERIALIZABLE, "the result is nested too deeply to encode as JSON"
        )
    if text.isascii():  # most results: no surrogate, and one byte per character
        size = len(text)
    else:
        try:
            size = len(text.encode())
        except UnicodeEncodeError as exc:
            return Outcome.failed(RESULT_NOT_SERIALIZABLE, _lone_surrogate(text, exc.start))
    if size > MAX_RESULT_BYTES:
        return Outcome.failed(
            RESULT_TOO_LARGE,
            f"the result is {size} bytes of JSON, over the limit of {MAX_RESULT_BYTES}",
        )
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        return Outcome.failed(
            RESULT_NOT_SERIALIZABLE,
            "the result contains NUL (\\u0000), which the database cannot store in JSON",
        )
    return Outcome.succeeded(text)


def _unencodable(value: Any, exc: Exception) -> str:
    """Why ``value`` is not JSON: a number that is not finite, or what the encoder says."""
    if isinstance(exc, ValueError):
        try:
            _NAN_ENCODER.encode(value)
        except (TypeError, ValueError):
            pass
        else:
            return (
                "the result contains a number that is not finite (NaN or Infinity): JSON has none"
            )
    return f"the handler returned a value that is not JSON-serialisable: {_message(exc)}"


def _lone_surrogate(text: str, at: int) -> str:
    return (
        f"the result contains a lone surrogate ({text[at]!a} at character {at} of its JSON),"
        " which UTF-8 cannot encode; it comes from bytes decoded with 'surrogateescape', as"
        " os.fsdecode does"
    )


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
