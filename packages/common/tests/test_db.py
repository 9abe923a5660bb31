"""The database edge against a real PostgreSQL: timestamps read back exactly as pg8000 would."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from taskmill.common.db import Database, QueryError
from taskmill.common.settings import DatabaseSettings


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT CAST('2026-01-02 03:04:05.678901+00' AS timestamptz)",
            datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        ),
        (
            "SELECT CAST('2026-01-02 03:04:05+00' AS timestamptz)",
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        ),
        (
            "SELECT CAST('2026-01-02 03:04:05.5' AS timestamp)",
            datetime(2026, 1, 2, 3, 4, 5, 500000),
        ),
        ("SELECT CAST('infinity' AS timestamptz)", "infinity"),
        ("SELECT CAST('-infinity' AS timestamp)", "-infinity"),
    ],
)
def test_timestamps_are_read_as_datetimes(database_url: str, sql: str, expected: object) -> None:
    db = Database(DatabaseSettings.from_url(database_url), max_connections=1)
    try:
        with db.connection() as conn:
            assert conn.execute(sql)[0][0] == expected
    finally:
        db.close()


def test_timestamptz_keeps_the_session_time_zone_offset(database_url: str) -> None:
    db = Database(DatabaseSettings.from_url(database_url), max_connections=1)
    try:
        with db.connection() as conn:
            conn.execute("SET TIME ZONE 'Asia/Kolkata'")
            value = conn.execute("SELECT CAST('2026-01-02 03:04:05+00' AS timestamptz)")[0][0]
    finally:
        db.close()
    assert value == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert value.utcoffset() == timezone(timedelta(hours=5, minutes=30)).utcoffset(None)


def test_a_prepared_statement_refused_by_the_server_leaves_its_connection_usable(
    database_url: str,
) -> None:
    # Bind, Execute and Sync go out without Flush messages in between: an error at Bind must
    # still come back as the statement's error, and the next statement on the connection work.
    db = Database(
        DatabaseSettings.from_url(database_url), max_connections=1, prepare_statements=True
    )
    try:
        with db.connection() as conn:
            with pytest.raises(QueryError) as refused:
                conn.run("get_task", id="not-a-uuid")
            assert refused.value.sqlstate == "22P02"
            assert conn.run("get_task", id=str(uuid.uuid4())) == []
        with db.connection() as conn:
            assert conn.scalar("schema_version") is not None
    finally:
        db.close()
