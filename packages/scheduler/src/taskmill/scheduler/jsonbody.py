"""Request bodies as JSON the rest of the system can keep: finite numbers, bounded nesting.

Python's ``json`` reads ``1e999`` as infinity, which PostgreSQL refuses and JSON cannot write
back; and a value nested deep enough to parse here can still exhaust the recursion limit of a
reader further down the stack (the driver, the coordinator, a worker). Both are refused here,
as problems naming the field where they are.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from taskmill.scheduler.errors import FieldError, InvalidRequest

#: How deep a payload may nest. Far below Python's recursion limit, so every reader can decode
#: it again wherever it stands on its own stack; no task needs more.
MAX_DEPTH = 100
#: Enough paths to find the problems without making the answer as large as the body.
_MAX_PATHS = 100
_NOT_FINITE = "must be a finite number (NaN, Infinity and numbers beyond ±1.8e308 cannot be kept)"


class _NotFinite(Exception):
    """A number of the body is not finite."""


def _finite_float(text: str, _float: Any = float, _isfinite: Any = math.isfinite) -> float:
    # Called for numbers with a fraction or exponent only: integers never overflow to infinity.
    value: float = _float(text)
    if _isfinite(value):
        return value
    raise _NotFinite


def _reject_constant(name: str) -> Any:
    raise _NotFinite


#: Made once: json.loads with options builds a new decoder on every call.
_STRICT = json.JSONDecoder(parse_float=_finite_float, parse_constant=_reject_constant)
#: Reads the non-finite numbers as this marker, to find where they are once one was seen.
_MARK = object()
_MARKING = json.JSONDecoder(
    parse_float=lambda text: _MARK if not math.isfinite(float(text)) else 0.0,
    parse_constant=lambda name: _MARK,
)


def parse_json(body: bytes) -> Any:
    """Parses a request body as strict JSON: UTF-8, finite numbers only.

    Raises:
        InvalidRequest: The body is not JSON, or holds a non-finite number (each one's path
            named, such as ``tasks[2].payload.x``).
    """
    try:
        text = body.decode("utf-8")
        return _STRICT.decode(text)
    except _NotFinite:
        raise InvalidRequest(_non_finite_errors(text)) from None
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, bad UTF-8 and over-long integers.
        detail = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise InvalidRequest([FieldError("body", f"malformed JSON: {detail}")]) from None


def _non_finite_errors(text: str) -> list[FieldError]:
    """Where the body's non-finite numbers are: read again, on this rare path only."""
    try:
        marked = _MARKING.decode(text)
    except (ValueError, RecursionError):
        return [FieldError("body", _NOT_FINITE)]
    errors: list[FieldError] = []
    for path in _paths_of_marks(marked):
        if len(errors) == _MAX_PATHS:
            errors.append(FieldError("body", "holds more non-finite numbers than listed"))
            break
        errors.append(FieldError(path or "body", _NOT_FINITE))
    return errors


def _paths_of_marks(value: Any) -> Iterator[str]:
    # Iterative, in document order: a recursive walk could exhaust the recursion limit itself.
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if item is _MARK:
            yield path
        elif type(item) is dict:
            prefix = f"{path}." if path else ""
            stack.extend((prefix + key, child) for key, child in reversed(item.items()))
        elif type(item) is list:
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(item))))


def too_deep(values: list[Any], limit: int = MAX_DEPTH) -> bool:
    """Whether any of ``values`` nests arrays and objects more than ``limit`` levels deep."""
    # Level by level, for the same reason as above; scalars are never gathered.
    level = [value for value in values if type(value) is dict or type(value) is list]
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        inner: list[Any] = []
        add = inner.append
        for item in level:
            for child in item.values() if type(item) is dict else item:
                if type(child) is dict or type(child) is list:
                    add(child)
        level = inner
    return False
