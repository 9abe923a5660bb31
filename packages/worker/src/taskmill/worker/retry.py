"""Retrying calls to the coordinator: the delays between tries, and reading a failed call."""

from __future__ import annotations

import random

import grpc


class ReconnectBackoff:
    """Delays that double from ``initial`` up to ``maximum``, each with up to 20% jitter."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._initial = initial
        self._maximum = max(initial, maximum)
        self._next = initial

    def delay(self) -> float:
        """The next delay; each call doubles the one after."""
        value = self._next
        self._next = min(self._maximum, self._next * 2)
        return value * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        """Starts again from ``initial`` (after a success)."""
        self._next = self._initial


def status_code(error: grpc.RpcError) -> grpc.StatusCode | None:
    """The status code of a failed call, if the error carries one."""
    if isinstance(error, grpc.Call):
        code: grpc.StatusCode = error.code()
        return code
    return None


def describe(error: grpc.RpcError) -> str:
    """``CODE: details`` of a failed call, for logs."""
    if isinstance(error, grpc.Call):
        return f"{error.code().name}: {error.details()}"
    return repr(error)
