"""W3C traceparent text: written and read back, and each reader's line between valid and not."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

import pytest

from taskmill.common.traceparent import (
    format_traceparent,
    header_traceparent,
    id_fields,
    new_traceparent,
    new_traceparents,
    parse_traceparent,
    trace_id_field,
    trace_id_hex,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{SPAN}-01"
_SHAPE = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00")


@pytest.mark.parametrize(
    ("trace_id", "span_id", "flags"),
    [(int(TRACE, 16), int(SPAN, 16), 1), (1, 1, 0), (2**128 - 1, 2**64 - 1, 0xFF)],
)
def test_a_formatted_traceparent_parses_back_to_its_ids(
    trace_id: int, span_id: int, flags: int
) -> None:
    text = format_traceparent(trace_id, span_id, flags)

    assert len(text) == 55 and text.startswith("00-")
    assert parse_traceparent(text) == (trace_id, span_id, flags)
    assert header_traceparent(text) == text


def test_format_pads_every_field() -> None:
    assert format_traceparent(1, 2, 1) == f"00-{'0' * 31}1-{'0' * 15}2-01"


def test_parse_reads_the_ids_and_flags() -> None:
    assert parse_traceparent(TRACEPARENT) == (int(TRACE, 16), int(SPAN, 16), 1)
    # Read by int(x, 16): uppercase digits pass here, unlike in a header from outside.
    assert parse_traceparent(TRACEPARENT.upper()) == (int(TRACE, 16), int(SPAN, 16), 1)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        f"01-{TRACE}-{SPAN}-01",  # only version 00 is read directly
        f"ff-{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-01-extra",
        f"00-{TRACE}-{SPAN}",
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE[:-1]}x-{SPAN}-01",
        f"00-{TRACE}-{SPAN[:-1]}x-01",
        f"00-{TRACE}-{SPAN}-0x",
        f"00-{TRACE}-{SPAN}-1",
        f"00-{TRACE}-{SPAN}-001",
        f"00-{TRACE}0-{SPAN}-01",
        f"00-{TRACE}-{SPAN}0-01",
    ],
)
def test_parse_refuses_a_malformed_traceparent(text: str) -> None:
    assert parse_traceparent(text) is None


def test_a_header_by_the_w3c_rules_is_kept_without_its_whitespace() -> None:
    assert header_traceparent(TRACEPARENT) == TRACEPARENT
    assert header_traceparent(f" {TRACEPARENT}\t") == TRACEPARENT
    # A later version is accepted, as long as it has the four fields.
    assert header_traceparent(f"cc-{TRACE}-{SPAN}-00") == f"cc-{TRACE}-{SPAN}-00"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"ff-{TRACE}-{SPAN}-01",
        f"00-{TRACE.upper()}-{SPAN}-01",
        f"00-{TRACE}-{SPAN.upper()}-01",
        f"00-{TRACE}-{SPAN}-0A",
        f"00-{TRACE}-{SPAN}-01-extra",
        f"cc-{TRACE}-{SPAN}-01-future",
        f"00-{TRACE[:-1]}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-1",
        f"0-{TRACE}-{SPAN}-01",
        f"00-{TRACE[:-1]}g-{SPAN}-01",
    ],
)
def test_a_header_against_the_w3c_rules_is_ignored(header: str | None) -> None:
    assert header_traceparent(header) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TRACEPARENT, TRACE),
        (f"01-{TRACE}-x-y", TRACE),  # any version; the span id and flags go unread
        (f"00-{TRACE.upper()}-{SPAN}-01", TRACE.upper()),
        (None, None),
        ("", None),
        ("garbage", None),
        (f"00-{'0' * 32}-{SPAN}-01", None),
        (f"00-{TRACE[:-1]}x-{SPAN}-01", None),
        (f"00-{TRACE[:-1]}-{SPAN}-01", None),
        (f"00-{TRACE}-{SPAN}-01-extra", None),
    ],
)
def test_trace_id_hex_reads_a_real_trace_id_only(text: str | None, expected: str | None) -> None:
    assert trace_id_hex(text) == expected


@pytest.mark.parametrize(
    ("context", "expected"),
    [(None, None), ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    "4bf92f3577b34da6a3ce929d0e0e4736"), ("garbage", None)],
)  # fmt: skip
def test_trace_id_comes_from_the_stored_traceparent(
    context: str | None, expected: str | None
) -> None:
    assert trace_id_field(context) == expected


def test_the_stored_trace_id_is_shown_as_stored() -> None:
    assert trace_id_field("a-b-c-d") == "b"
    assert trace_id_field(f"{TRACEPARENT}-extra") == TRACE
    assert trace_id_field("a-b-c") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TRACEPARENT, (TRACE, SPAN)),
        (f"zz-{'x' * 32}-{'y' * 16}-zz", ("x" * 32, "y" * 16)),  # lengths only
        ("", None),
        ("garbage", None),
        (f"00-{TRACE}-{SPAN}-01-extra", None),
        (f"00-{TRACE[:-1]}-{SPAN}-01", None),
        (f"00-{TRACE}-{SPAN[:-1]}-01", None),
    ],
)
def test_id_fields_checks_only_the_lengths(text: str, expected: tuple[str, str] | None) -> None:
    assert id_fields(text) == expected


def _counting(data: bytes) -> tuple[list[int], Callable[[int], bytes]]:
    calls: list[int] = []
    stream = itertools.cycle(data)

    def random(size: int) -> bytes:
        calls.append(size)
        return bytes(next(stream) for _ in range(size))

    return calls, random


def test_a_new_traceparent_joins_the_parents_trace_with_a_new_span() -> None:
    made = new_traceparent(TRACEPARENT)

    assert made.startswith(f"00-{TRACE}-") and made.endswith("-00")
    assert _SHAPE.fullmatch(made)
    assert made[36:52] != SPAN


@pytest.mark.parametrize("parent", [None, "", "garbage", f"00-{'0' * 32}-{SPAN}-01"])
def test_a_new_traceparent_without_a_real_parent_starts_a_trace(parent: str | None) -> None:
    calls, random = _counting(bytes(range(1, 25)))

    made = new_traceparent(parent, random)

    assert calls == [16, 8]
    assert made == f"00-{bytes(range(1, 17)).hex()}-{bytes(range(17, 25)).hex()}-00"


def test_new_traceparents_are_distinct_new_traces_from_one_read() -> None:
    calls, random = _counting(bytes(range(256)))

    made = new_traceparents(3, random)

    assert calls == [72]
    assert all(_SHAPE.fullmatch(text) for text in made)
    assert made[0] == f"00-{bytes(range(16)).hex()}-{bytes(range(16, 24)).hex()}-00"
    assert len({text[3:35] for text in made}) == 3
    assert new_traceparents(0) == []
    assert len(set(new_traceparents(100))) == 100
