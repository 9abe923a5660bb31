"""Payloads are read exactly as ``json.loads`` reads them, errors included."""

from __future__ import annotations

import json

import pytest

from taskmill.worker.execution import decode_payload


@pytest.mark.parametrize(
    "text",
    [
        '{"n":1}',
        '{"n": [1, 2.5, "wörld", null, true]}',
        "null",
        '"text"',
        "42",
        ' {"n": 1}',  # whitespace around the value
        '{"n": 1}\n',
        "\t[]\r\n",
    ],
)
def test_a_payload_reads_as_json_loads_reads_it(text: str) -> None:
    assert decode_payload(text) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "Expecting property name"),
        ('{"n": 1} {"n": 2}', "Extra data"),
        ("", "Expecting value"),
        ("   ", "Expecting value"),
        ('\ufeff{"n": 1}', "BOM"),
    ],
)
def test_a_bad_payload_fails_with_the_json_loads_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_payload(text)
