"""The error hierarchy shared by every taskmill package.

Each error's docstring is its default message, so raising ``TaskNotFound()`` already says what
went wrong; a more specific message can always be passed.
"""

from __future__ import annotations


class TaskmillError(Exception):
    """A taskmill operation failed."""

    #: Whether repeating the same call later may succeed.
    retryable: bool = False

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)


class ConfigError(TaskmillError):
    """The configuration is invalid."""


class DatabaseError(TaskmillError):
    """The database rejected the operation."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached."""

    retryable = True


class SchemaError(TaskmillError):
    """The database schema does not match this version of taskmill."""


class SchemaTooNew(SchemaError):
    """The database schema is newer than this version of taskmill knows."""


class SchemaOutdated(SchemaError):
    """The database schema has migrations pending; run taskmill-migrate."""


class TaskNotFound(TaskmillError):
    """No task has this id."""


class InvalidTransition(TaskmillError):
    """The task is not in a state that allows this change."""
