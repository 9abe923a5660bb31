"""The retry rule is written once, as two SQL functions of migration 0003, and every statement
that ends an attempt in failure uses it rather than a copy of its own."""

from __future__ import annotations

from importlib import resources

import pytest

from taskmill.common.db import Database
from taskmill.common.queries import parse_queries

_STORE = resources.files("taskmill.common") / "store"
#: Every statement that fails an attempt, and so decides whether it is tried again.
_FAILING = {"reports.sql": "mark_failed", "recovery.sql": "fail_lost_running"}


@pytest.mark.parametrize(
    ("retryable", "attempt", "max_attempts", "cancel_requested", "retries"),
    [
        (True, 1, 3, False, True),
        (True, 2, 3, False, True),
        (True, 3, 3, False, False),  # no attempt left
        (False, 1, 3, False, False),  # the failure is not retryable
        (True, 1, 3, True, False),  # somebody asked to cancel the task
        (True, 1, 1, False, False),  # max_attempts = 1: at most once
    ],
)
def test_the_rule_retries_only_with_attempts_left_and_no_cancel(
    db: Database,
    retryable: bool,
    attempt: int,
    max_attempts: int,
    cancel_requested: bool,
    retries: bool,
) -> None:
    with db.connection() as conn:
        [[answer]] = conn.execute(
            "SELECT taskmill_retries(:retryable, :attempt, :max_attempts,"
            " CASE WHEN :cancel THEN now() END)",
            retryable=retryable,
            attempt=attempt,
            max_attempts=max_attempts,
            cancel=cancel_requested,
        )
    assert answer is retries


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 5.0, 10.0), (2, 10.0, 20.0), (3, 20.0, 40.0), (10, 50.0, 100.0)],
)
def test_the_next_attempt_waits_the_backoff_with_jitter(
    db: Database, attempt: int, low: float, high: float
) -> None:
    # base 10 s, capped at 100 s, times a factor in [0.5, 1].
    with db.connection() as conn:
        waits = [
            row[0]
            for row in conn.execute(
                "SELECT extract(epoch FROM taskmill_retry_at(:attempt, 10, 100) - now())"
                " FROM generate_series(1, 50)",
                attempt=attempt,
            )
        ]
    assert all(low <= float(wait) <= high for wait in waits)
    assert max(waits) - min(waits) > 0  # jittered, not fixed


@pytest.mark.parametrize(("filename", "query"), sorted(_FAILING.items()))
def test_every_failing_statement_uses_the_rule(filename: str, query: str) -> None:
    sql = parse_queries((_STORE / filename).read_text("utf-8"))[query]
    assert "taskmill_retries(" in sql
    assert "taskmill_retry_at(" in sql


def test_no_statement_has_a_copy_of_the_backoff_formula() -> None:
    copies = [
        f"{entry.name}: {name}"
        for entry in _STORE.iterdir()
        if entry.name.endswith(".sql")
        for name, sql in parse_queries(entry.read_text("utf-8")).items()
        if "power(2" in sql or "attempt < max_attempts" in sql.replace("tasks.", "")
    ]
    assert copies == []
