"""The liveness check: remove silent workers and recover the tasks they (or anyone) lost.

Every coordinator runs it against the shared tables, so tasks whose lease expired — because
their worker died, or their coordinator did and nobody extends the leases any more — are
recovered by whichever coordinator is still alive.

Silence counts only while someone watches. Every check is recorded in the database
(``WorkerStore.watch``). After a break in the checks of every coordinator (the database was
away, or no coordinator ran) heartbeats could not be recorded either, so the first check after
it starts a grace of one dead interval, in which no worker is declared dead and no lease is
recovered: every worker gets that long to heartbeat again, and keeps its tasks however long the
break was.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from taskmill.common.errors import TaskmillError
from taskmill.common.models import TaskStatus
from taskmill.common.store import RecoveryStore, WorkerStore
from taskmill.coordinator.fleet import Fleet

logger = logging.getLogger(__name__)


class Liveness:
    """Reaps dead workers and recovers lost tasks, on a timer.

    Args:
        workers: The worker store.
        recovery: The recovery store.
        fleet: This coordinator's workers (reaped ones are forgotten).
        on_rescheduled: Called when recovered tasks went back to ``scheduled``.
        dead_after: Seconds of silence after which a worker is dead.
        interval: Seconds between checks.

    Attributes:
        checks: How many checks reached the database.
        sweeps: How many of them reaped and recovered (outside a grace).
    """

    def __init__(
        self,
        workers: WorkerStore,
        recovery: RecoveryStore,
        fleet: Fleet,
        on_rescheduled: Callable[[], None],
        *,
        dead_after: float,
        interval: float,
    ) -> None:
        self._workers = workers
        self._recovery = recovery
        self._fleet = fleet
        self._on_rescheduled = on_rescheduled
        self._dead_after = dead_after
        self._interval = interval
        # A break this long starts a grace. A worker silent through a shorter break, and then
        # for up to its heartbeat interval (at most a third of the dead interval too), still
        # has a third of it to get a heartbeat through; twice the interval keeps one slow
        # check from counting as a break.
        self._lapse = max(dead_after / 3, 2 * interval)
        self._watching = True  # so that a start within a grace says so
        self.checks = 0
        self.sweeps = 0

    def run(self, stop: threading.Event) -> None:
        """Checks every ``interval`` seconds until ``stop`` is set."""
        while not stop.wait(self._interval):
            try:
                self.check_once()
            except TaskmillError as exc:
                logger.warning("liveness check failed: %s", exc.message)
            except Exception:
                logger.exception("liveness check failed")

    def check_once(self) -> dict[uuid.UUID, TaskStatus]:
        """Reaps dead workers, recovers lost tasks, and returns the recovered tasks' statuses.

        Within a grace it only records the check, and returns nothing.
        """
        watching = self._workers.watch(self._dead_after, self._lapse)
        self.checks += 1
        if watching is not self._watching:
            self._watching = watching
            self._log_watching(watching)
        if not watching:
            return {}
        dead, recovered = self._recovery.reap_and_recover(self._dead_after)
        for worker_id in dead:
            self._fleet.remove(worker_id)
            logger.warning("worker %s silent for %ss: removed", worker_id, self._dead_after)
        if recovered:
            counts: dict[str, int] = {}
            for status in recovered.values():
                counts[status] = counts.get(status, 0) + 1
            logger.warning("recovered %d lost tasks: %s", len(recovered), counts)
        if TaskStatus.SCHEDULED in recovered.values():
            self._on_rescheduled()
        self.sweeps += 1
        return recovered

    def _log_watching(self, watching: bool) -> None:
        if watching:
            logger.info("liveness: silent workers are declared dead again")
        else:
            logger.warning(
                "liveness: nobody watched the workers for a while (the database was away, or "
                "no coordinator ran); no worker is declared dead and no lease recovered until "
                "every worker had %ss to heartbeat",
                self._dead_after,
            )
