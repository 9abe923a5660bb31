"""Migrations against a real PostgreSQL: first run, repeat run, concurrent runs, version checks,
and what ``taskmill-migrate`` tells a user when the URL or the server is wrong."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from taskmill.common.db import Database
from taskmill.common.errors import SchemaOutdated, SchemaTooNew
from taskmill.common.migrate import (
    MIGRATION_LOCK_ID,
    apply_migrations,
    check_schema,
    known_migrations,
    latest_version,
    migrate,
    prepare_schema,
)
from taskmill.common.settings import DatabaseSettings

MIGRATE_CODE = "import sys; from taskmill.common.migrate import main; sys.exit(main())"
DEADLINE = 60.0


def _open(url: str) -> Database:
    return Database(DatabaseSettings.from_url(url), max_connections=2)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = _open(database_url)
    try:
        yield database
    finally:
        database.close()


def _sql(url: str, sql: str, **params: object) -> list[list[object]]:
    database = _open(url)
    try:
        with database.connection() as conn:
            return conn.execute(sql, **params)
    finally:
        database.close()


def _tables(url: str) -> set[str]:
    rows = _sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {str(row[0]) for row in rows}


def _recorded(url: str) -> list[list[object]]:
    return _sql(url, "SELECT version, name FROM taskmill_migrations ORDER BY version")


def _migrate_process(url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TASKMILL_DATABASE_URL": url}
    return subprocess.Popen(
        [sys.executable, "-c", MIGRATE_CODE],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_migrate(url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TASKMILL_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-c", MIGRATE_CODE],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def _assert_one_clear_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("taskmill-migrate: ")
    for text in expected:
        assert text in lines[0]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound, never listening, held for the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _set_version_too_new(url: str) -> int:
    future = latest_version() + 1
    _sql(url, "INSERT INTO taskmill_migrations (version, name) VALUES (:v, 'future')", v=future)
    return future


def test_migrate_creates_the_schema_on_an_empty_database(empty_database_url: str) -> None:
    applied = migrate(empty_database_url)

    assert applied == [m.version for m in known_migrations()]
    assert {"tasks", "workers", "taskmill_migrations"} <= _tables(empty_database_url)
    assert _recorded(empty_database_url) == [[m.version, m.name] for m in known_migrations()]
    database = _open(empty_database_url)
    try:
        check_schema(database)  # raises when the version is not latest_version()
    finally:
        database.close()


def test_second_migrate_is_a_no_op(empty_database_url: str) -> None:
    migrate(empty_database_url)
    before = _sql(empty_database_url, "SELECT version, applied_at FROM taskmill_migrations")

    assert migrate(empty_database_url) == []
    assert _sql(empty_database_url, "SELECT version, applied_at FROM taskmill_migrations") == (
        before
    )


def test_migration_numbers_run_from_one_without_gaps() -> None:
    versions = [m.version for m in known_migrations()]

    assert versions == list(range(1, latest_version() + 1))
    assert latest_version() >= 1


def _advisory_waiters(conn_db: Database, database: str) -> int:
    with conn_db.connection() as conn:
        rows = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = :name",
            name=database,
        )
    return int(rows[0][0])


def test_three_concurrent_taskmill_migrate_runs_apply_each_migration_once(
    empty_database_url: str, postgres_url: str
) -> None:
    database = DatabaseSettings.from_url(empty_database_url).database
    holder = _open(empty_database_url)
    watcher = _open(postgres_url)
    processes: list[subprocess.Popen[str]] = []
    try:
        # Hold the migration lock so all three are provably waiting on it at the same moment.
        lock_conn = holder.connect()
        lock_conn.execute("SELECT pg_advisory_lock(:id)", id=MIGRATION_LOCK_ID)
        processes = [_migrate_process(empty_database_url) for _ in range(3)]
        deadline = time.monotonic() + DEADLINE
        while _advisory_waiters(watcher, database) < 3:
            assert time.monotonic() < deadline, "the three runs never all waited on the lock"
            assert all(p.poll() is None for p in processes), "a run exited before the lock"
            time.sleep(0.05)
        lock_conn.execute("SELECT pg_advisory_unlock(:id)", id=MIGRATION_LOCK_ID)
        lock_conn.close()
        outputs = [p.communicate(timeout=DEADLINE) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        holder.close()
        watcher.close()

    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    assert all("Traceback" not in err for _, err in outputs)
    # Each migration takes the lock in its own transaction, so the runs may share the work, but
    # every migration is applied by exactly one of them.
    applied = [
        int(version)
        for out, _ in outputs
        if out.startswith("applied migrations ")
        for version in out.removeprefix("applied migrations ").strip().split(", ")
    ]
    assert sorted(applied) == [m.version for m in known_migrations()], outputs
    # Every run says what it did: some migrations, or nothing (how the work splits depends on
    # who wins the lock each time; with six migrations all three often get some).
    assert all(
        out.startswith("applied migrations ") or "nothing to do" in out for out, _ in outputs
    )
    assert _recorded(empty_database_url) == [[m.version, m.name] for m in known_migrations()]


def test_schema_newer_than_known_is_refused_with_what_to_do(
    db: Database, database_url: str
) -> None:
    future = _set_version_too_new(database_url)

    with pytest.raises(SchemaTooNew) as checked:
        check_schema(db)
    with pytest.raises(SchemaTooNew) as applied:
        apply_migrations(db)
    with pytest.raises(SchemaTooNew):
        prepare_schema(db, migrate=False)

    for exc in (checked.value, applied.value):
        assert f"version {future}" in exc.message
        assert "upgrade taskmill" in exc.message


def test_taskmill_migrate_refuses_a_newer_schema_in_one_line(database_url: str) -> None:
    future = _set_version_too_new(database_url)

    result = _run_migrate(database_url)

    _assert_one_clear_line(result, f"version {future}", "upgrade taskmill")
    assert _recorded(database_url)[-1] == [future, "future"]


def test_schema_behind_is_outdated_until_migrated(empty_database_url: str) -> None:
    db = _open(empty_database_url)
    try:
        with pytest.raises(SchemaOutdated) as outdated:
            check_schema(db)
        with pytest.raises(SchemaOutdated):
            prepare_schema(db, migrate=False)

        prepare_schema(db, migrate=True)
        check_schema(db)
    finally:
        db.close()

    assert "taskmill-migrate" in outdated.value.message
    assert "version 0" in outdated.value.message


def test_taskmill_migrate_succeeds_and_says_so(empty_database_url: str) -> None:
    first = _run_migrate(empty_database_url)
    second = _run_migrate(empty_database_url)

    assert first.returncode == 0, first.stderr
    assert "applied migrations" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://x", "must start with postgresql://"),
        ("postgresql://host:notaport/db", "malformed"),
        ("postgresql://127.0.0.1:99999/db", "malformed"),
        ("postgresql:///taskmill", "names no host"),
        ("postgresql://127.0.0.1:5432", "must name one database"),
    ],
)
def test_taskmill_migrate_rejects_a_malformed_url_in_one_line(url: str, expected: str) -> None:
    result = _run_migrate(url)

    _assert_one_clear_line(result, "TASKMILL_DATABASE_URL", expected)


def test_taskmill_migrate_reports_an_unreachable_server_in_one_line(closed_port: int) -> None:
    result = _run_migrate(f"postgresql://postgres@127.0.0.1:{closed_port}/taskmill")

    _assert_one_clear_line(result, "cannot connect", f"127.0.0.1:{closed_port}")


def test_taskmill_migrate_reports_a_missing_database_in_one_line(postgres_url: str) -> None:
    url = urlsplit(postgres_url)._replace(path="/taskmill_no_such_database").geturl()

    result = _run_migrate(url)

    _assert_one_clear_line(result, 'database "taskmill_no_such_database" does not exist')
