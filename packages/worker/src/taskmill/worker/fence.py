"""Self-fencing: a worker that may have been declared dead starts nothing more.

The coordinator declares a worker dead, and gives its tasks to others, once ``lease`` seconds
have passed since the last heartbeat it recorded (and a task's lease runs out no sooner). A
heartbeat is recorded after it was sent, so as long as less than ``lease`` has passed since the
worker *sent* its last acknowledged heartbeat, nothing it holds has been given away. The fence
closes a margin before that: a worker paused for any length of time (a long GC pause, a frozen
VM, SIGSTOP), or cut off from its coordinator, starts no task from its queue until a heartbeat
is acknowledged again — and the answer to that heartbeat names the tasks that are no longer its
own, which it drops before the fence opens. The margin covers the time between the check and
the start of a handler, and a clock that runs a little slow.

Time is the boot clock where there is one: unlike the monotonic clock, it goes on while the
machine is suspended, which a frozen VM can look like.
"""

from __future__ import annotations

import threading
import time

#: The fence closes this fraction of the lease before the lease runs out. The coordinator asks
#: for at least three heartbeats per lease, so a worker whose heartbeats are answered never
#: comes near it. More than a third: a heartbeat skips a task's row that a report holds locked
#: at that moment, so a task's lease may date from the heartbeat before the last.
MARGIN = 0.4


def _now() -> float:
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):  # not Linux
        return time.monotonic()


class Fence:
    """Whether this worker may start a task: open while a heartbeat was acknowledged recently
    enough. Open until the first registration names a lease (a coordinator that names none
    predates fencing)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._lease: float | None = None
        self._acknowledged = 0.0  # when the last acknowledged call was sent

    @staticmethod
    def now() -> float:
        """The fence's clock: a call's sending time, for :meth:`acknowledged`."""
        return _now()

    def acknowledged(self, sent_at: float, lease: float | None = None) -> None:
        """Records that the coordinator answered a call sent at ``sent_at`` (this clock), and
        the lease it named, if it named one. Call it only once the answer's stale tasks are
        dropped."""
        with self._changed:
            if lease is not None:
                self._lease = lease if lease > 0 else None
            self._acknowledged = max(self._acknowledged, sent_at)
            self._changed.notify_all()

    def is_open(self) -> bool:
        """Whether a task may start now."""
        lease = self._lease
        return lease is None or _now() - self._acknowledged < lease * (1 - MARGIN)

    def wait_open(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for the fence to be open; returns whether it is."""
        with self._changed:
            return self._changed.wait_for(self.is_open, timeout)
