"""Random bytes for task ids and trace ids, read from the system a few kilobytes at a time.

A single submit needs three pieces of randomness (its task id, a trace id, a span id). Read
with one ``os.urandom`` each, that is three system calls per request, and each releases the
GIL: with the server's other threads waiting for it, every release hands the GIL over and back,
two thread switches. Read 4 KiB at a time, one call serves about a hundred requests. The bytes
are still the system's own; a forked child starts with an empty buffer, so no two processes
hand out the same bytes.
"""

from __future__ import annotations

import os
import threading

_CHUNK = 4096


class _Pool:
    """Hands out slices of ``os.urandom`` output, each slice once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0

    def take(self, count: int) -> bytes:
        if count > _CHUNK // 4:  # large reads (a batch's ids) gain nothing from the buffer
            return os.urandom(count)
        with self._lock:
            start = self._offset
            if start + count > len(self._buffer):
                self._buffer = os.urandom(_CHUNK)
                start = 0
            self._offset = start + count
            return self._buffer[start : start + count]

    def forget(self) -> None:
        # In a forked child: a new lock too, in case another thread held it at the fork.
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget)


def random_bytes(count: int) -> bytes:
    """``count`` bytes from ``os.urandom``, never handed out before, in this process or another."""
    return _pool.take(count)
