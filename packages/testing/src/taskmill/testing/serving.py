"""A waitress server run on a thread of the test process, and stopped without racing its loop.

waitress's own way to stop is ``SystemExit`` raised in the thread that runs its loop, which a
test cannot raise in another thread. Closing the server's sockets from the test's thread instead
races the loop: a descriptor closed between the loop listing it and its ``select`` makes the
``select`` fail (``OSError: [Errno 9]``), killing the loop thread, and a request thread that
finishes after the close writes to the loop's closed wake-up pipe (or to whatever reused its
descriptor). So the request threads end first, then the loop, and only then are the sockets
closed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from waitress import wasyncore

#: How long the loop may take to end once told; the trigger wakes it at once, so only a stuck
#: loop comes near this.
_STOP_DEADLINE = 30.0


@contextmanager
def serve_in_thread(server: Any) -> Iterator[Any]:
    """Serves with ``server`` (from ``waitress.create_server``) on a thread during the block.

    When the block ends, the requests in progress finish (the loop still carries their
    answers), then the loop ends, then every socket is closed. Anything that ends the loop's
    thread early is left to pytest, which reports it as the test's error.

    Yields:
        The server, whose ``effective_port`` is the port it listens on.

    Raises:
        RuntimeError: The loop did not end in time.
    """
    thread = threading.Thread(target=server.run, name="waitress-loop", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        _stop(server, thread)


def _stop(server: Any, thread: threading.Thread) -> None:
    # First the request threads, while the loop still runs: a thread waiting for the loop to
    # send its answer can finish, and none is left to wake the loop once it has closed.
    server.task_dispatcher.shutdown()
    detached: dict[int, Any] = {}
    if thread.is_alive():
        # The loop's own thread empties its map, between two of its selects, and the loop then
        # ends. It must not close the wake-up pipe there: the write that wakes it comes after
        # the thunk is queued, and a wake-up already pending can run the thunk first.
        server.trigger.pull_trigger(partial(_detach, server._map, detached))
        thread.join(_STOP_DEADLINE)
        if thread.is_alive():
            raise RuntimeError("waitress's loop did not stop: its sockets are still open")
    # The loop has ended (or died): nothing else touches the sockets any more.
    wasyncore.close_all(detached)
    wasyncore.close_all(server._map)


def _detach(channels: dict[int, Any], into: dict[int, Any]) -> None:
    into.update(channels)
    channels.clear()
