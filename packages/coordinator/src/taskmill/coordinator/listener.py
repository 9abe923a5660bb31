"""Database notifications: wake the dispatch loop on submits, forward cancellation requests.

A dedicated connection ``LISTEN``s on ``taskmill_submitted`` (payload: how many tasks were
submitted, or empty when that is not known) and ``taskmill_cancel`` (payload: the task id).
When the connection drops, the listener reconnects with a backoff and wakes the dispatcher
once, since notifications sent meanwhile are lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from taskmill.common.db import Connection, Database
from taskmill.common.errors import TaskmillError

logger = logging.getLogger(__name__)

SUBMITTED_CHANNEL = "taskmill_submitted"
CANCEL_CHANNEL = "taskmill_cancel"
#: How long one wait on the socket lasts, so a stop is noticed promptly.
_WAIT = 0.25
#: A quiet connection gets a round trip this often, which proves it alive (a connection that
#: died silently never turns readable) and reads anything that arrived with the last reply.
_POLL_EVERY = 1.0
_MAX_BACKOFF = 5.0


class Listener:
    """Turns PostgreSQL notifications into calls.

    Args:
        db: Where to open the listening connection.
        on_submitted: Called when tasks were submitted or rescheduled, with how many when every
            notification said so (``None`` otherwise) and the listening connection, which the
            call may run a statement on (outside a transaction) before it returns.
        on_cancel: Called with a task id whose cancellation was requested.
    """

    def __init__(
        self,
        db: Database,
        on_submitted: Callable[[int | None, Connection], None],
        on_cancel: Callable[[str], object],
    ) -> None:
        self._db = db
        self._on_submitted = on_submitted
        self._on_cancel = on_cancel
        self.listening = threading.Event()

    def run(self, stop: threading.Event) -> None:
        """Listens until ``stop`` is set."""
        backoff = 0.1
        while not stop.is_set():
            conn: Connection | None = None
            try:
                conn = self._listen()
                backoff = 0.1
                self._on_submitted(None, conn)
                self._serve(conn, stop)
            except TaskmillError as exc:
                logger.warning("listening for notifications failed: %s", exc.message)
            except Exception:
                logger.exception("listening for notifications failed")
            finally:
                self.listening.clear()
                if conn is not None:
                    conn.close()
            stop.wait(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _listen(self) -> Connection:
        conn = self._db.connect()
        try:
            conn.execute("LISTEN taskmill_submitted")
            conn.execute("LISTEN taskmill_cancel")
        except BaseException:
            conn.close()
            raise
        self.listening.set()
        return conn

    def _serve(self, conn: Connection, stop: threading.Event) -> None:
        last_poll = time.monotonic()
        while not stop.is_set():
            if conn.wait_readable(_WAIT):
                self._deliver(conn, conn.read_notifications())
            elif time.monotonic() - last_poll >= _POLL_EVERY:
                self._deliver(conn, conn.poll_notifications())
                last_poll = time.monotonic()

    def _deliver(self, conn: Connection, notifications: list[tuple[str, str]]) -> None:
        submitted = False
        count: int | None = 0
        for channel, payload in notifications:
            if channel == SUBMITTED_CHANNEL:
                submitted = True
                count = _add(count, payload)
            elif channel == CANCEL_CHANNEL and payload:
                self._on_cancel(payload)
        if submitted:
            self._on_submitted(count, conn)


def _add(count: int | None, payload: str) -> int | None:
    """Adds a submit notification's count to the others'; ``None`` once one is not a count."""
    if count is None or not (payload.isascii() and payload.isdigit()):
        return None
    return count + int(payload)
