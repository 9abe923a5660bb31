"""The database's errors as taskmill raises them, and the mapping from what pg8000 raises.

Only :mod:`taskmill.common.db` maps (with :func:`wrap`); callers catch these classes, or the
:class:`~taskmill.common.errors.DatabaseError` and ``DatabaseUnavailable`` they derive from.
"""

from __future__ import annotations

import pg8000.exceptions

from taskmill.common.errors import DatabaseError, DatabaseUnavailable

#: SQLSTATE classes that mean the server or the connection went away, not that the query was bad.
_UNAVAILABLE_SQLSTATES = ("08", "57P")
#: SQLSTATE of a statement the server cancelled: past its ``statement_timeout``, or by an operator.
_CANCELLED_SQLSTATE = "57014"


class QueryError(DatabaseError):
    """The database rejected a query."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class StatementCancelled(DatabaseError):
    """The database cancelled the statement: it ran past the pool's statement timeout, or an
    operator cancelled it. Nothing it did was kept, and its connection stays usable."""

    # Not a QueryError: nothing in the request was wrong, and the same statement may well
    # finish once the database is less busy.
    retryable = True


class DriverError(DatabaseError):
    """The database driver failed in the middle of a statement, on something other than an
    error from the server (such as a value in the answer that Python cannot hold); the
    connection was dropped."""


def wrap(exc: Exception) -> DatabaseError:
    """The taskmill error for what a statement raised: the server's error by its SQLSTATE, a
    lost connection as unavailable, anything else as the driver's failure."""
    if isinstance(exc, pg8000.exceptions.DatabaseError) and exc.args:
        info = exc.args[0] if isinstance(exc.args[0], dict) else {}
        sqlstate = str(info.get("C", ""))
        message = str(info.get("M", exc))
        if sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return DatabaseUnavailable(f"database unavailable: {message}")
        if sqlstate == _CANCELLED_SQLSTATE:
            return StatementCancelled(f"the database cancelled the statement: {message}")
        return QueryError(message, sqlstate)
    if isinstance(exc, (pg8000.exceptions.Error, OSError)):
        return DatabaseUnavailable(f"database unavailable: {exc}")
    return DriverError(f"the database driver failed mid-statement: {type(exc).__name__}: {exc}")
