"""W3C ``traceparent`` text, ``00-<32 hex trace id>-<16 hex span id>-<2 hex flags>``: the one
place that reads and writes it.

Nothing here imports OpenTelemetry: a ``process=True`` child imports this module for its log
lines, and the per-task paths that only move ids between text and integers should not pay for
building OpenTelemetry objects. Conversions to and from span contexts live beside their callers
(``taskmill.common.telemetry``, the worker's ``tracing``) and call these functions.

The functions differ in how much they check, on purpose: a header from outside the system is
held to the W3C rules (:func:`header_traceparent`), text that this system wrote itself is read
for its ids with the cheapest checks that suffice.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

# The W3C grammar: lowercase hex only, no fields after the flags.
_HEADER = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    """Writes a version-00 ``traceparent``.

    Args:
        trace_id: The 128-bit trace id.
        span_id: The 64-bit id of the parent span.
        flags: The trace flags; ``1`` means sampled.

    Returns:
        The text, such as ``00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01``.
    """
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def parse_traceparent(text: str) -> tuple[int, int, int] | None:
    """Reads the ids and flags of a version-00 ``traceparent``.

    Only what the ids need is checked: four fields, version ``00``, fields of 32, 16 and 2
    characters that ``int(field, 16)`` reads (so uppercase digits pass), and ids that are not
    zero. A caller that must match the W3C rules exactly falls back to a propagator on ``None``.

    Args:
        text: The ``traceparent``.

    Returns:
        ``(trace_id, span_id, flags)``, or ``None`` when ``text`` is not such a traceparent.
    """
    parts = text.split("-")
    if (
        len(parts) != 4
        or parts[0] != "00"
        or len(parts[1]) != 32
        or len(parts[2]) != 16
        or len(parts[3]) != 2
    ):
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, flags


def header_traceparent(value: str | None) -> str | None:
    """An incoming ``traceparent`` header, if it follows the W3C rules, else ``None``.

    Surrounding whitespace is dropped. Any version but ``ff`` is accepted, with exactly the
    four fields; digits must be lowercase hex and neither id may be all zeros.

    Args:
        value: The header, or ``None`` when the request has none.

    Returns:
        The stripped header, or ``None`` when there is none or it is malformed (the caller
        ignores it).
    """
    if value is None:
        return None
    value = value.strip()
    match = _HEADER.fullmatch(value)
    if match is None:
        return None
    version, trace_id, span_id, _ = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return value


def trace_id_hex(text: str | None) -> str | None:
    """The trace id field of a ``traceparent``, if it is a real one.

    Any version is accepted; the trace id must be 32 characters that ``int(field, 16)`` reads
    and not all zeros. The span id and flags are not checked.

    Args:
        text: The ``traceparent``, or ``None``.

    Returns:
        The 32 hex digits as written, or ``None`` when missing or malformed.
    """
    if not text:
        return None
    parts = text.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or parts[1] == _ZERO_TRACE:
        return None
    try:
        int(parts[1], 16)
    except ValueError:
        return None
    return parts[1]


def trace_id_field(text: str | None) -> str | None:
    """The second field of a stored ``traceparent``, unchecked: for showing its trace id.

    Args:
        text: A ``traceparent`` this system stored, or ``None``.

    Returns:
        The field as stored, or ``None`` when ``text`` is ``None`` or has fewer than four
        fields.
    """
    if text is None:
        return None
    parts = text.split("-")
    return parts[1] if len(parts) >= 4 else None


def id_fields(text: str) -> tuple[str, str] | None:
    """The trace and span id fields of a ``traceparent``, checked only for their lengths.

    For stamping log lines with the ids of a traceparent this system wrote itself.

    Args:
        text: The ``traceparent``; may be empty.

    Returns:
        ``(trace_id, span_id)`` as written, or ``None`` unless ``text`` has four fields of
        which the second has 32 characters and the third 16.
    """
    parts = text.split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
        return parts[1], parts[2]
    return None


def new_traceparent(parent: str | None = None, random: Callable[[int], bytes] = os.urandom) -> str:
    """A ``traceparent`` for a new, unsampled span that nothing records.

    For when nothing is exported: the ids still join log lines and spans across services,
    without a real span's cost.

    Args:
        parent: A ``traceparent`` whose trace the span joins when :func:`trace_id_hex` reads
            one from it; otherwise the span starts a new trace.
        random: Returns that many random bytes.

    Returns:
        The new span's ``traceparent``, with flags ``00``.
    """
    trace_id = trace_id_hex(parent) or random(16).hex()
    return f"00-{trace_id}-{random(8).hex()}-00"


def new_traceparents(count: int, random: Callable[[int], bytes] = os.urandom) -> list[str]:
    """``count`` ``traceparent`` values of unsampled spans, each in a new trace.

    The ids come from one call to ``random`` (:func:`new_traceparent` makes two per span).

    Args:
        count: How many to make.
        random: Returns that many random bytes.

    Returns:
        The new spans' ``traceparent`` values, with flags ``00``.
    """
    text = random(24 * count).hex()
    return [f"00-{text[i : i + 32]}-{text[i + 32 : i + 48]}-00" for i in range(0, 48 * count, 48)]
