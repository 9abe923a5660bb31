"""Every named query is valid SQL against the migrated schema, and the loader rejects mistakes."""

from __future__ import annotations

from collections.abc import Iterator

import pg8000.native
import pytest

from taskmill.common.queries import all_queries, parse_queries, query, query_files
from taskmill.testing import admin_connection


@pytest.fixture
def raw_connection(database_url: str) -> Iterator[pg8000.native.Connection]:
    # Direct pg8000 on purpose: prepare() has the server parse and plan a query without running it.
    with admin_connection(database_url) as connection:
        yield connection


def test_queries_are_loaded_from_every_file() -> None:
    names = set(all_queries())

    # One query from each store's file and from migrate.sql.
    assert {
        "submit_tasks",
        "list_tasks",
        "claim_due_assignments",
        "mark_succeeded",
        "fail_lost_running",
        "register_worker",
        "record_migration",
    } <= names
    assert all(sql.strip() for sql in all_queries().values())
    # Every store's file is read, and gives queries: none is left out by a list to keep.
    files = {file.name: parse_queries(file.read_text("utf-8")) for file in query_files()}
    assert {"submit.sql", "tasks.sql", "dispatch.sql", "reports.sql", "recovery.sql"} <= set(files)
    assert {"workers.sql", "migrate.sql"} <= set(files)
    assert all(files.values())


def test_every_named_query_prepares_against_the_migrated_schema(
    raw_connection: pg8000.native.Connection,
) -> None:
    # One database for all queries; a failure names every query that did not prepare.
    failures: dict[str, str] = {}
    for name, sql in sorted(all_queries().items()):
        try:
            raw_connection.prepare(sql).close()
        except pg8000.native.DatabaseError as exc:
            failures[name] = str(exc)

    assert failures == {}


def test_parse_queries_splits_named_blocks() -> None:
    text = (
        "-- a header comment belongs to no query\n"
        "-- name: first\nSELECT 1\n\n"
        "-- name: second\n-- explains why\nSELECT :x\n"
    )

    assert parse_queries(text) == {"first": "SELECT 1", "second": "-- explains why\nSELECT :x"}


def test_parse_queries_rejects_a_duplicate_name() -> None:
    text = "-- name: same\nSELECT 1\n-- name: other\nSELECT 2\n-- name: same\nSELECT 3\n"

    with pytest.raises(ValueError, match="'same' is defined twice"):
        parse_queries(text)


def test_unknown_query_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        query("no_such_query")


def test_an_include_line_stands_for_its_fragment() -> None:
    text = (
        "-- name: _part\nWITH x AS (SELECT 1 AS one)\n"
        "-- name: first\n-- include: _part\nSELECT one FROM x\n"
        "-- name: second\n-- include: _part\nSELECT one + 1 FROM x\n"
    )
    assert parse_queries(text) == {
        "first": "WITH x AS (SELECT 1 AS one)\nSELECT one FROM x",
        "second": "WITH x AS (SELECT 1 AS one)\nSELECT one + 1 FROM x",
    }
    with pytest.raises(KeyError):
        parse_queries("-- name: lone\n-- include: _missing\nSELECT 1\n")
