"""The scheduler's own errors: everything a caller can get wrong over HTTP.

Each maps to one HTTP status in ``problems.py``; the common errors (``TaskNotFound``,
``InvalidTransition``, ``DatabaseUnavailable`` ...) are mapped there too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from taskmill.common.errors import TaskmillError


@dataclass(frozen=True)
class FieldError:
    """One problem with one part of a request.

    Attributes:
        field: Where the problem is, as a path such as ``tasks[10].command``.
        message: What is wrong, for a person to read.
        too_large: Whether the problem is only that the value is too large.
    """

    field: str
    message: str
    too_large: bool = False


class InvalidRequest(TaskmillError):
    """The request is invalid."""

    def __init__(self, errors: Sequence[FieldError], message: str | None = None) -> None:
        self.errors = list(errors)
        if message is None:
            count = len(self.errors)
            first = self.errors[0] if self.errors else None
            message = (
                f"{first.field}: {first.message}"
                if count == 1 and first is not None
                else f"the request has {count} problems"
            )
        super().__init__(message)

    @property
    def too_large(self) -> bool:
        """Whether every problem is a size limit, so the request as a whole is too large."""
        return bool(self.errors) and all(error.too_large for error in self.errors)


class ContentTooLarge(TaskmillError):
    """The request body is larger than the scheduler accepts."""


class UnsupportedMediaType(TaskmillError):
    """The request body must be JSON, sent with Content-Type: application/json."""


class IdempotencyKeyReused(TaskmillError):
    """This Idempotency-Key was already used with a different request."""


class QueueNotFound(TaskmillError):
    """No queue has this name: it has no settings, no unfinished task and no active worker."""


class Unauthorized(TaskmillError):
    """A valid bearer token is required: send Authorization: Bearer <token>."""
