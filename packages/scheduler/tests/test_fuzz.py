"""Property-based fuzzing of the HTTP API from its own ``/openapi.json``, with schemathesis.

A real ``taskmill-scheduler`` process on a free port and a real database answer requests
generated from the document the process serves: valid ones, and ones that break the document
on purpose (wrong types, numbers out of range, missing fields, bad or no credentials ...).
Every answer must be a status the document lists for the operation, never a 5xx, in a
documented content type, with a body and headers the document describes; a request that
breaks the document must be refused. A fixed seed and derandomized generation make every run
send the same requests, so a run that passes once passes again on the same code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis

from .conftest import API_TOKEN

#: A run that sends fewer requests than this has stopped looking.
MIN_REQUESTS = 2000
_TIMEOUT = 60.0

#: schemathesis' configuration, as its ``schemathesis.toml`` would hold it.
CONFIG: dict[str, Any] = {
    "seed": 16,
    # The one health check that depends on the machine's speed, not on the requests generated.
    "suppress-health-check": ["too_slow"],
    "auth": {"openapi": {"bearer": {"bearer": API_TOKEN}}},
    "generation": {
        "mode": "all",
        # Fuzzing examples per operation, on top of the examples and coverage phases' own.
        "max-examples": 250,
        "deterministic": True,
        "database": "none",
    },
    # Stateful runs are the command line's, not pytest's.
    "phases": {"stateful": {"enabled": False}},
    "checks": {
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        "response_headers_conformance": {"enabled": True},
        "negative_data_rejection": {"enabled": True},
        "ignored_auth": {"enabled": True},
        # Off: the document cannot say every rule a valid request follows (a cursor is one the
        # API made; a time is from 1970 to 9999; 1.0 is an integer to JSON Schema but not to
        # the API), so some requests it allows are refused, rightly, with a 400.
        "positive_data_acceptance": {"enabled": False},
    },
}


class Sent:
    """The requests the fuzzer sent, and one HTTP session they share."""

    def __init__(self) -> None:
        self.by_operation: dict[str, int] = {}
        self.session = requests.Session()

    def count(self, label: str) -> None:
        self.by_operation[label] = self.by_operation.get(label, 0) + 1


@pytest.fixture
def sent() -> Iterator[Sent]:
    """The requests of the run, counted once every operation has been fuzzed."""
    record = Sent()
    yield record
    record.session.close()
    total = sum(record.by_operation.values())
    print(f"schemathesis sent {total} requests: {record.by_operation}")
    assert total >= MIN_REQUESTS, f"only {total} requests were generated"


@pytest.fixture
def api_schema(served: str, request: pytest.FixtureRequest) -> Any:
    """The document the running scheduler serves, loaded as schemathesis' schema."""
    # schemathesis' lazy loader names each operation's subtest through the item's `_nodeid`,
    # which pytest 9.2 no longer has.
    node: Any = request.node
    if not hasattr(node, "_nodeid"):
        node._nodeid = node.nodeid
    return schemathesis.openapi.from_url(
        f"{served}/openapi.json",
        config=schemathesis.Config.from_dict(CONFIG),
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.timeout(600)
@hypothesis.settings(deadline=None)  # a slow answer on a busy machine is not a failure
@schema.parametrize()
def test_no_request_gets_a_5xx_and_every_answer_matches_the_document(
    case: schemathesis.Case, sent: Sent
) -> None:
    sent.count(case.operation.label)
    case.call_and_validate(session=sent.session, timeout=_TIMEOUT)
