"""What a failed statement leaves of its connection, against a real PostgreSQL: an answer pg8000
fails to parse drops the connection, so the next statement on the pool reads its own answer; an
error the server sent keeps it; a pool's statement timeout cancels a statement that runs on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskmill.common.db import Database
from taskmill.common.dberrors import DriverError, QueryError, StatementCancelled
from taskmill.common.settings import DatabaseSettings
from taskmill.testing import NewTask, Stores

#: JSON nested deeper than Python's recursion limit: pg8000's ``json.loads`` raises
#: RecursionError halfway through the answer.
DEEP = "SELECT CAST(repeat('[', 5000) || repeat(']', 5000) AS jsonb)"
#: An integer longer than Python converts from text by default: ``json.loads`` raises ValueError.
LONG_NUMBER = "SELECT CAST(repeat('9', 5000) AS jsonb)"


@pytest.fixture(params=[False, True], ids=["parsed", "prepared"])
def pool(request: pytest.FixtureRequest, database_url: str) -> Iterator[Database]:
    """One connection at most, so every statement after the first runs on the same one, unless
    that one was dropped."""
    database = Database(
        DatabaseSettings.from_url(database_url), max_connections=1, prepare_statements=request.param
    )
    try:
        yield database
    finally:
        database.close()


def _answers_its_own(pool: Database) -> None:
    """Statements after a failure each read their own answer, with and without parameters."""
    for number in (1, 2, 3):
        with pool.connection() as conn:
            assert conn.execute("SELECT CAST(:n AS int), 'own'", n=number) == [[number, "own"]]
            assert conn.execute(f"SELECT {number} + 100") == [[number + 100]]


@pytest.mark.parametrize("value", [DEEP, LONG_NUMBER], ids=["deep", "long-number"])
@pytest.mark.parametrize("with_parameters", [False, True], ids=["simple", "extended"])
def test_an_answer_that_fails_to_parse_drops_the_connection(
    pool: Database, value: str, with_parameters: bool
) -> None:
    # pg8000 stops reading at the row it cannot parse: the rest of the answer (the row count,
    # ReadyForQuery) waits on the socket, and a pooled connection would hand it to the next
    # statement, whose own answer the one after would read.
    # With a parameter, pg8000 sends the statement in the extended protocol; without, simple.
    params = {"n": 0} if with_parameters else {}
    with pool.connection() as conn:
        with pytest.raises(DriverError, match="mid-statement") as failed:
            conn.execute(value + (", CAST(:n AS int)" if with_parameters else ""), **params)
        assert isinstance(failed.value.__cause__, (RecursionError, ValueError))

    _answers_its_own(pool)


def test_a_named_query_whose_answer_fails_to_parse_drops_the_connection(pool: Database) -> None:
    stores = Stores(pool)
    plain, deep = stores.insert(None, [NewTask("echo", {"n": 1}), NewTask("echo")])
    with pool.connection() as conn:
        conn.execute(
            "UPDATE tasks SET payload = CAST(repeat('[', 5000) || repeat(']', 5000) AS jsonb)"
            " WHERE id = :id",
            id=str(deep.id),
        )

    with pool.connection() as conn, pytest.raises(DriverError):
        conn.row("get_task", id=str(deep.id))

    for _ in range(3):
        with pool.connection() as conn:
            row = conn.row("get_task", id=str(plain.id))
            assert row is not None and row["payload"] == {"n": 1}
    _answers_its_own(pool)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT CAST('infinity' AS timestamptz)", "infinity"),
        ("SELECT CAST('10000-01-01 00:00:00+00' AS timestamptz)", "10000-01-01 00:00:00+00"),
        ("SELECT CAST('10000-01-01' AS timestamp)", "10000-01-01 00:00:00"),
        ("SELECT CAST('0044-03-15 00:00:00+00 BC' AS timestamptz)", "0044-03-15 00:00:00+00 BC"),
    ],
)
def test_a_time_python_cannot_hold_is_read_as_its_text(
    pool: Database, sql: str, expected: str
) -> None:
    # pg8000 reads what datetime cannot hold as PostgreSQL's text, without raising: the answer
    # is read whole, and the connection kept. What reads the row decides what that text means.
    with pool.connection() as conn:
        assert conn.execute(sql) == [[expected]]
        assert not conn.broken
    _answers_its_own(pool)


def test_an_error_from_the_server_keeps_the_connection(pool: Database) -> None:
    with pool.connection() as conn:
        with pytest.raises(QueryError) as refused:
            conn.execute("SELECT CAST(:id AS uuid)", id="not-a-uuid")
        assert refused.value.sqlstate == "22P02"
        assert not conn.broken
        backend = conn.execute("SELECT pg_backend_pid()")
    with pool.connection() as conn:
        assert conn.execute("SELECT pg_backend_pid()") == backend


def test_a_failure_inside_a_transaction_drops_the_connection_without_a_commit(
    pool: Database,
) -> None:
    with pool.connection() as conn:
        conn.execute("CREATE TABLE written (n int)")
    with pytest.raises(DriverError), pool.transaction() as conn:
        conn.execute("INSERT INTO written VALUES (1)")
        conn.execute(DEEP)

    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM written") == [[0]]
    _answers_its_own(pool)


# -- statement timeout ---------------------------------------------------------------------------


def test_a_statement_past_the_pools_timeout_is_cancelled(database_url: str) -> None:
    pool = Database(
        DatabaseSettings.from_url(database_url), max_connections=1, statement_timeout=0.05
    )
    try:
        with pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout") == [["50ms"]]
            backend = conn.execute("SELECT pg_backend_pid()")
            with pytest.raises(StatementCancelled) as cancelled:
                conn.execute("SELECT pg_sleep(5)")
            assert cancelled.value.retryable
            assert not conn.broken
        with pool.connection() as conn:
            # The same connection, in step.
            assert conn.execute("SELECT pg_backend_pid()") == backend
            assert conn.execute("SELECT CAST(:n AS int)", n=7) == [[7]]
    finally:
        pool.close()


def test_a_pool_has_no_statement_timeout_unless_given_one(database_url: str) -> None:
    # As the coordinator opens its pool: its claims and its listener run unbounded.
    pool = Database(DatabaseSettings.from_url(database_url), max_connections=1)
    try:
        with pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout") == [["0"]]
        listener = pool.connect()
        try:
            assert listener.execute("SHOW statement_timeout") == [["0"]]
        finally:
            listener.close()
    finally:
        pool.close()


def test_a_fraction_of_a_millisecond_is_still_a_bound(database_url: str) -> None:
    pool = Database(
        DatabaseSettings.from_url(database_url), max_connections=1, statement_timeout=0.0001
    )
    try:
        with pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout") == [["1ms"]]
    finally:
        pool.close()


@pytest.mark.parametrize("seconds", [-1.0, float("inf"), float("nan")])
def test_a_statement_timeout_must_be_a_number_of_seconds(database_url: str, seconds: float) -> None:
    with pytest.raises(ValueError, match="statement_timeout"):
        Database(DatabaseSettings.from_url(database_url), statement_timeout=seconds)
